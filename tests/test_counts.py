"""Counts out: `predict(query, output="counts", all_genes=...)` and the count model."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DATA, DATLINGER, _need

import sktx
from sktx._counts import expected_counts, nb_dispersion, predict_output
from sktx.baselines import BASELINES, ControlBaseline, MeanBaseline
from sktx.data import DataContractError
from sktx.model_selection import make_query

H1 = DATA / "vcc2025_h1_subset.h5ad"
H1_KEYS = {"perturbation_key": "target_gene", "control_label": "non-targeting"}
DAT_KEYS = {"perturbation_key": "target_gene", "control_label": "control"}


@pytest.fixture(scope="module")
def h1():
    return sktx.prepare(ad.read_h5ad(_need(H1)), **H1_KEYS)


@pytest.fixture(scope="module")
def datlinger():
    return sktx.prepare(ad.read_h5ad(_need(DATLINGER)), **DAT_KEYS)


def _pseudobulk_agreement(pred_log1p, counts, query, phi):
    """Per group, over genes with >= 100 expected counts: mean z^2 of the
    library-normalised count means vs the prediction, mean and largest |log1p| gap."""
    Y = counts.X.toarray()
    P = np.asarray(pred_log1p.X)
    lib = query.library_size
    out = []
    for lab in sorted(set(query.labels.tolist()) - {query.control_label}):
        rows = query.labels == lab
        mu = expected_counts(P[rows], lib[rows])
        w = 1e4 / lib[rows, None]
        got = (Y[rows] * w).mean(0)
        want = (mu * w).mean(0)
        var = ((mu + phi * mu**2) * w**2).sum(0) / rows.sum() ** 2
        keep = mu.sum(0) >= 100
        z2 = (got - want)[keep] ** 2 / var[keep]
        gap = np.abs(np.log1p(got) - np.log1p(want))[keep]
        out.append((float(z2.mean()), float(gap.mean()), float(gap.max())))
    return out


@pytest.mark.parametrize("name", ["h1", "datlinger"])
def test_normalised_pseudobulk_of_counts_matches_the_log1p_prediction(name, request):
    # Stated tolerance, over genes with >= 100 expected counts in a perturbation's group:
    # the log1p pseudobulks of the library-normalised counts differ from the prediction's
    # by < 0.05 on average and < 0.3 at most on H1 (~23k UMI per cell; squared z-scores
    # under the count model's NB variance average 1 +- 0.15 per perturbation), by < 0.25 /
    # < 0.4 on the very shallow, over-dispersed Datlinger file (59 UMI per cell, 200
    # controls; z^2 averages 1 +- 0.3 over all perturbations).
    data = request.getfixturevalue(name)
    model = MeanBaseline(**(H1_KEYS if name == "h1" else DAT_KEYS)).fit(data)
    query = make_query(data, random_state=0)
    pred = model.predict(query)
    counts = model.predict(query, output="counts", random_state=0)
    phi = nb_dispersion(query.counts, query.library_size)  # what the count model uses
    rows = _pseudobulk_agreement(pred, counts, query, phi)
    tol_mean, tol_max = (0.05, 0.3) if name == "h1" else (0.25, 0.4)
    for z2, mean_gap, max_gap in rows:
        assert mean_gap < tol_mean
        assert max_gap < tol_max
        if name == "h1":
            assert 0.85 < z2 < 1.15
    assert 0.7 < np.mean([z2 for z2, _, _ in rows]) < 1.3


def test_counts_are_integer_csr_and_pass_cell_eval2_input_checks(h1):
    norm = pytest.importorskip("cell_eval2.norm")
    model = MeanBaseline(**H1_KEYS).fit(h1)
    out = model.predict(make_query(h1, random_state=0), output="counts", random_state=0)
    assert sp.isspmatrix_csr(out.X) or isinstance(out.X, sp.csr_array)
    assert np.array_equal(out.X.data, np.round(out.X.data)) and out.X.data.min() > 0
    norm.validate_input_type(out, "counts")  # cell-eval2's own checks, as in compute_metrics
    norm.check_scale_limit(out, "counts", 1e6)
    # and sktx reads it back as counts
    assert sktx.prepare(out, **H1_KEYS, require_control=False).normalization == "counts"


def test_counts_are_reproducible_with_a_seed(h1):
    model = MeanBaseline(**H1_KEYS).fit(h1)
    query = make_query(h1, random_state=0)
    a = model.predict(query, output="counts", random_state=3)
    b = model.predict(query, output="counts", random_state=3)
    c = model.predict(query, output="counts", random_state=4)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_depth_follows_each_query_cells_library_size(h1):
    model = ControlBaseline(**H1_KEYS).fit(h1)
    query = make_query(h1, random_state=0)
    out = model.predict(query, output="counts", all_genes=True, random_state=0)
    totals = np.asarray(out.X.sum(1)).ravel()
    # the control baseline predicts each cell as it is: totals track the query's depths
    assert np.corrcoef(totals, query.library_size)[0, 1] > 0.99
    ratio = np.abs(totals / query.library_size - 1.0)
    assert np.median(ratio) < 0.02 and ratio.max() < 0.2


def test_all_genes_returns_the_query_gene_axis_with_other_genes_carried(h1):
    panel = list(h1.genes[::3])
    model = MeanBaseline(**H1_KEYS).fit(h1.select_genes(panel))
    query = make_query(h1, random_state=0)
    out = model.predict(query, output="counts", all_genes=True, random_state=0)
    assert list(out.var_names) == list(h1.genes)
    rest = np.setdiff1d(np.arange(h1.n_vars), h1.genes.get_indexer(panel))
    carried = out.X[:, rest].toarray()
    assert np.array_equal(carried, query.counts[:, rest].toarray())
    log1p = model.predict(query, all_genes=True)
    assert list(log1p.var_names) == list(h1.genes)
    assert np.allclose(log1p.X[:, rest], query.X[:, rest].toarray())
    assert np.allclose(log1p.X[:, h1.genes.get_indexer(panel)], model.predict(query).X)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_predicts_counts(name, h1):
    small = h1.select_genes(list(h1.genes[:60]))
    model = BASELINES[name](**H1_KEYS).fit(small)
    query = make_query(h1, random_state=0)
    out = model.predict(query, output="counts", all_genes=True, random_state=0)
    assert out.shape == (query.n_obs, h1.n_vars)
    assert np.array_equal(out.X.data, np.round(out.X.data))


@pytest.mark.slow
def test_regressor_and_progressive_predict_counts(h1):
    from sklearn.pipeline import Pipeline

    small = h1.select_genes(list(h1.genes[:80]))
    reg = sktx.PerturbationRegressor(max_epochs=1, set_size=8, random_state=0, **H1_KEYS)
    reg.fit(small)
    query = make_query(h1, random_state=0)
    out = reg.predict(query, output="counts")
    assert out.shape == (query.n_obs, 80) and sp.issparse(out.X)
    assert (reg.predict(query, output="counts").X != out.X).nnz == 0  # seeded by random_state
    pipe = Pipeline([("select", sktx.GeneSelector(n_genes=40, **H1_KEYS)), ("model", reg)])
    prog = sktx.ProgressiveFit(pipe, phases=(40,), epochs_per_phase=1, random_state=0)
    prog.fit(small)
    full = prog.predict(query, output="counts", all_genes=True)
    assert list(full.var_names) == list(h1.genes)
    assert full.n_obs == query.n_obs


def test_pipeline_counts_through_the_one_helper(h1):
    from sklearn.pipeline import Pipeline

    pipe = Pipeline(
        [("select", sktx.GeneSelector(n_genes=50, **H1_KEYS)), ("model", MeanBaseline(**H1_KEYS))]
    ).fit(h1)
    query = make_query(h1, random_state=0)
    out = predict_output(pipe, query, output="counts", all_genes=True, random_state=0)
    assert list(out.var_names) == list(h1.genes)


def test_counts_need_the_query_counts(h1):
    model = MeanBaseline(**H1_KEYS).fit(h1)
    query = make_query(h1, random_state=0).to_adata()
    log1p_only = ad.AnnData(query.X, obs=query.obs, var=query.var, uns={"log1p": {"base": None}})
    with pytest.raises(DataContractError, match="needs the query's raw counts"):
        model.predict(log1p_only, output="counts")


def test_counts_refuse_a_log1p_query_of_another_normalisation(h1):
    model = MeanBaseline(**H1_KEYS).fit(h1)
    q = make_query(h1, random_state=0).to_adata()
    q.X = np.log1p(np.expm1(np.asarray(q.X.toarray())) * 100)  # CPM, not 1e4
    with pytest.raises(DataContractError, match="assuming 10000 counts per cell"):
        model.predict(q, output="counts")


def test_unknown_output_is_refused(h1):
    model = MeanBaseline(**H1_KEYS).fit(h1)
    with pytest.raises(ValueError, match="`output` must be one of"):
        model.predict(make_query(h1, random_state=0), output="raw")


def test_dispersion_method_of_moments_recovers_a_known_dispersion():
    rng = np.random.default_rng(0)
    lib = rng.uniform(5e3, 5e4, size=6000)
    mu = lib[:, None] * np.array([1e-3, 2e-4, 1e-3])[None, :]
    phi_true = np.array([0.2, 1.0, 0.0])
    lam = mu.copy()
    lam[:, :2] = rng.gamma(1 / phi_true[:2], mu[:, :2] * phi_true[:2])
    y = rng.poisson(lam)
    phi = nb_dispersion(sp.csr_matrix(y), lib)
    assert np.allclose(phi[:2], phi_true[:2], rtol=0.15)
    assert phi[2] < 0.01  # Poisson gene: no over-dispersion
