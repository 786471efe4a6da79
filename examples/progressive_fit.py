"""Train a GeneSelector + PerturbationRegressor pipeline progressively over growing gene sets.

Uses the real Norman/McFaline data (500 genes; phases 100 -> 250 -> 500) when the
shared folder is beside the checkout, otherwise a simulated screen. Prints one
line per phase and the held-out score of the final model.

    python examples/progressive_fit.py [--epochs 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.pipeline import Pipeline

from sktx.model_selection import PerturbationSplit
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.report import phase_history_frame
from sktx.selection import GeneSelector

NORMAN = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "norman2019_mcfaline2023_devel.h5ad"
)


def load():
    """Data, the keys describing it and the phase plan."""
    if NORMAN.exists():
        import anndata as ad

        keys = dict(
            perturbation_key="perturbation", control_label="control", cell_type_key="cell_type"
        )
        return ad.read_h5ad(NORMAN), keys, (100, 250, 500)
    from sktx.datasets import make_perturbseq

    adata = make_perturbseq(n_cells=1500, n_genes=600, n_perturbations=16, random_state=0)
    return (
        adata,
        dict(perturbation_key="target_gene", control_label="non-targeting"),
        (100, 300, 600),
    )


def main(epochs: int = 3) -> None:
    adata, keys, phases = load()
    cv = PerturbationSplit(
        5, shuffle=True, random_state=0, perturbation_key=keys["perturbation_key"],
        control_label=keys["control_label"],
    )  # fmt: skip
    train_idx, test_idx = next(cv.split(adata))
    train, test = adata[train_idx].copy(), adata[test_idx].copy()

    pipe = Pipeline(
        [
            ("select", GeneSelector(**keys, random_state=0)),
            ("model", PerturbationRegressor(**keys, on_unknown_target="warn", set_size=32)),
        ]
    )
    # phase 1: essential TF/pluripotency/target genes; later phases add cell cycle and
    # regulators, responsive genes, then HVGs; each phase warm-starts the same model
    prog = ProgressiveFit(pipe, phases=phases, epochs_per_phase=epochs, random_state=0, verbose=1)
    prog.fit(train)

    frame = phase_history_frame(prog.phase_history_)
    print(frame[["phase", "n_genes", "epoch", "train_loss", "valid_loss"]].to_string(index=False))
    for h in prog.phase_history_:
        print(
            f"phase {h['phase']}: {h['n_genes']} genes, {h['wall_time_s']:.1f} s, "
            f"peak RSS {h['peak_rss_gb']:.2f} GB"
        )
    print(f"held-out score (-MSE of pseudobulk deltas): {prog.score(test):.5f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per phase")
    main(ap.parse_args().epochs)
