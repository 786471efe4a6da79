"""Select genes on the real Norman/McFaline data with comprehensive gene lists.

Run from the repository root::

    python examples/select_genes.py

Reads ``../shared/data/norman2019_mcfaline2023_devel.h5ad`` and the lists in
``../shared/genesets`` (relative to the repository) at run time.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from sktx.selection import GeneSelector, default_quotas

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data" / "norman2019_mcfaline2023_devel.h5ad"
SETS = SHARED / "genesets"


def main() -> None:
    adata = ad.read_h5ad(DATA)
    print(f"data: {adata.n_obs} cells x {adata.n_vars} genes (log1p)")

    gene_sets = {
        "tf": SETS / "human_tfs_lambert2018.txt",
        "cell_cycle": [
            SETS / "cell_cycle_tirosh2016_s.txt",
            SETS / "cell_cycle_tirosh2016_g2m.txt",
        ],
        "metabolic": [SETS / f"metabolic_{p}.txt" for p in ("glycolysis", "tca", "oxphos")],
        "pluripotency": SETS / "pluripotency.txt",
    }
    selector = GeneSelector(
        n_genes=200,
        gene_sets=gene_sets,
        perturbation_key="perturbation",
        control_label="control",
        cell_type_key="cell_type",
    )
    small = selector.fit_transform(adata)
    print(
        f"selected: {small.n_obs} cells x {small.n_vars} genes (HVG flavor {selector.hvg_flavor_})"
    )

    print("\ncurated genes found in the data:")
    for cat, genes in selector.gene_sets_.items():
        print(f"  {cat:<13} {len(genes):>4}")

    table = selector.categories_
    quota = default_quotas(200)
    print("\ncategory        quota  selected")
    for cat, n in quota.items():
        print(f"  {cat:<13} {n:>5}  {(table['category'] == cat).sum():>8}")

    print("\nfirst 15 genes (the 'essential' front of the ranking):")
    print(table.head(15).to_string(index=False))

    # Selections are nested: a larger selection starts with the smaller one.
    larger = selector.set_params(n_genes=400).fit(adata)
    assert list(larger.selected_genes_[:200]) == list(small.var_names)
    print("\nn_genes=400 starts with the 200 genes above: nested")


if __name__ == "__main__":
    main()
