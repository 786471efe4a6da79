"""Draw one gene's attention neighbourhood (docs/img/sparse_attention.png).

Fits the gene graph of a :class:`~sktx.regressor.PerturbationRegressor` on a
simulated screen whose genes carry real symbols (the built-in curated lists),
then draws the genes one gene attends to (first ring) and the genes those
attend to (second ring, two layers of attention), coloured by edge source:
shared gene sets (prior knowledge) or co-expression in the training cells.

    python examples/plot_sparse_attention.py [--gene GENE] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sktx.data import get_matrix, log_normalize
from sktx.datasets import make_perturbseq
from sktx.graph import build_gene_graph, pca_gene_loadings

COLORS = {1: "#1f77b4", 2: "#ff7f0e"}
LABELS = {1: "shared gene sets (prior)", 2: "co-expression (training cells)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gene", default=None, help="centre gene (default: a TF)")
    parser.add_argument("--neighbors", type=int, default=8)
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[1] / "docs" / "img" / "sparse_attention.png"),
    )
    args = parser.parse_args()

    adata = make_perturbseq(
        n_cells=1500, n_genes=400, n_perturbations=10, gene_names="symbols", random_state=0
    )
    X = get_matrix(log_normalize(adata))
    genes = list(adata.var_names)
    graph = build_gene_graph(
        X, genes, n_neighbors=args.neighbors, loadings=pca_gene_loadings(X, 16), random_state=0
    )
    if args.gene is None:
        # a gene with both kinds of edges makes the clearest picture
        mixed = [g for g in range(len(genes)) if {1, 2} <= set(graph.source[g].tolist())]
        centre = mixed[0] if mixed else 0
    else:
        centre = genes.index(args.gene)

    first = [int(j) for j in graph.neighbors[centre][1:]]
    pos = {centre: np.zeros(2)}
    angles = np.linspace(0, 2 * np.pi, len(first), endpoint=False)
    for a, j in zip(angles, first, strict=True):
        pos[j] = np.array([np.cos(a), np.sin(a)])
    second = []
    for a, j in zip(angles, first, strict=True):
        outer = [int(k) for k in graph.neighbors[j][1:] if int(k) not in pos][:3]
        for off, k in zip(np.linspace(-0.25, 0.25, max(len(outer), 1)), outer, strict=False):
            pos[k] = 2.1 * np.array([np.cos(a + off), np.sin(a + off)])
            second.append((j, k, int(graph.source[j][list(graph.neighbors[j]).index(k)])))

    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    for j, k, src in second:
        ax.annotate(
            "",
            xy=pos[k],
            xytext=pos[j],
            arrowprops=dict(arrowstyle="<-", color=COLORS[src], alpha=0.35, lw=1),
        )
    for j, src in zip(graph.neighbors[centre][1:], graph.source[centre][1:], strict=True):
        ax.annotate(
            "",
            xy=pos[int(j)],
            xytext=pos[centre],
            arrowprops=dict(arrowstyle="<-", color=COLORS[int(src)], lw=2.2),
        )
    for g, p in pos.items():
        ring = 0 if g == centre else (1 if g in first else 2)
        size = (1400, 700, 380)[ring]
        ax.scatter(
            *p, s=size, color=("#2ca02c", "#dddddd", "#f2f2f2")[ring], zorder=3, edgecolor="#555555"
        )
        ax.text(*p, genes[g], ha="center", va="center", fontsize=(11, 8, 6.5)[ring], zorder=4)
    for src, color in COLORS.items():
        ax.plot([], [], color=color, lw=2.5, label=LABELS[src])
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.06), ncol=2, frameon=False)
    ax.set_title(
        f"Sparse attention: {genes[centre]} attends to itself + {len(first)} neighbours;\n"
        "two layers reach the outer ring (arrows: information flow)",
        fontsize=11,
    )
    ax.set_xlim(-2.6, 2.6)
    ax.set_ylim(-2.6, 2.6)
    ax.set_aspect("equal")
    ax.axis("off")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
