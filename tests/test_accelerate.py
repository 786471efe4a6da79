"""AcceleratedPerturbationRegressor: one process against the plain model, two CPU processes."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

# pytest puts tests/ on sys.path (no __init__.py): the runner's settings are shared
from _accelerate_runner import DATA, PARAMS, query
from accelerate import Accelerator
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from sktx.accelerate import AcceleratedPerturbationRegressor
from sktx.data import CellGroups, SetSampler
from sktx.datasets import make_perturbseq
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("_accelerate_runner.py")
FAST = {**PARAMS, "max_epochs": 2}


@pytest.fixture(scope="module")
def data():
    adata = make_perturbseq(**DATA)
    return adata, query(adata)


@pytest.fixture(scope="module")
def plain(data):
    adata, q = data
    model = PerturbationRegressor(**FAST).fit(adata)
    return model, model.predict(q).X


@pytest.fixture(scope="module")
def accelerated(data):
    adata, q = data
    model = AcceleratedPerturbationRegressor(accelerator=Accelerator(cpu=True), **FAST).fit(adata)
    return model, model.predict(q).X


@pytest.fixture
def bf16_accelerator():
    """An ``Accelerator(mixed_precision="bf16")``; accelerate keeps one state per process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield Accelerator(cpu=True, mixed_precision="bf16")
    AcceleratorState._reset_state(reset_partial_state=True)
    Accelerator(cpu=True)  # back to the fp32 state the other tests' accelerators share


def test_one_process_matches_plain_model(plain, accelerated):
    (p_model, p_pred), (a_model, a_pred) = plain, accelerated
    # same seed, same sets, same steps: only float rounding of the two code paths differs
    np.testing.assert_allclose(a_pred, p_pred, atol=1e-5)
    np.testing.assert_allclose(
        a_model.history[:, "train_loss"], p_model.history[:, "train_loss"], rtol=1e-5
    )
    assert a_model.device is None and a_model.precision_ == "32"
    assert type(a_model.module_).__name__ == "GeneTokenModel"  # unwrapped after fit


def test_clone_shares_accelerator_and_refits_the_same(data, accelerated):
    adata, q = data
    model, pred = accelerated
    twin = clone(model)
    assert twin.accelerator is model.accelerator  # Accelerator.__deepcopy__ returns itself
    assert not hasattr(twin, "module_")
    np.testing.assert_allclose(twin.fit(adata).predict(q).X, pred, atol=1e-6)


def test_pickle_round_trip_predicts_and_trains_again(data, accelerated):
    adata, q = data
    model, pred = accelerated
    back = pickle.loads(pickle.dumps(model))
    assert back.device is None  # skorch would set "cpu", which the mixin rejects in fit
    assert back.accelerator is None  # accelerate's state cannot move between processes
    np.testing.assert_array_equal(back.predict(q).X, pred)
    with pytest.raises(ValueError, match="set_params"):
        back.fit(adata)
    back.set_params(accelerator=Accelerator(cpu=True), max_epochs=1).fit(adata)
    assert len(back.history) == 1  # one epoch of its one network (crossfit=0)


@pytest.mark.parametrize("reset_optimizer", [False, True])
def test_progressive_fit_matches_plain_model(data, reset_optimizer):
    adata, q = data
    fits = []
    for model in (
        PerturbationRegressor(**FAST),
        AcceleratedPerturbationRegressor(accelerator=Accelerator(cpu=True), **FAST),
    ):
        pipe = Pipeline([("select", GeneSelector()), ("model", model)])
        prog = ProgressiveFit(
            pipe, phases=(30, 60), epochs_per_phase=1, reset_optimizer=reset_optimizer
        )
        fits.append(prog.fit(adata))
    plain, accel = fits
    opt = accel.estimator_[-1].optimizer_
    assert type(opt).__name__ == "AcceleratedOptimizer"  # re-prepared after a reset too
    np.testing.assert_allclose(accel.predict(q).X, plain.predict(q).X, atol=1e-5)


def test_mixed_precision_comes_from_the_accelerator(data, accelerated, bf16_accelerator):
    adata, q = data
    model = AcceleratedPerturbationRegressor(accelerator=bf16_accelerator, **FAST).fit(adata)
    loss = np.array(model.history[:, "train_loss"])
    assert np.isfinite(loss).all()
    # bf16 autocast in training changes the weights, so predictions move a little
    diff = np.abs(model.predict(q).X - accelerated[1]).max()
    assert 0 < diff < 0.5


def test_own_precision_is_rejected(data, bf16_accelerator):
    adata, _ = data
    model = AcceleratedPerturbationRegressor(accelerator=bf16_accelerator, precision="bf16")
    with pytest.raises(ValueError, match="both ask for mixed precision"):
        model.fit(adata)


def test_own_precision_needs_the_accelerator(data):
    adata, _ = data
    model = AcceleratedPerturbationRegressor(accelerator=Accelerator(cpu=True), precision="16")
    with pytest.raises(ValueError, match="set mixed precision on the accelerator instead"):
        model.fit(adata)


@pytest.mark.parametrize("verbose", [0, 1])
def test_verbose_decides_printing(data, capsys, verbose):
    adata, _ = data
    AcceleratedPerturbationRegressor(
        accelerator=Accelerator(cpu=True), verbose=verbose, **{**FAST, "max_epochs": 1}
    ).fit(adata)
    # skorch's PrintLog ignores verbose for any sink but `print`
    assert ("train_loss" in capsys.readouterr().out) == bool(verbose)


def test_set_sampler_shards_partition_the_plan():
    X = sp.random(90, 5, density=0.5, format="csr", dtype=np.float32, random_state=0)
    labels = np.array(["c"] * 30 + ["a"] * 35 + ["b"] * 25)
    groups = CellGroups.from_labels(labels, labels == "c", np.full(90, "x"))
    kw = dict(set_size=4, batch_size=2, with_cells=False)

    def plans(count):
        out = []
        for index in range(count):
            s = SetSampler(
                X, groups, [0, 1], rng=np.random.RandomState(3), shard=(index, count), **kw
            )
            out.append([(g, tuple(b), tuple(p)) for g, b, p in s._draw_plan()])
        return out

    (full,) = plans(1)
    shards = plans(3)
    assert len(full) == 15
    assert {len(s) for s in shards} == {5}  # equal batch counts on every process
    assert sorted(s for shard in shards for s in shard) == sorted(full)
    shards = plans(4)  # 15 sets -> padded to 16 by repeating the first set
    assert {len(s) for s in shards} == {4}
    assert sorted(s for shard in shards for s in shard) == sorted([*full, full[0]])
    with pytest.raises(ValueError, match="shard"):
        SetSampler(X, groups, [0], rng=np.random.RandomState(0), shard=(2, 2), **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes(tmp_path, data):
    """Two gloo processes: ranks stay in sync and match one process with twice the batch."""
    adata, q = data
    # `accelerate launch --cpu --num_processes 2` starts ONE process (multi-CPU needs mpirun);
    # --multi_gpu goes through torch.distributed.run and, with Accelerator(cpu=True), gloo
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "--main_process_ip=127.0.0.1",
        f"--main_process_port={_free_port()}",
        str(RUNNER),
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (np.load(tmp_path / f"rank{i}.npz") for i in (0, 1))
    assert int(r0["num_processes"]) == 2
    # DDP averaged the gradients: bit-identical weights, predictions and (reduced) history
    for key in ("params", "pred", "train_loss", "valid_loss", "train_batches"):
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)
    # only the main process writes
    assert (tmp_path / "params_rank0.pt").exists()
    assert not (tmp_path / "params_rank1.pt").exists()

    # one process with batch_size x 2 sees the same sets per step (rank r takes sets
    # r::2 of the same plan), so it ends close, not equal: id-dropout masks are drawn
    # per process and the gradient sums round differently
    ref = PerturbationRegressor(**{**PARAMS, "batch_size": 2 * PARAMS["batch_size"]}).fit(adata)
    ref.partial_fit(adata, epochs=1)
    np.testing.assert_array_equal(r0["train_batches"], ref.history[:, "train_batch_count"])
    np.testing.assert_allclose(r0["train_loss"], ref.history[:, "train_loss"], atol=1e-4)
    np.testing.assert_allclose(r0["pred"], ref.predict(q).X, atol=2e-3)
