"""Same random_state -> identical fitted parameters and predictions on CPU, across two
runs, across processes and across save/load."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline

from sktx.baselines import LinearBaseline
from sktx.datasets import make_perturbseq
from sktx.model_selection import PerturbationSplit, make_query
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.selection import GeneSelector

SMALL = dict(d_model=16, n_layers=1, n_heads=2, n_neighbors=6, set_size=16, batch_size=4, n_jobs=1)


def _regressor(seed=0, **kw):
    return PerturbationRegressor(**{**SMALL, "max_epochs": 2, "random_state": seed, **kw})


def _state(net):
    # some entries are extra-state dicts (not tensors); compare those by value
    return {
        k: v.detach().clone() if torch.is_tensor(v) else v
        for k, v in net.module_.state_dict().items()
    }


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


@pytest.fixture(scope="module")
def query(sim):
    return make_query(sim)


@pytest.fixture(scope="module")
def run_a(sim):
    return _regressor().fit(sim)


def test_regressor_two_runs_agree(sim, query, run_a):
    b = _regressor().fit(sim)
    np.testing.assert_allclose(run_a.predict(query).X, b.predict(query).X, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        run_a.history_[:, "train_loss"], b.history_[:, "train_loss"], rtol=1e-6
    )
    assert run_a.train_perturbations_ == b.train_perturbations_


def test_regressor_seed_matters(sim, query, run_a):
    c = _regressor(seed=1).fit(sim)
    assert not np.array_equal(run_a.predict(query).X, c.predict(query).X)


def test_regressor_global_rng_does_not_leak(sim, query, run_a):
    """Fixed random_state must not depend on the global numpy/torch RNG state."""
    np.random.seed(123)  # noqa: NPY002 - the legacy global RNG is what we guard against
    torch.manual_seed(123)
    b = _regressor().fit(sim)
    # bitwise equality is not guaranteed (~1e-6 drift, see docs/errors.md)
    np.testing.assert_allclose(run_a.predict(query).X, b.predict(query).X, rtol=0, atol=1e-5)


def test_regressor_save_load_round_trip(sim, query, run_a, tmp_path):
    ref = run_a.predict(query).X
    again = pickle.loads(pickle.dumps(run_a))
    _assert_same_state(_state(run_a), _state(again))
    np.testing.assert_array_equal(again.predict(query).X, ref)
    f = tmp_path / "params.pt"
    run_a.save_params(f_params=f)
    fresh = _regressor().initialize()
    fresh.load_params(f_params=f)
    np.testing.assert_array_equal(fresh.predict(query).X, ref)


def test_regressor_same_in_a_fresh_process(sim, query, run_a, tmp_path):
    """A new interpreter with the same seed reproduces the predictions.

    Bit-for-bit equality held in isolation but not after other tests ran in the parent
    process (~1e-6 drift, likely alignment-dependent float32 reductions); see docs/errors.md.
    """
    out = tmp_path / "pred.npy"
    code = textwrap.dedent(
        f"""
        import numpy as np
        from sktx.datasets import make_perturbseq
        from sktx.model_selection import make_query
        from sktx.regressor import PerturbationRegressor
        sim = make_perturbseq(n_cells=600, n_genes=120, n_perturbations=8, random_state=0)
        m = PerturbationRegressor(**{SMALL!r}, max_epochs=2, random_state=0).fit(sim)
        np.save({str(out)!r}, m.predict(make_query(sim)).X)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    np.testing.assert_allclose(np.load(out), run_a.predict(query).X, rtol=0, atol=1e-5)


def test_gene_selector_reproducible(sim):
    a = GeneSelector(n_genes=40, random_state=0).fit(sim)
    b = GeneSelector(n_genes=40, random_state=0).fit(sim)
    assert list(a.selected_genes_) == list(b.selected_genes_)
    c = pickle.loads(pickle.dumps(a))
    assert list(c.transform(sim).var_names) == list(a.transform(sim).var_names)


def test_baseline_and_splitter_reproducible(sim, query):
    a = LinearBaseline().fit(sim).predict(query).X
    b = LinearBaseline().fit(sim).predict(query).X
    np.testing.assert_array_equal(_dense(a), _dense(b))
    s1 = [(tr.tolist(), te.tolist()) for tr, te in PerturbationSplit(random_state=0).split(sim)]
    s2 = [(tr.tolist(), te.tolist()) for tr, te in PerturbationSplit(random_state=0).split(sim)]
    assert s1 == s2


def test_progressive_reproducible():
    data = make_perturbseq(n_cells=400, n_genes=80, n_perturbations=6, random_state=2)

    def fit():
        pipe = Pipeline([("select", GeneSelector()), ("model", _regressor(max_epochs=1))])
        return ProgressiveFit(pipe, phases=(30, 60), epochs_per_phase=1, random_state=0).fit(data)

    q = make_query(data)
    np.testing.assert_array_equal(fit().predict(q).X, fit().predict(q).X)
