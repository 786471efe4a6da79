"""ProgressiveFit vs a standard fit at the final gene count, under the same wall-time budget.

For each dataset both runs get the same wall-clock budget (training stops at
the first epoch end past it). Reported: the final validation loss (at the
final gene count, on the same held-out validation perturbations: the model
seed is shared), the held-out score on perturbations neither run saw
(``-MSE`` of pseudobulk deltas, higher is better), and the wall time (and
process CPU time) each run needs to first reach the standard run's final validation loss; the ratio
progressive / standard is the headline (aim: <= 0.6).

Run::

    python benchmarks/bench_progressive.py            # both datasets, ~8 min
    python benchmarks/bench_progressive.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline
from skorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_gb, write_result

from sktx.datasets import make_perturbseq
from sktx.model_selection import PerturbationSplit
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

NORMAN = Path("/work/shared/data/norman2019_mcfaline2023_devel.h5ad")
IMG = Path(__file__).resolve().parents[1] / "docs" / "img" / "progressive_loss.png"


# module-level: ProgressiveFit clones (deep-copies) the callbacks, so they log here
CLOCK: dict = {"t0": 0.0, "cpu0": 0.0, "log": []}


def _cpu() -> float:
    # process CPU seconds: less sensitive than wall time to other jobs on the shared CPU
    t = os.times()
    return t.user + t.system


class Clock(Callback):
    """Log (seconds since CLOCK["t0"], valid_loss, n_genes) per epoch; stop past the budget.

    ``cpu=True``: the budget is process CPU seconds (fairer than wall time when other
    jobs share the machine).
    """

    def __init__(self, budget: float, cpu: bool = False):
        self.budget = budget
        self.cpu = cpu

    def on_epoch_end(self, net, **kwargs):
        elapsed = time.perf_counter() - CLOCK["t0"]
        cpu = _cpu() - CLOCK["cpu0"]
        CLOCK["log"].append((elapsed, net.history[-1, "valid_loss"], len(net.genes_), cpu))
        if (cpu if self.cpu else elapsed) >= self.budget:
            raise KeyboardInterrupt  # skorch ends training gracefully (as EarlyStopping does)


def _split(adata, keys):
    """Hold out one fold of perturbations (controls stay on both sides)."""
    cv = PerturbationSplit(
        5,
        shuffle=True,
        random_state=0,
        perturbation_key=keys["perturbation_key"],
        control_label=keys["control_label"],
    )
    train, test = next(cv.split(adata))
    return adata[train].copy(), adata[test].copy()


def _pipe(keys, callbacks, model_kw):
    model = PerturbationRegressor(
        **keys,
        callbacks=callbacks,
        on_unknown_target="warn",
        random_state=0,
        # one network with a validation split: the curves compare the strategies, and
        # the budget callback must see one training run (crossfit trains several)
        crossfit=0,
        **model_kw,
    )
    return Pipeline([("select", GeneSelector(**keys, random_state=0)), ("model", model)])


def _time_to(log, target, n_genes, col=0):
    for rec in log:
        if rec[2] == n_genes and rec[1] <= target:
            return rec[col]
    return float("nan")


def run(name, adata, keys, phases, early_epochs, budget, model_kw, cpu=False):
    train, test = _split(adata, keys)
    n_final = min(phases[-1], train.n_vars)
    out = {}
    for mode in ("standard", "progressive"):
        log = CLOCK["log"] = []
        pipe = _pipe(keys, [("clock", Clock(budget, cpu))], model_kw)
        big = 10_000  # epochs: the budget ends training
        CLOCK["cpu0"] = _cpu()
        t0 = CLOCK["t0"] = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "standard":
                est = pipe.set_params(select__n_genes=n_final, model__max_epochs=big).fit(train)
                phase_ends = []
            else:
                est = ProgressiveFit(
                    pipe, phases=phases, epochs_per_phase=_plan(early_epochs, len(phases), big)
                ).fit(train)
                phase_ends = np.cumsum([h["wall_time_s"] for h in est.phase_history_])[:-1]
            wall = time.perf_counter() - t0
            score = est.score(test)
        out[mode] = {
            "log": log,
            "wall": wall,
            "score": score,
            "phase_ends": list(map(float, phase_ends)),
            "history": getattr(est, "phase_history_", None),
        }
        print(f"[{name}] {mode}: {len(log)} epochs, {wall:.1f} s, held-out score {score:.5f}")
        if mode == "progressive":
            print(
                [
                    (h["n_genes"], h["epochs"], round(h["wall_time_s"], 1))
                    for h in est.phase_history_
                ]
            )
    std, prog = out["standard"], out["progressive"]
    target = std["log"][-1][1]
    t_std = _time_to(std["log"], target, n_final)
    t_prog = _time_to(prog["log"], target, n_final)
    c_std = _time_to(std["log"], target, n_final, col=3)
    c_prog = _time_to(prog["log"], target, n_final, col=3)
    final_prog = [r[1] for r in prog["log"] if r[2] == n_final][-1]
    row = [
        name,
        " -> ".join(map(str, prog["history"] and [h["n_genes"] for h in prog["history"]])),
        round(budget),
        round(target, 5),
        round(final_prog, 5),
        round(std["score"], 5),
        round(prog["score"], 5),
        round(t_std, 1),
        round(t_prog, 1) if np.isfinite(t_prog) else "not reached",
        round(t_prog / t_std, 2) if np.isfinite(t_prog) else "-",
        round(c_prog / c_std, 2) if np.isfinite(c_prog) else "-",
        sum(1 for r in std["log"] if r[2] == n_final),
        " + ".join(str(h["epochs"]) for h in prog["history"]),
    ]
    print(row)
    return row, out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, out) in zip(axes[0], results.items(), strict=True):
        std, prog = out["standard"], out["progressive"]
        t, v = [r[0] for r in std["log"]], [r[1] for r in std["log"]]
        ax.plot(t, v, "o-", ms=3, color="black", label="standard (final genes)")
        n_final = std["log"][-1][2]
        for k, h in enumerate(prog["history"]):
            pts = [(r[0], r[1]) for r in prog["log"] if r[2] == h["n_genes"]]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, "o-", ms=3, label=f"progressive phase {k + 1}: {h['n_genes']} genes")
        for x in prog["phase_ends"]:
            ax.axvline(x, color="grey", ls="--", lw=1)
        ax.axhline(std["log"][-1][1], color="black", ls=":", lw=1)
        ax.set_title(f"{name} (final: {n_final} genes)")
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("validation loss (mean over the phase's genes)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print("wrote", path)


def _plan(early, n_phases, last):
    early = ["auto"] * (n_phases - 1) if early == "auto" else list(early)
    return [*early, last]


def _early(spec: str):
    return "auto" if spec == "auto" else tuple(int(e) for e in spec.split(","))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    ap.add_argument("--norman-budget", type=float, default=90.0)
    ap.add_argument("--sim-budget", type=float, default=150.0)
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-norman", action="store_true")
    ap.add_argument(
        "--sim-early-epochs",
        default="4,2,1",
        help="epochs of the simulated run's phases before the last, comma-separated, or "
        "'auto' (each ends when its validation loss stops improving)",
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the budget counts: wall seconds or process CPU seconds",
    )
    ap.add_argument("--out", default="progressive", help="results name (benchmarks/results)")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    scale = 0.15 if args.quick else 1.0
    rows, results = [], {}
    load_before = os.getloadavg()[0]

    cpu = args.clock == "cpu"
    if args.skip_norman:
        pass
    elif NORMAN.exists():
        import anndata as ad

        adata = ad.read_h5ad(NORMAN)
        keys = dict(
            perturbation_key="perturbation", control_label="control", cell_type_key="cell_type"
        )
        row, out = run(
            "Norman/McFaline (real)",
            adata,
            keys,
            phases=(100, 250, 500),
            early_epochs=(4, 4),
            budget=args.norman_budget * scale,
            model_kw=dict(set_size=32, batch_size=8),
            cpu=cpu,
        )
        rows.append(row)
        results["Norman/McFaline"] = out
    else:
        print(f"skipping Norman: {NORMAN} not found")

    if not args.skip_sim:
        sim = make_perturbseq(
            n_cells=3000, n_genes=5000, n_perturbations=30, n_combinations=5, random_state=0
        )
        keys = dict(
            perturbation_key="target_gene", control_label="non-targeting", cell_type_key=None
        )
        row, out = run(
            "simulated 5,000 genes",
            sim,
            keys,
            phases=(100, 1200, 2500, 5000),
            early_epochs=_early(args.sim_early_epochs),
            budget=args.sim_budget * scale,
            model_kw=dict(set_size=32, batch_size=8),
            cpu=cpu,
        )
        rows.append(row)
        results["simulated"] = out

    columns = [
        "dataset",
        "phases",
        "budget s",
        "standard final valid loss",
        "progressive final valid loss",
        "standard held-out score",
        "progressive held-out score",
        "standard s to target",
        "progressive s to target",
        "ratio (aim <= 0.6)",
        "CPU-time ratio",
        "standard epochs",
        "progressive epochs per phase",
    ]
    if not args.quick:
        write_result(
            args.out,
            title="ProgressiveFit vs standard fit (same wall-time budget)",
            columns=columns,
            rows=rows,
            notes=(
                "Both runs train until the budget is spent (stop at the first epoch end past it). "
                "Target = the standard run's final validation loss (same genes, same held-out "
                "validation perturbations); 's to target' = wall time from the start of the run "
                "(selection and earlier phases included) to the first epoch at the final gene "
                "count whose validation loss is <= target. Held-out score = -MSE of pseudobulk "
                "deltas on one PerturbationSplit fold neither run trained on (higher is better). "
                "Shared 2-core CPU: timings are noisy."
            ),
            extra={
                "peak_rss_gb": peak_rss_gb(),
                "load_avg_1min": [load_before, os.getloadavg()[0]],
                "epochs": {
                    name: {
                        mode: {
                            "columns": ["wall_s", "valid_loss", "n_genes", "cpu_s"],
                            "rows": r["log"],
                            "phase_ends_s": r["phase_ends"],
                        }
                        for mode, r in out.items()
                    }
                    for name, out in results.items()
                },
            },
        )
    if not args.no_plot and results and not args.quick:
        plot(results, IMG)


if __name__ == "__main__":
    main()
