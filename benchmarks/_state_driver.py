"""Train Arc State's transition model for a time budget; print step timings and its curve.

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
Training uses the cells outside ``valid`` only and runs for ``--budget`` seconds
of clock (from building the model; evaluations taken out). Evaluations
(``_convergence``, the same code that scores sktx): the model's forward on the
``eval_query`` held-out control cells of each group with the group's one-hot
perturbation, the mean of the predicted cells as the group's pseudobulk. FLOPs
(``FlopCounterMode``) of one more step after the budget.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from _convergence import next_eval, pseudobulk_mse


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("npz")
    p.add_argument("--budget", type=float, default=120.0, help="training-clock seconds")
    p.add_argument("--growth", type=float, default=1.25, help="evaluation spacing")
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
    train = ~d["valid"]
    n_perts = int(label.max()) + 1
    G = X.shape[1]
    t0 = time.perf_counter()  # the clock starts with building the model
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
    for i in np.flatnonzero(train):
        groups.setdefault((int(label[i]), int(ct[i])), []).append(i)
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

    query, eval_label = d["eval_query"], d["eval_label"]

    def evaluate() -> float:
        model.eval()
        pred = []
        with torch.no_grad():
            for s in range(0, len(eval_label), a.batch):
                q = query[s : s + a.batch]  # (groups, set_size) rows of held-out controls
                b = {
                    "ctrl_cell_emb": torch.as_tensor(X[q.ravel()]),
                    "pert_emb": eye[np.repeat(eval_label[s : s + a.batch], q.shape[1])],
                }
                out = model.forward(b, padded=True).reshape(len(q), q.shape[1], G)
                pred.append(out.mean(1).numpy())
        model.train()
        return pseudobulk_mse(np.concatenate(pred), d["eval_observed"])

    paused, curve, wall, cpu = 0.0, [], [], []

    def clock() -> float:
        return time.perf_counter() - t0 - paused

    def score() -> float:
        nonlocal paused
        start = time.perf_counter()
        mse = evaluate()
        paused += time.perf_counter() - start
        curve.append((clock(), mse))
        return next_eval(clock(), a.growth, a.budget / 40)

    model.train()
    nxt = score()  # the untrained model
    while clock() < a.budget:
        t, c = time.perf_counter(), time.process_time()
        step(batch())  # includes assembling the batch from the in-memory matrix
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if clock() >= nxt or clock() >= a.budget:
            nxt = score()
    with FlopCounterMode(display=False) as fc:  # off the clock, after the last evaluation
        step(batch())
    flops = fc.get_total_flops()
    n_params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "step_s": wall[1:],  # the first step warms up
                "step_cpu_s": cpu[1:],
                "flops_per_step": flops,
                "sets_per_step": a.batch,
                "cells_per_step": a.batch * a.set_size,
                "n_params": n_params,
                "n_steps": len(wall),
                "curve": curve,
                "eval_s": paused,
            }
        )
    )


if __name__ == "__main__":
    main()
