"""Train on one or several devices with accelerate and score held-out perturbations.

The same script runs alone or under ``accelerate launch``; the accelerator finds
out how many processes there are and every process trains on its share of the
sets. Data: the real Norman K562 cells when the shared folder is beside the
checkout (GO BP as prior knowledge), otherwise a simulated screen.

    python examples/accelerate_train.py                       # one process
    accelerate launch --num_processes 4 examples/accelerate_train.py   # 4 GPUs
    accelerate launch --mixed_precision bf16 ... examples/accelerate_train.py
    # two CPU processes over gloo (this is how it was tested without GPUs):
    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_train.py --cpu

Only the main process prints and writes; every process predicts the same.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from accelerate import Accelerator

from sktx.accelerate import AcceleratedPerturbationRegressor
from sktx.model_selection import PerturbationSplit

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

    adata = make_perturbseq(n_cells=3000, n_genes=300, n_perturbations=20, random_state=0)
    return adata, {}, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8, help="sets per step and process")
    parser.add_argument("--cpu", action="store_true", help="use CPU processes even with GPUs")
    parser.add_argument("--save", type=Path, help="write the fitted parameters here")
    args = parser.parse_args()

    # mixed precision, processes and devices come from `accelerate launch` (or its config)
    accelerator = Accelerator(cpu=args.cpu)
    adata, keys, gene_sets = load()
    train_idx, test_idx = next(
        PerturbationSplit(5, shuffle=True, random_state=0, **keys).split(adata)
    )
    train, test = adata[train_idx].copy(), adata[test_idx].copy()
    accelerator.print(
        f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision "
        f"{accelerator.mixed_precision!r}; train {train.n_obs} cells, test {test.n_obs} cells"
    )

    model = AcceleratedPerturbationRegressor(
        accelerator=accelerator,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        gene_sets=gene_sets,
        random_state=0,  # required with several processes: all draw the same sets
        on_unknown_target="warn",
        verbose=1,
        **keys,
    )
    start = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - start
    score = model.score(test)  # every process computes the same number
    accelerator.print(f"fit wall time {fit_s:.1f} s; held-out pseudobulk-delta score {score:.5f}")
    if args.save is not None:
        model.save_params(f_params=args.save)  # writes on the main process only


if __name__ == "__main__":
    main()
