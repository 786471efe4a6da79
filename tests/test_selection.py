"""Tests for sktx.selection.GeneSelector."""

from __future__ import annotations

import itertools
import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

from sktx.data import DataContractError
from sktx.datasets import make_perturbseq
from sktx.genesets import BUILTIN_GENE_SETS
from sktx.selection import QUOTA_KEYS, GeneSelector, default_quotas

NORMAN_KW = {"perturbation_key": "perturbation", "control_label": "control"}


@pytest.fixture(scope="module")
def symsim():
    """Simulated counts whose gene names include every built-in symbol (read-only)."""
    return make_perturbseq(
        n_cells=900, n_genes=1500, n_perturbations=12, gene_names="symbols", random_state=1
    )


@pytest.fixture(scope="module")
def shared_sets(genesets_dir):
    """The comprehensive shared lists, read at run time."""
    return {
        "tf": genesets_dir / "human_tfs_lambert2018.txt",
        "cell_cycle": [
            genesets_dir / "cell_cycle_tirosh2016_s.txt",
            genesets_dir / "cell_cycle_tirosh2016_g2m.txt",
        ],
        "metabolic": [
            genesets_dir / f"metabolic_{name}.txt" for name in ("glycolysis", "tca", "oxphos")
        ],
        "pluripotency": genesets_dir / "pluripotency.txt",
    }


def snapshot(adata):
    X = adata.X.toarray() if sp.issparse(adata.X) else np.array(adata.X)
    return X, adata.obs.copy(), adata.var.copy(), sorted(adata.uns), sorted(adata.layers)


def assert_unchanged(adata, before):
    X, obs, var, uns, layers = before
    now = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    np.testing.assert_array_equal(now, X)
    pd.testing.assert_frame_equal(adata.obs, obs)
    pd.testing.assert_frame_equal(adata.var, var)
    assert sorted(adata.uns) == uns and sorted(adata.layers) == layers


def assert_quotas_respected(sel):
    """Each category gets its quota, or everything it has when it has less."""
    cats = sel.categories_
    counts = cats["category"].value_counts()
    assert len(cats) == len(sel.selected_genes_)
    assert cats["gene"].is_unique
    assert sum(sel.quotas_.values()) == sel.n_genes
    for cat in QUOTA_KEYS[:-1]:
        got = int(counts.get(cat, 0))
        assert got <= sel.quotas_[cat], cat
        # Spilled slots of `cat` went to HVGs, and only when `cat` ran dry.
        spilled = int(((cats["quota"] == cat) & (cats["category"] != cat)).sum())
        assert got + spilled == sel.quotas_[cat]
        if spilled and cat in sel.gene_sets_:
            assert set(sel.gene_sets_[cat]) <= set(sel.selected_genes_), cat
    assert (cats.loc[cats["category"] != cats["quota"], "category"] == "hvg").all()


def test_default_quotas_table():
    assert default_quotas(500) == {
        "targets": 40,
        "tf": 46,
        "pluripotency": 22,
        "cell_cycle": 40,
        "metabolic": 32,
        "responsive": 100,
        "hvg": 220,
    }
    first = default_quotas(100)
    assert first["targets"] + first["tf"] + first["pluripotency"] == 100
    for n in (1, 37, 100, 1200, 2500, 5000):
        assert sum(default_quotas(n).values()) == n
    # Linear beyond the first block; monotone in n (needed for nesting).
    assert default_quotas(5000) == {k: 10 * v for k, v in default_quotas(500).items()}
    prev = default_quotas(1)
    for n in range(2, 1300, 7):
        cur = default_quotas(n)
        assert all(cur[k] >= prev[k] for k in QUOTA_KEYS)
        prev = cur


def test_quotas_on_norman_with_shared_lists(norman, shared_sets):
    before = snapshot(norman)
    for n_genes in (300, 500):
        sel = GeneSelector(
            n_genes=n_genes, gene_sets=shared_sets, cell_type_key="cell_type", **NORMAN_KW
        ).fit(norman)
        assert sel.quotas_ == default_quotas(n_genes)
        assert len(sel.selected_genes_) == n_genes
        assert_quotas_respected(sel)
    counts = sel.categories_["category"].value_counts()
    # The comprehensive lists are used: e.g. far more TFs than the 46 built-ins.
    assert len(sel.gene_sets_["tf"]) > 20 and counts["tf"] > 20
    assert not set(sel.gene_sets_["tf"]) <= set(BUILTIN_GENE_SETS["tf"])
    assert "TMSB4X" in sel.selected_genes_[:10]  # the one target measured, placed early
    assert sel.categories_.set_index("gene").loc["TMSB4X", "category"] == "targets"
    assert sel.hvg_flavor_ == "seurat"  # log1p data
    assert_unchanged(norman, before)


def test_quotas_on_simulated_data(symsim):
    sel = GeneSelector(n_genes=500).fit(symsim)
    assert_quotas_respected(sel)
    counts = sel.categories_["category"].value_counts()
    assert counts["cell_cycle"] + counts["metabolic"] > 40
    # Every built-in symbol is measured; a category is short only through overlap
    # (POU5F1, SOX2, NANOG, KLF4 are TFs and pluripotency genes) or targets.
    assert counts["tf"] + counts["pluripotency"] >= 46 + 22 - 4 - 12
    targets = {t for lab in symsim.obs["target_gene"].unique() for t in lab.split("+")}
    targets.discard("non-targeting")
    assert set(sel.categories_.query("category == 'targets'")["gene"]) == targets


def test_nested_selections(symsim):
    sizes = (10, 100, 200, 500, 1200, 1500)
    for kwargs in ({}, {"quotas": {"tf": 0.1, "targets": 0.05, "responsive": 0.3}}):
        fits = [GeneSelector(n_genes=n, **kwargs).fit(symsim) for n in sizes]
        for small, big in itertools.pairwise(fits):
            assert list(big.selected_genes_[: len(small.selected_genes_)]) == list(
                small.selected_genes_
            )
        np.testing.assert_array_equal(fits[0].ranking_, fits[-1].ranking_)
        assert fits[-1].ranking_.size == symsim.n_vars
        assert len(set(fits[-1].ranking_)) == symsim.n_vars


def test_nested_on_norman(norman):
    fits = [GeneSelector(n_genes=n, **NORMAN_KW).fit(norman) for n in (100, 250, 400)]
    for small, big in itertools.pairwise(fits):
        assert set(small.selected_genes_) < set(big.selected_genes_)


def test_order_puts_essential_genes_first(symsim):
    sel = GeneSelector(n_genes=1000).fit(symsim)
    first = sel.categories_.iloc[:100]
    assert set(first["quota"]) == {"targets", "tf", "pluripotency"}
    later = sel.categories_.iloc[200:500]
    assert set(later["quota"]) == {"responsive", "hvg"}


def test_absent_genes_never_selected_and_aliases(symsim):
    rename = {"CENPU": "MLF1IP"}
    var = symsim.var.copy()
    var.index = [rename.get(g, g) for g in symsim.var_names]
    adata = ad.AnnData(symsim.X, obs=symsim.obs, var=var)
    if "MLF1IP" not in adata.var_names:  # CENPU is not a built-in symbol: add it
        adata.var_names = ["MLF1IP", *adata.var_names[1:]]
    sets = {
        "cell_cycle": ["CENPU", "NOT_A_GENE", "ALSO_ABSENT"],
        "pluripotency": ["OCT4", "NANOG", "MISSING1"],
        "tf": [],
        "metabolic": ["ABSENT_ONLY"],
    }
    sel = GeneSelector(n_genes=300, gene_sets=sets).fit(adata)
    by_gene = sel.categories_.set_index("gene")
    assert set(sel.selected_genes_) <= set(adata.var_names)
    assert not {"NOT_A_GENE", "ALSO_ABSENT", "MISSING1", "ABSENT_ONLY"} & set(sel.ranking_)
    assert by_gene.loc["MLF1IP", "category"] == "cell_cycle"
    assert by_gene.loc["POU5F1", "category"] == "pluripotency"
    assert sel.gene_sets_["cell_cycle"] == ("MLF1IP",)
    assert sel.gene_sets_["metabolic"] == ()
    assert "metabolic" not in set(sel.categories_["category"])


def test_targets_given_by_alias_are_found():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(rng.poisson(3.0, size=(60, 5)).astype(np.float32))
    obs = pd.DataFrame(
        {"target_gene": ["non-targeting"] * 20 + ["KIAA1804"] * 20 + ["KIAA1804+GAPDH"] * 20},
        index=[f"c{i}" for i in range(60)],
    )
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=["MAP3K21", "GAPDH", "A", "B", "C"]))
    sel = GeneSelector(n_genes=2, quotas={"targets": 2}).fit(adata)
    assert set(sel.selected_genes_) == {"MAP3K21", "GAPDH"}
    assert set(sel.categories_["category"]) == {"targets"}
    off = GeneSelector(n_genes=5, include_targets=False).fit(adata)
    assert off.quotas_["targets"] == 0
    assert "targets" not in set(off.categories_["category"])
    assert set(off.categories_["quota"]) <= {"hvg", "tf", "pluripotency"}


def test_unused_quota_spills_to_hvg(symsim):
    present = [g for g in ("NANOG", "LIN28A") if g in symsim.var_names]
    assert present
    sel = GeneSelector(
        n_genes=500, gene_sets={"pluripotency": [*present, "NOT_MEASURED"]}, include_targets=False
    ).fit(symsim)
    cats = sel.categories_
    assert (cats["category"] == "pluripotency").sum() == len(present)
    spilled = cats[(cats["quota"] == "pluripotency") & (cats["category"] == "hvg")]
    assert len(spilled) == sel.quotas_["pluripotency"] - len(present)
    # Spilled slots take the best HVGs not yet used (scores as HVG scores).
    hvg_rows = cats[cats["category"] == "hvg"]
    assert hvg_rows["score"].is_monotonic_decreasing
    assert len(sel.selected_genes_) == 500
    assert (cats["quota"] == "targets").sum() == 0  # include_targets=False: no slots


def test_integer_and_fraction_quotas(symsim):
    sel = GeneSelector(n_genes=50, quotas={"tf": 10, "targets": 5, "cell_cycle": 0}).fit(symsim)
    assert sel.quotas_ == {**dict.fromkeys(QUOTA_KEYS, 0), "tf": 10, "targets": 5, "hvg": 35}
    assert_quotas_respected(sel)
    assert (sel.categories_["category"] == "tf").sum() == 10
    frac = GeneSelector(n_genes=200, quotas={"tf": 0.25, "metabolic": 0.1}).fit(symsim)
    assert frac.quotas_["tf"] == 50 and frac.quotas_["metabolic"] == 20
    same = GeneSelector(n_genes=500, quotas=default_quotas(500)).fit(symsim)
    assert same.quotas_ == default_quotas(500)


def test_responsive_genes_follow_true_effects(symsim):
    sel = GeneSelector(n_genes=600).fit(symsim)
    true = symsim.uns["simulation"]["true_delta"].abs().mean(axis=0)
    responsive = sel.categories_.query("category == 'responsive'")["gene"].to_numpy()
    top = responsive[:20]
    assert true[top].mean() > 3 * true.median()


def test_cell_types_and_no_perturbation_key():
    adata = make_perturbseq(600, 200, 5, n_cell_types=2, random_state=3)
    sel = GeneSelector(n_genes=180, cell_type_key="cell_type").fit(adata)
    assert (sel.categories_["category"] == "responsive").any()
    bare = ad.AnnData(adata.X)
    unlabeled = GeneSelector(n_genes=180, perturbation_key=None).fit(bare)
    assert set(unlabeled.categories_["category"]) == {"hvg"}


def test_layer_is_used(symsim):
    adata = symsim.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(adata.shape, dtype=np.float32)
    a = GeneSelector(n_genes=100, layer="counts").fit(adata)
    b = GeneSelector(n_genes=100).fit(symsim)
    np.testing.assert_array_equal(a.selected_genes_, b.selected_genes_)


def test_transform_and_feature_names(symsim):
    before = snapshot(symsim)
    sel = GeneSelector(n_genes=60)
    out = sel.fit_transform(symsim)
    assert out is not symsim and out.shape == (symsim.n_obs, 60)
    assert not out.is_view
    np.testing.assert_array_equal(out.var_names, sel.selected_genes_)
    np.testing.assert_array_equal(sel.get_feature_names_out(), sel.selected_genes_)
    col = list(symsim.var_names).index(sel.selected_genes_[0])
    # raw counts come back log1p-normalised over all genes, then subset
    np.testing.assert_array_equal(out.layers["counts"][:, 0].toarray(), symsim.X[:, col].toarray())
    pd.testing.assert_frame_equal(out.obs, symsim.obs)
    assert sel.n_features_in_ == symsim.n_vars
    np.testing.assert_array_equal(sel.feature_names_in_, symsim.var_names)
    assert list(sel.categories_.columns) == ["gene", "category", "quota", "score", "rank"]
    assert_unchanged(symsim, before)

    missing = symsim[:, [g for g in symsim.var_names if g != sel.selected_genes_[3]]].copy()
    with pytest.raises(DataContractError, match=sel.selected_genes_[3]):
        sel.transform(missing)


def test_input_unchanged_counts_and_log(symsim, norman):
    for adata, kw in ((symsim, {}), (norman, NORMAN_KW)):
        before = snapshot(adata)
        GeneSelector(n_genes=100, **kw).fit_transform(adata)
        assert_unchanged(adata, before)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"n_genes": -5}, ValueError, "`n_genes` must be a positive integer, got -5"),
        ({"n_genes": 0}, ValueError, "positive integer"),
        ({"n_genes": 2.5}, ValueError, "positive integer"),
        ({"n_genes": True}, ValueError, "positive integer"),
        ({"quotas": {"tfs": 3}}, ValueError, r"unknown `quotas` keys \['tfs'\]"),
        ({"quotas": {"tf": -1}}, ValueError, r"`quotas\['tf'\]` must be a non-negative"),
        ({"quotas": {"tf": 1.5}}, ValueError, r"`quotas\['tf'\]`"),
        ({"quotas": {"tf": 400, "hvg": 200}}, ValueError, "ask for 600 genes but `n_genes=500`"),
        ({"quotas": ["tf"]}, TypeError, "`quotas` must be a dict"),
        ({"hvg_flavor": "pearson"}, ValueError, "`hvg_flavor` must be 'auto', 'seurat'"),
        ({"gene_sets": {"tf": "/no/such/tfs.txt"}}, FileNotFoundError, "/no/such/tfs.txt"),
        ({"gene_sets": {"kinases": ["MAPK1"]}}, ValueError, "unknown gene-set categories"),
        ({"perturbation_key": "guide"}, DataContractError, "`obs\\['guide'\\]` not found"),
    ],
)
def test_parameter_errors(sim, params, error, match):
    with pytest.raises(error, match=match):
        GeneSelector(**params).fit(sim)


def test_seurat_v3_on_log_data_is_rejected(norman):
    with pytest.raises(ValueError, match="needs raw counts"):
        GeneSelector(hvg_flavor="seurat_v3", **NORMAN_KW).fit(norman)


def test_hvg_flavors_on_counts(sim):
    from sktx.selection._scores import _has_skmisc

    auto = GeneSelector(n_genes=30).fit(sim)
    assert auto.hvg_flavor_ == ("seurat_v3" if _has_skmisc() else "seurat")
    ranger = GeneSelector(n_genes=30, hvg_flavor="cell_ranger").fit(sim)
    assert ranger.hvg_flavor_ == "cell_ranger"
    if _has_skmisc():
        assert GeneSelector(n_genes=30, hvg_flavor="seurat_v3").fit(sim).hvg_flavor_ == "seurat_v3"
    else:
        with pytest.raises(ImportError, match="scikit-misc"):
            GeneSelector(n_genes=30, hvg_flavor="seurat_v3").fit(sim)


def test_more_genes_than_data_warns_and_selects_all(sim):
    with pytest.warns(UserWarning, match="exceeds the 120 genes") as record:
        sel = GeneSelector(n_genes=1000).fit(sim)
    assert record[0].filename == __file__  # stacklevel points at the caller
    assert len(sel.selected_genes_) == sim.n_vars
    assert set(sel.selected_genes_) == set(sim.var_names)


def test_hvg_falls_back_when_scanpy_fails(sim, monkeypatch):
    import scanpy as sc

    def broken(*args, **kwargs):
        raise ValueError("bins must increase monotonically")

    monkeypatch.setattr(sc.pp, "highly_variable_genes", broken)
    # 'seurat' is computed by sktx (row chunks, shared with backed data), not by scanpy
    monkeypatch.setattr("sktx.selection._scores._seurat_dispersions_norm", broken)
    with pytest.warns(UserWarning, match="failed .*bins must increase") as record:
        sel = GeneSelector(n_genes=30).fit(sim)
    assert record[0].filename == __file__
    assert sel.hvg_flavor_ == "variance"
    assert len(sel.selected_genes_) == 30


def test_tiny_data_works():
    adata = make_perturbseq(30, 6, 2, n_combinations=0, random_state=0)
    sel = GeneSelector(n_genes=4).fit(adata)
    assert len(set(sel.selected_genes_)) == 4


def test_clone_pickle_and_determinism(sim):
    sel = GeneSelector(n_genes=40, quotas={"tf": 0.1}, random_state=0)
    assert clone(sel).get_params() == sel.get_params()
    sel.fit(sim)
    assert not hasattr(clone(sel), "selected_genes_")
    restored = pickle.loads(pickle.dumps(sel))
    np.testing.assert_array_equal(restored.selected_genes_, sel.selected_genes_)
    assert restored.transform(sim).shape == (sim.n_obs, 40)
    again = GeneSelector(n_genes=40, quotas={"tf": 0.1}, random_state=1).fit(sim)
    np.testing.assert_array_equal(again.ranking_, sel.ranking_)


class _CountGenes(BaseEstimator):
    """Final step that receives the AnnData; scores best at `target` genes."""

    def __init__(self, target=40):
        self.target = target

    def fit(self, adata, y=None):
        assert isinstance(adata, ad.AnnData)
        self.n_vars_ = adata.n_vars
        return self

    def score(self, adata, y=None):
        assert adata.n_vars == self.n_vars_
        return -abs(adata.n_vars - self.target)


def test_pipeline_and_grid_search(sim):
    pipe = Pipeline([("select", GeneSelector(n_genes=30)), ("model", _CountGenes())])
    pipe.fit(sim)
    assert pipe.named_steps["model"].n_vars_ == 30
    assert pipe.score(sim) == -10
    search = GridSearchCV(
        pipe, {"select__n_genes": [20, 40, 60]}, cv=KFold(3, shuffle=True, random_state=0)
    )
    search.fit(sim)
    assert search.best_params_ == {"select__n_genes": 40}
    assert search.best_estimator_.named_steps["select"].selected_genes_.size == 40


def test_transform_normalises_counts_over_all_genes():
    """Counts are library-size normalised on the full transcriptome, then subset."""
    from sktx.data import log_normalize
    from sktx.datasets import make_perturbseq

    counts = make_perturbseq(n_cells=300, n_genes=80, n_perturbations=4, random_state=1)
    sel = GeneSelector(n_genes=20).fit(counts)
    out = sel.transform(counts)
    full = log_normalize(counts)[:, sel.selected_genes_]
    np.testing.assert_allclose(out.X.toarray(), full.X.toarray(), rtol=1e-6)
    assert "log1p" in out.uns
    assert counts.uns.get("log1p") is None
