"""`import sktx` is light: submodules and estimators load on first attribute access.

The checks that need a fresh interpreter run one subprocess (`sys.executable -c`),
shared by the tests below.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sktx

ROOT = Path(__file__).resolve().parents[1]

# Modules that `import sktx` alone must not load.
HEAVY = ["torch", "sktx.nn", "sktx.regressor", "sktx.datasets", "sktx.metrics", "sktx.baselines"]

SCRIPT = f"""
import json, sys
import sktx
loaded = [m for m in {HEAVY!r} if m in sys.modules]
make = sktx.datasets.make_perturbseq
scorer = sktx.metrics.get_scorer
baselines = sktx.baselines
print(json.dumps({{
    "loaded_by_import": loaded,
    "make_perturbseq": make.__module__ + "." + make.__name__,
    "get_scorer_callable": callable(scorer),
    "baselines": baselines.__name__,
    "same_module": sktx.datasets is sys.modules["sktx.datasets"],
}}))
"""


@pytest.fixture(scope="module")
def fresh():
    """What a fresh interpreter saw: modules loaded by `import sktx`, then the attributes."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_sktx_does_not_import_torch(fresh):
    assert "torch" not in fresh["loaded_by_import"]


def test_import_sktx_loads_no_submodule_eagerly(fresh):
    assert fresh["loaded_by_import"] == []


def test_submodules_are_attributes_after_import_sktx(fresh):
    assert fresh["make_perturbseq"] == "sktx.datasets._simulate.make_perturbseq"
    assert fresh["get_scorer_callable"] is True
    assert fresh["baselines"] == "sktx.baselines"
    assert fresh["same_module"] is True


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="module 'sktx' has no attribute 'not_a_module'"):
        sktx.not_a_module  # noqa: B018


def test_dir_lists_submodules_and_the_data_layer():
    names = dir(sktx)
    for name in ("datasets", "metrics", "baselines", "data", "prepare", "PerturbationData"):
        assert name in names


def test_data_layer_is_exported_at_top_level():
    data = importlib.import_module("sktx.data")
    assert sktx.prepare is data.prepare
    assert sktx.PerturbationData is data.PerturbationData
    assert sktx.DataContractError is data.DataContractError
    assert sktx.MeanBaseline is importlib.import_module("sktx.baselines").MeanBaseline
