"""The validation measure and time-to-target rule of ``bench_throughput.py`` (numpy only).

Both systems are scored with this same code: the sktx worker imports it in the
project's venv, ``_state_driver.py`` imports it in State's own venv (it imports
nothing of sktx or of State).

Measure. A fixed random ``VALID_FRACTION`` of the cells of every (perturbation,
cell type) group and of the controls of every cell type is held out; both
systems train on the other cells only. At each evaluation each system predicts,
for every group with held-out cells, the pseudobulk (mean log1p expression) of
the perturbation from the same ``N_QUERY`` held-out control cells of that cell
type (relabelled to the perturbation); the measure is the mean squared error
of predicted vs observed held-out pseudobulk over all genes and groups. Both
subtract the same observed control mean, so this is also the MSE of the
pseudobulk log1p delta. The reference ``ctrl_mse`` is the error of predicting
the training controls' mean (no change) for every group.

Clock. Seconds from the start of the system's setup (sktx: the ``fit`` call,
including its data checks, normalisation, PCA, gene graph and baseline; State:
building the model) to the end of the last training step, with evaluation
pauses taken out. Evaluations follow :func:`next_eval`.
"""

from __future__ import annotations

import numpy as np

VALID_FRACTION = 0.2
N_QUERY = 64  # held-out control cells per cell type a prediction starts from (one State set)
TARGET_FRACTION = 0.5  # of the way from the no-change error to the best system's


def split_cells(label: np.ndarray, ct: np.ndarray, fraction: float = VALID_FRACTION, seed=0):
    """Boolean mask of held-out cells: ``round(fraction * n)`` of each (label, cell type) group.

    Groups of fewer than 5 cells are kept for training whole (at least one held-out
    cell and four training cells per group otherwise).

    >>> m = split_cells(np.array([0] * 10 + [1] * 5), np.zeros(15, int), 0.2)
    >>> int(m[:10].sum()), int(m[10:].sum())
    (2, 1)
    """
    rng = np.random.default_rng(seed)
    valid = np.zeros(len(label), dtype=bool)
    keys = np.stack([np.asarray(label), np.asarray(ct)], axis=1)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    for g in range(int(inverse.max()) + 1):
        rows = np.flatnonzero(inverse.ravel() == g)
        if len(rows) < 5:
            continue
        n = max(1, round(fraction * len(rows)))
        valid[rng.choice(rows, n, replace=False)] = True
    return valid


def eval_spec(X, label, ct, control: int, valid: np.ndarray, n_query: int = N_QUERY, seed=0):
    """Arrays both workers score with (saved in the benchmark's npz).

    ``eval_label``/``eval_ct``: the groups scored (perturbed groups with held-out
    cells whose cell type has held-out controls); ``eval_query``: per group the
    row indices of its ``n_query`` held-out control cells (drawn once per cell
    type, with replacement when there are fewer); ``eval_observed``: held-out
    pseudobulk per group; ``ctrl_mse``: the error of the training control mean.
    """
    rng = np.random.default_rng(seed)
    label, ct = np.asarray(label), np.asarray(ct)
    query, ctrl_mean = {}, {}
    for c in np.unique(ct):
        vrows = np.flatnonzero(valid & (label == control) & (ct == c))
        trows = np.flatnonzero(~valid & (label == control) & (ct == c))
        if len(vrows) and len(trows):
            query[c] = rng.choice(vrows, n_query, replace=len(vrows) < n_query)
            ctrl_mean[c] = _mean_rows(X, trows)
    groups = sorted(
        {(int(a), int(b)) for a, b in zip(label[valid], ct[valid], strict=True) if a != control}
    )
    groups = [(a, b) for a, b in groups if b in query]
    observed = np.stack(
        [_mean_rows(X, np.flatnonzero(valid & (label == a) & (ct == b))) for a, b in groups]
    )
    no_change = np.stack([ctrl_mean[b] for _, b in groups])
    return {
        "eval_label": np.array([a for a, _ in groups]),
        "eval_ct": np.array([b for _, b in groups]),
        "eval_query": np.stack([query[b] for _, b in groups]),
        "eval_observed": observed.astype(np.float32),
        "ctrl_mse": np.float64(pseudobulk_mse(no_change, observed)),
    }


def _mean_rows(X, rows) -> np.ndarray:
    return np.asarray(X[rows].mean(0), dtype=np.float64).ravel()


def pseudobulk_mse(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean over groups and genes of the squared pseudobulk error.

    >>> pseudobulk_mse(np.ones((2, 3)), np.zeros((2, 3)))
    1.0
    """
    return float(np.mean((np.asarray(predicted, np.float64) - observed) ** 2))


def next_eval(last: float, growth: float, min_gap: float) -> float:
    """Training-clock time of the next evaluation after one at ``last`` seconds.

    Geometric (``growth``) so that a time to target is resolved to the same relative
    precision early and late; at least ``min_gap`` seconds apart.

    >>> next_eval(10.0, 1.25, 2.0), next_eval(1.0, 1.25, 2.0)
    (12.5, 3.0)
    """
    return max(last * growth, last + min_gap)


def target_level(ctrl_mse: float, best: list[float], fraction: float = TARGET_FRACTION) -> float:
    """The target MSE: ``fraction`` of the way from the no-change error to the best reached.

    ``best`` holds each system's best validation MSE within the budget; the
    target is ``ctrl_mse - fraction * (ctrl_mse - min(best))``, a level below
    predicting no change that the better system reached. A system may not reach it
    within the budget (then its time to target is reported as more than the budget).
    When no system beats the no-change error the target is the worse system's best.

    >>> target_level(1.0, [0.2, 0.5])
    0.6
    >>> target_level(1.0, [1.5, 1.2])
    1.5
    """
    if min(best) >= ctrl_mse:
        return float(max(best))
    return float(ctrl_mse - fraction * (ctrl_mse - min(best)))


def time_to_target(curve: list[tuple[float, float]], target: float) -> float | None:
    """Clock seconds of the first evaluation at or below ``target`` (``None``: never).

    ``curve`` is ``[(clock_s, mse), ...]`` in evaluation order; the first
    evaluation after reaching the target is an upper bound on the true time
    (evaluations are ``growth`` apart, see :func:`next_eval`).

    >>> time_to_target([(1.0, 0.9), (2.0, 0.4), (3.0, 0.3)], 0.5)
    2.0
    """
    for t, mse in curve:
        if mse <= target:
            return float(t)
    return None
