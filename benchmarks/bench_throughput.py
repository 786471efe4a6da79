"""Training throughput of PerturbationRegressor and Arc State side by side, 500-18,080 genes.

Same cells, same machine, same run, interleaved (sktx, State, sktx, State ...):

* Norman K562 (500 genes) and Datlinger Jurkat (2,000 genes) from ``../shared/data``;
* simulated screens (``make_perturbseq``, 4,000 cells, 40 perturbations) at 5,000
  and 18,080 genes.

For each system and dataset a fresh subprocess trains a few steps of 8 sets of 64
cells (torch threads = ``--threads``) and reports per-step wall times, FLOPs per
step (``torch.utils.flop_counter.FlopCounterMode``, forward + backward + optimizer
step of one step) and from them sets/s, cells/s, FLOPs per cell and the share of
the machine's matmul peak (``torch.mm`` 4096 x 4096, fp32 and bf16, measured in the
same run before, between and after the rounds).

What a "cell" is differs: State runs every one of the 64 perturbed cells of a set
through its transformer (one token per cell); sktx's network runs once per set on
G gene tokens (the set mean), so its cells/s is sets/s x 64.

State (arc-state, CC BY-NC-SA 4.0) is an external comparison only: the benchmark
creates its own venv outside the repo (``--state-venv``, default
``/work/state_venv``: ``python3 -m venv``; ``pip install torch==2.13.0 arc-state``)
and runs ``benchmarks/_state_driver.py`` there in a subprocess. sktx never imports it.

    python benchmarks/bench_throughput.py              # ~25-40 min on 2 shared cores
    python benchmarks/bench_throughput.py --quick      # 500 and 2,000 genes, one round
"""

from __future__ import annotations

import argparse
import json
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

SET_SIZE, BATCH = 64, 8
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
def sktx_worker(path: str, keys: dict, threads: int) -> dict:
    """One epoch of PerturbationRegressor.fit; per-step times from a callback."""
    import anndata as ad
    from skorch.callbacks import Callback
    from torch.utils.flop_counter import FlopCounterMode

    from sktx.regressor import PerturbationRegressor

    class StepTimer(Callback):
        # on_batch_end to on_batch_end: a step including the set batch's assembly
        def initialize(self):
            self.ends, self.flops, self._fc, self._n = [], None, None, 0
            return self

        def on_batch_begin(self, net, batch=None, training=None, **kw):
            if training and self._n == 1:  # FLOPs of the second step (first one warms up)
                self._fc = FlopCounterMode(display=False)
                self._fc.__enter__()

        def on_batch_end(self, net, batch=None, training=None, **kw):
            if not training:
                return
            if self._fc is not None:
                self._fc.__exit__(None, None, None)
                self.flops, self._fc = self._fc.get_total_flops(), None
            self.ends.append((time.perf_counter(), self._n))
            self._n += 1

    timer = StepTimer()
    adata = ad.read_h5ad(path)
    model = PerturbationRegressor(
        **keys,
        max_epochs=1,
        validation_fraction=0.0,
        crossfit=0,  # the training step's speed is measured, not the out-of-fold fits
        n_jobs=threads,
        random_state=0,
        callbacks=[("step_timer", timer)],
        callbacks__progress=None,
    )
    start = time.perf_counter()
    model.fit(adata)
    wall = time.perf_counter() - start
    ends = [t for t, _ in timer.ends]
    # steps 0 (warm-up) and 1 (FLOP counting) are excluded: intervals from step 2 on
    steps = list(np.diff(ends)[1:])
    sets = model.history_[-1, "batches", :, "train_batch_size"]
    cells = model.history_[-1, "batches", :, "n_cells"]
    return {
        "step_s": steps,
        "flops_per_step": timer.flops,
        "sets_per_step": float(np.mean(sets[2:])),
        "cells_per_step": float(np.mean(cells[2:])),
        "counted_cells_per_step": float(np.mean(sets[2:])) * SET_SIZE,
        "n_steps": len(ends),
        "fit_wall_s": wall,
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
    """An h5ad for sktx and an npz (log1p matrix, integer labels) for State; same cells."""
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
        cts = np.zeros(len(labels), dtype=np.int64)
    else:
        cts = np.unique(np.asarray(data.cell_types).astype(str), return_inverse=True)[1]
    npz = folder / f"state_{genes}.npz"
    np.savez(
        npz,
        X=X.astype(np.float32),
        label=np.searchsorted(uniq, labels),
        ct=cts,
        control=int(np.searchsorted(uniq, data.control_label)),
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
    parser.add_argument("--sktx-worker", nargs=2, metavar=("H5AD", "KEYS_JSON"))
    parser.add_argument("--peak-worker", choices=["fp32", "both"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--state-venv", default="/work/state_venv")
    parser.add_argument("--state-steps", type=int, default=6)
    parser.add_argument("--genes", type=int, nargs="+", help="only these datasets")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only these datasets' rows of the existing results file (a re-run)",
    )
    args = parser.parse_args()
    if args.sktx_worker:
        path, keys = args.sktx_worker
        print(json.dumps(sktx_worker(path, json.loads(keys), args.threads), default=float))
        return
    if args.peak_worker:
        print(json.dumps(peak_worker(args.threads, args.peak_worker == "both")))
        return

    state_py = ensure_state_venv(Path(args.state_venv))
    datasets = [d for d in DATASETS if not args.quick or d[1] <= 2000]
    datasets = [d for d in datasets if not args.genes or d[1] in args.genes]
    rounds = 1 if args.quick else args.rounds
    me = [sys.executable, __file__, "--threads", str(args.threads)]
    peaks = [_run([*me, "--peak-worker", "both"])]
    print("peak", peaks[-1], flush=True)
    raw: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {g: prepare_inputs(Path(tmp), g, src) for _, g, src in datasets}
        for r in range(rounds):
            for _name, genes, _ in datasets:
                path, keys, npz = inputs[genes]
                sk = [*me, "--sktx-worker", path, json.dumps(keys)]
                st = [str(state_py), str(HERE / "_state_driver.py"), npz]
                st += ["--threads", str(args.threads), "--steps", str(args.state_steps)]
                st += ["--batch", str(BATCH), "--set-size", str(SET_SIZE)]
                order = [("sktx", sk), ("state", st)]
                for system, cmd in order if r % 2 == 0 else order[::-1]:
                    res = _run(cmd)
                    raw.setdefault(f"{genes}/{system}", []).append(res)
                    brief = {k: v for k, v in res.items() if k not in ("step_s", "step_cpu_s")}
                    print(genes, system, r, brief, flush=True)
            last = r == rounds - 1
            peaks.append(_run([*me, "--peak-worker", "both" if last else "fp32"]))
            print("peak", peaks[-1], flush=True)

    ok = [p for p in peaks if "error" not in p]
    peak32 = float(np.median([p["fp32"] for p in ok]))
    peak16 = float(np.median([p["bf16"] for p in ok if "bf16" in p]))
    rows = []
    for name, genes, _ in datasets:
        row = [name, genes]
        s = {}
        for system in ("sktx", "state"):
            runs = [x for x in raw[f"{genes}/{system}"] if "error" not in x]
            if not runs:
                s[system] = None
                row += ["error"] * 4
                continue
            # every round's steps pooled: the median over all measured steps
            pooled = {**runs[0], "step_s": [t for x in runs for t in x["step_s"]]}
            s[system] = summarise(pooled, peak32)
            row += [
                round(s[system]["sets_per_s"], 2),
                round(s[system]["cells_per_s"]),
                round(s[system]["mflop_per_cell"], 1),
                f"{100 * s[system]['share_of_fp32_peak']:.0f} %",
            ]
        ratio = s["sktx"]["cells_per_s"] / s["state"]["cells_per_s"] if all(s.values()) else None
        row.append(f"{ratio:.2f}x" if ratio else "-")
        rows.append(row)
        print(row, flush=True)
    notes = (
        f"Interleaved in one run ({rounds} round(s), order alternating), torch threads = "
        f"{args.threads} on 2 cores shared with other jobs (1-min load average when each "
        "subprocess started is in `extra.raw`). Matmul peak of this run (torch.mm, fp32 "
        "4096^2, bf16 1024^2: a 4096^2 bf16 product did not finish in 10 min on this "
        "AVX2 CPU; "
        f"median of {len(ok)} measurements spread over the run): fp32 {peak32:.0f} GFLOP/s, "
        f"bf16 {peak16:.0f} GFLOP/s; '% peak' = FLOPs per step / median step time / fp32 "
        "peak. FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one training step "
        "(forward, backward, optimizer; sparse CSR kernels are not counted, they are <1 % "
        "of sktx's FLOPs). "
        f"sktx: PerturbationRegressor defaults (d_model 64, 2 layers, 4 heads, K=16 "
        f"neighbours, sets of {SET_SIZE}, {BATCH} sets per step, precision 'auto'), one "
        "epoch of `fit` (crossfit=0, validation_fraction=0), steps from the third on "
        "(steps include assembling the batch). "
        "A sktx 'cell' = one of the 64 cells of a set (cells/s = sets/s x 64): the network "
        "runs once per set mean on G gene tokens. "
        f"State: arc-state 0.11.1 StateTransitionPerturbationModel, llama backbone, hidden "
        f"256, 4 layers, 4 heads, sets of {SET_SIZE}, {BATCH} sets per step, energy loss, "
        "Adam, fp32, one-hot perturbations, random control pairing, "
        f"{args.state_steps} timed steps after 2 warm-up steps. A State 'cell' = one "
        "perturbed cell = one transformer token. Simulated data: `make_perturbseq`, "
        f"{N_SIM_CELLS} cells, {N_SIM_PERTS} perturbations. Time to reach a given "
        "validation loss was not measured. The 299-gene THP-1 screen quoted in issue 17 is "
        "not in ../shared/data and was not run."
    )
    extra = {"peaks_gflops": peaks, "raw": raw, "threads": args.threads}
    if args.merge:
        rows, notes, extra = _merge(rows, notes, extra, [g for _, g, _ in datasets])
    path = write_result(
        "throughput",
        title="Training throughput: sktx and Arc State side by side, 500-18,080 genes",
        columns=[
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
        ],
        rows=rows,
        notes=notes,
        extra=extra,
    )
    print(f"wrote {path}")


def _merge(rows, _notes, extra, genes):
    """Rows of ``genes`` from this run, the others from the results file already there."""
    from _common import RESULTS

    old = json.loads((RESULTS / "throughput.json").read_text())
    kept = [r for r in old["rows"] if r[1] not in genes]
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
