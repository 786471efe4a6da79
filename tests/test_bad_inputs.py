"""Bad-input table: each bad input gives a specific error naming the value (or a
documented warning), never a bare traceback from deep inside torch or a wrong result.

The table is documented in docs/errors.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from typer.testing import CliRunner

from sktx.baselines import AdditiveBaseline, MeanBaseline
from sktx.cli import app
from sktx.data import DataContractError, validate_adata
from sktx.datasets import make_perturbseq
from sktx.metrics import mae_score, pearson_delta_score
from sktx.model_selection import make_query
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

SMALL = dict(d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4, n_jobs=1)
CTRL = "non-targeting"


def reg(**kw):
    return PerturbationRegressor(**{**SMALL, "max_epochs": 1, "random_state": 0, **kw})


@pytest.fixture(scope="module")
def data():
    return make_perturbseq(n_cells=300, n_genes=60, n_perturbations=5, random_state=0)


@pytest.fixture(scope="module")
def fitted_reg(data):
    return reg().fit(data)


@pytest.fixture(scope="module")
def fitted_sel(data):
    return GeneSelector(n_genes=20, random_state=0).fit(data)


# --- data builders: each returns a new bad AnnData from the good one -----------------


def with_nan(a):
    a = a.copy()
    X = a.X.toarray().astype(np.float32)
    X[3, 5] = np.nan
    X[7, 2] = np.nan
    a.X = sp.csr_matrix(X)
    return a


def with_inf(a):
    a = a.copy()
    X = a.X.toarray().astype(np.float32)
    X[4, 1] = np.inf
    a.X = X
    return a


def with_negative(a):
    a = a.copy()
    X = a.X.toarray().astype(np.float32)
    X[0, 0] = -3
    a.X = X
    return a


def only_controls(a):
    return a[(a.obs["target_gene"] == CTRL).to_numpy()].copy()


def no_controls(a):
    return a[(a.obs["target_gene"] != CTRL).to_numpy()].copy()


def single_perturbation(a):
    labels = a.obs["target_gene"]
    first = sorted(set(labels) - {CTRL})[0]
    return a[labels.isin([CTRL, first]).to_numpy()].copy()


def empty_cells(a):
    return a[:0].copy()


def empty_genes(a):
    return a[:, :0].copy()


def duplicate_genes(a):
    a = a.copy()
    names = list(a.var_names)
    names[1] = names[0]
    a.var_names = names
    return a


def missing_labels(a):
    a = a.copy()
    col = a.obs["target_gene"].astype(object)
    col.iloc[5] = None
    a.obs["target_gene"] = col
    return a


def float16(a):
    a = a.copy()
    a.X = a.X.toarray().astype(np.float16)
    return a


def dense_ok(a):
    a = a.copy()
    a.X = a.X.toarray()
    return a


# --- table ---------------------------------------------------------------------------
# (id, callable(data) -> None, expected exception, message fragment naming the value)


def _validate(builder):
    return lambda d: validate_adata(builder(d))


def _gs(builder, **kw):
    return lambda d: GeneSelector(**{"n_genes": 20, **kw}).fit(builder(d))


def _reg(builder, **kw):
    return lambda d: reg(**kw).fit(builder(d))


def _same(a):
    return a


CASES = [
    # wrong types
    (
        "validate: ndarray not AnnData",
        lambda d: validate_adata(d.X.toarray()),
        TypeError,
        "AnnData",
    ),
    (
        "selector: DataFrame not AnnData",
        lambda d: GeneSelector().fit(d.to_df()),
        TypeError,
        "AnnData",
    ),
    ("regressor: ndarray not AnnData", lambda d: reg().fit(d.X.toarray()), TypeError, "AnnData"),
    ("baseline: list not AnnData", lambda d: MeanBaseline().fit([[1, 2]]), TypeError, "AnnData"),
    (
        "baseline: unknown effects",
        lambda d: AdditiveBaseline(effects="both").fit(d),
        ValueError,
        "'both'",
    ),
    (
        "baseline: unknown cells",
        lambda d: AdditiveBaseline(cells="mean").fit(d).predict(d),
        ValueError,
        "'mean'",
    ),
    # empty / degenerate data
    ("validate: zero cells", _validate(empty_cells), DataContractError, "0"),
    ("validate: zero genes", _validate(empty_genes), DataContractError, "0"),
    ("selector: zero cells", _gs(empty_cells), DataContractError, "0"),
    ("regressor: all-control data", _reg(only_controls), DataContractError, "perturb"),
    ("regressor: no control cells", _reg(no_controls), DataContractError, CTRL),
    (
        "baseline: all-control data",
        lambda d: MeanBaseline().fit(only_controls(d)),
        DataContractError,
        "perturb",
    ),
    # bad values
    ("validate: NaN in a few cells", _validate(with_nan), DataContractError, "NaN"),
    ("validate: inf", _validate(with_inf), DataContractError, "inf"),
    ("validate: negative counts", _validate(with_negative), DataContractError, "negative"),
    ("selector: NaN in a few cells", _gs(with_nan), DataContractError, "NaN"),
    ("regressor: NaN in a few cells", _reg(with_nan), DataContractError, "NaN"),
    ("validate: duplicate gene names", _validate(duplicate_genes), DataContractError, "duplicate"),
    (
        "validate: missing perturbation label",
        _validate(missing_labels),
        DataContractError,
        "target_gene",
    ),
    # keys
    (
        "validate: unknown perturbation_key",
        lambda d: validate_adata(d, perturbation_key="guide"),
        DataContractError,
        "guide",
    ),
    (
        "validate: unknown control label",
        lambda d: validate_adata(d, control_label="NTC"),
        DataContractError,
        "NTC",
    ),
    ("regressor: unknown layer", _reg(_same, layer="counts_raw"), DataContractError, "counts_raw"),
    (
        "selector: unknown cell_type_key",
        _gs(_same, cell_type_key="celltype"),
        DataContractError,
        "celltype",
    ),
    # parameters
    ("selector: negative n_genes", _gs(_same, n_genes=-5), ValueError, "-5"),
    ("selector: n_genes zero", _gs(_same, n_genes=0), ValueError, "n_genes"),
    ("regressor: negative lr", _reg(_same, lr=-0.1), ValueError, "-0.1"),
    ("regressor: negative max_epochs", _reg(_same, max_epochs=-1), ValueError, "-1"),
    ("regressor: bad precision", _reg(_same, precision="8"), ValueError, "'8'"),
    ("regressor: bad attention", _reg(_same, attention="dense-ish"), ValueError, "dense-ish"),
    ("regressor: validation_fraction > 1", _reg(_same, validation_fraction=1.5), ValueError, "1.5"),
    ("regressor: bad on_unknown_target", _reg(_same, on_unknown_target="skip"), ValueError, "skip"),
    (
        "progressive: decreasing phases",
        lambda d: ProgressiveFit(reg(), phases=(50, 10), param="max_epochs").fit(d),
        ValueError,
        "phases",
    ),
    (
        "progressive: empty phases",
        lambda d: ProgressiveFit(reg(), phases=()).fit(d),
        ValueError,
        "phases",
    ),
]


@pytest.mark.parametrize(("case", "call", "exc", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_specific_error(case, call, exc, fragment, data):
    with pytest.raises(exc) as info:
        call(data)
    assert fragment.lower() in str(info.value).lower(), f"{case}: {info.value}"


# --- bad inputs at predict / transform time ------------------------------------------


def test_single_perturbation_fits_without_validation_split(data):
    """One perturbation: it is trained on, nothing is held out (documented, no error)."""
    m = reg().fit(single_perturbation(data))
    assert len(m.train_perturbations_) == 1 and m.valid_perturbations_ == []
    assert len(m.history_) == 1


def test_predict_before_fit(data):
    with pytest.raises(NotFittedError):
        reg().predict(make_query(data))


def test_unseen_gene_in_query_warns_by_default(fitted_reg, data):
    # the Python default agrees with the CLI's: predicted from the fallback, with a warning
    q = make_query(data)
    q.obs["target_gene"] = "NOTAGENE"
    with pytest.warns(UserWarning, match="NOTAGENE"):
        fitted_reg.predict(q)


def test_unseen_gene_in_query_errors_when_asked(fitted_reg, data):
    q = make_query(data)
    q.obs["target_gene"] = "NOTAGENE"
    with pytest.raises(ValueError, match="NOTAGENE"):
        fitted_reg.set_params(on_unknown_target="error").predict(q)
    fitted_reg.set_params(on_unknown_target="warn")


def test_mismatched_var_between_fit_and_predict(fitted_reg, data):
    q = make_query(data)[:, 5:].copy()  # five training genes missing
    missing = data.var_names[0]
    with pytest.raises(DataContractError, match=missing):
        fitted_reg.predict(q)


def test_selector_transform_missing_genes(fitted_sel, data):
    keep = [g for g in data.var_names if g != fitted_sel.selected_genes_[0]]
    with pytest.raises(DataContractError, match=str(fitted_sel.selected_genes_[0])):
        fitted_sel.transform(data[:, keep].copy())


def test_sparse_and_dense_give_the_same_selection(data):
    a = GeneSelector(n_genes=20, random_state=0).fit(data).selected_genes_
    b = GeneSelector(n_genes=20, random_state=0).fit(dense_ok(data)).selected_genes_
    assert list(a) == list(b)


def test_float16_input_is_accepted_and_matches_float32(data):
    """float16 counts are exact for small integers; results match float32."""
    a = MeanBaseline().fit(data).predict(make_query(data)).X
    b = MeanBaseline().fit(float16(data)).predict(make_query(data)).X
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)


def test_huge_n_genes_is_capped_with_warning(data):
    with pytest.warns(UserWarning, match="10000"):
        sel = GeneSelector(n_genes=10_000, random_state=0).fit(data)
    assert len(sel.selected_genes_) == data.n_vars


def test_metrics_mismatched_genes(data):
    pred = data[:, 1:].copy()
    with pytest.raises(ValueError, match="gene"):
        mae_score(data, pred)


def test_metrics_wrong_type(data):
    with pytest.raises(TypeError, match="AnnData"):
        pearson_delta_score(data.X, data)


# --- CLI ----------------------------------------------------------------------------

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_corrupt_h5ad(tmp_path):
    bad = tmp_path / "broken.h5ad"
    bad.write_bytes(b"this is not hdf5")
    res = cli("train", "--data", bad, "--out", tmp_path / "run")
    assert res.exit_code == 2, res.output
    assert "broken.h5ad" in res.output and "Traceback" not in res.output


def test_cli_truncated_h5ad(tmp_path, data):
    good = tmp_path / "good.h5ad"
    data.write_h5ad(good)
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(good.read_bytes()[:2000])
    res = cli("train", "--data", cut, "--out", tmp_path / "run")
    assert res.exit_code == 2, res.output
    assert "cut.h5ad" in res.output and "Traceback" not in res.output


def test_cli_missing_file(tmp_path):
    res = cli("train", "--data", tmp_path / "nope.h5ad", "--out", tmp_path / "run")
    assert res.exit_code == 2 and "nope.h5ad" in res.output


def test_cli_unwritable_output_dir(tmp_path, data):
    good = tmp_path / "good.h5ad"
    data.write_h5ad(good)
    blocker = tmp_path / "afile"
    blocker.write_text("x")  # --out under a regular file can never be created
    res = cli("train", "--data", good, "--out", blocker / "run", "--epochs", "1")
    assert res.exit_code == 2, res.output
    assert "afile" in res.output and "Traceback" not in res.output


def test_cli_resume_without_checkpoint(tmp_path, data):
    good = tmp_path / "good.h5ad"
    data.write_h5ad(good)
    res = cli("train", "--data", good, "--out", tmp_path / "run", "--resume")
    assert res.exit_code == 2 and "checkpoint.sktx" in res.output
