"""Property tests (hypothesis, bounded): random AnnData shapes/labels never crash
validate_adata or GeneSelector with anything but our documented errors. Also the
numerical-fault contract of the regressor."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sktx.data import DataContractError, validate_adata
from sktx.selection import GeneSelector

CTRL = "non-targeting"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def anndatas(draw):
    n_cells = draw(st.integers(0, 40))
    n_genes = draw(st.integers(0, 25))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    X = rng.poisson(draw(st.floats(0.0, 5.0)), size=(n_cells, n_genes)).astype(
        draw(st.sampled_from([np.float32, np.float64, np.int32, np.float16]))
    )
    if n_cells and n_genes and draw(st.booleans()):
        fault = draw(st.sampled_from([np.nan, np.inf, -1.0]))
        X = X.astype(np.float32)
        X[draw(st.integers(0, n_cells - 1)), draw(st.integers(0, n_genes - 1))] = fault
    pool = draw(st.lists(st.sampled_from(["A", "B", "C", "A+B", CTRL, "", "D+D"]), min_size=1))
    labels = [pool[i % len(pool)] for i in rng.permutation(max(n_cells, 1))[:n_cells]]
    obs = pd.DataFrame(
        {"target_gene": pd.Categorical(labels)}, index=[f"c{i}" for i in range(n_cells)]
    )
    genes = [f"g{i}" for i in range(n_genes)]
    if n_genes > 1 and draw(st.booleans()):
        genes[1] = genes[0]  # duplicated gene name
    a = ad.AnnData(
        # scipy.sparse has no float16
        sp.csr_matrix(X) if X.dtype != np.float16 and draw(st.booleans()) else X,
        obs=obs,
        var=pd.DataFrame(index=genes),
    )
    return a


@FAST
@given(adata=anndatas())
def test_validate_adata_only_raises_data_contract_error(adata):
    try:
        info = validate_adata(adata)
    except DataContractError as exc:
        assert str(exc)  # non-empty, specific message
        return
    # accepted: then the data really are clean
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    assert np.isfinite(X).all() and (X >= 0).all()
    assert adata.var_names.is_unique and adata.n_obs > 0 and adata.n_vars > 0
    assert (np.asarray(info.labels) == adata.obs["target_gene"].astype(str).to_numpy()).all()


@FAST
@given(adata=anndatas(), n_genes=st.integers(1, 30))
def test_gene_selector_only_raises_documented_errors(adata, n_genes):
    import warnings

    before = adata.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # documented warnings (e.g. n_genes capped)
        try:
            sel = GeneSelector(n_genes=n_genes, random_state=0).fit(adata)
        except (DataContractError, ValueError) as exc:
            assert str(exc)
            return
        out = sel.transform(adata)
    chosen = list(sel.selected_genes_)
    assert 0 < len(chosen) <= min(n_genes, adata.n_vars)
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(adata.var_names)
    assert list(out.var_names) == chosen and out.n_obs == adata.n_obs
    now = adata.X
    assert (
        (now != before).nnz == 0
        if sp.issparse(now)
        else np.array_equal(now, before, equal_nan=True)
    )


# --- numerical faults -----------------------------------------------------------------


def test_nan_loss_stops_training_with_advice():
    from sktx.datasets import make_perturbseq
    from sktx.regressor import PerturbationRegressor

    d = make_perturbseq(n_cells=300, n_genes=60, n_perturbations=5, random_state=0)
    m = PerturbationRegressor(
        d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4,
        n_jobs=1, max_epochs=3, lr=1e12, random_state=0,
    )  # fmt: skip
    with pytest.raises(FloatingPointError) as info:
        m.fit(d)
    msg = str(info.value)
    assert re.search(r"epoch \d+", msg) and "`lr` (now 1000000000000.0)" in msg
    assert 'precision="32"' in msg
