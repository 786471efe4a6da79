"""The data contract: one test per error, detection of counts vs log1p, no mutation."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sktx.data import (
    DataContractError,
    check_genes,
    get_matrix,
    is_log_normalized,
    log_normalize,
    split_targets,
    validate_adata,
)

CTRL = "non-targeting"


def _adata(X=None, labels=None, genes=None, sparse=False, **obs_cols):
    labels = [CTRL, CTRL, "GATA1", "GATA1", "KLF1+GATA1", "KLF1"] if labels is None else labels
    n = len(labels)
    if X is None:
        X = np.random.RandomState(0).poisson(2.0, size=(n, 4)).astype(np.float32)
    genes = [f"g{i}" for i in range(X.shape[1])] if genes is None else genes
    obs = pd.DataFrame({"target_gene": labels, **obs_cols}, index=[f"c{i}" for i in range(n)])
    X = sp.csr_matrix(X) if sparse else X
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))


@pytest.fixture(params=["dense", "csr"])
def sparse(request):
    return request.param == "csr"


# ---------------------------------------------------------------- happy path


def test_valid_dense_and_csr(sparse):
    info = validate_adata(_adata(sparse=sparse), require_perturbed=True)
    assert info.perturbations == ["GATA1", "KLF1", "KLF1+GATA1"]
    assert info.is_control.tolist() == [True, True, False, False, False, False]
    assert info.cell_types is None


def test_categorical_labels_and_cell_types():
    a = _adata(cell_type=["A", "B"] * 3)
    a.obs["target_gene"] = a.obs["target_gene"].astype("category")
    info = validate_adata(a, cell_type_key="cell_type")
    assert info.cell_types.tolist() == ["A", "B"] * 3


def test_perturbation_key_none_checks_matrix_only():
    assert validate_adata(_adata(), perturbation_key=None) is None


def test_validate_real_data(norman):
    info = validate_adata(
        norman, perturbation_key="perturbation", control_label="control", cell_type_key="cell_type"
    )
    assert info.is_control.sum() == 400
    assert len(info.perturbations) == 33


# ---------------------------------------------------------------- one test per error


def test_missing_perturbation_key_lists_columns():
    a = _adata(batch=["b1"] * 6)
    with pytest.raises(DataContractError) as err:
        validate_adata(a, perturbation_key="guide")
    msg = str(err.value)
    assert "`obs['guide']` not found" in msg
    assert "`target_gene`" in msg and "`batch`" in msg
    assert "perturbation_key=" in msg
    assert "perturbation_key='target_gene'" in msg  # the column holding the control label


def test_missing_cell_type_key():
    with pytest.raises(DataContractError, match=r"`obs\['ct'\]` not found.*cell_type_key="):
        validate_adata(_adata(), cell_type_key="ct")


def test_no_control_cells_lists_frequent_labels():
    with pytest.raises(DataContractError) as err:
        validate_adata(_adata(), control_label="control")
    msg = str(err.value)
    assert "no control cells" in msg and "'control'" in msg
    assert "'non-targeting' (2 cells)" in msg and "'GATA1' (2 cells)" in msg
    assert "control_label=" in msg


def test_no_control_allowed_when_not_required():
    info = validate_adata(_adata(), control_label="control", require_control=False)
    assert not info.is_control.any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf(bad, sparse):
    X = np.ones((6, 4), dtype=np.float32)
    X[3, 1] = bad
    with pytest.raises(DataContractError) as err:
        validate_adata(_adata(X, sparse=sparse))
    msg = str(err.value)
    assert "NaN/inf" in msg and "`c3`" in msg and "1 cells" in msg
    assert "adata[mask].copy()" in msg


def test_negative_values(sparse):
    X = np.ones((6, 4), dtype=np.float32)
    X[[1, 4], 2] = -0.5
    with pytest.raises(DataContractError) as err:
        validate_adata(_adata(X, sparse=sparse))
    msg = str(err.value)
    assert "negative values (min -0.5)" in msg
    assert "`c1`" in msg and "`c4`" in msg
    assert "sc.pp.scale" in msg and "layer=" in msg


def test_values_not_scanned_when_asked():
    X = -np.ones((6, 4))
    validate_adata(_adata(X), check_values=False)


def test_non_numeric_matrix():
    X = np.ones((6, 4), dtype=bool)
    with pytest.raises(DataContractError, match="non-numeric dtype bool"):
        validate_adata(_adata(X))


def test_duplicate_var_names():
    with pytest.warns(UserWarning):  # anndata warns about non-unique names
        a = _adata(genes=["A", "B", "A", "C"])
    with pytest.raises(DataContractError) as err:
        validate_adata(a)
    msg = str(err.value)
    assert "1 duplicated gene names: `A`" in msg
    assert "var_names_make_unique()" in msg


def test_empty_zero_cells():
    obs = pd.DataFrame({"target_gene": pd.Series([], dtype=str)}, index=pd.Index([], dtype=str))
    a = ad.AnnData(np.zeros((0, 3)), obs=obs, var=pd.DataFrame(index=["x", "y", "z"]))
    with pytest.raises(DataContractError, match=r"empty \(0 cells x 3 genes\).*filtering"):
        validate_adata(a)


def test_empty_zero_genes():
    a = _adata(X=np.zeros((6, 0)), genes=[])
    with pytest.raises(DataContractError, match=r"empty \(6 cells x 0 genes\)"):
        validate_adata(a)


def test_integer_labels():
    a = _adata()
    a.obs["target_gene"] = [0, 0, 1, 1, 2, 3]
    with pytest.raises(DataContractError) as err:
        validate_adata(a, control_label="0")
    msg = str(err.value)
    assert "must hold strings, found int" in msg
    assert ".astype(str)" in msg and "'target_gene'" in msg


def test_integer_categorical_labels():
    a = _adata()
    a.obs["target_gene"] = pd.Categorical([0, 0, 1, 1, 2, 3])
    with pytest.raises(DataContractError, match="must hold strings, found int"):
        validate_adata(a)


def test_mixed_labels_beyond_first_rows():
    # A non-string far down the column is still found.
    labels = [CTRL] * 20_000 + ["GATA1"] * 5 + [7]
    a = _adata(X=np.ones((len(labels), 2)), labels=labels)
    with pytest.raises(DataContractError, match="found int values such as 7"):
        validate_adata(a)


def test_nan_labels():
    a = _adata(labels=[CTRL, CTRL, "GATA1", None, "KLF1", np.nan])
    with pytest.raises(DataContractError) as err:
        validate_adata(a)
    msg = str(err.value)
    assert "2 missing values" in msg and "`c3`" in msg and "`c5`" in msg
    assert "fill or drop" in msg


def test_nan_cell_type_labels():
    a = _adata(cell_type=["A", "A", None, "B", "B", "B"])
    with pytest.raises(DataContractError, match=r"`obs\['cell_type'\]` has 1 missing.*`c2`"):
        validate_adata(a, cell_type_key="cell_type")


def test_check_genes_missing():
    a = _adata()
    assert check_genes(a, ["g1", "g0"]) == ["g1", "g0"]
    with pytest.raises(DataContractError) as err:
        check_genes(a, ["g1", "OCT4", "NANOG"], what="target genes")
    msg = str(err.value)
    assert "2 target genes are not in `var_names`: `OCT4`, `NANOG`" in msg
    assert "4 genes" in msg and "resolve_aliases" in msg


def test_not_anndata():
    with pytest.raises(TypeError, match=r"expected an AnnData .* got ndarray.*load_h5ad"):
        validate_adata(np.ones((3, 3)))
    with pytest.raises(TypeError, match="got DataFrame"):
        validate_adata(pd.DataFrame(np.ones((3, 3))))


def test_missing_layer():
    a = _adata()
    a.layers["raw"] = a.X.copy()
    with pytest.raises(DataContractError) as err:
        validate_adata(a, layer="counts")
    msg = str(err.value)
    assert "layer 'counts' not found" in msg and "`raw`" in msg and "layer=None" in msg
    validate_adata(a, layer="raw")


def test_layer_is_checked_not_x():
    a = _adata()
    a.layers["bad"] = -np.ones(a.shape)
    with pytest.raises(DataContractError, match=r"`layers\['bad'\]` contains negative"):
        validate_adata(a, layer="bad")


def test_x_none():
    a = _adata()
    a.X = None
    with pytest.raises(DataContractError, match=r"`adata\.X` is None.*layer="):
        validate_adata(a)


def test_every_cell_is_control_with_require_perturbed():
    a = _adata(labels=[CTRL] * 4)
    validate_adata(a)  # allowed unless perturbations are required
    with pytest.raises(DataContractError) as err:
        validate_adata(a, require_perturbed=True)
    msg = str(err.value)
    assert "every cell is a control" in msg and "all 4 cells" in msg
    assert "control_label=" in msg


# ---------------------------------------------------------------- helpers


def test_get_matrix_keeps_sparse_sparse():
    a = _adata(sparse=True)
    assert sp.issparse(get_matrix(a))
    a.X = sp.csc_matrix(a.X)
    assert get_matrix(a).format == "csr"
    assert isinstance(get_matrix(_adata()), np.ndarray)


def test_split_targets():
    assert split_targets("A+B") == ["A", "B"]
    assert split_targets("A") == ["A"]
    assert split_targets("ctrl", control_label="ctrl") == []
    assert split_targets("A+ctrl", control_label="ctrl") == ["A"]


# ---------------------------------------------------------------- counts vs log1p


def test_detection_on_real_data(norman, datlinger_path):
    assert is_log_normalized(norman)
    dat = ad.read_h5ad(datlinger_path)
    assert not is_log_normalized(dat)
    assert is_log_normalized(log_normalize(dat))


def test_detection_without_uns_marker(norman):
    stripped = ad.AnnData(norman.X, obs=norman.obs[["perturbation"]])
    assert "log1p" not in stripped.uns
    assert is_log_normalized(stripped)


def test_detection_on_simulated(sim, sparse):
    assert not is_log_normalized(sim)
    dense = ad.AnnData(sim.X.toarray()) if not sparse else sim
    assert not is_log_normalized(dense)
    out = log_normalize(dense)
    assert is_log_normalized(out)
    del out.uns["log1p"]
    assert is_log_normalized(out)  # detected from the values alone


def test_detection_layer(sim):
    out = log_normalize(sim)
    del out.uns["log1p"]
    assert is_log_normalized(out) and not is_log_normalized(out, layer="counts")


def test_all_zero_matrix_is_counts():
    assert not is_log_normalized(ad.AnnData(np.zeros((3, 2))))


def _snapshot(a):
    X = a.X.toarray() if sp.issparse(a.X) else np.array(a.X)
    return X, a.obs.copy(), a.var.copy(), dict(a.uns), list(a.layers)


def _dense(M):
    return M.toarray() if sp.issparse(M) else np.asarray(M)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_log_normalize_returns_copy(sparse, dtype):
    a = _adata(sparse=sparse)
    a.X = a.X.astype(dtype)
    a.uns["note"] = "keep"
    X0, obs0, var0, uns0, layers0 = _snapshot(a)
    out = log_normalize(a)
    assert out is not a
    X1, obs1, var1, uns1, layers1 = _snapshot(a)
    np.testing.assert_array_equal(X0, X1)
    assert a.X.dtype == dtype
    pd.testing.assert_frame_equal(obs0, obs1)
    pd.testing.assert_frame_equal(var0, var1)
    assert uns0 == uns1 and layers0 == layers1 == []
    # the copy: counts kept, rows sum to target_sum after expm1
    np.testing.assert_array_equal(_dense(out.layers["counts"]), X0)
    np.testing.assert_allclose(np.expm1(_dense(out.X)).sum(1), 1e4, rtol=1e-4)
    assert sp.issparse(out.X) == sparse
    assert "log1p" in out.uns and out.uns["note"] == "keep"


def test_log_normalize_skips_log_data_unless_forced(norman):
    out = log_normalize(norman)
    np.testing.assert_array_equal(out.X.toarray(), norman.X.toarray())
    assert "counts" not in out.layers
    forced = log_normalize(norman, force=True)
    assert "counts" in forced.layers
    assert not np.allclose(forced.X.toarray(), norman.X.toarray())
    assert "counts" not in norman.layers  # the session fixture is untouched


def test_log_normalize_from_layer():
    a = _adata()
    a.layers["counts"] = a.X.copy()
    a.X = np.log1p(a.X)
    out = log_normalize(a, layer="counts", target_sum=100)
    np.testing.assert_allclose(np.expm1(out.X).sum(1), 100, rtol=1e-4)


def test_validate_never_modifies(sim):
    X0, obs0, var0, uns0, _ = _snapshot(sim)
    validate_adata(sim, require_perturbed=True)
    np.testing.assert_array_equal(_snapshot(sim)[0], X0)
    pd.testing.assert_frame_equal(sim.obs, obs0)
    pd.testing.assert_frame_equal(sim.var, var0)
    assert sim.uns.keys() == uns0.keys()


# ---------------------------------------------------------------- property


_label = st.one_of(
    st.sampled_from([CTRL, "A", "B", "A+B", "", "ctrl"]),
    st.text(max_size=4),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
)
_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-2, 50).map(float),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_obs=st.integers(0, 6),
    n_vars=st.integers(0, 4),
    data=st.data(),
    sparse_x=st.booleans(),
    categorical=st.booleans(),
    dup_genes=st.booleans(),
    require_perturbed=st.booleans(),
)
def test_property_validates_or_raises_contract_error(
    n_obs, n_vars, data, sparse_x, categorical, dup_genes, require_perturbed
):
    values = data.draw(st.lists(_value, min_size=n_obs * n_vars, max_size=n_obs * n_vars))
    X = np.asarray(values, dtype=np.float64).reshape(n_obs, n_vars)
    labels = data.draw(st.lists(_label, min_size=n_obs, max_size=n_obs))
    col = pd.Series(labels, dtype=object, index=[f"c{i}" for i in range(n_obs)])
    if categorical:
        try:
            col = col.astype("category")
        except TypeError:  # unorderable mix; keep object
            pass
    genes = [f"g{i}" for i in range(n_vars)]
    if dup_genes and n_vars > 1:
        genes[-1] = genes[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ad.AnnData(
            sp.csr_matrix(X) if sparse_x else X,
            obs=pd.DataFrame({"target_gene": col}, index=col.index),
            var=pd.DataFrame(index=genes),
        )
    try:
        info = validate_adata(a, require_perturbed=require_perturbed)
    except (DataContractError, TypeError) as err:
        assert str(err)  # every failure explains itself
        return
    # accepted: the invariants the rest of sktx relies on
    assert a.n_obs > 0 and a.n_vars > 0
    assert info.is_control.any()
    assert np.isfinite(X).all() and (X >= 0).all()
    assert all(isinstance(lab, str) for lab in labels)
    assert len(set(genes)) == len(genes)


def test_docstring_examples():
    import doctest

    from sktx.data import _checks

    result = doctest.testmod(_checks, verbose=False)
    assert result.attempted > 5 and result.failed == 0
