"""Train Arc State's transition model for a few steps and print per-step timings as JSON.

Runs ONLY inside the benchmark's own venv (``/work/state_venv``, ``pip install
torch==2.13.0 arc-state``), as a subprocess of ``bench_throughput.py``: State's
code (CC BY-NC-SA 4.0) is an external comparison, never imported by sktx. This
driver imports it at run time from that venv; nothing of State is copied here.

Input: an ``.npz`` with ``X`` (cells x genes, log1p float32), ``label`` (int
perturbation codes, ``control`` the control code), ``ct`` (int cell types).
Each step: ``batch`` sets of ``set_size`` perturbed cells of one perturbation
and cell type, each paired with random control cells of that cell type
(State's ``basal_mapping_strategy="random"``), one-hot perturbation
embeddings, State's energy loss, Adam (State's ``configure_optimizers``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("npz")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--set-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    from state.tx.models.state_transition import StateTransitionPerturbationModel
    from torch.utils.flop_counter import FlopCounterMode

    d = np.load(a.npz)
    X, label, control = d["X"], d["label"], int(d["control"])
    ct = np.broadcast_to(d["ct"], label.shape)  # a scalar when there is one cell type
    n_perts = int(label.max()) + 1
    G = X.shape[1]
    model = StateTransitionPerturbationModel(
        input_dim=G,
        hidden_dim=a.hidden,
        output_dim=G,
        pert_dim=n_perts,
        gene_dim=G,
        embed_key=None,
        output_space="gene",
        gene_decoder_bool=False,
        cell_set_len=a.set_size,
        n_encoder_layers=1,
        n_decoder_layers=1,
        loss="energy",
        distributional_loss="energy",
        predict_residual=True,
        transformer_backbone_key="llama",
        transformer_backbone_kwargs={
            "bidirectional_attention": True,
            "max_position_embeddings": a.set_size,
            "hidden_size": a.hidden,
            "intermediate_size": 4 * a.hidden,
            "num_hidden_layers": a.layers,
            "num_attention_heads": max(1, a.hidden // 64),
            "num_key_value_heads": max(1, a.hidden // 64),
            "head_dim": 64,
            "use_cache": False,
            "attention_dropout": 0.0,
            "hidden_dropout": 0.0,
        },
    )
    model.log = lambda *args, **kw: None  # no Lightning trainer attached
    opt = model.configure_optimizers()
    groups = {}
    for i, (lab, c) in enumerate(zip(label.tolist(), ct.tolist(), strict=True)):
        groups.setdefault((lab, c), []).append(i)
    ctrl = {c: np.array(v) for (lab, c), v in groups.items() if lab == control}
    pert = [(k, np.array(v)) for k, v in groups.items() if k[0] != control and k[1] in ctrl]
    eye = torch.eye(n_perts)

    def batch():
        idx = rng.integers(len(pert), size=a.batch)
        tgt, bas, pe = [], [], []
        for i in idx:
            (lab, c), cells = pert[i]
            tgt.append(X[rng.choice(cells, a.set_size)])
            bas.append(X[rng.choice(ctrl[c], a.set_size)])
            pe.append(eye[[lab] * a.set_size])
        return {
            "pert_cell_emb": torch.as_tensor(np.concatenate(tgt)),
            "ctrl_cell_emb": torch.as_tensor(np.concatenate(bas)),
            "pert_emb": torch.cat(pe),
        }

    def step(b):
        loss = model.training_step(b, 0)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return float(loss)

    model.train()
    step(batch())  # warm-up
    with FlopCounterMode(display=False) as fc:
        step(batch())
    flops = fc.get_total_flops()
    wall, cpu = [], []
    for _ in range(a.steps):
        t, c = time.perf_counter(), time.process_time()
        step(batch())  # includes assembling the batch from the in-memory matrix
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "step_s": wall,
                "step_cpu_s": cpu,
                "flops_per_step": flops,
                "sets_per_step": a.batch,
                "cells_per_step": a.batch * a.set_size,
                "n_params": n_params,
            }
        )
    )


if __name__ == "__main__":
    main()
