"""``max_tokens``: the network runs on a subset of a large panel; the other genes keep the start."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _accelerate_runner import new_pairs

from sktx import _persist
from sktx.datasets import make_perturbseq
from sktx.nn import GeneTokenModel
from sktx.regressor import PerturbationRegressor
from sktx.regressor._state import choose_tokens

KW = dict(max_epochs=2, set_size=16, d_model=16, n_layers=1, random_state=0, crossfit=2)


@pytest.fixture(scope="module")
def screen():
    return make_perturbseq(n_cells=500, n_genes=90, n_perturbations=6, random_state=1)


def _query(adata, label):
    q = adata[adata.obs["target_gene"] == "non-targeting"].copy()
    q.obs["target_gene"] = label
    return q


def test_choose_tokens_targets_first_then_response():
    deltas = np.array([[0.0, 0.0, 5.0, 1.0, 0.2], [0.0, 0.0, -5.0, 2.0, 0.1]])
    genes = ["T", "A", "B", "C", "D"]
    # "T" has no response but is a measured target: it comes first
    assert choose_tokens(deltas, [0, 1], ["T", "unmeasured"], genes, 3).tolist() == [0, 2, 3]
    # only the training rows count
    assert choose_tokens(deltas, [0], [], genes, 1).tolist() == [2]
    assert choose_tokens(deltas, [0, 1], [], genes, 5) is None
    assert choose_tokens(deltas, [0, 1], [], genes, None) is None


def test_module_tokens_leave_other_genes_at_the_baseline():
    torch.manual_seed(0)
    m = GeneTokenModel(d_model=8, n_layers=1, n_heads=2, n_features=4)
    torch.nn.init.normal_(m.head.weight)  # a non-zero residual
    G, B = 6, 2
    tokens = torch.tensor([1, 4])
    kw = dict(
        gene_hash=torch.randint(0, 100, (G, 2)),
        gene_feat=torch.randn(G, 4),
        basal=torch.rand(B, G),
        baseline=torch.randn(B, G),
        target_mask=torch.zeros(B, G),
        pert_hash=torch.zeros(B, 1, 2, dtype=torch.long),
        pert_feat=torch.zeros(B, 1, 4),
        pert_mask=torch.ones(B, 1),
    )
    delta, log_scale = m(neighbors=torch.tensor([[0, 1], [1, 0]]), tokens=tokens, **kw)
    others = [0, 2, 3, 5]
    assert torch.equal(delta[:, others], kw["baseline"][:, others])
    assert torch.equal(log_scale[:, others], torch.zeros(B, 4))
    # the token genes get exactly what a network over those genes alone predicts
    sub = {k: (v[:, tokens] if v.dim() == 2 and v.shape[-1] == G else v) for k, v in kw.items()}
    sub["gene_hash"], sub["gene_feat"] = kw["gene_hash"][tokens], kw["gene_feat"][tokens]
    ref, ref_ls = m(neighbors=torch.tensor([[0, 1], [1, 0]]), **sub)
    assert torch.allclose(delta[:, tokens], ref) and torch.allclose(log_scale[:, tokens], ref_ls)


def test_max_tokens_at_or_above_the_panel_changes_nothing(screen):
    q = _query(screen, screen.obs["target_gene"].cat.categories[0])
    a = PerturbationRegressor(max_tokens=None, **KW).fit(screen).predict(q).X
    b = PerturbationRegressor(max_tokens=90, **KW).fit(screen).predict(q).X
    assert np.array_equal(a, b)


def test_genes_outside_the_tokens_keep_the_start(screen):
    # a new combination of two fitted singles: predicted with the residual (a fitted
    # perturbation is not, it keeps its own fitted delta)
    cats = screen.obs["target_gene"].cat.categories
    label = new_pairs([c for c in cats if c != "non-targeting"])[0]
    q = _query(screen, label)
    # one network, no validation split: the residual is not shrunk away
    kw = {**KW, "crossfit": 0, "validation_fraction": 0.0, "max_epochs": 4, "lr": 1e-2}
    model = PerturbationRegressor(max_tokens=30, **kw).fit(screen)
    tokens = model.fitted_state_.tokens
    assert len(tokens) == 30 and model.graph_.neighbors.shape[0] == 30
    measured = [g for g in model.fitted_state_.train_targets if g in model.genes_]
    assert {model.genes_.index(g) for g in measured} <= set(tokens.tolist())
    start = PerturbationRegressor(max_tokens=30, **{**kw, "max_epochs": 0}).fit(screen)
    trained, untrained = model.predict_deltas(q), start.predict_deltas(q)
    others = np.setdiff1d(np.arange(90), tokens)
    np.testing.assert_allclose(trained.iloc[:, others], untrained.iloc[:, others], atol=1e-6)
    assert not np.allclose(trained.iloc[:, tokens], untrained.iloc[:, tokens], atol=1e-6)


def test_tokens_survive_save_and_load(screen, tmp_path):
    q = _query(screen, screen.obs["target_gene"].cat.categories[1])
    model = PerturbationRegressor(max_tokens=25, **KW).fit(screen)
    path = _persist.save(model, tmp_path / "model.sktx")
    loaded, _ = _persist.load(path)
    assert np.array_equal(loaded.fitted_state_.tokens, model.fitted_state_.tokens)
    np.testing.assert_array_equal(loaded.predict(q).X, model.predict(q).X)


def test_max_tokens_is_checked(screen):
    with pytest.raises(ValueError, match="max_tokens"):
        PerturbationRegressor(max_tokens=0).fit(screen)
