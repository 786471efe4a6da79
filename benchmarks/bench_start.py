"""How the regressor's start was chosen: its variants, untrained, on the tuning datasets.

The start (``sktx/regressor/_start.py``) gives an unseen target the typical joint
effect moved towards its most similar fitted targets by a weight ``alpha`` and shrunk
by a factor ``c``, both fitted leave-one-label-out. Each variant is the default
``PerturbationRegressor`` with ``max_epochs=0`` (so it *is* the start), scored on the
5-fold ``PerturbationSplit(shuffle=True, random_state=0)`` of ``bench_model_gain.py``
with the same scorer, next to ``MeanBaseline`` and ``KNNBaseline`` (GO BP).

    python benchmarks/bench_start.py datlinger
    python benchmarks/bench_start.py sim150 --variants old both

Only the tuning datasets (Datlinger, sim150) were run with this script; the choice
it informed (per-gene ``alpha``, absolute-error ``c``) was fixed before the test
datasets were measured. Prints one line per variant (means over folds).
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import GO_BP

#: variant -> keyword arguments of ``fit_start``
VARIANTS = {
    "old": dict(knn=False, shrink=False),  # the joint additive start (before issue 18)
    "shrink": dict(knn=False, shrink=True),  # c by least squares, no neighbours
    "knn": dict(knn=True, shrink=False),  # one global alpha
    "both": dict(knn=True, shrink=True),
    "l1": dict(knn=True, shrink="l1"),  # global alpha, c by absolute error
    "gene": dict(knn="gene", shrink=True),  # alpha per gene
    "gene_l1": dict(knn="gene", shrink="l1"),  # the default
    "a1": dict(knn=1.0, shrink=False),  # the KNN baseline's rule (alpha = c = 1)
    "a1_l1": dict(knn=1.0, shrink="l1"),  # alpha = 1, c by absolute error
    "a05_l1": dict(knn=0.5, shrink="l1"),
}


def main() -> None:
    import torch
    from bench_model_gain import load, ours, score_fold
    from sklearn.base import clone

    import sktx.regressor._inputs as inputs
    from sktx import baselines
    from sktx.model_selection import PerturbationSplit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["datlinger", "sim150"])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    adata, keys = load(args.dataset)
    splits = list(PerturbationSplit(5, shuffle=True, random_state=0, **keys).split(adata))
    factories = {v: (lambda: ours(keys, max_epochs=0), VARIANTS[v]) for v in args.variants}
    if not args.no_baselines:
        factories["mean"] = (lambda: baselines.MeanBaseline(cells="controls", **keys), None)
        factories["knn_baseline"] = (
            lambda: baselines.KNNBaseline(gene_sets=str(GO_BP), cells="controls", **keys),
            None,
        )
    original = inputs.fit_start
    for name, (make, kw) in factories.items():
        rows = []
        for train, test in splits:
            inputs.fit_start = functools.partial(original, **kw) if kw is not None else original
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = clone(make()).fit(adata[train].copy())
                row = score_fold(model, adata[test].copy(), keys)
            if kw is not None:
                start = model._effects(model.fitted_state_)[None]
                row["alpha"], row["c"] = float(np.mean(start.alpha)), float(start.shrink)
            rows.append(row)
        inputs.fit_start = original
        means = {k: round(float(np.mean([r[k] for r in rows])), 5) for k in rows[0]}
        print(args.dataset, name, means, flush=True)


if __name__ == "__main__":
    main()
