"""The one parameter-validation mechanism (sktx._params) and the shared docstring fragments."""

from __future__ import annotations

import doctest
import inspect
from typing import ClassVar

import pytest

import sktx
from sktx import _docs, _params
from sktx._params import Integer, Options, Real, check_params, check_value
from sktx.baselines import BASELINES


def test_modules_doctests_pass():
    for module in (_params, _docs):
        result = doctest.testmod(module, verbose=False)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize(
    ("constraint", "good", "bad", "words"),
    [
        (Integer(low=1), [1, 7], [0, -1, 2.5, True, None, "3"], "a positive integer"),
        (Integer(low=0), [0, 3], [-1, False], "a non-negative integer"),
        (Integer(low=2), [2], [1], "an integer >= 2"),
        (Integer(low=1, none_ok=True), [None, 1], [0], "None or a positive integer"),
        (Real(low=0), [0, 0.5, 3], [-0.1, float("nan"), True, "1"], "a number >= 0"),
        (Real(0, 1, closed="left"), [0, 0.99], [1, -0.1], "a number in [0, 1)"),
        (Options("a", "b"), ["a", "b"], ["c", None, 1], "'a' or 'b'"),
        (
            Options(True, False, "auto"),
            [True, False, "auto"],
            [1, 0, "yes"],
            "True, False or 'auto'",
        ),
    ],
)
def test_constraints_accept_refuse_and_describe(constraint, good, bad, words):
    for value in good:
        assert check_value("p", value, constraint) is value
    for value in bad:
        with pytest.raises(
            ValueError, match=rf"^`p` must be {_re(words)}, got {_re(repr(value))}\.$"
        ):
            check_value("p", value, constraint)


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_check_params_reads_the_class_constraints():
    class Model:
        _constraints: ClassVar[dict] = {"k": Integer(low=1), "mode": Options("x", "y")}

        def __init__(self, k=1, mode="x"):
            self.k, self.mode = k, mode

    check_params(Model())
    with pytest.raises(ValueError, match="`mode` must be 'x' or 'y', got 'z'"):
        check_params(Model(mode="z"))


@pytest.mark.parametrize("cls", sorted({f().__class__ for f in BASELINES.values()}, key=str))
def test_baselines_refuse_bad_cells_and_share_key_docs(cls, sim):
    doc = inspect.getdoc(cls)
    assert "{doc_" not in doc
    assert "Left at its default, the key" in " ".join(doc.split())
    if "cells" in cls().get_params():
        with pytest.raises(ValueError, match="`cells` must be 'profile' or 'controls', got 'x'"):
            cls(cells="x").fit(sim)


def test_no_placeholder_left_in_public_docstrings():
    for name in sktx.__all__:
        obj = getattr(sktx, name)
        assert "{doc_" not in (inspect.getdoc(obj) or ""), name


def test_unknown_fragment_is_named():
    with pytest.raises(KeyError, match="doc_nope"):
        _docs.fill("    {doc_nope}")
