"""What ``max_tokens`` costs in accuracy and buys in time on a large simulated panel.

``PerturbationRegressor(max_tokens=N)`` runs its network on at most N genes (the
measured training targets, then the genes the training perturbations move most);
the other genes keep the model's start. This benchmark fits the same model with
``max_tokens`` None (every gene), 2048 (the default) and 1024 on held-out
perturbations of a simulated 5,000-gene screen (``make_perturbseq``; the shared
real screens have <= 2,000 genes, where the default cap changes nothing) and
scores each fold with the metrics of ``bench_quality.py``.

    python benchmarks/bench_tokens.py                  # 5,000 genes, 3 folds
    python benchmarks/bench_tokens.py --genes 18080 --folds 2
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import write_result  # noqa: E402
from bench_quality import METRICS, score_fold  # noqa: E402

KEYS = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
CAPS = (None, 2048, 1024)


def main() -> None:
    import torch

    from sktx.datasets import make_perturbseq
    from sktx.model_selection import PerturbationSplit
    from sktx.regressor import PerturbationRegressor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=5000)
    ap.add_argument("--cells", type=int, default=4000)
    ap.add_argument("--perturbations", type=int, default=60)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adata = make_perturbseq(
        n_cells=args.cells,
        n_genes=args.genes,
        n_perturbations=args.perturbations,
        random_state=0,
    )
    # one network with a 10 % validation split keeps the run short; the cap acts the
    # same inside each cross-fitted network
    params = dict(**KEYS, max_epochs=args.epochs, crossfit=0, n_jobs=args.threads, random_state=0)
    cv = PerturbationSplit(n_splits=args.folds, shuffle=True, random_state=0, **KEYS)
    per_fold: dict[str, list] = {}
    for cap in CAPS:
        name = f"max_tokens={cap}"
        per_fold[name] = []
        for f, (tr, te) in enumerate(cv.split(adata)):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                model = PerturbationRegressor(max_tokens=cap, **params).fit(adata[tr].copy())
                fit_s = time.perf_counter() - t0
                rec = score_fold(model, adata[te].copy(), KEYS)
            epochs = [h for h in model.history if "cells_per_s" in h]
            rec["fit_s"] = fit_s
            rec["cells_per_s"] = float(np.median([h["cells_per_s"] for h in epochs]))
            rec["epochs"] = len(model.history)
            per_fold[name].append(rec)
            print(name, f, {k: round(v, 4) for k, v in rec.items()}, flush=True)
    cols = ["max_tokens"] + [c for c, _, _ in METRICS] + ["fit s", "train cells/s"]
    rows = []
    for name, recs in per_fold.items():
        row = [name.split("=")[1]]
        for _, key, _ in METRICS:
            v = np.array([r[key] for r in recs])
            row.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        row.append(round(float(np.mean([r["fit_s"] for r in recs])), 1))
        row.append(round(float(np.mean([r["cells_per_s"] for r in recs]))))
        rows.append(row)
        print(row, flush=True)
    notes = (
        f"make_perturbseq(n_cells={args.cells}, n_genes={args.genes}, "
        f"n_perturbations={args.perturbations}, random_state=0); {args.folds}-fold "
        "PerturbationSplit(shuffle=True, random_state=0) over perturbations, the same folds "
        f"for every cap; PerturbationRegressor(crossfit=0, max_epochs={args.epochs}, "
        f"random_state=0), {args.threads} thread(s), mean ± std over folds, metrics as in "
        "bench_quality.py (VCC score against the test split's cell-mean baseline). 'fit s' "
        "includes setup (PCA, graph, baselines); 'train cells/s' is the median epoch's."
    )
    write_result(
        f"tokens_{args.genes}",
        title=f"max_tokens on a simulated {args.genes:,}-gene screen: accuracy and time",
        columns=cols,
        rows=rows,
        notes=notes,
        extra={"per_fold": per_fold},
    )


if __name__ == "__main__":
    main()
