"""scikit-learn's common estimator checks (``parametrize_with_checks``) for every public estimator.

sktx estimators take an AnnData (cells x genes, perturbation labels in
``obs[perturbation_key]``) and no ``y``; the checks that build numpy ``X``/``y``
cannot run against them. Those checks are listed, per estimator, in
:data:`EXPECTED_FAILED_CHECKS` with the reason, and ``test_sklearn_check`` asserts
that each of them still fails *for that reason* (the exception chain names the
AnnData contract, or the specific skorch behaviour): a check that starts passing, or
fails in another way, fails the test. Every other check must pass.

We do not hand the dict to ``parametrize_with_checks(expected_failed_checks=...)``:
that marks the checks ``xfail`` (``strict`` via ``xfail_strict``), which catches an
unexpected pass but accepts *any* failure, and puts ~250 XFAIL lines in every
``-ra`` summary. The check logic that matters for AnnData input (parameters not
overwritten by ``fit``, ``fit`` returns self, idempotent fit, methods leave the
state alone, ``n_features_in_``, cell-order invariance) is re-run on AnnData in
the ``test_anndata_*`` tests below.
"""

from __future__ import annotations

import re
from functools import partial

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sktx.baselines import BASELINES
from sktx.model_selection import make_query
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

SMALL = dict(d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4, n_jobs=1)


def _regressor():
    return PerturbationRegressor(**SMALL, max_epochs=1, random_state=0)


def _progressive():
    pipe = Pipeline([("select", GeneSelector()), ("model", _regressor())])
    return ProgressiveFit(pipe, phases=(40, 80), epochs_per_phase=1, random_state=0)


def _baseline_factories(small: dict[str, dict]) -> dict:
    """One factory per baseline class of the registry, keyed by class name as sklearn's
    checks and the tables below are (the first registry entry of each class)."""
    out = {}
    for make in BASELINES.values():
        name = type(make()).__name__
        out.setdefault(name, partial(make, **small.get(name, {})))
    return out


BASELINE_FACTORIES = _baseline_factories({"LinearBaseline": {"n_components": 3}})

FACTORIES = {
    "GeneSelector": lambda: GeneSelector(n_genes=40, random_state=0),
    **BASELINE_FACTORIES,
    "PerturbationRegressor": _regressor,
    "ProgressiveFit": _progressive,
}
PREDICTORS = [k for k in FACTORIES if k != "GeneSelector"]

# ---------------------------------------------------------------- expected failures
# Checks that feed numpy arrays (or scipy matrices) as X. sktx refuses anything but
# an AnnData before it reads a value, so these fail on the input type, not on the
# property they test; the test_anndata_* tests below re-run the properties that apply.
_ANNDATA_INPUT = {
    "check_fit_score_takes_y": "fit/score take an AnnData (y is accepted and ignored); "
    "numpy X carries no perturbation labels",
    "check_estimators_overwrite_params": "numpy X carries no perturbation labels; "
    "re-run on AnnData in test_anndata_fit_keeps_params",
    "check_dont_overwrite_parameters": "numpy X carries no perturbation labels; "
    "re-run on AnnData in test_anndata_fit_keeps_params",
    "check_estimators_fit_returns_self": "numpy X carries no perturbation labels; "
    "re-run on AnnData in test_anndata_fit_returns_self",
    "check_readonly_memmap_input": "a memmap is not an AnnData (backed AnnData is the "
    "out-of-memory path)",
    "check_n_features_in_after_fitting": "numpy X carries no perturbation labels; "
    "n_features_in_ is tested on AnnData in test_anndata_n_features_in",
    "check_n_features_in": "numpy X carries no perturbation labels; "
    "re-run on AnnData in test_anndata_n_features_in",
    "check_positive_only_tag_during_fit": "negative values are rejected (DataContractError, "
    "a ValueError) only once X is an AnnData; a bare array is refused first",
    "check_fit_non_negative": "negative values are rejected (DataContractError, a "
    "ValueError) only once X is an AnnData; a bare array is refused first",
    "check_estimators_dtypes": "dtype handling happens inside AnnData.X (float32/64, CSR); "
    "numpy X carries no perturbation labels",
    "check_complex_data": "complex values would be rejected inside AnnData.X; numpy X is "
    "refused first",
    "check_dtype_object": "numpy X carries no perturbation labels",
    "check_estimators_empty_data_messages": "an AnnData with zero cells or genes raises "
    "DataContractError (a ValueError); an empty numpy array is refused as not an AnnData",
    "check_pipeline_consistency": "numpy X carries no perturbation labels",
    "check_estimators_nan_inf": "NaN/inf in AnnData.X raise DataContractError (tested in "
    "test_validation.py); numpy X is refused first",
    "check_estimator_sparse_tag": "sparse input is supported as a CSR AnnData.X; a bare "
    "scipy matrix carries no perturbation labels",
    "check_estimator_sparse_array": "sparse input is supported as a CSR AnnData.X; a bare "
    "scipy array carries no perturbation labels",
    "check_estimator_sparse_matrix": "sparse input is supported as a CSR AnnData.X; a bare "
    "scipy matrix carries no perturbation labels",
    "check_estimators_pickle": "numpy X carries no perturbation labels; pickling of fitted "
    "estimators is tested on AnnData in test_sklearn_compliance.py",
    "check_f_contiguous_array_estimator": "numpy X carries no perturbation labels",
    "check_methods_sample_order_invariance": "numpy X carries no perturbation labels; "
    "re-run on AnnData in test_anndata_cell_order_invariance",
    "check_methods_subset_invariance": "numpy X carries no perturbation labels; the "
    "baselines are re-run on AnnData in test_anndata_subset_invariance",
    "check_fit2d_1sample": "numpy X carries no perturbation labels; a fit needs control "
    "and perturbed cells",
    "check_fit2d_1feature": "numpy X carries no perturbation labels",
    "check_dict_unchanged": "numpy X carries no perturbation labels; "
    "re-run on AnnData in test_anndata_methods_leave_state_alone",
    "check_fit_idempotent": "numpy X carries no perturbation labels; "
    "re-run on AnnData in test_anndata_fit_idempotent",
    "check_fit_check_is_fitted": "numpy X carries no perturbation labels; tested on AnnData "
    "in test_sklearn_compliance.py",
    "check_fit1d": "numpy X carries no perturbation labels",
    "check_fit2d_predict1d": "numpy X carries no perturbation labels",
}
_TRANSFORMER_INPUT = {
    "check_transformer_data_not_an_array": "input must be an AnnData, not an array-like",
    "check_transformer_general": "numpy X carries no perturbation labels; transform returns "
    "an AnnData, not an array",
    "check_transformer_preserve_dtypes": "transform returns an AnnData subset (its X keeps "
    "the input dtype), not an array",
}
_REGRESSOR_INPUT = {
    "check_regressors_train": "the targets are the perturbed cells of the AnnData; there is "
    "no y to mismatch or learn",
    "check_regressor_data_not_an_array": "input must be an AnnData, not an array-like",
    "check_regressor_multioutput": "predict returns an AnnData of cells x genes, not an array",
    "check_regressors_no_decision_function": "numpy X carries no perturbation labels",
    "check_supervised_y_2d": "y is ignored: the targets are the perturbed cells of the AnnData",
    "check_supervised_y_no_nan": "y is ignored: the targets are the perturbed cells of the AnnData",
    "check_regressors_int": "numpy X carries no perturbation labels",
}
# skorch.NeuralNet behaviour that PerturbationRegressor inherits.
_SKORCH = {
    "check_no_attributes_set_in_init": "skorch.NeuralNet.__init__ sets history_, "
    "initialized_ and virtual_params_ (its __setattr__ relies on them); sktx's own "
    "parameters are stored verbatim (test_sklearn_compliance.py)",
    "check_do_not_raise_errors_in_init_or_set_params": "skorch.NeuralNet.set_params builds "
    "the callbacks at once, so set_params(callbacks=-1) raises; __init__ never raises",
    "check_estimators_partial_fit_n_features": "partial_fit takes an AnnData (a new gene "
    "panel is allowed by design); numpy X carries no perturbation labels",
}

EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "GeneSelector": {**_ANNDATA_INPUT, **_TRANSFORMER_INPUT},
    **{name: {**_ANNDATA_INPUT, **_REGRESSOR_INPUT} for name in BASELINE_FACTORIES},
    "PerturbationRegressor": {**_ANNDATA_INPUT, **_REGRESSOR_INPUT, **_SKORCH},
    # a 1-d X has no second axis to count genes on: ProgressiveFit raises ValueError
    # itself, so check_fit1d passes
    "ProgressiveFit": {
        k: v for k, v in {**_ANNDATA_INPUT, **_REGRESSOR_INPUT}.items() if k != "check_fit1d"
    },
}

# How each expected failure must fail (searched in the messages of the exception chain).
_ANNDATA_ERROR = r"(expected|needs) an AnnData"
FAILURE_PATTERNS = {
    "check_no_attributes_set_in_init": re.escape(
        "Found attributes ['history_', 'initialized_', 'virtual_params_']"
    ),
    "check_do_not_raise_errors_in_init_or_set_params": r"_initialize_callbacks",
}


def expected_failed_checks(estimator) -> dict[str, str]:
    """``{check name: reason}`` for ``estimator`` (the callable sklearn's API expects)."""
    return EXPECTED_FAILED_CHECKS[type(estimator).__name__]


def _check_name(check) -> str:
    return check.func.__name__ if hasattr(check, "func") else check.__name__


def _failure_text(err: BaseException) -> str:
    """Type and message of every exception in the chain, plus the innermost traceback."""
    import traceback

    parts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        parts.extend(f.name for f in traceback.extract_tb(err.__traceback__))
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


# numpy data with 1-3 "genes": ProgressiveFit warns that its phases are clipped.
# check_set_params warns when set_params raises: skorch builds the callbacks in
# set_params, so the fuzz value callbacks=inf raises (see docs/errors.md).
@pytest.mark.filterwarnings("ignore:`phases`:UserWarning")
@pytest.mark.filterwarnings("ignore:TypeError occurred during set_params:UserWarning")
@pytest.mark.filterwarnings("ignore:Estimator's parameters changed after set_params:UserWarning")
@parametrize_with_checks([make() for make in FACTORIES.values()])
def test_sklearn_check(estimator, check):
    name = _check_name(check)
    reason = expected_failed_checks(estimator).get(name)
    if reason is None:
        check(estimator)
        return
    with pytest.raises((AssertionError, TypeError, ValueError, AttributeError)) as info:
        check(estimator)
    pattern = FAILURE_PATTERNS.get(name, _ANNDATA_ERROR)
    text = _failure_text(info.value)
    assert re.search(pattern, text), (
        f"{name} was expected to fail because {reason!r} but failed otherwise:\n{text}"
    )


@pytest.mark.parametrize("name", FACTORIES)
def test_expected_failures_name_real_checks(name):
    """No stale entries: every listed check is one sklearn runs on this estimator."""
    from sklearn.utils.estimator_checks import estimator_checks_generator

    est = FACTORIES[name]()
    yielded = {_check_name(check) for _, check in estimator_checks_generator(est)}
    stale = sorted(set(EXPECTED_FAILED_CHECKS[name]) - yielded)
    assert not stale, f"{name}: not among sklearn's checks any more: {stale}"


# ---------------------------------------------------------------- the same checks on AnnData
@pytest.fixture(scope="module")
def fitted(sim):
    return {name: make().fit(sim) for name, make in FACTORIES.items()}


def _output(est, adata):
    out = est.transform(adata) if isinstance(est, GeneSelector) else est.predict(adata)
    X = out.X.toarray() if hasattr(out.X, "toarray") else np.asarray(out.X)
    return X, out


def _query(name, sim):
    return sim if name == "GeneSelector" else make_query(sim)


@pytest.mark.parametrize("name", FACTORIES)
def test_anndata_fit_returns_self(name, fitted, sim):
    est = fitted[name]
    assert isinstance(est, type(FACTORIES[name]()))
    assert est.fit(sim) is est


@pytest.mark.parametrize("name", FACTORIES)
def test_anndata_fit_keeps_params(name, sim):
    """check_estimators_overwrite_params + check_dont_overwrite_parameters on AnnData."""
    est = FACTORIES[name]()
    params = est.get_params(deep=False)
    hashes = {k: joblib.hash(v) for k, v in params.items()}
    before = dict(vars(est))
    est.fit(sim)
    changed = [k for k, v in est.get_params(deep=False).items() if joblib.hash(v) != hashes[k]]
    assert not changed, f"{name}.fit changed parameters {changed}"
    added = [k for k in vars(est) if k not in before]
    public = [k for k in added if not k.startswith("_") and not k.endswith("_")]
    assert not public, f"{name}.fit added public attributes {public} (fitted ones end in '_')"


@pytest.mark.parametrize("name", FACTORIES)
def test_anndata_fit_idempotent(name, fitted, sim):
    """check_fit_idempotent: fitting twice with the same random_state gives the same model."""
    again = clone(fitted[name]).fit(sim).fit(sim)
    q = _query(name, sim)
    a, out_a = _output(fitted[name], q)
    b, out_b = _output(again, q)
    assert list(out_a.var_names) == list(out_b.var_names)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FACTORIES)
def test_anndata_methods_leave_state_alone(name, fitted, sim):
    """check_dict_unchanged: predict/transform/score do not change the fitted estimator."""
    est = fitted[name]
    before = dict(vars(est))
    q = _query(name, sim)
    _output(est, q)
    if name != "GeneSelector":
        est.score(sim)
    after = vars(est)
    assert after.keys() == before.keys()
    changed = [k for k in before if after[k] is not before[k]]
    assert not changed, f"{name} methods replaced attributes {changed}"


@pytest.mark.parametrize("name", FACTORIES)
def test_anndata_n_features_in(name, fitted, sim):
    est = fitted[name]
    assert est.n_features_in_ == sim.n_vars
    assert list(est.feature_names_in_) == list(sim.var_names)


@pytest.mark.parametrize("name", PREDICTORS)
def test_anndata_cell_order_invariance(name, fitted, sim):
    """check_methods_sample_order_invariance: shuffling query cells shuffles predictions."""
    est = fitted[name]
    q = make_query(sim)
    perm = np.random.default_rng(0).permutation(q.n_obs)
    a, out = _output(est, q)
    b, out_perm = _output(est, q[perm].copy())
    assert list(out_perm.obs_names) == list(out.obs_names[perm])
    np.testing.assert_allclose(b, a[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(BASELINE_FACTORIES))
def test_anndata_subset_invariance(name, fitted, sim):
    """check_methods_subset_invariance, for the baselines (one profile per cell).

    PerturbationRegressor predicts a set: the mean basal expression of the query
    cells of one perturbation is a network input, so a subset of them is predicted
    from a different set and this invariance does not hold by design.
    """
    est = fitted[name]
    q = make_query(sim)
    rows = np.arange(0, q.n_obs, 3)
    a, _ = _output(est, q)
    b, _ = _output(est, q[rows].copy())
    np.testing.assert_allclose(b, a[rows], rtol=1e-6, atol=1e-6)
