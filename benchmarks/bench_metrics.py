"""Time the fast VCC metrics against cell-eval on the same simulated prediction.

Simulates a screen of ``--perturbations`` perturbations x ``--genes`` genes with
``--cells`` cells each (plus as many control cells), makes a noisy prediction,
and times ``sktx.metrics.perturbation_metrics`` (DES, PDS, MAE, Pearson delta,
top-20 DE MSE), ``sktx.metrics.vcc_score`` (overall, incl. the baseline) and
``sktx.metrics.vcc_evaluate`` (cell-eval ``profile="vcc"`` + its baseline score)
in one run, and checks that both give the same numbers.

    python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_gb, write_result


def simulate(n_perts: int, n_genes: int, n_cells: int, seed: int = 0):
    """Negative-binomial counts with a sparse log-fold effect per perturbation, log1p-normalised."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    base = rng.lognormal(-1.0, 1.5, n_genes)
    labels = ["non-targeting"] + [f"P{i:03d}" for i in range(n_perts)]
    effects = np.zeros((len(labels), n_genes))
    for i in range(1, len(labels)):
        hit = rng.choice(n_genes, size=n_genes // 20, replace=False)
        effects[i, hit] = rng.normal(0, 0.7, hit.size)
    blocks, obs = [], []
    for i, label in enumerate(labels):
        mu = base * np.exp(effects[i]) * rng.lognormal(0, 0.2, (n_cells, 1))
        blocks.append(rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float32))
        obs += [label] * n_cells
    counts = np.vstack(blocks)
    size = counts.sum(axis=1, keepdims=True)
    X = np.log1p(counts / np.maximum(size, 1) * 1e4).astype(np.float32)
    frame = pd.DataFrame({"target_gene": obs}, index=[f"c{i}" for i in range(len(obs))])
    var = pd.DataFrame(index=[f"G{i:05d}" for i in range(n_genes)])
    real = ad.AnnData(X, obs=frame, var=var)
    noisy = X.copy()
    pert = frame["target_gene"].to_numpy() != "non-targeting"
    noisy[pert] = np.clip(noisy[pert] + rng.normal(0, 0.3, noisy[pert].shape), 0, None)
    pred = ad.AnnData(noisy, obs=frame.copy(), var=var.copy())
    return real, pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perturbations", type=int, default=100)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--no-cell-eval", action="store_true", help="skip the cell-eval timing")
    args = parser.parse_args()

    from sktx.metrics import perturbation_metrics, vcc_score

    real, pred = simulate(args.perturbations, args.genes, args.cells)
    t0 = time.perf_counter()
    ours = perturbation_metrics(real, pred)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_vcc = vcc_score(real, pred)
    t_ours_vcc = time.perf_counter() - t0
    rows = [
        ["sktx perturbation_metrics (all 5 metrics)", round(t_ours, 2), ""],
        ["sktx vcc_score (DES+PDS+MAE, user + baseline)", round(t_ours_vcc, 2), ""],
    ]
    extra = {"sktx_vcc_score": ours_vcc, "sktx_mean": ours.mean(numeric_only=True).to_dict()}
    if not args.no_cell_eval:
        from sktx.metrics import vcc_evaluate

        t0 = time.perf_counter()
        official = vcc_evaluate(pred, real, num_threads=2)
        t_ce = time.perf_counter() - t0
        theirs = official.results.set_index("perturbation")
        mine = ours.set_index("perturbation").loc[theirs.index]
        diffs = {
            "des": float(np.abs(mine["des"] - theirs["overlap_at_N"]).max()),
            "pds": float(np.abs(mine["pds"] - theirs["discrimination_score_l1"]).max()),
            "mae": float(np.abs(mine["mae"] - theirs["mae"]).max()),
            "score": abs(official.score - ours_vcc),
        }
        rows.append(
            [
                "cell-eval vcc_evaluate (vcc profile, user + baseline)",
                round(t_ce, 2),
                f"{t_ce / t_ours_vcc:.1f}x slower than vcc_score",
            ]
        )
        extra.update(cell_eval_score=official.score, max_abs_diff=diffs)
    extra["peak_rss_gb"] = peak_rss_gb()
    notes = (
        f"Simulated: {args.perturbations} perturbations x {args.genes} genes x {args.cells} "
        f"cells each, plus {args.cells} control cells (log1p, dense float32); prediction = "
        "real + N(0, 0.3) noise. Both implementations score the same objects in one run. "
        + (
            f"Max |sktx - cell-eval| per perturbation: DES {diffs['des']:.2g}, PDS "
            f"{diffs['pds']:.2g}, MAE {diffs['mae']:.2g}; overall score {diffs['score']:.2g}. "
            "cell-eval time includes numba JIT compilation of pdex on first use."
            if not args.no_cell_eval
            else ""
        )
    )
    path = write_result(
        "metrics",
        title="VCC metrics: sktx (vectorised numpy/scipy) vs cell-eval",
        columns=["implementation", "seconds", "ratio"],
        rows=rows,
        notes=notes,
        extra=extra,
    )
    for row in rows:
        print(row)
    print(notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
