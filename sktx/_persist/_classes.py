"""Class names in model files and the allow-list they are resolved through."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

_TORCH_DTYPES = {"f4", "f8", "f2", "i1", "i2", "i4", "i8", "u1", "b1", "c8", "c16"}
# Attributes of a skorch net that ``initialize()`` rebuilds from the parameters.
_SKORCH_REBUILT = {
    "module_",
    "criterion_",
    "optimizer_",
    "callbacks_",
    "history_",
    "initialized_",
    "virtual_params_",
    "prefixes_",
    "cuda_dependent_attributes_",
    "init_context_",
}


class ModelFileError(ValueError):
    """A file that is not a readable sktx model file (or one this sktx cannot rebuild)."""


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _root(module: str) -> str:
    return module.split(".")[0]


def _allowed(cls: type, kind: str) -> bool:
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

    root = _root(cls.__module__)
    if kind == "estimator":
        return cls is Pipeline or (root == "sktx" and issubclass(cls, BaseEstimator))
    if kind == "callback":
        from skorch.callbacks import Callback

        return root in ("sktx", "skorch") and issubclass(cls, Callback)
    if kind == "dataclass":
        return root == "sktx" and dataclasses.is_dataclass(cls)
    # "type": a class passed as a parameter (module=, criterion=, optimizer=, dataset=, ...)
    import torch

    bases = (torch.nn.Module, torch.optim.Optimizer, torch.utils.data.Dataset)
    bases += (torch.utils.data.DataLoader,)
    if not issubclass(cls, bases):
        return False
    return root in ("sktx", "skorch") or cls.__module__.startswith(
        ("torch.nn.modules.", "torch.optim.", "torch.utils.data.")
    )


def _resolve(name: str, *kinds: str) -> type:
    module, _, qual = str(name).partition(":")
    if _root(module) not in ("sktx", "sklearn", "skorch", "torch") or not qual:
        raise ModelFileError(f"names {name!r}, which is not an sktx, scikit-learn or torch class")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ModelFileError(
            f"names {name!r}, which this installation does not have (written by another "
            "version of sktx?)"
        ) from None
    if not isinstance(obj, type) or not any(_allowed(obj, kind) for kind in kinds):
        raise ModelFileError(
            f"names {name!r}, which is not allowed as a {' or '.join(kinds)} in a model file"
        )
    return obj


def _accepted(cls: type) -> set[str]:
    """Constructor parameters of ``cls`` (a skorch net also takes its base's and ``x__y``)."""
    from skorch import NeuralNet

    if not issubclass(cls, NeuralNet):
        return set(cls._get_param_names())
    names = set()
    for c in (cls, NeuralNet):
        sig = inspect.signature(c.__init__).parameters.values()
        names |= {p.name for p in sig if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"self"}
