"""Joint additive target effects: closed-form leave-one-out, reduction to the additive rule."""

from __future__ import annotations

import numpy as np
import pytest

from sktx._effects import _design, _ridge, fit_target_effects


def _random_screen(seed=0, n_genes=7):
    rng = np.random.default_rng(seed)
    labels = [["A"], ["B"], ["C"], ["A", "B"], ["B", "D"], ["D", "E"], ["C", "E"], ["F"]]
    true = {t: rng.normal(size=n_genes) for t in "ABCDEF"}
    deltas = np.stack([sum(true[t] for t in ts) for ts in labels])
    return deltas + 0.1 * rng.normal(size=deltas.shape), labels


def test_leave_one_out_equals_refitting_without_the_label():
    deltas, labels = _random_screen()
    fx = fit_target_effects(deltas, labels, lambdas=(0.3,))
    targets = fx.targets  # columns stay fixed; a dropped label leaves its targets at 0
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        A = _design([labels[j] for j in np.flatnonzero(keep)], targets)
        coef = _ridge(A, 0.3) @ deltas[keep]
        expected = _design([labels[i]], targets) @ coef
        np.testing.assert_allclose(fx.loo[i], expected[0], atol=1e-8)


def test_penalty_is_chosen_by_leave_one_out_error():
    deltas, labels = _random_screen(1)
    chosen = fit_target_effects(deltas, labels)
    errors = {
        lam: ((fit_target_effects(deltas, labels, lambdas=(lam,)).loo - deltas) ** 2).sum()
        for lam in (0.01, 0.1, 1.0, 10.0)
    }
    assert chosen.lam in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    assert ((chosen.loo - deltas) ** 2).sum() <= min(errors.values()) + 1e-12


def test_singles_only_reduce_to_the_additive_rule():
    rng = np.random.default_rng(2)
    deltas = rng.normal(size=(5, 4))
    labels = [[t] for t in "ABCDE"]
    fx = fit_target_effects(deltas, labels, lambdas=(1e-3,))
    # a seen single ~ its own delta, an unseen single = the mean delta,
    # A+B = the sum of the singles, a held-out single = the mean of the others
    np.testing.assert_allclose(fx.predict(["A"]), deltas[0], atol=5e-3)
    np.testing.assert_allclose(fx.predict(["Z"]), deltas.mean(0), atol=1e-4)
    np.testing.assert_allclose(fx.predict(["A", "B"]), deltas[0] + deltas[1], atol=5e-3)
    np.testing.assert_allclose(fx.loo[0], deltas[1:].mean(0), atol=1e-4)


def test_a_target_seen_only_in_combinations_gets_its_effect():
    deltas, labels = _random_screen(3)
    fx = fit_target_effects(deltas, labels)
    # E appears only in D+E and C+E; its effect is learned from them
    e_est = fx.predict(["E"])
    unseen = fx.predict(["NOT_A_TARGET"])
    ce = deltas[labels.index(["C", "E"])] - deltas[labels.index(["C"])]
    assert np.linalg.norm(e_est - ce) < np.linalg.norm(unseen - ce)


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n):
    fx = fit_target_effects(np.ones((n, 3)), [["A"]] * n)
    assert fx.predict(["A", "B"]).shape == (3,)
    assert fx.loo.shape == (n, 3)
    if n == 1:  # nothing left to predict the only label from
        np.testing.assert_array_equal(fx.loo, 0.0)
