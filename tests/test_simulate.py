"""make_perturbseq: shapes, reproducibility, ground truth, cell types, parameters."""

from __future__ import annotations

import doctest

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sktx import validate_adata
from sktx.datasets import _simulate, make_perturbseq


@pytest.fixture(scope="module")
def big():
    """Enough cells per perturbation for pseudobulk deltas to show the signal."""
    return make_perturbseq(
        n_cells=3000, n_genes=200, n_perturbations=6, n_combinations=3, random_state=7
    )


def test_shapes_and_annotations(sim):
    assert sim.shape == (600, 120)
    assert sp.issparse(sim.X) and sim.X.format == "csr" and sim.X.dtype == np.float32
    assert list(sim.obs.columns) == ["target_gene", "library_size"]
    assert "cell_type" not in sim.obs
    assert sim.var["is_regulator"].dtype == bool and sim.var["is_regulator"].sum() == 12
    assert sim.var_names[0] == "G00000" and sim.var_names.is_unique
    sim_uns = sim.uns["simulation"]
    assert set(sim_uns) == {"params", "network", "true_delta", "knockdown"}
    assert sim_uns["network"].shape == (120, 120)
    assert sim_uns["true_delta"].shape == (8 + 5, 120)
    assert list(sim_uns["true_delta"].columns) == list(sim.var_names)
    assert sim_uns["params"]["n_cells"] == 600


def test_validates_against_contract(sim):
    info = validate_adata(sim, require_perturbed=True)
    assert len(info.perturbations) == 13
    assert info.is_control.sum() == round(0.15 * 600)


def test_reproducible_and_seed_dependent():
    kw = dict(n_cells=300, n_genes=60, n_perturbations=4, n_combinations=2)
    a = make_perturbseq(**kw, random_state=3)
    b = make_perturbseq(**kw, random_state=3)
    c = make_perturbseq(**kw, random_state=4)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(
        a.uns["simulation"]["true_delta"], b.uns["simulation"]["true_delta"]
    )
    assert (a.X != c.X).nnz > 0
    # a RandomState instance works too (and is advanced, as sklearn does)
    rs = np.random.RandomState(3)
    d = make_perturbseq(**kw, random_state=rs)
    assert (a.X != d.X).nnz == 0
    assert (make_perturbseq(**kw, random_state=rs).X != a.X).nnz > 0


def test_controls_and_custom_labels():
    a = make_perturbseq(
        n_cells=200,
        n_genes=40,
        n_perturbations=3,
        n_combinations=1,
        perturbation_key="perturbation",
        control_label="ctrl",
        control_fraction=0.3,
        random_state=0,
    )
    labels = a.obs["perturbation"]
    assert (labels == "ctrl").sum() == 60
    assert a.uns["simulation"]["params"]["control_label"] == "ctrl"
    validate_adata(a, perturbation_key="perturbation", control_label="ctrl")


def test_combinations_are_pairs_of_singles(sim):
    labels = set(sim.obs["target_gene"].astype(str))
    combos = sorted(lab for lab in labels if "+" in lab)
    singles = labels - set(combos) - {"non-targeting"}
    assert len(combos) == 5 and len(singles) == 8
    for combo in combos:
        a, b = combo.split("+")
        assert a != b and a in singles and b in singles
    assert set(sim.uns["simulation"]["knockdown"].index) == singles
    assert set(sim.uns["simulation"]["true_delta"].index) == singles | set(combos)


def test_every_label_has_cells(sim):
    counts = sim.obs["target_gene"].value_counts()
    assert counts.min() >= 30  # (600 - 90) / 13 labels


def test_counts_are_nonnegative_integers(sim):
    data = sim.X.data
    assert (data > 0).all()  # CSR stores no explicit zeros
    np.testing.assert_array_equal(data, np.round(data))
    totals = np.asarray(sim.X.sum(1)).ravel()
    # library size L_c ~ LogNormal(log 3000, 0.3); observed UMIs track it
    assert 1500 < np.median(totals) < 6000
    assert np.corrcoef(np.log(totals), np.log(sim.obs["library_size"]))[0, 1] > 0.8


def test_true_delta_target_is_knocked_down(sim):
    truth = sim.uns["simulation"]["true_delta"]
    eff = sim.uns["simulation"]["knockdown"]["efficiency"]
    assert ((eff >= 0.6) & (eff <= 0.95)).all()
    for target, e in eff.items():
        assert truth.loc[target, target] < 0
        # the direct effect log(1 - e) is the dominant part of the target's delta
        assert truth.loc[target, target] == pytest.approx(np.log1p(-e), abs=0.5 * abs(np.log1p(-e)))


def test_combination_delta_is_sum_plus_interaction(sim):
    truth = sim.uns["simulation"]["true_delta"]
    for combo in [lab for lab in truth.index if "+" in lab]:
        a, b = combo.split("+")
        resid = truth.loc[combo] - truth.loc[a] - truth.loc[b]
        assert (resid.abs() > 1e-9).sum() <= max(1, 120 // 50)  # a few interacting genes


def test_additive_when_no_interaction():
    a = make_perturbseq(
        n_cells=300, n_genes=50, n_perturbations=4, interaction_strength=0.0, random_state=1
    )
    truth = a.uns["simulation"]["true_delta"]
    for combo in [lab for lab in truth.index if "+" in lab]:
        x, y = combo.split("+")
        np.testing.assert_allclose(truth.loc[combo], truth.loc[x] + truth.loc[y])


def _pseudobulk_log1p(adata):
    X = adata.X.toarray()
    X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    labels = adata.obs["target_gene"].astype(str).to_numpy()
    return {lab: X[labels == lab].mean(0) for lab in np.unique(labels)}


def test_observed_delta_tracks_true_delta(big):
    truth = big.uns["simulation"]["true_delta"]
    means = _pseudobulk_log1p(big)
    ctrl = means["non-targeting"]
    corrs = {lab: np.corrcoef(means[lab] - ctrl, truth.loc[lab])[0, 1] for lab in truth.index}
    assert min(corrs.values()) > 0.2, corrs
    singles = [lab for lab in truth.index if "+" not in lab]
    assert np.median([corrs[s] for s in singles]) > 0.5, corrs
    # the knocked-down target itself goes down in the data
    for t in singles:
        assert means[t][big.var_names.get_loc(t)] < ctrl[big.var_names.get_loc(t)]


def test_cell_types_each_with_controls():
    a = make_perturbseq(
        n_cells=400, n_genes=60, n_perturbations=5, n_combinations=2, n_cell_types=3, random_state=2
    )
    assert set(a.obs["cell_type"]) == {"type0", "type1", "type2"}
    table = pd.crosstab(a.obs["target_gene"], a.obs["cell_type"])
    assert (table > 0).all().all()  # every label, controls included, in every type
    assert (table.loc["non-targeting"] >= 10).all()
    validate_adata(a, cell_type_key="cell_type")


def test_cell_types_with_minimal_controls():
    # as many controls as cell types: still one per type
    a = make_perturbseq(
        n_cells=60, n_genes=20, n_perturbations=2, n_combinations=0, n_cell_types=4,
        control_fraction=0.01, random_state=0,
    )  # fmt: skip
    ctrl = a.obs[a.obs["target_gene"] == "non-targeting"]
    assert sorted(ctrl["cell_type"].astype(str)) == ["type0", "type1", "type2", "type3"]


def test_gene_names_sequence_and_errors():
    names = [f"gene{i}" for i in range(30)]
    a = make_perturbseq(
        n_cells=100,
        n_genes=30,
        n_perturbations=3,
        n_combinations=1,
        gene_names=names,
        random_state=0,
    )
    assert list(a.var_names) == names
    a = make_perturbseq(
        n_cells=100,
        n_genes=30,
        n_perturbations=3,
        n_combinations=1,
        gene_names=np.array([*names, "extra"]),
        random_state=0,
    )
    assert list(a.var_names) == names
    with pytest.raises(ValueError, match="has 29 names but `n_genes=30`"):
        make_perturbseq(n_cells=100, n_genes=30, gene_names=names[:29])
    with pytest.raises(ValueError, match=r"unique; duplicated: \['gene0'\]"):
        make_perturbseq(n_cells=100, n_genes=30, gene_names=["gene0", *names[:29]])
    with pytest.raises(ValueError, match="'synthetic', 'symbols' or a sequence"):
        make_perturbseq(n_cells=100, n_genes=30, gene_names="hgnc")


def test_gene_names_symbols():
    genesets = pytest.importorskip("sktx.genesets")
    if not hasattr(genesets, "BUILTIN_GENE_SETS"):
        pytest.skip("sktx.genesets.BUILTIN_GENE_SETS not available yet")
    symbols = {g for genes in genesets.BUILTIN_GENE_SETS.values() for g in genes}
    n = len(symbols) + 20
    a = make_perturbseq(
        n_cells=200,
        n_genes=n,
        n_perturbations=3,
        n_combinations=1,
        gene_names="symbols",
        random_state=0,
    )
    names = set(a.var_names)
    assert a.var_names.is_unique
    assert symbols <= names
    assert len([g for g in names if g.startswith("SIM")]) == 20
    few = make_perturbseq(
        n_cells=200,
        n_genes=10,
        n_perturbations=3,
        n_combinations=1,
        gene_names="symbols",
        random_state=0,
    )
    assert set(few.var_names) <= symbols


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "`n_cells` must be an integer >= 2"),
        ({"n_cells": 100.0}, "`n_cells` must be an integer"),
        ({"n_genes": 1}, "`n_genes` must be an integer >= 2"),
        ({"n_perturbations": 0}, "`n_perturbations` must be an integer >= 1"),
        ({"n_perturbations": 50, "n_genes": 20}, "exceeds `n_genes=20`"),
        ({"n_cell_types": 0}, "`n_cell_types` must be an integer >= 1"),
        ({"control_fraction": 0.0}, r"`control_fraction` must be in \(0, 1\)"),
        ({"control_fraction": 1.0}, r"`control_fraction` must be in \(0, 1\)"),
        ({"n_cells": 5}, "`n_cells=5` is too small"),
        ({"n_cell_types": 40}, "too small.*40 cell types"),
        ({"knockdown": (0.5, 1.0)}, "`knockdown` must be a pair"),
        ({"knockdown": (0.9, 0.5)}, "`knockdown` must be a pair"),
        ({"knockdown": 0.5}, "`knockdown` must be a pair"),
        ({"dispersion": 0.0}, "`dispersion` must be a finite number > 0"),
        ({"library_size": -5.0}, "`library_size` must be a finite number > 0"),
        ({"effect_size": np.nan}, "`effect_size` must be a finite number >= 0"),
        ({"network_depth": -1}, "`network_depth` must be an integer >= 0"),
        ({"regulator_fraction": 0.0}, r"`regulator_fraction` must be in \(0, 1\]"),
    ],
)
def test_bad_parameters(kwargs, match):
    params = {"n_cells": 200, "n_genes": 40, "n_perturbations": 4, "n_combinations": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_perturbseq(**params, random_state=0)


def test_too_many_combinations_are_clipped():
    with pytest.warns(UserWarning, match="exceeds the 3 pairs of 3 targets; simulating 3"):
        a = make_perturbseq(n_cells=200, n_genes=40, n_perturbations=3, random_state=0)
    assert sum("+" in lab for lab in a.obs["target_gene"].cat.categories) == 3
    with pytest.warns(UserWarning, match="simulating 0"):
        a = make_perturbseq(n_cells=100, n_genes=20, n_perturbations=1, random_state=0)
    assert a.obs["target_gene"].nunique() == 2  # controls and the single target


def test_edge_parameters_work():
    a = make_perturbseq(
        n_cells=100, n_genes=20, n_perturbations=2, n_combinations=0, network_depth=0,
        effect_size=0.0, knockdown=(0.9, 0.9), random_state=0,
    )  # fmt: skip
    truth = a.uns["simulation"]["true_delta"]
    # no network: only the target moves, by exactly log(1 - 0.9)
    for t in truth.index:
        assert truth.loc[t, t] == pytest.approx(np.log(0.1))
        assert (truth.loc[t].drop(t) == 0).all()


def test_round_trip_h5ad(sim, tmp_path):
    path = tmp_path / "sim.h5ad"
    sim.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.X != sim.X).nnz == 0
    pd.testing.assert_frame_equal(back.obs, sim.obs)
    s0, s1 = sim.uns["simulation"], back.uns["simulation"]
    pd.testing.assert_frame_equal(s1["true_delta"], s0["true_delta"])
    pd.testing.assert_frame_equal(s1["knockdown"], s0["knockdown"])
    assert (s1["network"] != s0["network"]).nnz == 0
    assert s1["params"]["control_label"] == "non-targeting"
    np.testing.assert_array_equal(s1["params"]["knockdown"], [0.6, 0.95])


@pytest.mark.parametrize("dispersion", [0.5, 5.0, 50.0])
def test_negative_binomial_sampler_moments(dispersion):
    # mean mu, variance mu + mu^2 / r, for means on both sampling paths
    mus = np.array([0.002, 0.2, 1.0, 4.0, 9.0, 40.0], dtype=np.float32)
    x = _simulate._sample_nb(np.tile(mus, (200_000, 1)), dispersion, np.random.default_rng(0))
    x = x.toarray().astype(np.float64)
    mean, var = x.mean(0), x.var(0)
    expected_var = mus + mus.astype(np.float64) ** 2 / dispersion
    se_mean = np.sqrt(expected_var / x.shape[0])
    assert (np.abs(mean - mus) < 5 * se_mean).all(), (mean, mus)
    np.testing.assert_allclose(var, expected_var, rtol=0.1)
    # zero probability (r / (r + mu))^r
    p0 = (dispersion / (dispersion + mus.astype(np.float64))) ** dispersion
    p0_se = np.sqrt(p0 * (1 - p0) / x.shape[0])
    assert (np.abs((x == 0).mean(0) - p0) < 5 * p0_se + 1e-5).all()


def test_docstring_example():
    result = doctest.testmod(_simulate, verbose=False)
    assert result.attempted > 0 and result.failed == 0
