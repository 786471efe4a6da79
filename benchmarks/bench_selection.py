"""Benchmark: GeneSelector fit time and peak memory on simulated data.

Simulates ``make_perturbseq(n_cells, 18080, 100, gene_names="symbols")`` (not
timed), writes it to a temporary h5ad, then fits ``GeneSelector(n_genes=5000)``
in a fresh subprocess that reads the file, so peak RSS covers only loading
the data and selecting genes.

Usage::

    python benchmarks/bench_selection.py                   # 10,000 and 50,000 cells
    python benchmarks/bench_selection.py --cells 2000 --genes 2000   # quick check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_gb, write_result


def worker(path: str, n_genes: int, repeats: int) -> dict:
    import anndata as ad

    from sktx.selection import GeneSelector

    t0 = time.perf_counter()
    adata = ad.read_h5ad(path)
    load_s = time.perf_counter() - t0
    rss_loaded = peak_rss_gb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sel = GeneSelector(n_genes=n_genes).fit(adata)
        times.append(time.perf_counter() - t0)
    return {
        "load_s": load_s,
        "fit_s": min(times),
        "fit_s_all": times,
        "rss_loaded_gb": rss_loaded,
        "peak_rss_gb": peak_rss_gb(),
        "nnz": int(adata.X.nnz),
        "hvg_flavor": sel.hvg_flavor_,
        "categories": sel.categories_["category"].value_counts().to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--genes", type=int, default=18_080)
    parser.add_argument("--perturbations", type=int, default=100)
    parser.add_argument("--n-genes", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", nargs=3, metavar=("H5AD", "N_GENES", "REPEATS"))
    args = parser.parse_args()
    if args.worker:
        path, n_genes, repeats = args.worker
        print(json.dumps(worker(path, int(n_genes), int(repeats))))
        return

    from sktx.datasets import make_perturbseq

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_cells in args.cells:
            t0 = time.perf_counter()
            adata = make_perturbseq(
                n_cells, args.genes, args.perturbations, gene_names="symbols", random_state=0
            )
            sim_s = time.perf_counter() - t0
            path = Path(tmp) / f"sim_{n_cells}.h5ad"
            adata.write_h5ad(path)
            del adata
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(path), str(args.n_genes),
                 str(args.repeats)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n_cells} cells: simulate {sim_s:.1f} s, {res}", flush=True)
            rows.append(
                [
                    n_cells,
                    args.genes,
                    args.n_genes,
                    res["nnz"],
                    round(res["fit_s_all"][0], 2),
                    round(res["fit_s"], 2),
                    round(res["rss_loaded_gb"], 2),
                    round(res["peak_rss_gb"], 2),
                    res["hvg_flavor"],
                ]
            )
    write_result(
        "selection",
        title="GeneSelector: fit time and peak memory (simulated counts, CSR)",
        columns=[
            "cells",
            "genes",
            "n_genes selected",
            "nonzeros",
            "first fit (s)",
            "fit time (s, best of repeats)",
            "RSS after loading data (GB)",
            "peak RSS (GB)",
            "HVG flavor",
        ],
        rows=rows,
        notes=(
            f"make_perturbseq(cells, {args.genes}, {args.perturbations}, gene_names='symbols', "
            "random_state=0) raw counts; the fit includes validation, log-normalisation of a "
            "copy, scanpy HVG scoring, pseudobulk responses and ranking. Data generation is "
            "not timed. The first fit in a process includes numba compilation inside scanpy. "
            "Each size runs in a fresh process that reads the h5ad, so peak RSS "
            "covers the data plus the fit."
        ),
    )


if __name__ == "__main__":
    main()
