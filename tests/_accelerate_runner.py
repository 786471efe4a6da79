"""Train a small AcceleratedPerturbationRegressor and save what each process ends with.

test_accelerate.py runs it under ``accelerate launch --multi_gpu --num_processes 2``
(two CPU processes talking over gloo on loopback here). ``fit`` then one more
epoch through ``partial_fit``; each rank writes ``rank{i}.npz`` (parameters,
predictions, history) into the output folder given as the first argument, and
every rank calls ``save_params`` to ``params_rank{i}.pt`` (only the main process
may write).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from sktx.accelerate import AcceleratedPerturbationRegressor
from sktx.datasets import make_perturbseq

# shared with test_accelerate.py so the 1-process reference trains the same model
DATA = dict(n_cells=600, n_genes=60, n_perturbations=6, random_state=0)
PARAMS = dict(
    max_epochs=4,
    set_size=16,
    batch_size=2,
    d_model=16,
    n_layers=1,
    random_state=0,
    n_jobs=1,
    # these runs compare trained networks, so their residual must reach the predictions:
    # one network without a validation split keeps it as is (scale 1); the out-of-fold
    # factor of crossfit=3 drops a 4-epoch residual on 6 perturbations (to 0)
    crossfit=0,
    validation_fraction=0.0,
)


def new_pairs(labels) -> list[str]:
    """Combinations ``A+B`` of the singles in ``labels`` that are not themselves in it."""
    singles = [c for c in labels if "+" not in c]
    return [f"{a}+{b}" for a in singles for b in singles if a < b and f"{a}+{b}" not in labels]


def query(adata):
    """Control cells relabelled with perturbations ``adata`` does not hold.

    New combinations of its singles and measured genes it never perturbed: a fitted
    perturbation is predicted as its own fitted delta, so only unseen ones show what the
    networks (their precision, their processes) predict.
    """
    import anndata as ad

    ctrl = adata[adata.obs["target_gene"] == "non-targeting"]
    fitted = [c for c in adata.obs["target_gene"].cat.categories if c != "non-targeting"]
    pairs = new_pairs(fitted)
    targets = {t for c in fitted for t in c.split("+")}
    never = [g for g in adata.var_names if g not in targets]
    parts = []
    for label in pairs[:4] + never[:3]:
        part = ctrl.copy()
        part.obs["target_gene"] = label
        parts.append(part)
    return ad.concat(parts, index_unique="-")


def main() -> None:
    out = Path(sys.argv[1])
    accelerator = Accelerator(cpu=True)
    adata = make_perturbseq(**DATA)
    model = AcceleratedPerturbationRegressor(accelerator=accelerator, **PARAMS).fit(adata)
    # resumed training must wrap the (unwrapped) module in DDP again
    model.partial_fit(adata, epochs=1)
    rank = accelerator.process_index
    model.save_params(f_params=out / f"params_rank{rank}.pt")
    flat = torch.cat([p.detach().flatten() for p in model.module_.parameters()]).numpy()
    np.savez(
        out / f"rank{rank}.npz",
        params=flat,
        pred=model.predict(query(adata)).X,
        train_loss=np.array(model.history[:, "train_loss"]),
        valid_loss=np.array(model.history[:, "valid_loss"]),
        train_batches=np.array(model.history[:, "train_batch_count"]),
        num_processes=accelerator.num_processes,
    )


if __name__ == "__main__":
    main()
