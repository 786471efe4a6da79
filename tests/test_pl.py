"""sktx.pl: the figures people ask for, from AnnData or from a run's delta tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sktx


@pytest.fixture(scope="module")
def fitted(sim):
    model = sktx.MeanBaseline().fit(sim)
    perts = sorted(set(sim.obs["target_gene"].astype(str)) - {"non-targeting"})[:4]
    return model, perts, sktx.predict_perturbations(model, sim, perts, n_cells=20)


def test_delta_table_matches_pseudobulk(sim):
    from sktx.pl._figures import delta_table

    table = delta_table(sim)
    data = sktx.prepare(sim)
    pert = table.index[0]
    expect = (
        np.asarray(data.X[data.labels == pert].mean(0)).ravel()
        - np.asarray(data.X[data.is_control].mean(0)).ravel()
    )
    np.testing.assert_allclose(table.loc[pert].to_numpy(), expect, rtol=1e-5, atol=1e-6)


def test_delta_scatter_panels_and_correlation(sim, fitted):
    _, perts, pred = fitted
    fig = sktx.pl.delta_scatter(sim, {"mean": pred}, n=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 3 and set(titles) <= set(perts)
    legend = fig.axes[0].get_legend().get_texts()[0].get_text()
    assert legend.startswith("mean (r=")
    with pytest.raises(ValueError, match="no perturbation"):
        sktx.pl.delta_scatter(sim, pred, perturbations=["nope"])


def test_de_heatmap_has_one_scale_per_panel():
    genes = [f"g{i}" for i in range(6)]
    real = pd.DataFrame([[3, -2, 1, 0, 0, 0], [0.1, -0.05, 0.02, 0, 0, 0]], ["A", "B"], genes)
    fig = sktx.pl.de_heatmap(real, {"m": real * 0.5}, n_genes=3)
    images = [im for ax in fig.axes for im in ax.get_images()]
    limits = sorted(im.get_clim()[1] for im in images)
    # the weak perturbation keeps its own scale instead of the strong one's
    assert limits == pytest.approx([0.1, 3.0])
    assert len(fig.axes) == 4  # two panels, two colour bars


@pytest.mark.slow
def test_loss_from_history_and_models(sim):
    history = pd.DataFrame(
        {"train_loss": [0.5, 0.4, 0.3], "valid_loss": [0.6, 0.5, 0.4], "phase": [1, 1, 2],
         "n_genes": [50, 50, 100]}
    )  # fmt: skip
    ax = sktx.pl.loss(history).axes[0]
    assert "phase 2\n100 genes" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="no training loss"):
        sktx.pl.loss(sktx.MeanBaseline().fit(sim))
    model = sktx.PerturbationRegressor(max_epochs=2, set_size=8, random_state=0).fit(sim)
    assert len(sktx.pl.loss(model).axes[0].lines) >= 1
    assert len(sktx.pl.training_history(model)) >= 2
