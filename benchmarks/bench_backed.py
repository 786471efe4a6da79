"""Out-of-core training: peak memory of PerturbationRegressor.fit on a backed h5ad.

Writes a simulated 200,000-cell x 5,000-gene CSR h5ad to a temporary folder in
blocks (never the whole matrix in memory), then fits one epoch on
``anndata.read_h5ad(path, backed="r")`` in a fresh subprocess, and the same on
a backed view of its first 20,000 cells, so peak RSS can be compared across
cell counts and with the size the matrix would have in memory.

Blocks: one screen is simulated with ``make_perturbseq`` (10,000 cells); every
further block resamples its cells (labels kept) and thins each cell's counts
binomially (keep fraction ~ U(0.8, 1)), so the blocks share one ground truth.

    python benchmarks/bench_backed.py              # ~10-15 min on 2 shared cores
    python benchmarks/bench_backed.py --cells 40000  # quicker check
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss_gb, write_result

BLOCK = 10_000
GENES = 5_000
CELLS = 200_000
SMALL = 20_000
# Larger sets and no energy-distance term keep one epoch over 200,000 cells within a
# few minutes on 2 shared cores; reading is the same (rows of 2 x 8 x 256 cells per step).
MODEL = dict(max_epochs=1, set_size=256, distributional_loss=0.0, random_state=0)


def write_blocks(path: Path, n_cells: int, n_genes: int, seed: int = 0) -> dict:
    """Write the screen block by block; returns sizes (bytes) of the stored CSR."""
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    from sktx.datasets import make_perturbseq

    base = make_perturbseq(n_cells=BLOCK, n_genes=n_genes, n_perturbations=40, random_state=seed)
    X = sp.csr_matrix(base.X, dtype=np.float32)
    rng = np.random.RandomState(seed)
    n_blocks = -(-n_cells // BLOCK)
    picks = [np.arange(BLOCK)] + [rng.randint(0, BLOCK, BLOCK) for _ in range(n_blocks - 1)]
    rows = np.concatenate(picks)[:n_cells]
    obs = base.obs.iloc[rows].copy()
    obs.index = pd.Index([f"cell{i}" for i in range(n_cells)])
    # obs/var first (small), then X appended block by block with h5py
    ad.AnnData(obs=obs, var=base.var.copy()).write_h5ad(path)
    nnz = 0
    with h5py.File(path, "a") as f:
        for b in range(n_blocks):
            idx = rows[b * BLOCK : (b + 1) * BLOCK]
            block = X[idx]
            if b > 0:  # binomial thinning: a new draw of each cell, same ground truth
                keep = rng.uniform(0.8, 1.0, len(idx))
                p = np.repeat(keep, np.diff(block.indptr))
                block.data = rng.binomial(block.data.astype(np.int64), p).astype(np.float32)
                block.eliminate_zeros()
            nnz += block.nnz
            if b == 0:
                write_elem(f, "X", block)
            else:
                sparse_dataset(f["X"]).append(block)
    return {"nnz": int(nnz), "csr_bytes": int(nnz * 8 + (n_cells + 1) * 8)}


def _proc_status_gb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process image, in GB.

    Unlike ``ru_maxrss``, ``VmHWM`` is not inherited across ``exec`` from the
    parent, whose writer peak would otherwise floor the worker's number.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def worker(path: str, n_obs: int, threads: int) -> dict:
    import anndata as ad

    from sktx.regressor import PerturbationRegressor

    rss_start = _proc_status_gb("VmRSS")
    adata = ad.read_h5ad(path, backed="r")
    if n_obs < adata.n_obs:
        adata = adata[:n_obs]  # a backed view: still read row by row
    model = PerturbationRegressor(n_jobs=threads, **MODEL)
    start = time.perf_counter()
    model.fit(adata)
    wall = time.perf_counter() - start
    epoch_s = float(model.history_[-1, "dur"])
    return {
        "n_obs": int(adata.n_obs),
        "cells_per_s": float(model.history_[-1, "cells_per_s"]),
        "epoch_s": epoch_s,
        "setup_s": wall - epoch_s,
        "wall_s": wall,
        "rss_after_imports_gb": rss_start,
        "peak_rss_gb": _proc_status_gb("VmHWM"),
        "ru_maxrss_gb": peak_rss_gb(),
    }


def run(path: Path, n_obs: int, threads: int, timeout: int = 1800) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(path), str(n_obs), "--threads", str(threads)]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-2000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_avg_1min": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "N_OBS"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cells", type=int, default=CELLS)
    parser.add_argument("--genes", type=int, default=GENES)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.threads)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "screen.h5ad"
        start = time.perf_counter()
        sizes = write_blocks(path, args.cells, args.genes)
        write_s = time.perf_counter() - start
        writer_rss = peak_rss_gb()
        file_gb = path.stat().st_size / 1e9
        print(f"wrote {path} ({file_gb:.2f} GB) in {write_s:.0f} s", flush=True)
        results = [run(path, n, args.threads) for n in (min(SMALL, args.cells), args.cells)]

    rows = []
    for r in results:
        dense_gb = r["n_obs"] * args.genes * 4 / 1e9
        csr_gb = sizes["csr_bytes"] * r["n_obs"] / args.cells / 1e9
        rows.append(
            [
                r["n_obs"],
                args.genes,
                round(dense_gb, 2),
                round(csr_gb, 2),
                round(r["peak_rss_gb"], 2),
                round(r["peak_rss_gb"] / dense_gb, 2),
                round(r["peak_rss_gb"] / csr_gb, 2),
                round(r["cells_per_s"]),
                round(r["setup_s"], 1),
                round(r["epoch_s"], 1),
                round(r["load_avg_1min"], 1),
            ]
        )
        print(rows[-1], flush=True)
    notes = (
        f"`PerturbationRegressor(max_epochs=1, set_size=256, distributional_loss=0, "
        f"n_jobs={args.threads}, random_state=0)` (defaults otherwise; sets of 256 cells and no "
        "energy-distance term so one epoch over 200,000 cells takes minutes) fitted on "
        '`anndata.read_h5ad(path, backed="r")` of a simulated '
        f"CSR h5ad ({args.cells:,} cells x {args.genes:,} genes, raw counts, "
        f"{sizes['nnz']:,} non-zeros, {file_gb:.2f} GB on disk), and on the backed view of "
        "its first rows; each fit in a fresh subprocess. Dense GB = float32 cells x genes; "
        "CSR GB = float32 data + int32 indices + int64 indptr of those rows. Peak RSS = "
        "`VmHWM` of the fitting process, everything included (Python, torch, model, "
        f"optimizer; {results[0]['rss_after_imports_gb']:.2f} GB after imports). setup = "
        "everything outside the epoch: validation scan, pseudobulks, PCA sample, graph (all "
        "streamed) and the residual-scale fit on the validation sets; epoch = training "
        "plus validation (10 % of perturbations). The file was written in blocks of "
        f"{BLOCK:,} cells in {write_s:.0f} s (writer peak RSS {writer_rss:.2f} GB). "
        "2 shared CPU cores: `load avg` is the machine's 1-minute load when the fit started."
    )
    out = write_result(
        "backed",
        title="Out-of-core training on a backed h5ad: peak memory vs matrix size",
        columns=[
            "cells",
            "genes",
            "dense GB",
            "CSR GB",
            "peak RSS GB",
            "RSS / dense",
            "RSS / CSR",
            "cells/s",
            "setup s",
            "epoch s",
            "load avg",
        ],
        rows=rows,
        notes=notes,
        extra={"sizes": sizes, "file_gb": file_gb, "write_s": write_s, "raw": results},
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
