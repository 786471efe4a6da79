"""predict_perturbations in chunks: the same result whatever the chunking, bounded calls."""

from __future__ import annotations

import numpy as np
import pytest

import sktx
from sktx import _perturbations


def _labels(adata):
    return sorted(set(adata.obs["target_gene"].astype(str)) - {"non-targeting"})


def _equal(a, b):
    assert a.shape == b.shape
    assert (a.obs_names == b.obs_names).all() and (a.var_names == b.var_names).all()
    assert a.obs.astype(str).equals(b.obs.astype(str))
    if hasattr(a.X, "toarray"):
        assert a.X.format == b.X.format == "csr"
        assert (a.X != b.X).nnz == 0
    else:
        np.testing.assert_array_equal(a.X, b.X)


@pytest.mark.parametrize(
    "kw",
    [
        {"n_cells": 7},
        {},  # mirrors the real perturbed cells
        {"n_cells": 4, "with_controls": True},
        {"n_cells": 5, "all_genes": True},
    ],
)
def test_chunked_equals_one_call_and_the_old_path(sim, kw):
    model = sktx.AdditiveBaseline().fit(sim)
    perts = None if "n_cells" not in kw else _labels(sim)
    one = sktx.predict_perturbations(model, sim, perts, chunk_size=10_000, **kw)
    for size in (1, 3):
        _equal(sktx.predict_perturbations(model, sim, perts, chunk_size=size, **kw), one)
    # the unchunked path it replaces: make_query, then predict
    if not kw.get("with_controls") and not kw.get("all_genes"):
        query = sktx.make_query(sim, perturbations=perts, n_cells=kw.get("n_cells"))
        np.testing.assert_array_equal(one.X, model.predict(query).X)


def test_seeded_counts_do_not_depend_on_chunks(sim):
    model = sktx.MeanBaseline().fit(sim)
    perts = _labels(sim)
    kw = {"n_cells": 6, "output": "counts", "with_controls": True, "all_genes": True}
    one = sktx.predict_perturbations(model, sim, perts, chunk_size=10_000, random_state=3, **kw)
    assert one.X.format == "csr" and (one.X.data == np.round(one.X.data)).all()
    for size in (1, 4):
        again = sktx.predict_perturbations(model, sim, perts, chunk_size=size, random_state=3, **kw)
        _equal(again, one)
    other = sktx.predict_perturbations(model, sim, perts, random_state=4, **kw)
    assert (other.X != one.X).nnz > 0
    # controls keep their own counts
    ctrl = one[one.obs["target_gene"] == "non-targeting"]
    rows = sim.obs_names.get_indexer(ctrl.obs["control_cell"])
    np.testing.assert_array_equal(ctrl.X.toarray(), np.asarray(sim.X[rows].todense()))


def test_default_chunks_bound_each_model_call(sim, monkeypatch):
    model = sktx.MeanBaseline().fit(sim)
    seen = []
    predict = model.predict

    def spy(query, **kwargs):
        seen.append(query.n_obs)
        return predict(query, **kwargs)

    model.predict = spy
    one = sktx.predict_perturbations(model, sim, _labels(sim), n_cells=10)
    assert seen == [one.n_obs]
    seen.clear()
    # a budget of 25 cells x genes: whole perturbations of 10 cells, two per call
    monkeypatch.setattr(_perturbations, "_CHUNK_VALUES", 25 * sim.n_vars)
    chunked = sktx.predict_perturbations(model, sim, _labels(sim), n_cells=10)
    assert max(seen) == 20 and sum(seen) == one.n_obs
    _equal(chunked, one)


@pytest.mark.slow
def test_network_batches_align_with_chunks():
    from sktx.datasets import make_perturbseq

    adata = make_perturbseq(n_cells=200, n_genes=30, n_perturbations=6, random_state=0)
    reg = sktx.PerturbationRegressor(
        max_epochs=1, set_size=8, batch_size=2, crossfit=0, random_state=0
    )
    reg.fit(adata)
    perts = _labels(adata)
    one = sktx.predict_perturbations(reg, adata, perts, n_cells=3, chunk_size=100)
    # chunk_size=1 is rounded up to batch_size groups: the network sees the same batches
    _equal(sktx.predict_perturbations(reg, adata, perts, n_cells=3, chunk_size=1), one)
    a = sktx.predict_perturbations(reg, adata, perts, n_cells=3, output="counts", chunk_size=1)
    b = sktx.predict_perturbations(reg, adata, perts, n_cells=3, output="counts", chunk_size=100)
    _equal(a, b)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_chunk_size(sim, bad):
    model = sktx.MeanBaseline().fit(sim)
    with pytest.raises(ValueError, match="chunk_size"):
        sktx.predict_perturbations(model, sim, _labels(sim)[:2], n_cells=2, chunk_size=bad)


def test_unseen_context_starts_from_all_its_controls_whatever_the_chunks():
    # a cell line never fitted starts from its control mean; taken from each chunk's
    # query cells it moved with the chunking (0.05 in log1p here before)
    import warnings

    from test_zero_shot import KEYS, _lines, _regressor, _split

    from sktx.context import UnseenContextWarning

    train, test = _split(_lines())
    ctrl_mean = test[test.obs["target_gene"] == "ctrl"].X.mean(0)
    models = [_regressor(batch_size=1).fit(train), sktx.AdditiveBaseline(**KEYS).fit(train)]
    for model in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnseenContextWarning)
            one = sktx.predict_perturbations(model, test, ["P1", "P2"], n_cells=5, chunk_size=9)
            for size in (1, 2):
                again = sktx.predict_perturbations(
                    model, test, ["P1", "P2"], n_cells=5, chunk_size=size
                )
                _equal(again, one)
    # the baseline's profile is that mean plus the effect averaged over the fitted lines
    p1 = one[one.obs["target_gene"] == "P1"].X
    np.testing.assert_allclose(
        p1, np.broadcast_to(ctrl_mean + models[1]._unseen_delta("P1"), p1.shape), rtol=1e-5
    )
