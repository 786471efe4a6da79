"""Load the two shared real Perturb-seq datasets into the sktx data contract.

Run from the repository root::

    python examples/load_real_data.py            # reads ../shared/data
    python examples/load_real_data.py /some/dir  # or another folder with the files

The files are read in place (never copied). Norman/McFaline is already
log-normalised and is kept as is; Datlinger holds raw counts and is normalised,
with the counts kept in ``layers["counts"]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sktx import validate_adata
from sktx.datasets import load_h5ad

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"

DATASETS = {
    "norman2019_mcfaline2023_devel.h5ad": {
        "perturbation_key": "perturbation",
        "control_label": "control",
        "cell_type_key": "cell_type",
    },
    "datlinger2017_jurkat.h5ad": {
        "perturbation_key": "target_gene",
        "control_label": "control",
    },
}


def summarize(adata) -> str:
    """A few lines describing a loaded screen."""
    meta = adata.uns["sktx"]
    info = validate_adata(
        adata,
        perturbation_key=meta["perturbation_key"],
        control_label=meta["control_label"],
        cell_type_key=meta.get("cell_type_key"),
        check_values=False,  # load_h5ad has already scanned the values
    )
    counts = {p: int((info.labels == p).sum()) for p in info.perturbations}
    sizes = np.array(list(counts.values()))
    combos = [p for p in info.perturbations if "+" in p]
    targets = {t for p in info.perturbations for t in p.split("+")}
    measured = sorted(targets & set(adata.var_names))
    lines = [
        f"  shape: {adata.n_obs} cells x {adata.n_vars} genes",
        f"  X: {'log1p' if meta['x_is_log1p'] else 'counts'}"
        f"{' (normalised by load_h5ad; counts in layers[counts])' if meta['normalized'] else ''}",
        f"  labels: obs[{meta['perturbation_key']!r}], control {meta['control_label']!r} "
        f"({int(info.is_control.sum())} cells)",
        f"  perturbations: {len(info.perturbations)} ({len(combos)} combinations); "
        f"cells per perturbation min/median/max = {sizes.min()}/{int(np.median(sizes))}/"
        f"{sizes.max()}",
        f"  targets measured among the genes: {len(measured)} of {len(targets)} "
        f"({', '.join(measured[:8])}{' ...' if len(measured) > 8 else ''})",
    ]
    if info.cell_types is not None:
        types, n = np.unique(info.cell_types, return_counts=True)
        ctrl = {t: int((info.cell_types[info.is_control] == t).sum()) for t in types}
        lines.append(
            "  cell types: "
            + ", ".join(
                f"{t} ({c} cells, {ctrl[t]} controls)" for t, c in zip(types, n, strict=True)
            )
        )
    return "\n".join(lines)


def main(data_dir: Path) -> None:
    for name, keys in DATASETS.items():
        adata = load_h5ad(data_dir / name, **keys)
        print(f"{name}\n{summarize(adata)}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR)
