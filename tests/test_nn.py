"""Torch modules: sparse attention gradients, dense reference, residual init, AMP, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from sktx.nn import (
    GeneTokenModel,
    NeighborAttention,
    SampledDot,
    SetLoss,
    SparseAggregate,
    SparseAttention,
    SparsePattern,
    energy_distance,
    predict_cells,
)


def _neighbors(G=6, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    cols = [
        torch.cat([torch.tensor([i]), torch.randperm(G, generator=g)[: K + 1]]) for i in range(G)
    ]
    out = []
    for i, c in enumerate(cols):
        seen = []
        for j in c.tolist():
            if j not in seen:
                seen.append(j)
        out.append(seen[:K])
        assert out[-1][0] == i
    return torch.tensor(out)


def test_sparse_functions_gradcheck():
    nbrs = _neighbors()
    pattern = SparsePattern(nbrs, n_blocks=2)
    n = pattern.n
    q = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: SampledDot.apply(a, b, pattern), (q, k))
    w = torch.rand(n * nbrs.shape[1], dtype=torch.float64, requires_grad=True)
    v = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: SparseAggregate.apply(a, b, pattern), (w, v))


def test_sparse_functions_match_dense():
    nbrs = _neighbors(G=7, K=4)
    G, K = nbrs.shape
    pattern = SparsePattern(nbrs, n_blocks=1)
    q, k, v = (torch.randn(G, 5) for _ in range(3))
    scores = SampledDot.apply(q, k, pattern).view(G, K)
    dense = q @ k.T
    assert torch.allclose(scores, torch.gather(dense, 1, nbrs), atol=1e-5)
    w = torch.rand(G * K)
    A = torch.zeros(G, G).scatter_add_(1, nbrs, w.view(G, K))
    assert torch.allclose(SparseAggregate.apply(w, v, pattern), A @ v, atol=1e-5)


def test_fused_attention_gradcheck_and_equals_the_composed_functions():
    nbrs = _neighbors()
    pattern = SparsePattern(nbrs, n_blocks=2, n_heads=3)
    n, K = pattern.n, nbrs.shape[1]
    q, k, v = (torch.randn(n, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    fused = lambda a, b, c: SparseAttention.apply(a, b, c, pattern, 0.5)  # noqa: E731
    assert torch.autograd.gradcheck(fused, (q, k, v))
    w = torch.softmax(SampledDot.apply(q * 0.5, k, pattern).view(-1, K), -1).reshape(-1)
    composed = SparseAggregate.apply(w, v, pattern)
    assert torch.allclose(fused(q, k, v), composed, atol=1e-12)


def test_pattern_rows_are_sample_gene_head_ordered():
    # row (b * G + g) * H + h attends to rows (b * G + j) * H + h, j in neighbours(g)
    nbrs = _neighbors(G=5, K=2)
    G, K = nbrs.shape
    B, H = 2, 3
    p = SparsePattern(nbrs, B, H)
    col = p.col.long().view(B, G, H, K)
    for b in range(B):
        for g in range(G):
            for h in range(H):
                assert col[b, g, h].tolist() == [(b * G + j) * H + h for j in nbrs[g].tolist()]
    dense = p.transposed(torch.arange(p.col.numel(), dtype=torch.float32)).to_dense()
    ref = p.matrix(torch.arange(p.col.numel(), dtype=torch.float32)).to_dense().T
    assert torch.equal(dense, ref)


def test_attention_dropout_path_matches_fused_path_when_inactive():
    torch.manual_seed(0)
    nbrs = _neighbors(G=8, K=3)
    x = torch.randn(3, 8, 8)
    att = NeighborAttention(8, n_heads=2, dropout=0.5).eval()  # eval: fused path
    ref = att(x, nbrs)
    att.train()
    att.dropout.p = 1e-12  # composed path, dropout drawing (almost) nothing
    assert torch.allclose(att(x, nbrs), ref, atol=1e-5)


def test_neighbor_attention_equals_masked_dense_attention():
    torch.manual_seed(0)
    nbrs = _neighbors(G=8, K=3)
    att = NeighborAttention(8, n_heads=2)
    x = torch.randn(3, 8, 8, requires_grad=True)
    out = att(x, nbrs)
    # reference: dense attention with everything outside the neighbourhood masked
    B, G, _ = x.shape
    q, k, v = att.qkv(x).view(B, G, 3, 2, 4).permute(2, 0, 3, 1, 4)
    mask = torch.full((G, G), float("-inf")).scatter_(1, nbrs, 0.0)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4) + mask, dim=-1)
    ref = att.out((w @ v).permute(0, 2, 1, 3).reshape(B, G, 8))
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _inputs(G=12, B=3, F=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "gene_hash": torch.randint(0, 2**15, (G, 2), generator=g),
        "gene_feat": torch.randn(G, F, generator=g),
        "neighbors": _neighbors(G, 4, seed),
        "basal": torch.rand(B, G, generator=g),
        "baseline": torch.randn(B, G, generator=g) * 0.1,
        "target_mask": (torch.rand(B, G, generator=g) < 0.1).float(),
        "pert_hash": torch.randint(0, 2**15, (B, 2, 2), generator=g),
        "pert_feat": torch.randn(B, 2, F, generator=g),
        "pert_mask": torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]),
    }


def test_untrained_model_is_the_baseline():
    m = GeneTokenModel(d_model=16, n_layers=2, n_features=6)
    X = _inputs()
    delta, log_scale = m(**X)
    assert torch.equal(delta, X["baseline"])
    assert torch.equal(log_scale, torch.zeros_like(log_scale))


def _perturb_head(m):
    with torch.no_grad():
        m.head.weight.normal_(0, 0.1)
        m.gene_embedding.weight.normal_(0, 0.1)


def test_parameter_shapes_do_not_depend_on_gene_count():
    m = GeneTokenModel(d_model=16, n_layers=1, n_features=6)
    shapes = {k: v.shape for k, v in m.state_dict().items() if k != "_extra_state"}
    for G in (12, 40):
        out, _ = m(**_inputs(G=G))
        assert out.shape == (3, G)
    assert shapes == {k: v.shape for k, v in m.state_dict().items() if k != "_extra_state"}


def test_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    m = GeneTokenModel(d_model=16, n_layers=2, n_features=6)
    _perturb_head(m)
    X = _inputs()
    grads = []
    for ckpt in (False, True):
        m.zero_grad()
        m.gradient_checkpointing = ckpt
        m.train()
        torch.manual_seed(1)  # same identity-dropout draw in both runs
        delta, ls = m(**X)
        (delta.pow(2).sum() + ls.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    m = GeneTokenModel(d_model=16, n_layers=2, n_features=6).eval()
    _perturb_head(m)
    X = _inputs()
    with torch.no_grad():
        ref, _ = m(**X)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = m(**X)
    assert low.dtype == torch.float32
    assert torch.allclose(ref, low, atol=0.05)
    assert not torch.equal(ref, low)  # autocast was really active


def test_backward_inside_bf16_autocast():
    # accelerate runs backward inside autocast; the CSR kernels have no bf16 path
    torch.manual_seed(0)
    m = GeneTokenModel(d_model=16, n_layers=1, n_features=6)
    _perturb_head(m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = m(**_inputs())
        out.float().pow(2).mean().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("attention", ["sparse", "dense"])
def test_attention_modes_run(attention):
    m = GeneTokenModel(d_model=16, n_layers=1, n_features=6, attention=attention)
    delta, _ = m(**_inputs())
    assert delta.shape == (3, 12)


def test_set_loss_and_energy_distance():
    torch.manual_seed(0)
    a = torch.rand(2, 16, 10)
    assert energy_distance(a, a).abs() < 1e-3
    assert energy_distance(a, a + 1.0) > 0.5
    loss = SetLoss(distributional=1.0)
    # no zero cells, so raising the mean by 1 scales every cell by (m + 1) / m
    m = a.mean(1)
    y = {
        "basal": m,
        "target": m + 1,
        "control_cells": a,
        "perturbed_cells": a * ((m + 1) / m).unsqueeze(1),
    }
    good = loss((torch.ones(2, 10), torch.zeros(2, 10)), y)
    bad = loss((torch.zeros(2, 10), torch.zeros(2, 10)), y)
    assert good < 1e-3 < bad


def _sparse_cells(seed=0, shape=(3, 60, 30)):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 3
    x = x * (torch.rand(shape, generator=g, dtype=torch.float64) < 0.25)
    x[:, :, 0] = 0  # a gene never detected in the controls
    return x, g


def test_predict_cells_hits_the_predicted_mean_and_stays_non_negative():
    x, g = _sparse_cells()
    basal = x.mean(1)
    delta = torch.randn(basal.shape, generator=g, dtype=torch.float64) * 0.5
    level = torch.full((x.shape[-1],), 0.8, dtype=torch.float64)
    y = predict_cells(x, basal, delta, torch.zeros_like(basal), level)
    torch.testing.assert_close(y.mean(1), torch.relu(basal + delta), rtol=0, atol=1e-12)
    assert (y >= 0).all()


def test_predict_cells_keeps_zeros_when_a_gene_goes_down():
    x, _ = _sparse_cells(1)
    basal = x.mean(1)
    y = predict_cells(x, basal, -0.5 * basal, torch.zeros_like(basal))
    assert torch.equal(y == 0, x == 0)
    torch.testing.assert_close(y, 0.5 * x)


def test_predict_cells_switches_on_the_deepest_zero_cells():
    # gene 0 is zero everywhere; cells differ in depth through gene 1
    x = torch.zeros(1, 5, 2, dtype=torch.float64)
    x[0, :, 1] = torch.tensor([1.0, 5.0, 2.0, 4.0, 3.0])
    basal = x.mean(1)
    delta = torch.tensor([[0.4, 0.0]], dtype=torch.float64)  # 2 cells at level 1.0
    y = predict_cells(x, basal, delta, torch.zeros_like(basal), torch.ones(2, dtype=torch.float64))
    assert y[0, :, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]  # the two deepest cells
    torch.testing.assert_close(y[0, :, 1], x[0, :, 1])


def test_predict_cells_caps_the_fold_and_spreads_the_rest():
    x = torch.tensor([[[2.0], [0.0], [0.0], [0.0]]], dtype=torch.float64)
    basal = x.mean(1)  # 0.5
    y = predict_cells(x, basal, torch.tensor([[1.0]], dtype=torch.float64), torch.zeros(1, 1))
    # fold capped at 2 (cell 0 -> 4.0), the remaining 0.5 of mean goes to zero cells
    assert y[0, 0, 0] == 4.0
    torch.testing.assert_close(y.mean(1), torch.tensor([[1.5]], dtype=torch.float64))
    assert ((y[0, 1:, 0] == 0) | (y[0, 1:, 0] > 0.5)).all()


def test_model_equals_the_permuted_layout_reference():
    # the (sample, gene, head) CSR layout must give what the former (head-major,
    # permute + select) layout gave: a masked dense attention over the same weights
    torch.manual_seed(0)
    m = GeneTokenModel(d_model=16, n_layers=2, n_features=6, id_dropout=0.0)
    _perturb_head(m)
    X = _inputs()
    nbrs = X["neighbors"]

    def reference(att, x, neighbors, pattern=None):
        B, G, d = x.shape
        H, dh = att.n_heads, att.d_head
        q, k, v = att.qkv(x).view(B, G, 3, H, dh).permute(2, 0, 3, 1, 4)
        mask = torch.full((G, G), float("-inf")).scatter_(1, nbrs, 0.0)
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + mask, dim=-1)
        return att.out((w @ v).permute(0, 2, 1, 3).reshape(B, G, d))

    outs = []
    for use_reference in (False, True):
        m.zero_grad()
        for block in m.blocks:
            if use_reference:
                block.attn.forward = reference.__get__(block.attn)
        delta, ls = m(**X)
        (delta.pow(2).sum() + ls.sum()).backward()
        outs.append((delta.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    for name, g in outs[0][1].items():
        assert torch.allclose(g, outs[1][1][name], atol=1e-5, rtol=1e-4), name


def test_basal_shift_defaults_to_zero_and_reaches_the_output():
    torch.manual_seed(0)
    m = GeneTokenModel(d_model=16, n_layers=1, n_features=6).eval()  # no id dropout
    _perturb_head(m)
    X = _inputs()
    zero = m(**X, basal_shift=torch.zeros_like(X["basal"]))[0]
    assert torch.equal(m(**X)[0], zero)
    shifted = m(**X, basal_shift=torch.full_like(X["basal"], 0.5))[0]
    assert (shifted - zero).abs().max() > 1e-4


def test_weights_saved_before_the_basal_shift_load_and_predict_as_before():
    # the first value layer used to take [basal, baseline]; such weights load with a
    # zero column for the shift, which is 0 at prediction
    torch.manual_seed(0)
    m = GeneTokenModel(d_model=16, n_layers=1, n_features=6).eval()
    _perturb_head(m)
    old = {k: v.clone() if torch.is_tensor(v) else v for k, v in m.state_dict().items()}
    old["value_enc.0.weight"] = old["value_enc.0.weight"][:, :2].clone()
    with torch.no_grad():
        m.value_enc[0].weight[:, 2] = 0.0
    X = _inputs()
    before = m(**X)[0]
    fresh = GeneTokenModel(d_model=16, n_layers=1, n_features=6).eval()
    fresh.load_state_dict(old)
    assert fresh.value_enc[0].weight.shape == (16, 3)
    assert torch.equal(fresh.value_enc[0].weight[:, 2], torch.zeros(16))
    torch.testing.assert_close(fresh(**X)[0], before)


def test_narrow_adam_moments_are_padded_to_the_weight():
    from sktx.regressor._training import _pad_moments

    w = torch.nn.Parameter(torch.ones(4, 3))
    opt = torch.optim.AdamW([w])
    opt.state[w] = {
        "step": torch.tensor(5.0),
        "exp_avg": torch.ones(4, 2),
        "exp_avg_sq": torch.ones(4, 2),
    }
    _pad_moments(opt)
    assert opt.state[w]["exp_avg"].shape == (4, 3)
    assert torch.equal(opt.state[w]["exp_avg_sq"][:, 2], torch.zeros(4))
    w.grad = torch.ones(4, 3)
    opt.step()  # would fail on a (4, 2) moment
