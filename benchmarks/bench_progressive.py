"""ProgressiveFit vs a standard fit at the final gene count, both with the model's defaults.

For each dataset the standard strategy (the pipeline at the final gene count, its own
``max_epochs`` and early stopping) and each curriculum run on the same training data
(prepared once, outside the clocks), the same held-out validation perturbations (the
model seed is shared) and the same held-out test fold. Reported: the standard run's
best validation loss (the target, on the full final panel), the wall time (and process
CPU time) each run needs to first reach it, the ratio curriculum / standard (aim:
<= 0.6), and the held-out score on perturbations neither run saw (``-MSE`` of
pseudobulk deltas, higher is better). Only epochs whose validation loss is over the
full final panel count for the curriculum: every epoch of a token curriculum
(``param="model__max_tokens"``, the panel stays whole) or of a batch curriculum
(``param="model__batch_size"``: small, cheap optimizer steps first, each phase ending
when its validation loss stops improving, then the model's own batch size), the last
phase of a gene curriculum. The control row ``batch 2 only`` is a plain fit at the
batch curriculum's first batch size (a one-phase ProgressiveFit): it tells how much of
the batch curriculum's gain a smaller batch alone would give.

Run::

    python benchmarks/bench_progressive.py            # both datasets
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


def _warm_up():
    # the first fused AdamW of a process imports torch._dynamo (~3 s): pay it before
    # either clock starts, not inside whichever strategy runs first
    import torch

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)


def run(name, adata, keys, variants, budget, model_kw, cpu=False):
    """Standard fit, then each curriculum of ``variants`` (label -> ProgressiveFit kwargs)."""
    from sktx import prepare

    _warm_up()
    train, test = _split(adata, keys)
    n_final = train.n_vars
    train = prepare(train, **keys)  # once, outside the clocks: the same input for all
    out = {}
    for mode in ("standard", *variants):
        log = CLOCK["log"] = []
        pipe = _pipe(keys, [("clock", Clock(budget, cpu))], model_kw)
        pipe.set_params(select__n_genes=n_final)
        CLOCK["cpu0"] = _cpu()
        t0 = CLOCK["t0"] = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "standard":
                est = pipe.fit(train)
                phase_ends = []
            else:
                est = ProgressiveFit(pipe, **variants[mode]).fit(train)
                phase_ends = np.cumsum([h["wall_time_s"] for h in est.phase_history_])[:-1]
            wall = time.perf_counter() - t0
            score = est.score(test)
        hist = getattr(est, "phase_history_", None)
        out[mode] = {
            "log": log,
            "wall": wall,
            "score": score,
            "phase_ends": list(map(float, phase_ends)),
            "history": hist,
            "param": variants.get(mode, {}).get("param", "select__n_genes"),
        }
        plan = hist and [(h["n_genes"], h["epochs"], round(h["wall_time_s"], 1)) for h in hist]
        print(f"[{name}] {mode}: {len(log)} epochs, {wall:.1f} s, score {score:.5f}", plan or "")
    std = out["standard"]
    target = min(r[1] for r in std["log"])
    t_std = _time_to(std["log"], target, n_final)
    c_std = _time_to(std["log"], target, n_final, col=3)
    # the standard's best epoch is partly luck on a flat curve (epoch-to-epoch changes
    # of ~1 %), so also report the time to within 1 % of it
    t_near = _time_to(std["log"], 1.01 * target, n_final)

    def near(log):
        t = _time_to(log, 1.01 * target, n_final)
        return round(t / t_near, 2) if np.isfinite(t) else "-"

    rows = []
    for mode in variants:
        prog = out[mode]
        t_prog = _time_to(prog["log"], target, n_final)
        c_prog = _time_to(prog["log"], target, n_final, col=3)
        best_prog = min(r[1] for r in prog["log"] if r[2] == n_final)
        hist = prog["history"]
        rows.append(
            [
                name,
                mode,
                " -> ".join(str(h["n_genes"]) for h in hist),
                round(target, 5),
                round(best_prog, 5),
                round(std["score"], 5),
                round(prog["score"], 5),
                round(t_std, 1),
                round(t_prog, 1) if np.isfinite(t_prog) else "not reached",
                round(t_prog / t_std, 2) if np.isfinite(t_prog) else "-",
                round(c_prog / c_std, 2) if np.isfinite(c_prog) else "-",
                near(prog["log"]),
                len(std["log"]),
                " + ".join(str(h["epochs"]) for h in hist),
            ]
        )
        print(rows[-1])
    return rows, out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one row per dataset, one panel per curriculum
    n_cols = max(len(out) - 1 for out in results.values())
    fig, axes = plt.subplots(
        len(results), n_cols, figsize=(5 * n_cols, 3.6 * len(results)), squeeze=False
    )
    for row, out in zip(axes, results.values(), strict=True):
        for ax in row[len(out) - 1 :]:
            ax.set_visible(False)
    panels = [
        (ax, name, mode, out)
        for row, (name, out) in zip(axes, results.items(), strict=True)
        for ax, mode in zip(row, [m for m in out if m != "standard"], strict=False)
    ]
    for ax, name, mode, out in panels:
        std, prog = out["standard"], out[mode]
        t, v = [r[0] for r in std["log"]], [r[1] for r in std["log"]]
        ax.plot(t, v, "o-", ms=3, color="black", label="standard (defaults)")
        for k, h in enumerate(prog["history"]):
            lo = prog["phase_ends"][k - 1] if k else 0.0
            hi = prog["phase_ends"][k] if k < len(prog["phase_ends"]) else float("inf")
            pts = [(r[0], r[1]) for r in prog["log"] if lo <= r[0] <= hi]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, "o-", ms=3, label=f"phase {k + 1}: {prog['param']}={h['n_genes']}")
        for x in prog["phase_ends"]:
            ax.axvline(x, color="grey", ls="--", lw=1)
        ax.axhline(min(v), color="black", ls=":", lw=1)
        ax.set_title(f"{name}: {mode} curriculum", fontsize=9)
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("validation loss (mean over the phase's panel)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print("wrote", path)


# sets of 2, then the model's 8: ~4x the optimizer steps per second while the validation
# loss falls fast; the first phase ends at its first epoch without improvement
BATCH = dict(param="model__batch_size", phases=(2, 8), epochs_per_phase="auto", phase_patience=1)


def _early(spec: str):
    return "auto" if spec == "auto" else [int(e) for e in spec.split(",")]


def _plan(early, n_phases):
    # the last phase keeps the model's own max_epochs and early-stopping setting (None)
    return "auto" if early == "auto" else [*early, None][-n_phases:]


def _sim():
    sim = make_perturbseq(
        n_cells=3000, n_genes=5000, n_perturbations=30, n_combinations=5, random_state=0
    )
    keys = dict(perturbation_key="target_gene", control_label="non-targeting", cell_type_key=None)
    return sim, keys


def diagnose(model_kw):
    """What the sim's validation loss is made of, and what an epoch costs (``--diagnose``).

    The loss compares ``basal + delta`` with the perturbed set's mean, ``basal`` being
    the mean of the set's own 32 sampled control cells: replacing it by the fitted
    control mean (what prediction uses) shows how much of the loss is that sampling noise.
    """
    import sktx.regressor._estimator as estimator_module
    from sktx import prepare

    sim, keys = _sim()
    train, test = _split(sim, keys)
    n_genes = train.n_vars
    train = prepare(train, **keys)
    samplers, original = [], estimator_module.SetSampler

    class Recording(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            samplers.append(self)

    estimator_module.SetSampler = Recording
    try:
        pipe = _pipe(keys, [], model_kw).set_params(select__n_genes=n_genes, model__max_epochs=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.fit(train)
            score = pipe.score(test)
    finally:
        estimator_module.SetSampler = original
    model = pipe[-1]
    state, valid = model.fitted_state_, samplers[-1]
    mu, tokens = state.ctrl_means[0], state.tokens  # one cell type in the sim
    sums, n = np.zeros(3), 0
    for sb in valid:
        labels = zip(state.delta_labels, state.delta_cts, strict=True)
        starts = [model._baseline(lab, ct, state) for lab, ct in labels]
        base = np.stack([starts[g] for g in sb.groups])
        on_tokens = sb.basal.copy()
        on_tokens[:, tokens] = mu[tokens]
        for k, basal in enumerate((sb.basal, np.broadcast_to(mu, sb.basal.shape), on_tokens)):
            sums[k] += np.mean((basal + base - sb.target) ** 2) * len(sb.groups)
        n += len(sb.groups)
    loss = sums / n
    print(
        f"validation loss of the untrained start {loss[0]:.5f}; with the fitted control "
        f"mean as basal on all genes {loss[1]:.5f}, on the {len(tokens)} token genes only "
        f"{loss[2]:.5f}; held-out score of the untrained start {score:.5f}"
    )
    if NORMAN.exists():
        import anndata as ad

        norman_keys = dict(
            perturbation_key="perturbation", control_label="control", cell_type_key="cell_type"
        )
        n_train, n_test = _split(ad.read_h5ad(NORMAN), norman_keys)
        start = _pipe(norman_keys, [], model_kw).set_params(
            select__n_genes=n_train.n_vars, model__max_epochs=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start.fit(prepare(n_train, **norman_keys))
            print(
                f"Norman/McFaline: held-out score of the untrained start {start.score(n_test):.5f}"
            )
    for kw in (
        {"model__max_tokens": 100},
        {"model__max_tokens": 500},
        {},
        {"model__batch_size": 2},
    ):
        p = _pipe(keys, [], model_kw).set_params(
            select__n_genes=n_genes, model__max_epochs=3, model__early_stopping=False, **kw
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p.fit(train)
        hist = p[-1].history
        print(
            f"{kw or 'defaults'}: {np.mean([h['dur'] for h in hist]):.2f} s per epoch, "
            f"{hist[-1]['train_batch_count']} optimizer steps per epoch"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 s per run (smoke test)")
    ap.add_argument(
        "--budget", type=float, default=float("inf"), help="optional cap per run, seconds"
    )
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-norman", action="store_true")
    ap.add_argument(
        "--sim-early-epochs",
        default="4,2,1",
        help="epochs of the gene curriculum's phases before the last, comma-separated, or "
        "'auto' (each ends when its validation loss stops improving)",
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the budget counts: wall seconds or process CPU seconds",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of every fit (model n_jobs); 1 avoids oversubscription when busy",
    )
    ap.add_argument("--out", default="progressive", help="results name (benchmarks/results)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="only print what the sim's validation loss is made of and the epoch costs",
    )
    args = ap.parse_args(argv)
    budget = 15.0 if args.quick else args.budget
    rows, results = [], {}
    load_before = os.getloadavg()[0]
    cpu = args.clock == "cpu"
    model_kw = dict(set_size=32, batch_size=8, n_jobs=args.threads)
    if args.diagnose:
        return diagnose(model_kw)
    if args.skip_norman:
        pass
    elif NORMAN.exists():
        import anndata as ad

        adata = ad.read_h5ad(NORMAN)
        keys = dict(
            perturbation_key="perturbation", control_label="control", cell_type_key="cell_type"
        )
        variants = {
            "genes": dict(phases=(100, 250, 500), epochs_per_phase=(4, 4, None)),
            "batch": BATCH,
        }
        new, out = run("Norman/McFaline (real)", adata, keys, variants, budget, model_kw, cpu)
        rows += new
        results["Norman/McFaline"] = out
    else:
        print(f"skipping Norman: {NORMAN} not found")

    if not args.skip_sim:
        sim, keys = _sim()
        early = _early(args.sim_early_epochs)
        variants = {
            # the panel grows; phases at or above max_tokens (2048) run 2048 tokens
            "genes": dict(phases=(100, 1200, 2500, 5000), epochs_per_phase=_plan(early, 4)),
            # each phase until its validation loss stops improving; and without the
            # 2,500-gene phase, which costs as much per epoch as the last (token cap)
            "genes (auto)": dict(phases=(100, 1200, 2500, 5000), epochs_per_phase="auto"),
            "genes 100 -> 1200 -> 5000 (auto)": dict(
                phases=(100, 1200, 5000), epochs_per_phase="auto"
            ),
            # the panel stays whole (same PCA, graph genes, validation over 5,000 genes);
            # the network's tokens grow up to the model's default cap
            "tokens": dict(
                param="model__max_tokens",
                phases=(100, 1200, 2048),
                epochs_per_phase=_plan(early[:2] if early != "auto" else early, 3),
            ),
            # the same, each early phase ending when its validation loss stops improving
            "tokens (auto)": dict(
                param="model__max_tokens", phases=(100, 1200, 2048), epochs_per_phase="auto"
            ),
            "batch": BATCH,
            "batch 2 only (control)": dict(param="model__batch_size", phases=(2,)),
        }
        new, out = run("simulated 5,000 genes", sim, keys, variants, budget, model_kw, cpu)
        rows += new
        results["simulated"] = out

    columns = [
        "dataset",
        "curriculum",
        "phases",
        "target (standard best valid loss)",
        "progressive best valid loss",
        "standard held-out score",
        "progressive held-out score",
        "standard s to target",
        "progressive s to target",
        "ratio (aim <= 0.6)",
        "CPU-time ratio",
        "ratio to within 1 % of target",
        "standard epochs",
        "progressive epochs per phase",
    ]
    if not args.quick:
        write_result(
            args.out,
            title="ProgressiveFit vs standard fit (model defaults)",
            columns=columns,
            rows=rows,
            notes=(
                "Standard = the pipeline at the final gene count with the model's defaults "
                "(max_epochs=20, early stopping, max_tokens=2048; crossfit=0 so there is one "
                "validation curve). Curricula (ProgressiveFit defaults, shared_features=True: "
                "one PCA of the final panel for all phases, inside the clock): genes and tokens "
                "with fixed early epochs, batch = batch_size 2 until the validation loss stops "
                "improving (phase_patience=1), then the model's batch_size 8; the last phase "
                "always with the model's defaults. 'batch 2 only (control)' = a plain fit at "
                "batch_size 2 (one phase). Same prepared training data, validation and test "
                "perturbations and seeds for all; torch's one-off import is paid before the "
                "clocks. Target = the standard run's best validation loss over the full final "
                "panel; 's to target' = wall time from the start of the run (selection and "
                "earlier phases included) to the first epoch whose validation loss over the "
                "full final panel is <= target; 'ratio to within 1 % of target' = the same "
                "with 1.01 x target for both runs. Held-out score = -MSE of pseudobulk deltas on "
                "one PerturbationSplit fold no run trained on (higher is better). Shared 2-core "
                "CPU: timings are noisy; the CPU-time ratio is less sensitive to other jobs."
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
