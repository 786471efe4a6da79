"""ProgressiveFit: phase plans, warm start across gene sets, sklearn integration."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from sktx.datasets import make_perturbseq
from sktx.model_selection import PerturbationSplit
from sktx.progressive import ProgressiveFit
from sktx.regressor import PerturbationRegressor
from sktx.report import phase_history_frame
from sktx.selection import GeneSelector

# one network per fit (crossfit=0): these tests count epochs and histories of the phases;
# test_default_crossfit_networks_carry_over_phases covers the cross-fitted default
SMALL = dict(set_size=16, d_model=16, n_layers=1, n_jobs=1, crossfit=0)


@pytest.fixture(scope="module")
def data():
    return make_perturbseq(n_cells=800, n_genes=150, n_perturbations=10, random_state=0)


def _pipe(**model):
    params = {**SMALL, **model}
    return Pipeline([("select", GeneSelector()), ("model", PerturbationRegressor(**params))])


class _Stub(BaseEstimator):
    """Test-local stand-in: takes an AnnData, supports warm_start/max_epochs and a history."""

    def __init__(self, n_genes=10, max_epochs=2, warm_start=False, random_state=None):
        self.n_genes = n_genes
        self.max_epochs = max_epochs
        self.warm_start = warm_start
        self.random_state = random_state

    def fit(self, adata, y=None):
        if not (self.warm_start and hasattr(self, "history")):
            self.history, self.w_ = [], 0.0
            self.fits_ = []
        self.fits_.append(self.n_genes)
        for _ in range(self.max_epochs):
            self.w_ += 1.0
            self.history.append({"train_loss": 1.0 / self.w_, "valid_loss": 2.0 / self.w_})
        return self


def test_warm_start_carries_weights_into_next_phase(data):
    # lr and phase-1 length chosen so phase 1 clearly learns something; early stopping
    # off so phase 1 hands over its last weights, not an earlier best epoch
    pipe = _pipe(lr=1e-2, early_stopping=False)
    prog = ProgressiveFit(pipe, phases=(50, 150), epochs_per_phase=(6, 2), random_state=0)
    prog.fit(data)
    seed = prog.phase_history_[0]["seed"]
    # the same phase-2 model from scratch: same genes, seed (thus same validation
    # perturbations and the same sets), epochs
    scratch = clone(pipe).set_params(
        select__n_genes=150,
        model__max_epochs=2,
        model__random_state=seed,
        select__random_state=seed,
    )
    scratch.fit(data)
    warm_valid = prog.phase_history_[1]["valid_loss"][0]
    cold_valid = scratch[-1].history[0, "valid_loss"]
    assert warm_valid < cold_valid * 0.98, (warm_valid, cold_valid)
    assert prog.estimator_[-1].genes_ == scratch[-1].genes_
    # the user's estimator was cloned, never fitted
    assert not hasattr(pipe[-1], "module_")
    assert not hasattr(pipe[0], "selected_genes_")


def test_phase_history_and_delegation(data):
    prog = ProgressiveFit(_pipe(), phases=(30, 80, 150), epochs_per_phase=[1, 2, 1], random_state=1)
    prog.fit(data)
    hist = prog.phase_history_
    assert [h["n_genes"] for h in hist] == [30, 80, 150] == prog.phases_
    assert [h["epochs"] for h in hist] == [1, 2, 1]
    for h in hist:
        assert len(h["train_loss"]) == len(h["valid_loss"]) == h["epochs"]
        assert np.isfinite(h["valid_metric"]) and h["valid_metric"] == h["valid_loss"][-1]
        assert h["wall_time_s"] > 0 and h["peak_rss_gb"] > 0
    assert prog.n_features_in_ == data.n_vars
    # nested: every phase's genes contain the previous phase's
    ranking = list(prog.estimator_[0].ranking_)
    assert prog.estimator_[-1].genes_ == ranking[:150]
    # the model kept one history over all phases (same object, warm-started)
    assert len(prog.estimator_[-1].history) == 4
    frame = phase_history_frame(hist)
    assert list(frame["phase"]) == [1, 2, 2, 3]
    ctrl = data[data.obs["target_gene"] == "non-targeting"].copy()
    ctrl.obs["target_gene"] = data.obs["target_gene"].cat.categories[0]
    pred = prog.predict(ctrl)
    assert pred.shape == (ctrl.n_obs, 150)
    score = prog.score(data)
    assert np.isfinite(score) and score <= 0
    assert prog.estimator_.get_params()["model__warm_start"] is False


def test_clipping_warns_at_caller_and_merges_phases(data):
    stub = _Stub()
    prog = ProgressiveFit(
        stub, phases=(50, 200, 400), param="n_genes", epochs_per_phase=(1, 2, 3),
        epochs_param="max_epochs", warm_start_param="warm_start",
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"clipped to \(50, 150\)") as rec:
        prog.fit(data)
    assert rec[0].filename == __file__
    assert prog.phases_ == [50, 150]
    assert [h["epochs"] for h in prog.phase_history_] == [1, 5]  # merged epochs add up
    assert prog.estimator_.fits_ == [50, 150]


@pytest.mark.parametrize(
    ("phases", "match"),
    [
        ((100, 100), "strictly increasing"),
        ((200, 100), "strictly increasing"),
        ((0, 10), "positive integer"),
        ((10, 20.5), "positive integer"),
        ((True, 20), "positive integer"),
        ((), "empty"),
        (100, "sequence"),
        ("100", "sequence"),
    ],
)
def test_invalid_phases(data, phases, match):
    with pytest.raises(ValueError, match=match):
        ProgressiveFit(_Stub(), phases=phases, param="n_genes").fit(data)


def test_invalid_epochs_and_param_names(data):
    kw = dict(param="n_genes", epochs_param="max_epochs", warm_start_param="warm_start")
    with pytest.raises(ValueError, match="2 entries but `phases` has 3"):
        ProgressiveFit(_Stub(), phases=(1, 2, 3), epochs_per_phase=(1, 2), **kw).fit(data)
    with pytest.raises(ValueError, match="positive integers"):
        ProgressiveFit(_Stub(), phases=(1, 2), epochs_per_phase=0, **kw).fit(data)
    with pytest.raises(ValueError, match="`param='select__n_gens'`"):
        ProgressiveFit(_pipe(), phases=(5, 10), param="select__n_gens").fit(data)
    with pytest.raises(ValueError, match="epochs_param"):
        ProgressiveFit(
            _Stub(),
            phases=(1, 2),
            param="n_genes",
            warm_start_param="warm_start",
            epochs_per_phase=1,
        ).fit(data)


def test_stub_semantics_seed_and_warm_start_resume(data):
    kw = dict(param="n_genes", epochs_param="max_epochs", warm_start_param="warm_start")
    prog = ProgressiveFit(_Stub(), phases=(5, 10), epochs_per_phase=2, random_state=3, **kw)
    prog.fit(data)
    assert prog.estimator_.w_ == 4.0  # weights carried across the two phases
    assert prog.phase_history_[1]["train_loss"] == [1 / 3, 1 / 4]
    seed = prog.phase_history_[0]["seed"]
    assert prog.estimator_.random_state == seed == prog.phase_history_[1]["seed"]
    # refit without warm_start starts again from a clone
    prog.fit(data)
    assert prog.estimator_.w_ == 4.0 and len(prog.phase_history_) == 2
    # sklearn's warm_start: continue from the fitted estimator
    prog.set_params(warm_start=True, phases=(10,))
    prog.fit(data)
    assert prog.estimator_.w_ == 6.0
    assert [h["phase"] for h in prog.phase_history_] == [1, 2, 3]
    # no predict/score on the stub: not delegated
    assert not hasattr(prog, "predict") and not hasattr(prog, "score")
    assert hasattr(ProgressiveFit(_pipe()), "predict")


def test_reset_optimizer(data):
    calls = []

    class Counting(PerturbationRegressor):
        def initialize_optimizer(self, triggered_directly=None):
            calls.append(1)
            return super().initialize_optimizer(triggered_directly)

    pipe = Pipeline([("select", GeneSelector()), ("model", Counting(max_epochs=1, **SMALL))])
    for reset, expected in ((False, 1), (True, 3)):
        calls.clear()
        ProgressiveFit(pipe, phases=(20, 40, 60), reset_optimizer=reset, random_state=0).fit(data)
        assert len(calls) == expected


def test_clone_pickle_and_grid_search(data):
    prog = ProgressiveFit(_pipe(), phases=(20, 60), epochs_per_phase=1, random_state=0)
    prog.fit(data)
    cloned = clone(prog)
    assert not hasattr(cloned, "estimator_")
    assert cloned.get_params()["phases"] == (20, 60)
    restored = pickle.loads(pickle.dumps(prog))
    assert restored.score(data) == pytest.approx(prog.score(data))

    search = GridSearchCV(
        ProgressiveFit(
            _pipe(validation_fraction=0.0, on_unknown_target="warn"),
            epochs_per_phase=1,
            random_state=0,
        ),
        {"phases": [(20, 40), (40,)]},
        cv=PerturbationSplit(2),
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(data)
    assert search.best_params_["phases"] in [(20, 40), (40,)]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_estimator_.phases_[-1] == 40


class _PatientStub(_Stub):
    """A stub with a patience parameter: records what each phase was fitted with."""

    def __init__(self, n_genes=10, max_epochs=2, n_iter_no_change=5, warm_start=False,
                 random_state=None):  # fmt: skip
        super().__init__(n_genes, max_epochs, warm_start, random_state)
        self.n_iter_no_change = n_iter_no_change

    def fit(self, adata, y=None):
        self.calls_ = [*getattr(self, "calls_", []), (self.max_epochs, self.n_iter_no_change)]
        return super().fit(adata, y)


def test_auto_phases_end_on_the_validation_curve(data):
    kw = dict(param="n_genes", epochs_param="max_epochs", warm_start_param="warm_start",
              patience_param="n_iter_no_change")  # fmt: skip
    stub = _PatientStub(max_epochs=7, n_iter_no_change=5)
    prog = ProgressiveFit(stub, phases=(5, 10, 20), epochs_per_phase="auto", phase_patience=2, **kw)
    prog.fit(data)
    # early phases: the estimator's own epochs with the phase patience; the last: its own
    assert prog.estimator_.calls_ == [(7, 2), (7, 2), (7, 5)]
    assert prog.estimator_.get_params()["n_iter_no_change"] == 5  # restored
    # "auto" entries mixed with counts
    stub = _PatientStub(max_epochs=7, n_iter_no_change=5)
    ProgressiveFit(stub, phases=(5, 10), epochs_per_phase=("auto", 3), **kw).fit(data)
    assert ProgressiveFit(stub).get_params()["phase_patience"] == 2
    with pytest.raises(ValueError, match="phase_patience"):
        ProgressiveFit(stub, phases=(5, 10), epochs_per_phase="auto", phase_patience=0, **kw).fit(
            data
        )
    with pytest.raises(ValueError, match="patience_param"):
        ProgressiveFit(_Stub(), phases=(5, 10), epochs_per_phase="auto",
                       **{**kw, "patience_param": "nope"}).fit(data)  # fmt: skip


def test_auto_phase_stops_when_validation_stalls(data):
    # lr=0: the validation loss never improves after the first epoch, so an "auto"
    # phase with patience 1 lasts 2 epochs; the last phase keeps max_epochs=3 and
    # its own patience (5), so it runs all 3
    prog = ProgressiveFit(
        _pipe(lr=0.0, max_epochs=3), phases=(20, 60), epochs_per_phase="auto", phase_patience=1,
        random_state=0,
    )  # fmt: skip
    prog.fit(data)
    assert [h["epochs"] for h in prog.phase_history_] == [2, 3]
    assert prog.estimator_.get_params()["model__n_iter_no_change"] == 5
    # the model's own early-stopping setting is restored after the "auto" phase
    assert prog.estimator_.get_params()["model__early_stopping"] == "auto"


def test_auto_phases_switch_on_early_stopping_the_model_has_off(data):
    # early_stopping=False: an "auto" phase still ends on its validation curve
    prog = ProgressiveFit(
        _pipe(lr=0.0, max_epochs=3, early_stopping=False), phases=(20, 60),
        epochs_per_phase="auto", phase_patience=1, random_state=0,
    )  # fmt: skip
    prog.fit(data)
    assert [h["epochs"] for h in prog.phase_history_] == [2, 3]
    assert prog.estimator_.get_params()["model__early_stopping"] is False


def test_default_crossfit_networks_carry_over_phases(data):
    pipe = _pipe(crossfit=2, max_epochs=1)
    prog = ProgressiveFit(pipe, phases=(40, 80), random_state=0).fit(data)
    model = prog.estimator_[-1]
    assert len(model.fitted_state_.members) == 2
    assert [h["epochs"] for h in prog.phase_history_] == [2, 2]  # 2 networks x 1 epoch
    assert np.isfinite(prog.score(data))


def test_none_entry_keeps_the_estimators_own_epochs_in_that_phase(data):
    # short warm-up phases, then a last phase as the estimator would train alone
    kw = dict(param="n_genes", epochs_param="max_epochs", warm_start_param="warm_start",
              patience_param="n_iter_no_change")  # fmt: skip
    stub = _PatientStub(max_epochs=7, n_iter_no_change=5)
    prog = ProgressiveFit(stub, phases=(5, 10, 20), epochs_per_phase=(2, 1, None), **kw)
    prog.fit(data)
    assert prog.estimator_.calls_ == [(2, 5), (1, 5), (7, 5)]
    assert [h["epochs"] for h in prog.phase_history_] == [2, 1, 7]
    with pytest.raises(ValueError, match="'auto' or None"):
        ProgressiveFit(stub, phases=(5, 10), epochs_per_phase=(2, "two"), **kw).fit(data)


def test_token_curriculum_keeps_the_whole_panel(data):
    # param="model__max_tokens": every phase fits (and validates over) all 150 genes;
    # only the genes the network runs on grow, nested, up to the whole panel
    pipe = _pipe(max_epochs=1).set_params(select__n_genes=150)
    prog = ProgressiveFit(pipe, phases=(20, 60, 150), param="model__max_tokens", random_state=0)
    prog.fit(data)
    model = prog.estimator_[-1]
    assert [h["n_genes"] for h in prog.phase_history_] == [20, 60, 150]
    assert len(model.genes_) == 150
    assert model.fitted_state_.tokens is None  # the last phase runs every gene
    assert all(np.isfinite(h["valid_metric"]) for h in prog.phase_history_)
    # the validation losses of all phases are over the same genes and perturbations
    assert prog.phase_history_[2]["valid_metric"] <= prog.phase_history_[0]["valid_metric"] * 1.05


def _phase_states(monkeypatch):
    """Record the fitted state each phase builds (and count the PCAs run)."""
    import sktx.graph
    import sktx.regressor._estimator as est
    import sktx.regressor._state as st

    states, pcas = [], []
    build, pca = est.build_state, sktx.graph.pca_gene_loadings

    def recording_build(*args, **kwargs):
        out = build(*args, **kwargs)
        states.append(out[0])
        return out

    def counting_pca(X, *args, **kwargs):
        pcas.append(X.shape[1])
        return pca(X, *args, **kwargs)

    monkeypatch.setattr(est, "build_state", recording_build)
    monkeypatch.setattr(st, "pca_gene_loadings", counting_pca)
    monkeypatch.setattr(sktx.graph, "pca_gene_loadings", counting_pca)
    return states, pcas


@pytest.mark.parametrize("shared", [True, False])
def test_shared_features_fit_the_pca_once_on_the_last_panel(data, monkeypatch, shared):
    states, pcas = _phase_states(monkeypatch)
    prog = ProgressiveFit(
        _pipe(), phases=(40, 150), epochs_per_phase=1, shared_features=shared, random_state=0
    )
    prog.fit(data)
    small, full = states
    rows = [full.gene_row[g] for g in small.genes]
    if shared:
        # one PCA, over the last panel; a gene has the same features in both phases
        assert pcas == [150]
        np.testing.assert_array_equal(small.pca, full.pca[rows])
        np.testing.assert_array_equal(small.gene_feat, full.gene_feat[rows])
    else:
        assert pcas == [40, 150]
        assert not np.allclose(small.pca, full.pca[rows])
    # the context ends with the fit: a plain fit runs its own PCA again
    from sktx.regressor._state import _SHARED

    assert _SHARED.get() is None
    clone(prog.estimator_).set_params(select__n_genes=40, model__max_epochs=0).fit(data)
    assert pcas[-1] == 40


@pytest.mark.parametrize("shared", [True, False])
def test_early_phases_train_only_genes_the_last_phase_runs_on(data, monkeypatch, shared):
    # token cap 40 of 150 genes: with shared features an early phase's tokens are the
    # last phase's tokens within its panel; each phase choosing its own (the panel's
    # most-moved genes) trains genes the last phase drops. Cross-fitted (the default):
    # no validation split, so the last phase's choice counts every perturbation, as
    # the shared one does
    states, _ = _phase_states(monkeypatch)
    prog = ProgressiveFit(
        _pipe(max_tokens=40, crossfit=3),
        phases=(60, 150),
        epochs_per_phase=1,
        shared_features=shared,
        random_state=0,
    )
    prog.fit(data)
    small, full = states

    def token_genes(state):
        return {state.genes[i] for i in state.tokens}

    last = token_genes(full)
    assert len(last) == 40 and full.tokens is not None
    if shared:
        assert token_genes(small) == last & set(small.genes)
    else:
        assert not token_genes(small) <= last


def test_shared_features_leave_the_last_phase_as_a_plain_fit(data):
    # one phase with shared features is a plain fit: ARPACK's loadings do not depend
    # on the seed here, and the seed the model would have used is still drawn
    pipe = Pipeline(
        [
            ("select", GeneSelector(n_genes=150)),
            ("model", PerturbationRegressor(**SMALL, max_epochs=1)),
        ]
    )
    prog = ProgressiveFit(pipe, param="model__max_tokens", phases=(150,), random_state=0)
    prog.fit(data)
    seed = prog.phase_history_[0]["seed"]
    plain = clone(pipe).set_params(select__random_state=seed, model__random_state=seed)
    plain.fit(data)
    a, b = prog.estimator_[-1].fitted_state_, plain[-1].fitted_state_
    np.testing.assert_array_equal(a.pca, b.pca)
    np.testing.assert_array_equal(a.neighbors, b.neighbors)
    assert prog.estimator_[-1].history[-1, "valid_loss"] == plain[-1].history[-1, "valid_loss"]


def test_shared_loadings_skip_other_cells_and_unknown_genes():
    import scipy.sparse as sp

    from sktx.regressor._state import _pca, shared_loadings

    X = sp.random(30, 4, density=0.5, random_state=0, format="csr", dtype=np.float32)
    ref = np.arange(64, dtype=np.float32).reshape(4, 16)
    ctrl = np.zeros(30, dtype=bool)  # too few controls: the PCA runs on all cells
    with shared_loadings(["A", "B", "C", "D"], ref, 30):
        got, scale = _pca(X[:, :2], ["C", "A"], np.random.RandomState(0), ctrl)
        np.testing.assert_array_equal(got, ref[[2, 0]])
        assert scale == pytest.approx(float(np.sqrt(np.mean(ref**2))))
        other, _ = _pca(
            X[:20], ["A", "B", "C", "D"], np.random.RandomState(0), ctrl[:20]
        )  # other cells
        unknown, _ = _pca(X[:, :2], ["A", "Z"], np.random.RandomState(0), ctrl)
    assert not np.array_equal(other, ref) and not np.array_equal(unknown, ref[[0, 1]])
    # the seed is drawn either way, so the rest of a fit samples alike
    a, b = np.random.RandomState(0), np.random.RandomState(0)
    with shared_loadings(["A"], ref[:1], 30):
        _pca(X[:, :1], ["A"], a, ctrl)
    _pca(X[:, :1], ["A"], b, ctrl)
    assert a.randint(100) == b.randint(100)
