"""Training throughput and time to a validation loss: sktx and Arc State side by side.

Same cells, same machine, same run, interleaved (sktx first or State first alternates):

* Norman K562 (500 genes) and Datlinger Jurkat (2,000 genes) from ``../shared/data``;
* simulated screens (``make_perturbseq``, 4,000 cells, 40 perturbations) at 5,000
  and 18,080 genes.

20 % of the cells of every perturbation (and of the controls) are held out
(``_convergence.py``). For each system and dataset a fresh subprocess trains on
the other cells in steps of 8 sets of 64 cells (torch threads = ``--threads``)
for ``--budget`` seconds of clock (setup included, evaluations excluded),
evaluating the validation measure of ``_convergence.py`` on a geometric
schedule. It reports per-step wall times, FLOPs per step
(``torch.utils.flop_counter.FlopCounterMode``, forward + backward + optimizer
step of one step after the budget), the validation curve (clock s, MSE), and
from them sets/s, cells/s, FLOPs per cell, the share of the machine's matmul
peak (``torch.mm`` 4096 x 4096 fp32 and 1024 x 1024 bf16, measured in the same
run before and after the rounds) and each system's time to a target MSE.

What a "cell" is differs: State runs every one of the 64 perturbed cells of a set
through its transformer (one token per cell); sktx's network runs once per set on
G gene tokens (the set mean), so its cells/s is sets/s x 64.

State (arc-state, CC BY-NC-SA 4.0) is an external comparison only: the benchmark
creates its own venv outside the repo (``--state-venv``, default
``/work/state_venv``: ``python3 -m venv``; ``pip install torch==2.13.0 arc-state``)
and runs ``benchmarks/_state_driver.py`` there in a subprocess. sktx never imports it.

    python benchmarks/bench_throughput.py              # ~30 min on 2 quiet cores
    python benchmarks/bench_throughput.py --quick      # 500 and 2,000 genes
    python benchmarks/bench_throughput.py --genes 500 --budget 30 --results-dir /tmp/t
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import SHARED, write_result  # noqa: E402
from _convergence import (  # noqa: E402
    N_QUERY,
    TARGET_FRACTION,
    VALID_FRACTION,
    eval_spec,
    next_eval,
    pseudobulk_mse,
    split_cells,
    target_level,
    time_to_target,
)

SET_SIZE, BATCH = 64, 8
BUDGET_S, GROWTH = 120.0, 1.25  # training-clock seconds per system and dataset; eval spacing
N_SIM_CELLS, N_SIM_PERTS = 4000, 40
# (name, genes, source): source is a shared file + prepare() keys, or "sim"
DATASETS = [
    (
        "Norman K562 (shared)",
        500,
        ("norman2019_mcfaline2023_devel.h5ad", "perturbation", "control", "cell_type"),
    ),
    (
        "Datlinger Jurkat (shared)",
        2000,
        ("datlinger2017_jurkat.h5ad", "target_gene", "control", None),
    ),
    ("simulated", 5000, "sim"),
    ("simulated", 18080, "sim"),
]


# --------------------------------------------------------------------------- workers
def sktx_worker(
    path: str, keys: dict, npz: str, threads: int, budget: float, growth: float
) -> dict:
    """PerturbationRegressor.fit for ``budget`` training-clock seconds, scored as it trains.

    Per step wall times come from a callback (on_batch_end to on_batch_end: a step
    including the assembly of its set batch), the validation curve from
    :mod:`_convergence` evaluations in the same callback (their time is taken out of
    the clock and out of the step times); FLOPs from one more step after the budget.
    """
    import anndata as ad
    from skorch.callbacks import Callback
    from torch.utils.flop_counter import FlopCounterMode

    import sktx
    from sktx.regressor import PerturbationRegressor

    spec = dict(np.load(npz))
    adata = ad.read_h5ad(path)
    train = adata[~spec["valid"]].copy()
    # the queries, prepared once outside the clock: held-out controls relabelled per group
    data = sktx.prepare(adata, **keys)
    if data.n_obs != adata.n_obs:
        raise RuntimeError("prepare() changed the number of cells; the split would not match")
    names = spec["label_names"].astype(str)
    chunks = []
    for s in range(0, len(spec["eval_label"]), BATCH):
        q = spec["eval_query"][s : s + BATCH]
        labels = np.repeat(names[spec["eval_label"][s : s + BATCH]], q.shape[1])
        chunks.append((data[q.ravel()].relabel(labels), q.shape))
    observed = spec["eval_observed"]

    def evaluate(model) -> float:
        pred = []
        for query, (n_groups, n_cells) in chunks:
            cells = np.asarray(model.predict(query).X)
            pred.append(cells.reshape(n_groups, n_cells, -1).mean(1))
        return pseudobulk_mse(np.concatenate(pred), observed)

    class Trainer(Callback):
        t0 = 0.0  # set just before `fit` (skorch re-initialises callbacks inside it)

        def initialize(self):
            self.paused, self.next = 0.0, 0.0
            self.ends, self.evals, self.curve = [], [], []
            self.flops, self._fc, self._done = None, None, False
            return self

        def clock(self) -> float:
            return time.perf_counter() - self.t0 - self.paused

        def _evaluate(self, net) -> float:
            start = time.perf_counter()
            mse = evaluate(net)
            net.module_.train()
            pause = time.perf_counter() - start
            self.paused += pause
            self.curve.append((self.clock(), mse))
            self.next = next_eval(self.clock(), growth, budget / 40)
            return pause

        def on_train_begin(self, net, **kw):
            self._evaluate(net)  # the untrained model: sktx's baseline, after setup

        def on_batch_begin(self, net, batch=None, training=None, **kw):
            if training and self._done:  # FLOPs of one step after the budget, off the clock
                self._fc = FlopCounterMode(display=False)
                self._fc.__enter__()

        def on_batch_end(self, net, batch=None, training=None, **kw):
            if not training:
                return
            if self._fc is not None:
                self._fc.__exit__(None, None, None)
                self.flops = self._fc.get_total_flops()
                raise KeyboardInterrupt  # skorch's way to end training
            self.ends.append(time.perf_counter())
            pause = 0.0
            if self.clock() >= self.next or self.clock() >= budget:
                pause = self._evaluate(net)
            self.evals.append(pause)
            self._done = self.clock() >= budget

    trainer = Trainer()
    model = PerturbationRegressor(
        **keys,
        max_epochs=100_000,  # ended by the time budget
        validation_fraction=0.0,
        crossfit=0,  # one network: the training step's speed, not the out-of-fold fits
        n_jobs=threads,
        random_state=0,
        callbacks=[("trainer", trainer)],
        callbacks__progress=None,
    )
    Trainer.t0 = time.perf_counter()
    model.fit(train)
    ends, pauses = np.array(trainer.ends), np.array(trainer.evals)
    # end-to-end intervals time steps 1, 2, ... (step 0, the warm-up, has no start),
    # the pause of an evaluation after the previous step taken out
    steps = list(np.diff(ends) - pauses[:-1])
    sets = model.history_[:, "batches", :, "train_batch_size"]
    # every budgeted step (the last batch recorded is the FLOP step after the budget)
    sets = [s for epoch in sets for s in epoch][:-1]
    cells = [c for epoch in model.history_[:, "batches", :, "n_cells"] for c in epoch][:-1]
    return {
        "step_s": steps,
        "flops_per_step": trainer.flops,
        "sets_per_step": float(np.mean(sets)),
        "cells_per_step": float(np.mean(cells)),
        "counted_cells_per_step": float(np.mean(sets)) * SET_SIZE,
        "n_steps": len(ends),
        "curve": trainer.curve,
        "eval_s": trainer.paused,
        "n_params": sum(p.numel() for p in model.module_.parameters()),
        "precision": model.precision_,
    }


def peak_worker(threads: int, bf16: bool) -> dict:
    """GFLOP/s of torch.mm: 4096 x 4096 fp32 (median of 3); bf16 1024 x 1024 (median of 3).

    bf16 at 1024: without native bf16 (AVX2) a 4096 x 4096 bf16 product did not finish
    within 10 minutes on this shared machine.
    """
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, dtype, n in (("fp32", torch.float32, 4096), ("bf16", torch.bfloat16, 1024)):
        if name == "bf16" and not bf16:
            continue
        a = torch.randn(n, n).to(dtype)
        torch.mm(a, a)
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            torch.mm(a, a)
            ts.append(time.perf_counter() - t)
        out[name] = 2 * n**3 / float(np.median(ts)) / 1e9
    return out


# --------------------------------------------------------------------------- driver
def _run(cmd: list[str], timeout: float = 1800) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_avg_1min": load}


def ensure_state_venv(venv: Path) -> Path:
    """State's own venv outside the repo (torch pinned to the project's 2.13.0)."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "torch==2.13.0", "arc-state"]
        subprocess.run(pip, check=True)
    return py


def prepare_inputs(folder: Path, genes: int, source) -> tuple[str, dict, str]:
    """An h5ad for sktx and an npz for both (State's input, the split and the validation data).

    The npz holds the log1p matrix (``X``), integer labels and cell types, the
    held-out mask (``valid``, :func:`_convergence.split_cells`) and the validation
    groups, queries and observed pseudobulks (:func:`_convergence.eval_spec`),
    all from ``sktx.prepare`` of the same file: same cells, same values.
    """
    import anndata as ad

    import sktx

    if source == "sim":
        from sktx.datasets import make_perturbseq

        adata = make_perturbseq(
            n_cells=N_SIM_CELLS, n_genes=genes, n_perturbations=N_SIM_PERTS, random_state=0
        )
        adata.uns.pop("simulation", None)  # ground truth: too large for an h5 header
        keys = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
        keys["cell_type_key"] = None  # one cell type: make_perturbseq writes no column
        path = folder / f"sim_{genes}.h5ad"
        adata.write_h5ad(path)
    else:
        fname, pkey, ctrl, ckey = source
        path = SHARED / "data" / fname  # read at run time, never copied
        adata = ad.read_h5ad(path)
        keys = {"perturbation_key": pkey, "control_label": ctrl, "cell_type_key": ckey}
    data = sktx.prepare(adata, **keys)
    X = data.X.toarray() if hasattr(data.X, "toarray") else np.asarray(data.X)
    labels = np.asarray(data.labels).astype(str)
    uniq = np.unique(labels)
    if data.cell_types is None:
        ct_names = np.array([""])
        cts = np.zeros(len(labels), dtype=np.int64)
    else:
        ct_names, cts = np.unique(np.asarray(data.cell_types).astype(str), return_inverse=True)
    label = np.searchsorted(uniq, labels)
    control = int(np.searchsorted(uniq, data.control_label))
    valid = split_cells(label, cts)
    npz = folder / f"state_{genes}.npz"
    np.savez(
        npz,
        X=X.astype(np.float32),
        label=label,
        ct=cts,
        control=control,
        valid=valid,
        label_names=uniq,
        ct_names=ct_names,
        **eval_spec(X, label, cts, control, valid),
    )
    return str(path), keys, str(npz)


def summarise(res: dict, peak_fp32: float) -> dict:
    step = float(np.median(res["step_s"]))
    cells = res.get("counted_cells_per_step", res["cells_per_step"])
    return {
        "sets_per_s": res["sets_per_step"] / step,
        "cells_per_s": cells / step,
        "mflop_per_cell": res["flops_per_step"] / cells / 1e6,
        "gflop_per_s": res["flops_per_step"] / step / 1e9,
        "share_of_fp32_peak": res["flops_per_step"] / step / 1e9 / peak_fp32,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sktx-worker", nargs=3, metavar=("H5AD", "KEYS_JSON", "NPZ"))
    parser.add_argument("--peak-worker", choices=["fp32", "both"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--state-venv", default="/work/state_venv")
    parser.add_argument(
        "--budget", type=float, default=BUDGET_S, help="training-clock seconds per run"
    )
    parser.add_argument(
        "--growth", type=float, default=GROWTH, help="clock ratio between evaluations"
    )
    parser.add_argument("--genes", type=int, nargs="+", help="only these datasets")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only these datasets' rows of the existing results file (a re-run)",
    )
    parser.add_argument(
        "--results-dir", type=Path, help="write throughput.json here (e.g. /tmp for a trial)"
    )
    args = parser.parse_args()
    if args.sktx_worker:
        path, keys, npz = args.sktx_worker
        res = sktx_worker(path, json.loads(keys), npz, args.threads, args.budget, args.growth)
        print(json.dumps(res, default=float))
        return
    if args.peak_worker:
        print(json.dumps(peak_worker(args.threads, args.peak_worker == "both")))
        return

    state_py = ensure_state_venv(Path(args.state_venv))
    datasets = [d for d in DATASETS if not args.quick or d[1] <= 2000]
    datasets = [d for d in datasets if not args.genes or d[1] in args.genes]
    rounds = 1 if args.quick else args.rounds
    me = [sys.executable, __file__, "--threads", str(args.threads)]
    run = ["--budget", str(args.budget), "--growth", str(args.growth)]
    peaks = [_run([*me, "--peak-worker", "both"])]
    print("peak", peaks[-1], flush=True)
    raw: dict = {}
    ctrl_mse: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {g: prepare_inputs(Path(tmp), g, src) for _, g, src in datasets}
        for r in range(rounds):
            for i, (_name, genes, _) in enumerate(datasets):
                path, keys, npz = inputs[genes]
                ctrl_mse[genes] = float(np.load(npz)["ctrl_mse"])
                sk = [*me, "--sktx-worker", path, json.dumps(keys), npz, *run]
                st = [str(state_py), str(HERE / "_state_driver.py"), npz, *run]
                st += ["--threads", str(args.threads)]
                st += ["--batch", str(BATCH), "--set-size", str(SET_SIZE)]
                order = [("sktx", sk), ("state", st)]
                # who goes first alternates between datasets and between rounds
                for system, cmd in order if (r + i) % 2 == 0 else order[::-1]:
                    res = _run(cmd)
                    raw.setdefault(f"{genes}/{system}", []).append(res)
                    skip = ("step_s", "step_cpu_s", "curve")
                    brief = {k: v for k, v in res.items() if k not in skip}
                    print(genes, system, r, brief, flush=True)
                    print("  curve", [(round(t, 1), f"{m:.3g}") for t, m in res.get("curve", [])])
            last = r == rounds - 1
            peaks.append(_run([*me, "--peak-worker", "both" if last else "fp32"]))
            print("peak", peaks[-1], flush=True)

    ok = [p for p in peaks if "error" not in p]
    peak32 = float(np.median([p["fp32"] for p in ok]))
    peak16 = float(np.median([p["bf16"] for p in ok if "bf16" in p]))
    rows, targets = [], {}
    for name, genes, _ in datasets:
        row = [name, genes]
        s = {}
        runs = {}
        for system in ("sktx", "state"):
            runs[system] = [x for x in raw[f"{genes}/{system}"] if "error" not in x]
            if not runs[system] or not any(x["step_s"] for x in runs[system]):
                # a budget shorter than setup + two steps times no step
                s[system] = None
                row += ["error" if not runs[system] else "too few steps"] * 4
                continue
            # every round's steps pooled: the median over all measured steps
            pooled = {**runs[system][0]}
            pooled["step_s"] = [t for x in runs[system] for t in x["step_s"]]
            s[system] = summarise(pooled, peak32)
            row += [
                round(s[system]["sets_per_s"], 2),
                round(s[system]["cells_per_s"]),
                round(s[system]["mflop_per_cell"], 1),
                f"{100 * s[system]['share_of_fp32_peak']:.0f} %",
            ]
        ratio = s["sktx"]["cells_per_s"] / s["state"]["cells_per_s"] if all(s.values()) else None
        row.append(f"{ratio:.2f}x" if ratio else "-")
        targets[genes] = conv = convergence(runs, ctrl_mse[genes], args.budget)
        row += conv["row"]
        rows.append(row)
        print(row, flush=True)
    max_tokens = _sktx_default("max_tokens")
    notes = (
        f"Interleaved in one run ({rounds} round(s); sktx or State first alternates between "
        f"datasets and rounds), torch threads = {args.threads} on 2 cores shared with other "
        "jobs (1-min load average when each subprocess started is in `extra.raw`). Matmul "
        "peak of this run (torch.mm, fp32 4096^2, bf16 1024^2: a 4096^2 bf16 product did "
        "not finish in 10 min on this AVX2 CPU; "
        f"median of {len(ok)} measurements spread over the run): fp32 {peak32:.0f} GFLOP/s, "
        f"bf16 {peak16:.2g} GFLOP/s; '% peak' = FLOPs per step / median step time / fp32 "
        "peak. FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one training step "
        "after the time budget (forward, backward, optimizer; sparse CSR kernels are not "
        "counted, they are <1 % of sktx's FLOPs). Each system trains for "
        f"{args.budget:.0f} s of clock per dataset (below) on the training cells; its "
        "sets/s and cells/s come from the median step of that run (the first step, a "
        "warm-up, excluded; steps include assembling the batch). "
        f"sktx: PerturbationRegressor defaults (d_model 64, 2 layers, 4 heads, K=16 "
        f"neighbours, max_tokens {max_tokens}, sets of {SET_SIZE}, {BATCH} sets per step, "
        "precision 'auto'), `fit` with crossfit=0, validation_fraction=0, ended by the "
        "budget. A sktx 'cell' = one of the 64 cells of a set (cells/s = sets/s x 64): the "
        "network runs once per set mean on G gene tokens. "
        f"State: arc-state 0.11.1 StateTransitionPerturbationModel, llama backbone, hidden "
        f"256, 4 layers, 4 heads, sets of {SET_SIZE}, {BATCH} sets per step, energy loss, "
        "Adam (lr 3e-4, its default), fp32, one-hot perturbations, random control pairing. "
        "A State 'cell' = one perturbed cell = one transformer token. "
        f"Validation: {100 * VALID_FRACTION:.0f} % of the cells of every (perturbation, "
        "cell type) group and of every cell type's controls, drawn once (seed 0), are held "
        "out; neither system trains on them. Measure (benchmarks/_convergence.py, the same "
        "code scores both): MSE over all genes and groups between the observed held-out "
        "pseudobulk (mean log1p) of each perturbation and the mean of the cells each "
        f"system predicts from the same {N_QUERY} held-out control cells of that cell type "
        "relabelled to the perturbation (sktx: `predict`; State: its forward on one set "
        "with the perturbation's one-hot). 'ctrl-mean MSE' = the error of predicting the "
        "training controls' mean (no change) for every group. Clock: seconds from the "
        "start of setup (sktx: the `fit` call, so its data checks, normalisation, PCA, "
        "gene graph and additive baseline count; State: building the model from the "
        "in-memory log1p matrix) with evaluation pauses taken out; evaluations at the "
        f"end of setup and then every x{args.growth:g} of the clock (at least "
        f"{args.budget / 40:.1f} s apart) and at the budget. Target rule: "
        f"{TARGET_FRACTION:g} of the way from the ctrl-mean MSE to the better system's best "
        "MSE within the budget (when neither beats the ctrl-mean MSE: the worse system's "
        "best); 's to target' = clock at the first evaluation at or below it (an upper "
        f"bound, resolved to x{args.growth:g}), '> budget (not reached)' when no evaluation "
        "within the budget reached it; 'best / ctrl-mean' = each system's best MSE over "
        "the ctrl-mean MSE (< 1 beats predicting no change). sktx starts from its "
        "additive per-perturbation baseline, fitted in setup (its network's residual "
        "head starts at zero), so on held-out cells of trained "
        "perturbations its first evaluation is already close to its best; State "
        "starts from random weights. Simulated data: `make_perturbseq`, "
        f"{N_SIM_CELLS} cells, {N_SIM_PERTS} perturbations. The 299-gene THP-1 screen "
        "quoted in issue 17 is not in ../shared/data and was not run."
    )
    extra = {
        "peaks_gflops": peaks,
        "raw": raw,
        "threads": args.threads,
        "budget_s": args.budget,
        "growth": args.growth,
        "max_tokens": max_tokens,
        "convergence": {g: {k: v for k, v in t.items() if k != "row"} for g, t in targets.items()},
    }
    if args.results_dir:
        import _common

        _common.RESULTS = args.results_dir
    if args.merge:
        rows, notes, extra = _merge(rows, notes, extra, [g for _, g, _ in datasets])
    path = write_result(
        "throughput",
        title="Training throughput and time to a validation loss: sktx and Arc State side by "
        "side, 500-18,080 genes",
        columns=COLUMNS,
        rows=rows,
        notes=notes,
        extra=extra,
    )
    print(f"wrote {path}")


COLUMNS = [
    "data",
    "genes",
    "sktx sets/s",
    "sktx cells/s",
    "sktx MFLOP/cell",
    "sktx % peak",
    "State sets/s",
    "State cells/s",
    "State MFLOP/cell",
    "State % peak",
    "sktx/State cells/s",
    "target / ctrl-mean MSE",
    "sktx best / ctrl-mean",
    "State best / ctrl-mean",
    "sktx s to target",
    "State s to target",
    "State/sktx s to target",
]


def convergence(runs: dict, ctrl_mse: float, budget: float) -> dict:
    """Target, best MSEs, times to target and the table cells of one dataset.

    Per round (sktx and State runs paired in order) the target is
    :func:`_convergence.target_level`; the cells are medians over rounds, a time
    not reached within the budget counting as infinite (shown as ``> budget``).
    """
    pairs = list(zip(runs["sktx"], runs["state"], strict=False))
    if not pairs:
        return {"row": ["-"] * len(COLUMNS[11:])}
    per_round = []
    for sk, st in pairs:
        best = [min(m for _, m in x["curve"]) for x in (sk, st)]
        target = target_level(ctrl_mse, best)
        times = [time_to_target(x["curve"], target) for x in (sk, st)]
        per_round.append(
            {
                "target": target,
                "sktx_best": best[0],
                "state_best": best[1],
                "sktx_s": math.inf if times[0] is None else times[0],
                "state_s": math.inf if times[1] is None else times[1],
            }
        )
    med = {k: float(np.median([p[k] for p in per_round])) for k in per_round[0]}

    def secs(t: float) -> str | float:
        return round(t, 1) if math.isfinite(t) else f"> {budget:.0f} (not reached)"

    if math.isfinite(med["sktx_s"]) and math.isfinite(med["state_s"]):
        ratio = f"{med['state_s'] / med['sktx_s']:.2f}x"
    elif math.isfinite(med["sktx_s"]):
        ratio = f"> {budget / med['sktx_s']:.1f}x"
    elif math.isfinite(med["state_s"]):
        ratio = f"< {med['state_s'] / budget:.2f}x"
    else:
        ratio = "-"
    return {
        "ctrl_mse": ctrl_mse,
        "rounds": per_round,
        "row": [
            round(med["target"] / ctrl_mse, 3),
            round(med["sktx_best"] / ctrl_mse, 3),
            round(med["state_best"] / ctrl_mse, 3),
            secs(med["sktx_s"]),
            secs(med["state_s"]),
            ratio,
        ],
    }


def _sktx_default(name: str):
    """A PerturbationRegressor default recorded in the notes (``None``: no such parameter)."""
    from sktx.regressor import PerturbationRegressor

    return PerturbationRegressor().get_params().get(name)


def _merge(rows, _notes, extra, genes):
    """Rows of ``genes`` from this run, the others from the results file already there."""
    from _common import RESULTS

    old = json.loads((RESULTS / "throughput.json").read_text())
    # rows of a file from before the time-to-target columns: those cells "not measured"
    kept = [
        r + ["not measured"] * (len(COLUMNS) - len(r)) for r in old["rows"] if r[1] not in genes
    ]
    merged = sorted(kept + rows, key=lambda r: r[1])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    peak = np.median([p["fp32"] for p in extra["peaks_gflops"] if "fp32" in p])
    note = (
        f"{old['notes']} Rows for {', '.join(map(str, genes))} genes were re-measured by a "
        f"second invocation ({when}, `--genes ... --merge`, same settings; its fp32 peak "
        f"{peak:.0f} GFLOP/s is the reference of those rows' % peak)."
    )
    first = {k: v for k, v in old["extra"].items() if k != "reruns"}
    reruns = [*old["extra"].get("reruns", []), {"genes": genes, **extra}]
    return merged, note, {**first, "reruns": reruns}


if __name__ == "__main__":
    main()
