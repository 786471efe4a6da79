"""Out-of-core data: estimators fitted on ``read_h5ad(path, backed="r")`` stream rows.

A backed fit must equal the in-memory fit with the same ``random_state``
(same set draws, same values), read only bounded row blocks, and never modify
the user's object or file.
"""

from __future__ import annotations

import hashlib
import os

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.pipeline import Pipeline

import sktx.data._backed as backed_mod
from sktx.data import DataContractError, get_matrix, log_normalize, validate_adata
from sktx.data._backed import BackedRows
from sktx.data._checks import backed_rows
from sktx.datasets import make_perturbseq
from sktx.graph import _PCA_MAX_CELLS
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

TINY = dict(
    d_model=8,
    n_layers=1,
    n_heads=2,
    n_neighbors=4,
    set_size=8,
    batch_size=4,
    gene_sets=False,
    max_epochs=2,
    n_jobs=1,
    random_state=0,
)
NORMAN_KEYS = dict(perturbation_key="perturbation", control_label="control")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # several chunks even on small test data, so chunked sums are really exercised
    monkeypatch.setattr(backed_mod, "CHUNK_ROWS", 97)


@pytest.fixture(scope="module")
def counts():
    """Simulated raw counts with two cell types (CSR float32)."""
    return make_perturbseq(
        n_cells=500, n_genes=60, n_perturbations=6, n_cell_types=2, random_state=0
    )


def _write(adata, path, *, dense=False):
    out = adata.copy()
    if dense:
        out.X = out.X.toarray()
    out.write_h5ad(path)
    return path


def _params(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.module_.named_parameters()}


def _assert_same_fit(m_mem, m_backed, query, tol=1e-6):
    p1, p2 = _params(m_mem), _params(m_backed)
    assert p1.keys() == p2.keys()
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], atol=tol, rtol=0, err_msg=k)
    np.testing.assert_allclose(
        m_mem.history[:, "train_loss"], m_backed.history[:, "train_loss"], atol=tol
    )
    np.testing.assert_allclose(m_mem.predict(query).X, m_backed.predict(query).X, atol=tol)
    assert m_mem.graph_.neighbors.tolist() == m_backed.graph_.neighbors.tolist()


def _query(adata, label, key="target_gene", control="non-targeting"):
    q = adata[(adata.obs[key] == control).to_numpy()].copy()
    q.obs[key] = label
    return q


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_rows_are_read_sorted_then_put_back_in_order(counts, tmp_path):
    path = _write(counts, tmp_path / "c.h5ad")
    b = ad.read_h5ad(path, backed="r")
    rows = np.array([7, 3, 3, 499, 0, 250])
    expected = sp.csr_matrix(get_matrix(log_normalize(counts)), dtype=np.float32)[rows]
    got = BackedRows(b, normalize=True)[rows]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.toarray(), expected.toarray())
    # a view: rows and genes of the view, counts normalised over all stored genes
    view = b[::2, ::3]
    got = BackedRows(view, normalize=True)[np.array([4, 1])]
    full = get_matrix(log_normalize(counts))[::2][[4, 1]][:, ::3]
    np.testing.assert_array_equal(got.toarray(), full.toarray())


def test_get_matrix_loads_a_backed_x_as_csr(counts, tmp_path):
    # used to wrap the loaded CSR in an object array ("non-numeric dtype object")
    b = ad.read_h5ad(_write(counts, tmp_path / "c.h5ad"), backed="r")
    X = get_matrix(b)
    assert sp.issparse(X) and X.format == "csr"
    np.testing.assert_array_equal(X.toarray(), counts.X.toarray())


def test_backed_fit_equals_in_memory_fit(counts, tmp_path):
    path = _write(counts, tmp_path / "c.h5ad")
    b = ad.read_h5ad(path, backed="r")
    kw = dict(TINY, cell_type_key="cell_type")
    m_mem = PerturbationRegressor(**kw).fit(counts)
    m_backed = PerturbationRegressor(**kw).fit(b)
    label = m_mem.train_perturbations_[0]
    _assert_same_fit(m_mem, m_backed, _query(counts, label))
    # predicting from a backed query reads it and gives the same cells
    qpath = _write(_query(counts, label), tmp_path / "q.h5ad")
    np.testing.assert_array_equal(
        m_backed.predict(ad.read_h5ad(qpath, backed="r")).X,
        m_backed.predict(_query(counts, label)).X,
    )


def test_backed_fit_reads_bounded_row_blocks(counts, tmp_path, monkeypatch):
    """No full load: `to_memory` is never called and each read is at most one block."""
    path = _write(counts, tmp_path / "c.h5ad")
    b = ad.read_h5ad(path, backed="r")
    sizes = []
    read = BackedRows._read_file_rows

    def spy(self, rows):
        sizes.append(len(rows))
        return read(self, rows)

    def no_load(self):
        raise AssertionError("the whole backed matrix was loaded")

    monkeypatch.setattr(BackedRows, "_read_file_rows", spy)
    monkeypatch.setattr(type(b.X), "to_memory", no_load)
    PerturbationRegressor(**dict(TINY, max_epochs=1)).fit(b)
    batch_rows = 2 * TINY["set_size"] * TINY["batch_size"]
    # At most one read is larger than a chunk, capped by a constant, not by the data: the
    # PCA sample of the control cells (at most 4,000 rows), read in one go. The
    # counts-vs-log1p decision reuses the chunked value scan.
    n_controls = int((counts.obs["target_gene"] == "non-targeting").sum())
    assert sizes and max(sizes) <= max(backed_mod.CHUNK_ROWS, batch_rows, _PCA_MAX_CELLS)
    assert sum(s > max(backed_mod.CHUNK_ROWS, batch_rows) for s in sizes) <= 1
    assert min(n_controls, _PCA_MAX_CELLS) in sizes  # the PCA's one read


def test_backed_fit_equals_in_memory_on_real_data(norman_path, tmp_path):
    full = ad.read_h5ad(norman_path)
    keep = full.obs["perturbation"].isin(["control", "KLF1", "MAP2K6", "KLF1+MAP2K6", "SGK1"])
    sub = full[keep.to_numpy(), :150].copy()
    path = _write(sub, tmp_path / "norman_sub.h5ad")
    b = ad.read_h5ad(path, backed="r")
    kw = dict(TINY, max_epochs=1, cell_type_key="cell_type", **NORMAN_KEYS)
    m_mem = PerturbationRegressor(**kw).fit(sub)
    m_backed = PerturbationRegressor(**kw).fit(b)
    q = _query(sub, "KLF1", "perturbation", "control")
    _assert_same_fit(m_mem, m_backed, q)
    sel_mem = GeneSelector(n_genes=40, cell_type_key="cell_type", **NORMAN_KEYS).fit(sub)
    sel_b = GeneSelector(n_genes=40, cell_type_key="cell_type", **NORMAN_KEYS).fit(b)
    assert sel_b.hvg_flavor_ == sel_mem.hvg_flavor_ == "seurat"
    assert list(sel_b.ranking_) == list(sel_mem.ranking_)
    np.testing.assert_allclose(sel_b.categories_["score"], sel_mem.categories_["score"], atol=1e-6)


def test_backed_pipeline_equals_in_memory_pipeline(tmp_path):
    sim = make_perturbseq(300, 150, 5, gene_names="symbols", random_state=1)
    path = _write(sim, tmp_path / "s.h5ad")
    b = ad.read_h5ad(path, backed="r")

    def pipe():
        return Pipeline(
            [
                ("select", GeneSelector(n_genes=40)),
                ("model", PerturbationRegressor(**dict(TINY, max_epochs=1))),
            ]
        )

    p_mem, p_b = pipe().fit(sim), pipe().fit(b)
    assert list(p_b["select"].selected_genes_) == list(p_mem["select"].selected_genes_)
    view = p_b["select"].transform(b)
    assert view.isbacked and view.is_view and view.n_vars == 40
    label = p_mem["model"].train_perturbations_[0]
    _assert_same_fit(p_mem["model"], p_b["model"], p_mem["select"].transform(_query(sim, label)))


def test_dense_backed_x_and_row_view(counts, tmp_path):
    path = _write(counts, tmp_path / "dense.h5ad", dense=True)
    b = ad.read_h5ad(path, backed="r")
    mask = (counts.obs["cell_type"] == counts.obs["cell_type"].iloc[0]).to_numpy()
    kw = dict(TINY, max_epochs=1)
    m_mem = PerturbationRegressor(**kw).fit(counts[mask].copy())
    m_backed = PerturbationRegressor(**kw).fit(b[mask])
    label = m_mem.train_perturbations_[0]
    _assert_same_fit(m_mem, m_backed, _query(counts[mask].copy(), label))


def test_user_object_and_file_are_not_modified(counts, tmp_path):
    path = _write(counts, tmp_path / "c.h5ad")
    before = _sha(path)
    b = ad.read_h5ad(path, backed="r+")
    obs, var = b.obs.copy(), b.var.copy()
    PerturbationRegressor(**dict(TINY, max_epochs=1)).fit(b)
    GeneSelector(n_genes=20).fit(b)
    assert b.isbacked and not b.is_view and b.file._filemode == "r+"
    assert b.obs.equals(obs) and b.var.equals(var) and "log1p" not in b.uns
    b.file.close()
    assert _sha(path) == before


def test_closed_file_is_reopened_and_missing_file_is_a_clear_error(counts, tmp_path):
    path = _write(counts, tmp_path / "c.h5ad")
    b = ad.read_h5ad(path, backed="r")
    b.file.close()  # reopened read-only on use, as anndata's own `adata.X` does
    validate_adata(b)
    b.file.close()
    os.remove(path)
    with pytest.raises(DataContractError, match="cannot read `X` of the backed AnnData"):
        PerturbationRegressor(**TINY).fit(b)


def test_bad_backed_inputs_give_clear_errors(counts, tmp_path):
    csc = counts.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(DataContractError, match=r"stored as CSC.*needs CSR"):
        PerturbationRegressor(**TINY).fit(ad.read_h5ad(tmp_path / "csc.h5ad", backed="r"))

    bad = counts.copy()
    bad.X = bad.X.toarray()
    bad.X[300, 5] = np.nan
    bad.X[301, 5] = -1.0
    bad.write_h5ad(tmp_path / "nan.h5ad")
    b = ad.read_h5ad(tmp_path / "nan.h5ad", backed="r")
    with pytest.raises(DataContractError, match=f"NaN/inf values in 1 cells.*{bad.obs_names[300]}"):
        PerturbationRegressor(**TINY).fit(b)
    bad.X[300, 5] = 0.0
    bad.write_h5ad(tmp_path / "neg.h5ad")
    with pytest.raises(DataContractError, match=f"negative values.*{bad.obs_names[301]}"):
        validate_adata(ad.read_h5ad(tmp_path / "neg.h5ad", backed="r"))

    strings = counts[:, :3].copy()
    strings.X = strings.X.toarray().astype(str)
    strings.write_h5ad(tmp_path / "str.h5ad")
    with pytest.raises(DataContractError, match="non-numeric dtype"):
        validate_adata(ad.read_h5ad(tmp_path / "str.h5ad", backed="r"))

    ok = ad.read_h5ad(_write(counts, tmp_path / "ok.h5ad"), backed="r")
    with pytest.raises(DataContractError, match="`layer='counts'` cannot be used with a backed"):
        backed_rows(ok, layer="counts")
    with pytest.raises(ValueError, match="`hvg_flavor='cell_ranger'` is not available"):
        GeneSelector(n_genes=10, hvg_flavor="cell_ranger").fit(ok)
