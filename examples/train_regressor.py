"""Train a PerturbationRegressor and predict held-out perturbations.

Uses the real Norman K562 data when the shared folder is beside the checkout
(GO BP as prior knowledge, so unmeasured targets get an embedding), otherwise a
simulated screen. Prints the training history, then compares held-out
predictions with the model's own starting point (its baseline) and with
predicting "no change".

    python examples/train_regressor.py [--epochs 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sktx.model_selection import PerturbationSplit
from sktx.regressor import PerturbationRegressor

SHARED = Path(__file__).resolve().parents[2] / "shared"
NORMAN = SHARED / "data" / "norman2019_mcfaline2023_devel.h5ad"
GO_BP = SHARED / "genesets" / "go_bp_2021.gmt"


def load():
    """Data, the keys describing it and the gene sets to use."""
    if NORMAN.exists():
        import anndata as ad

        full = ad.read_h5ad(NORMAN)
        adata = full[(full.obs["cell_type"] == "k562").to_numpy()].copy()
        keys = {"perturbation_key": "perturbation", "control_label": "control"}
        return adata, keys, str(GO_BP) if GO_BP.exists() else None
    from sktx.datasets import make_perturbseq

    print("shared data not found; using a simulated screen")
    adata = make_perturbseq(n_cells=3000, n_genes=300, n_perturbations=20, random_state=0)
    return adata, {}, None


def no_change_score(test, keys) -> float:
    """Negative pseudobulk-delta MSE of predicting the controls unchanged."""
    key = keys.get("perturbation_key", "target_gene")
    ctrl_label = keys.get("control_label", "non-targeting")
    X = test.X.toarray() if hasattr(test.X, "toarray") else np.asarray(test.X)
    labels = test.obs[key].to_numpy()
    ctrl = X[labels == ctrl_label].mean(0)
    perts = sorted(set(labels) - {ctrl_label})
    return -float(np.mean([np.mean((X[labels == p].mean(0) - ctrl) ** 2) for p in perts]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    adata, keys, gene_sets = load()
    train_idx, test_idx = next(
        PerturbationSplit(5, shuffle=True, random_state=0, **keys).split(adata)
    )
    train, test = adata[train_idx].copy(), adata[test_idx].copy()

    common = dict(**keys, gene_sets=gene_sets, n_jobs=1, random_state=0, on_unknown_target="warn")
    model = PerturbationRegressor(max_epochs=args.epochs, verbose=1, **common).fit(train)
    baseline = PerturbationRegressor(max_epochs=0, **common).fit(train)

    print(f"\nheld out: {sorted(set(test.obs[keys.get('perturbation_key', 'target_gene')]))}")
    print("pseudobulk-delta score (higher is better, 0 = perfect)")
    print(f"  no change           {no_change_score(test, keys):.5f}")
    print(f"  baseline (0 epochs) {baseline.score(test):.5f}")
    print(f"  trained model       {model.score(test):.5f}")

    # simulate one held-out perturbation from control cells
    key = keys.get("perturbation_key", "target_gene")
    ctrl_label = keys.get("control_label", "non-targeting")
    label = sorted(set(test.obs[key]) - {ctrl_label})[0]
    query = test[(test.obs[key] == ctrl_label).to_numpy()].copy()
    query.obs[key] = label
    pred = model.predict(query)
    print(f"\npredicted {pred.n_obs} cells of {label!r}: {pred}")


if __name__ == "__main__":
    main()
