"""Cost of the joint target-effect fit (the regressor's baseline) as screens grow.

``sktx._effects.fit_target_effects`` solves one small ridge system per candidate
penalty and forms leave-one-label-out predictions for every gene, so its cost grows
with labels^2 x genes. This times it, and its peak memory, on random deltas shaped
like real screens: the Norman K562 file (33 labels), the Virtual Cell Challenge
training screen (~150 targets x 18,080 genes) and genome-scale screens
(1,000-2,000 labels, a fifth of them combinations).

    python benchmarks/bench_effects.py      # ~2 min
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result

SHAPES = [(33, 500), (150, 18_080), (1_000, 8_000), (2_000, 8_000)]


def screen(n_labels: int, n_genes: int, seed: int = 0):
    """Random deltas for ``n_labels`` labels, 80 % singles and 20 % pairs of them."""
    rng = np.random.default_rng(seed)
    n_single = int(0.8 * n_labels)
    labels = [[f"T{i}"] for i in range(n_single)]
    while len(labels) < n_labels:
        a, b = rng.choice(n_single, 2, replace=False)
        labels.append([f"T{a}", f"T{b}"])
    deltas = rng.normal(scale=0.1, size=(n_labels, n_genes)).astype(np.float32)
    return deltas, labels


def main() -> None:
    from sktx._effects import LAMBDAS, fit_target_effects

    rows = []
    for n_labels, n_genes in SHAPES:
        deltas, labels = screen(n_labels, n_genes)
        tracemalloc.start()
        t0 = time.perf_counter()
        fx = fit_target_effects(deltas, labels)
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append([n_labels, n_genes, len(fx.targets), round(seconds, 2), round(peak / 1e9, 3)])
        print(rows[-1], flush=True)
    notes = (
        f"One call of `fit_target_effects` (penalties {list(LAMBDAS)} compared by exact "
        "leave-one-label-out error) on random float32 deltas; 80 % of the labels are "
        "singles, 20 % pairs of them. 'peak GB' is the peak of Python allocations during "
        "the call (tracemalloc: numpy arrays included, BLAS workspace not). The regressor "
        "fits it once per cell type plus once pooled, at the start of `fit`."
    )
    path = write_result(
        "effects",
        title="Joint target-effect fit (the regressor's baseline): time and memory",
        columns=["labels", "genes", "targets", "seconds", "peak GB"],
        rows=rows,
        notes=notes,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
