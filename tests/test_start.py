"""The regressor's start: leave-one-out typical effect, neighbour weight and shrinkage."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sktx._effects import _design, _ridge, fit_target_effects
from sktx.regressor._start import TargetSimilarity, fit_start, neighbour_weights


def _rows(labels):
    return {lab: i for i, lab in enumerate(labels)}


def test_loo_shared_equals_refitting_without_the_label():
    rng = np.random.default_rng(0)
    labels = [["A"], ["B"], ["C"], ["A", "B"], ["D"], ["B", "C"]]
    deltas = rng.normal(size=(len(labels), 5))
    fx = fit_target_effects(deltas, labels)
    for i in range(len(labels)):
        keep = [j for j in range(len(labels)) if j != i]
        coef = _ridge(_design([labels[j] for j in keep], fx.targets), fx.lam) @ deltas[keep]
        np.testing.assert_allclose(fx.loo_shared[i], coef[0], atol=1e-10)


def test_shrinkage_known_answer_without_neighbours():
    # one gene, singles 1, 2, 3: each label's start is c * (mean of the others)
    deltas = np.array([[1.0], [2.0], [3.0]])
    fx = fit_target_effects(deltas, [["A"], ["B"], ["C"]])
    start = fit_start(fx, _rows(["A", "B", "C"]), deltas, "ctrl", None, shrink=True)
    others = np.array([2.5, 2.0, 1.5])
    c = (deltas[:, 0] @ others) / (others @ others)  # 11 / 12.5
    assert start.alpha == 0.0
    np.testing.assert_allclose(start.shrink, 0.88)
    np.testing.assert_allclose(start.shrink, c)
    np.testing.assert_allclose(start.loo[:, 0], c * others)
    # an unseen target: c * typical effect (the mean)
    np.testing.assert_allclose(start.predict(["Z"]), c * deltas.mean(0))
    # a fitted target keeps its own (unshrunk) effect
    np.testing.assert_allclose(start.predict(["A"]), fx.predict(["A"]))


def _brute_force(deltas, labels, sim):
    """alpha and c from refits without each label (singles only), as the docs define them."""
    fx = fit_target_effects(deltas, [[t] for t in labels])
    typical, depart = [], []
    for i, t in enumerate(labels):
        keep = [j for j in range(len(labels)) if j != i]
        typical.append(fit_target_effects(deltas[keep], [[labels[j]] for j in keep]).shared)
        W = neighbour_weights(sim([t], [labels[j] for j in keep]))
        depart.append(W[0] @ fx.specific[keep])
    typical, depart = np.array(typical), np.array(depart)
    r = deltas - typical
    alpha = float(np.clip((r * depart).sum() / (depart**2).sum(), 0, 1))
    part = typical + alpha * depart
    c = float(np.clip((deltas * part).sum() / (part**2).sum(), 0, 1))
    return alpha, c, c * part


def _two_groups():
    """Six singles in two groups of similar targets sharing an effect +v / -v, plus noise."""
    rng = np.random.default_rng(3)
    m, v = np.array([1.0, 0.0, 2.0]), np.array([0.5, -1.0, 0.25])
    labels = ["A", "B", "C", "D", "E", "F"]
    sign = np.array([1, 1, 1, -1, -1, -1])[:, None]
    deltas = m + 0.6 * sign * v + 0.5 * rng.normal(size=(6, 3))
    return labels, deltas, fit_target_effects(deltas, [[t] for t in labels])


def test_neighbour_weight_known_answer():
    # two groups of similar targets sharing a group effect +v / -v, plus noise
    labels, deltas, fx = _two_groups()
    sets = {"p1": ["A", "B", "C"], "p2": ["D", "E", "F"]}
    sim = TargetSimilarity(sets, [], np.zeros((0, 2)), 0.0)
    start = fit_start(fx, _rows(labels), deltas, "ctrl", sim, knn=True, shrink=True)
    alpha, c, loo = _brute_force(deltas, labels, sim)
    assert 0.05 < alpha < 0.95 and 0.05 < c < 1.0  # interior: not just the clip bounds
    np.testing.assert_allclose([start.alpha, start.shrink], [alpha, c], rtol=1e-8)
    np.testing.assert_allclose(start.loo, loo, atol=1e-10)
    # the group structure is learnt: the starts beat the old ones (mean of the others)
    assert ((start.loo - deltas) ** 2).sum() < ((fx.loo - deltas) ** 2).sum()
    # an unseen target in p1 is predicted from the p1 targets' effects
    start.similarity = TargetSimilarity(
        {**sets, "p1": ["A", "B", "C", "G"]}, [], np.zeros((0, 2)), 0.0
    )
    expected = c * (fx.shared + alpha * fx.specific[:3].mean(0))
    np.testing.assert_allclose(start.predict(["G"]), expected, atol=1e-12)
    # and a pair of unseen targets gets the sum of their parts
    np.testing.assert_allclose(start.predict(["G", "Q"]), expected + c * fx.shared, atol=1e-12)


def test_pair_of_identical_targets_clips_the_weight_at_one():
    # A = B = m + v, C = D = m - v: the leave-one-out residual of A (4v/3) exceeds its
    # neighbour's departure (v / (1 + lam)), so alpha is clipped at 1
    m, v = np.array([1.0, 0.0, 2.0]), np.array([0.5, -1.0, 0.25])
    deltas = np.stack([m + v, m + v, m - v, m - v])
    labels = ["A", "B", "C", "D"]
    fx = fit_target_effects(deltas, [[t] for t in labels])
    sim = TargetSimilarity({"p1": ["A", "B"], "p2": ["C", "D"]}, [], np.zeros((0, 2)), 0.0)
    start = fit_start(fx, _rows(labels), deltas, "ctrl", sim, knn=True, shrink=True)
    assert start.alpha == 1.0
    alpha, c, loo = _brute_force(deltas, labels, sim)
    np.testing.assert_allclose([start.alpha, start.shrink], [alpha, c], rtol=1e-8)
    np.testing.assert_allclose(start.loo, loo, atol=1e-10)


def test_no_similar_target_falls_back_to_the_typical_effect():
    deltas = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    labels = ["A", "B", "C"]
    fx = fit_target_effects(deltas, [[t] for t in labels])
    sim = TargetSimilarity({"s": ["A", "B"]}, [], np.zeros((0, 2)), 0.0)
    start = fit_start(fx, _rows(labels), deltas, "ctrl", sim, shrink=False)
    np.testing.assert_allclose(start.predict(["Q"]), fx.shared)


def test_similarity_mixes_jaccard_and_coexpression():
    loadings = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    sim = TargetSimilarity({"s": ["A", "B"], "t": ["A"]}, ["A", "B", "C"], loadings, 0.5)
    S = sim(["A"], ["B", "C", "Z"])
    # B: Jaccard 1/2, cosine 1/sqrt(2); C: no shared set, cosine -1 -> 0; Z: unknown
    np.testing.assert_allclose(S, [[0.25 + 0.5 / np.sqrt(2), 0.0, 0.0]])
    # gene symbols in gene sets are matched case-insensitively
    np.testing.assert_allclose(sim(["a"], ["B"]), [[0.5]])


def test_neighbour_weights_keep_the_top_positive():
    W = neighbour_weights(np.array([[0.0, 0.2, 0.6, 0.2], [0.0, 0.0, 0.0, 0.0]]), 2)
    np.testing.assert_allclose(W, [[0.0, 0.25, 0.75, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_default_start_per_gene_weight_and_absolute_error_shrinkage():
    from sktx.regressor._crossfit import gene_residual_scale
    from sktx.regressor._start import absolute_error_factor

    labels, deltas, fx = _two_groups()
    sim = TargetSimilarity({"p1": labels[:3], "p2": labels[3:]}, [], np.zeros((0, 2)), 0.0)
    start = fit_start(fx, _rows(labels), deltas, "ctrl", sim)
    typical = fx.loo_shared
    depart = np.stack(
        [neighbour_weights(sim([t], [u for u in labels if u != t]))[0] @ fx.specific[
            [j for j in range(6) if j != i]] for i, t in enumerate(labels)]
    )  # fmt: skip
    r = deltas - typical
    alpha = gene_residual_scale(np.stack([(r * depart).sum(0), (depart**2).sum(0)]))
    np.testing.assert_allclose(start.alpha, alpha, rtol=1e-6)
    part = typical + alpha * depart
    c = absolute_error_factor(deltas, part, 1.0)
    np.testing.assert_allclose(start.shrink, c)
    # c minimises the absolute error over a grid of factors
    grid = np.linspace(0, 1, 201)
    errors = [np.abs(deltas - g * part).sum() for g in grid]
    assert np.abs(deltas - c * part).sum() <= min(errors) + 1e-12
    np.testing.assert_allclose(start.loo, c * part, atol=1e-10)


def test_a_loaded_model_needs_no_gene_set_file(tmp_path):
    """The start's similarity uses the membership stored at fit time, not the file."""
    from sktx import _persist
    from sktx.datasets import make_perturbseq
    from sktx.regressor import PerturbationRegressor

    adata = make_perturbseq(n_cells=400, n_genes=40, n_perturbations=5, random_state=0)
    fitted = [c for c in adata.obs["target_gene"].cat.categories if c != "non-targeting"]
    gmt = tmp_path / "sets.gmt"
    gmt.write_text(f"s1\tna\t{fitted[0]}\tNEWGENE\t{fitted[1]}\ns2\tna\t{fitted[2]}\tNEWGENE\n")
    model = PerturbationRegressor(
        gene_sets=str(gmt), max_epochs=1, set_size=16, d_model=16, n_layers=1, random_state=0
    ).fit(adata)
    q = adata[adata.obs["target_gene"] == "non-targeting"].copy()
    q.obs["target_gene"] = "NEWGENE"  # never fitted: its start comes from similar targets
    expected = model.predict(q).X
    path = _persist.save(model, tmp_path / "model.sktx")
    gmt.unlink()
    loaded, _ = _persist.load(path)
    np.testing.assert_array_equal(loaded.predict(q).X, expected)
    assert loaded.fitted_state_.set_genes == sorted({*fitted[:3], "NEWGENE"})


def test_correlation_within_groups_and_constant_genes():
    # pooled within-group correlation = correlation of the group-centred cells; a
    # constant gene correlates with nothing (its round-off once gave +-1)
    from sktx.baselines._knn import _correlation

    rng = np.random.RandomState(0)
    X = rng.rand(60, 6)
    X[:, 3] = 0.1
    groups = np.repeat([0, 1, 2], 20)
    shifted = X + 5.0 * groups[:, None]
    centred = shifted.copy()
    for k in range(3):
        centred[groups == k] -= shifted[groups == k].mean(0)
    cols = np.array([0, 2, 3])
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.nan_to_num(np.corrcoef(centred.T)[:, cols])
        plain = np.nan_to_num(np.corrcoef(X.T)[:, cols])
    for r in (ref, plain):  # numpy keeps round-off of the constant gene
        r[3], r[:, 2] = 0.0, 0.0
    for M in (shifted, sp.csr_matrix(shifted)):
        np.testing.assert_allclose(_correlation(M, cols, groups), ref, atol=1e-10)
    np.testing.assert_allclose(_correlation(sp.csr_matrix(X), cols), plain, atol=1e-12)
    assert not _correlation(X, cols)[3].any() and not _correlation(X, cols)[:, 2].any()


def test_similarity_reads_the_stored_control_correlation():
    # co-expression from the stored correlation (not the PCA loadings), clipped at 0;
    # a fitted target with no stored column counts as no co-expression
    genes = ["A", "B", "C"]
    loadings = np.eye(3)  # orthogonal: the cosine would say 0 everywhere
    corr = np.array([[1.0, 0.6], [0.6, 1.0], [-0.4, 0.2]])
    sim = TargetSimilarity(False, genes, loadings, 0.5, coexpression=(["A", "B"], corr))
    np.testing.assert_allclose(sim(["C", "A"], ["A", "B", "C"]), [[0, 0.1, 0], [0.5, 0.3, 0]])
    old = TargetSimilarity(False, genes, loadings, 0.5)
    assert not old(["C", "A"], ["B"]).any()
