"""Model files cannot run code: crafted pickles and torch archives are refused without
executing anything, only allow-listed sktx classes are rebuilt, and every estimator the
command line saves round-trips bit-identically (sktx._persist)."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sktx import _persist
from sktx.baselines import BASELINES
from sktx.cli import app
from sktx.datasets import make_perturbseq
from sktx.model_selection import make_query

runner = CliRunner()


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def sim():
    return make_perturbseq(n_cells=300, n_genes=40, n_perturbations=5, random_state=0)


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def _crafted(kind: str, marker) -> bytes:
    if kind == "pickle":
        return pickle.dumps(_Payload(str(marker)))
    # a torch archive whose data.pkl runs code when unpickled without weights_only
    import io

    buf = io.BytesIO()
    torch.save({"format": "sktx-model", "x": _Payload(str(marker))}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["pickle", "torch-archive"])
def test_crafted_model_file_does_not_execute_on_predict(tmp_path, kind, sim):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.sktx").write_bytes(_crafted(kind, marker))
    query = tmp_path / "q.h5ad"
    make_query(sim, random_state=0).write_h5ad(query)
    result = runner.invoke(
        app, ["predict", "--model", str(run), "--query", str(query), "--out", str(tmp_path / "p")]
    )
    _one_line_error(result, "model.sktx")
    assert not marker.exists(), "loading the model file ran code"


@pytest.mark.parametrize("kind", ["pickle", "torch-archive"])
def test_crafted_checkpoint_does_not_execute_on_resume(tmp_path, kind, sim):
    marker = tmp_path / "pwned"
    data = tmp_path / "sim.h5ad"
    sim.write_h5ad(data)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.sktx").write_bytes(_crafted(kind, marker))
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(run), "--resume"])
    _one_line_error(result, "checkpoint.sktx")
    assert not marker.exists(), "loading the checkpoint ran code"


def test_old_pickle_model_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"an": "estimator"}))
    with pytest.raises(_persist.ModelFileError, match=r"pickle.*cannot run code"):
        _persist.load(path)


def _manifest_file(tmp_path, tree, **extra):
    manifest = {"format": "sktx-model", "format_version": 1, "versions": {}, "meta": {}}
    manifest.update(extra)
    manifest["estimator"] = tree
    path = tmp_path / "m.sktx"
    torch.save({"format": "sktx-model", "manifest": json.dumps(manifest), "tensors": {}}, path)
    return path


@pytest.mark.parametrize(
    "name",
    [
        "os:system",  # not a class, not our package
        "subprocess:Popen",
        "builtins:eval",
        "sklearn.linear_model:Ridge",  # a real estimator, but not an allowed one
        "torch.package:PackageImporter",
    ],
)
def test_foreign_class_names_are_refused(tmp_path, name):
    tree = {"$": "estimator", "cls": name, "params": {}, "fitted": {}}
    with pytest.raises(_persist.ModelFileError, match="names"):
        _persist.load(_manifest_file(tmp_path, tree))


def test_module_parameter_must_be_a_torch_or_sktx_class(tmp_path, sim):
    # a crafted `module=` type would be instantiated by initialize(): only modules allowed
    est = BASELINES["mean"]()
    path = _persist.save(est, tmp_path / "m.sktx")
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    manifest["estimator"]["params"]["cells"] = {
        "$": "type",
        "name": "torch.package:PackageImporter",
    }
    path2 = _manifest_file(tmp_path, manifest["estimator"])
    with pytest.raises(_persist.ModelFileError, match="not allowed"):
        _persist.load(path2)


def test_newer_format_and_unknown_parameters_are_refused(tmp_path):
    tree = {
        "$": "estimator",
        "cls": "sktx.baselines._mean:MeanBaseline",
        "params": {"no_such_param": 1},
        "fitted": {},
    }
    with pytest.raises(_persist.ModelFileError, match="no_such_param"):
        _persist.load(_manifest_file(tmp_path, tree))
    tree["params"] = {}
    with pytest.raises(_persist.ModelFileError, match="newer sktx"):
        _persist.load(_manifest_file(tmp_path, tree, format_version=99))


def test_versions_are_recorded_and_a_different_version_warns(tmp_path, sim):
    est = BASELINES["mean"]().fit(sim)
    path = _persist.save(est, tmp_path / "m.sktx")
    versions = _persist.read_manifest(path)["versions"]
    assert {"sktx", "torch", "skorch"} <= set(versions)
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _persist.load(path)  # same versions: silent
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    manifest["versions"]["sktx"] = "0.0.1"
    payload["manifest"] = json.dumps(manifest)
    torch.save(payload, path)
    with pytest.warns(UserWarning, match=r"sktx 0\.0\.1"):
        _persist.load(path)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_round_trip_bit_identical(tmp_path, sim, name):
    est = BASELINES[name]().fit(sim)
    query = make_query(sim, random_state=0)
    loaded, _ = _persist.load(_persist.save(est, tmp_path / f"{name}.sktx"))
    assert type(loaded) is type(est)
    a, b = est.predict(query).X, loaded.predict(query).X
    a = a.toarray() if hasattr(a, "toarray") else a
    b = b.toarray() if hasattr(b, "toarray") else b
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("strategy", ["standard", "progressive"])
def test_cli_estimators_round_trip_bit_identical(tmp_path, sim, strategy):
    from sktx.cli._estimator import _build_estimator
    from sktx.cli._runner import TrainConfig

    cfg = TrainConfig(data="demo", out=str(tmp_path), genes=30, epochs=1, strategy=strategy)
    cfg.phases = [15, 30] if strategy == "progressive" else None
    est = _build_estimator(cfg, True)
    est.set_params(
        **(
            {"estimator__model__d_model": 16}
            if strategy == "progressive"
            else {"model__d_model": 16}
        )
    )
    est.fit(sim)
    loaded, manifest = _persist.load(_persist.save(est, tmp_path / "m.sktx", meta={"k": [1]}))
    assert manifest["meta"] == {"k": [1]}
    query = make_query(sim, random_state=0)
    np.testing.assert_array_equal(est.predict(query).X, loaded.predict(query).X)
    net, net2 = (getattr(e, "estimator_", e).steps[-1][1] for e in (est, loaded))
    assert len(net2.history) == len(net.history)
    for k, v in net.optimizer_.state_dict()["state"].items():
        torch.testing.assert_close(
            v["exp_avg"], net2.optimizer_.state_dict()["state"][k]["exp_avg"]
        )
    assert asdict(cfg.keys)["perturbation_key"] == net2.perturbation_key


def test_unsaveable_objects_are_named(tmp_path):
    from sktx.baselines import MeanBaseline

    est = MeanBaseline()
    est.weird_ = object()
    with pytest.raises(TypeError, match=r"MeanBaseline\.weird_"):
        _persist.save(est, tmp_path / "m.sktx")
    assert not list(tmp_path.iterdir()), "a failed save left a file behind"
