"""scikit-learn conventions for every public estimator: clone, params, repr, pickle,
tags and NotFittedError before fit, on AnnData input.

sklearn's own common checks (``parametrize_with_checks``) run in
``tests/test_estimator_checks.py``, with the array-based ones that cannot apply to
AnnData input listed there as expected failures.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from sktx.baselines import BASELINES
from sktx.model_selection import make_query
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

SMALL = dict(d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4, n_jobs=1)


def _regressor(**kw):
    return PerturbationRegressor(**{**SMALL, "max_epochs": 1, "random_state": 0, **kw})


def _progressive():
    pipe = Pipeline([("select", GeneSelector()), ("model", _regressor())])
    return ProgressiveFit(pipe, phases=(40, 80), epochs_per_phase=1, random_state=0)


SKORCH_INIT_ATTRS = {"history_", "initialized_", "virtual_params_"}


def _baseline_factories() -> dict:
    """One factory per baseline class of the registry, keyed by class name (the repr
    and tag tests below are per class): the first registry entry of each class."""
    out = {}
    for make in BASELINES.values():
        out.setdefault(type(make()).__name__, make)
    return out


BASELINE_FACTORIES = _baseline_factories()

FACTORIES = {
    "GeneSelector": lambda: GeneSelector(n_genes=40, random_state=0),
    **BASELINE_FACTORIES,
    "PerturbationRegressor": _regressor,
    "ProgressiveFit": _progressive,
}
PREDICTORS = [k for k in FACTORIES if k != "GeneSelector"]


@pytest.fixture(scope="module")
def fitted(sim):
    return {name: make().fit(sim) for name, make in FACTORIES.items()}


def _params_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if hasattr(a[key], "get_params"):
            assert type(a[key]) is type(b[key]), key
        else:
            assert a[key] == b[key] or (a[key] is None and b[key] is None), key


@pytest.mark.parametrize("name", FACTORIES)
def test_clone_and_params_round_trip(name):
    est = FACTORIES[name]()
    params = est.get_params(deep=False)
    _params_equal(clone(est).get_params(deep=False), params)
    # set_params(**get_params()) is the identity
    est2 = FACTORIES[name]().set_params(**params)
    _params_equal(est2.get_params(deep=False), params)
    # deep params can be set through the nested names as GridSearchCV does
    deep = est.get_params(deep=True)
    assert est.set_params(**deep) is est


@pytest.mark.parametrize("name", FACTORIES)
def test_init_stores_params_only(name):
    est = FACTORIES[name]()
    fitted_attrs = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    if name == "PerturbationRegressor":
        # skorch.NeuralNet.__init__ itself sets these three; check_is_fitted looks at module_
        fitted_attrs = [k for k in fitted_attrs if k not in SKORCH_INIT_ATTRS]
    assert fitted_attrs == [], f"{name}.__init__ set fitted attributes {fitted_attrs}"


@pytest.mark.parametrize("name", FACTORIES)
def test_repr(name):
    text = repr(FACTORIES[name]())
    # scikit-learn's form for every estimator, the regressor included (not skorch's
    # "<class ...>[uninitialized](module=...)" dump, issue 19)
    assert text.startswith(name + "(") and "module" not in text


@pytest.mark.parametrize("name", FACTORIES)
def test_not_fitted_error_before_fit(name, sim):
    est = FACTORIES[name]()
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    method = est.transform if name == "GeneSelector" else est.predict
    arg = sim if name == "GeneSelector" else make_query(sim)
    with pytest.raises(NotFittedError, match="not fitted"):
        method(arg)


@pytest.mark.parametrize("name", FACTORIES)
def test_fitted_is_fitted_and_clone_is_not(name, fitted):
    est = fitted[name]
    check_is_fitted(est)
    with pytest.raises(NotFittedError):
        check_is_fitted(clone(est))


@pytest.mark.parametrize("name", FACTORIES)
def test_pickle_unfitted_and_fitted(name, fitted, sim):
    unfitted = pickle.loads(pickle.dumps(FACTORIES[name]()))
    _params_equal(unfitted.get_params(deep=False), FACTORIES[name]().get_params(deep=False))
    est = fitted[name]
    again = pickle.loads(pickle.dumps(est))
    if name == "GeneSelector":
        assert list(again.selected_genes_) == list(est.selected_genes_)
        assert list(again.transform(sim).var_names) == list(est.transform(sim).var_names)
    else:
        q = make_query(sim)
        np.testing.assert_array_equal(_dense(again.predict(q).X), _dense(est.predict(q).X))


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_sklearn_tags(name):
    tags = FACTORIES[name]().__sklearn_tags__()
    # AnnData in, no y: no array input and no target required
    assert tags.target_tags.required is False, name
    if name == "GeneSelector":
        assert tags.transformer_tags is not None
    else:
        assert tags.estimator_type == "regressor", name
        assert tags.regressor_tags is not None
