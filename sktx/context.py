"""Zero-shot prediction for a cell context (cell type, cell line) never seen in ``fit``.

A model fitted on some cell types can predict another one from its control cells
alone: the query's controls give the new context's control profile, and the
perturbation effects come from the fitted contexts. This module holds what the
regressor and the baselines share for that path:

* :class:`UnseenContextWarning`, raised (as a warning) whenever a query holds
  perturbed cells of a context the model was never fitted on;
* :func:`fit_context_transfer`, the transfer rule of
  :class:`~sktx.PerturbationRegressor`: each label's effect averaged over the
  fitted contexts, split into the *mean response* of a context (the delta every
  perturbation of it shares) and the label's *specific* departure from it, each
  part shrunk by a coefficient fitted by leave-one-context-out least squares on
  the fitted contexts themselves, so the model carries to a new context only as
  much of each part as carried between the contexts it has seen.

Effects are log-fold changes of normalised expression with a pseudocount:
``log((expm1(perturbed) + c) / (expm1(control) + c))`` on pseudobulk log1p means.
With ``c = 1`` this is exactly the log1p delta ``perturbed - control``, the
quantity every sktx model predicts; a smaller ``c`` makes effects multiplicative
(a gene silent in the new context stays nearly silent). ``c = 1`` measured better
on the Norman/McFaline contexts (``benchmarks/bench_zeroshot.py``,
docs/zero_shot.md) and is the default.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from sktx.data import split_targets

__all__ = [
    "ContextTransfer",
    "UnseenContextWarning",
    "fit_context_transfer",
    "unseen_context_basal",
    "warn_unseen",
]

#: Control means of unseen contexts given for the calls inside `unseen_context_basal`.
_GIVEN_BASAL: ContextVar[dict | None] = ContextVar("sktx_unseen_basal", default=None)
#: Predicted values (cells x genes) per model call in `unseen_control_means`.
_CHUNK_VALUES = 2**26


@contextmanager
def unseen_context_basal(means: Mapping[str, np.ndarray]) -> Iterator[None]:
    """Within the block, an unseen context of ``means`` starts from the mean given here.

    Without it a model starts an unseen context from the mean of that context's cells
    in the query of each ``predict`` call, so a prediction made in several calls
    (chunks, batches) would depend on how the cells were split between them.
    :func:`sktx.predict_perturbations` and :func:`sktx.submission.write_submission`
    give the mean of all the context's control cells (:func:`unseen_control_means`).

    Parameters
    ----------
    means : mapping of str to ndarray
        Context name -> mean over the model's genes, in the model's log1p space.

    Examples
    --------
    >>> import numpy as np
    >>> with unseen_context_basal({"new": np.zeros(3)}):
    ...     given_basal("new", 3)
    array([0., 0., 0.], dtype=float32)
    >>> given_basal("new", 3) is None
    True
    """
    token = _GIVEN_BASAL.set({str(k): v for k, v in means.items()})
    try:
        yield
    finally:
        _GIVEN_BASAL.reset(token)


def given_basal(context, n_genes: int) -> np.ndarray | None:
    """The mean :func:`unseen_context_basal` gives for ``context``, if it fits ``n_genes``."""
    means = _GIVEN_BASAL.get()
    value = None if not means else means.get(str(context))
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float32).ravel()
    return value if value.shape[0] == n_genes else None


def fitted_contexts(model) -> set[str] | None:
    """Contexts a fitted sktx model (or a Pipeline / ProgressiveFit around one) has seen.

    ``None`` when it cannot tell (then every context is treated as unseen).
    """
    from sktx.pl._history import final_net  # the model inside a Pipeline / ProgressiveFit

    model = final_net(model)
    state = getattr(model, "fitted_state_", None)
    if state is not None:
        return {str(c) for c in state.cell_types}
    profiles = getattr(model, "control_profiles_", None)
    if profiles is not None:
        return {str(c) for c in profiles.index}
    return None


def unseen_control_means(model, cells, contexts) -> dict:
    """Mean of each unseen context's control ``cells`` as ``model`` sees them.

    ``cells`` (AnnData or PerturbationData) must hold control cells only, with
    ``contexts`` their context names: ``predict`` hands controls back unchanged, in
    the model's genes and log1p space (after a Pipeline's gene selection), so their
    mean is the basal the model would take from a query holding all of them. Read
    in chunks of about ``2**26`` values.
    """
    from sktx._counts import predict_output

    contexts = np.asarray(contexts).astype(str)
    fitted = fitted_contexts(model)
    names = sorted(set(contexts.tolist()) - (fitted or set()))
    step = max(1, _CHUNK_VALUES // max(int(cells.shape[1]), 1))
    out = {}
    for name in names:
        rows = np.flatnonzero(contexts == name)
        total = None
        for start in range(0, len(rows), step):
            X = predict_output(model, cells[rows[start : start + step]], output="log1p").X
            part = np.asarray(X.sum(0), dtype=np.float64).ravel()
            total = part if total is None else total + part
        out[name] = (total / len(rows)).astype(np.float32)
    return out


class UnseenContextWarning(UserWarning):
    """A query holds perturbed cells of a context (cell type) never seen in ``fit``.

    The model still predicts them (zero-shot, see docs/zero_shot.md); silence it
    with ``warnings.filterwarnings("ignore", category=UnseenContextWarning)``
    when that is what you meant.
    """


def warn_unseen(
    unseen, *, fitted, cell_type_key: str | None, model: str, action: str, stacklevel: int
) -> None:
    """Issue the :class:`UnseenContextWarning` naming the unseen contexts and the rule used."""
    if not unseen:
        return
    warnings.warn(
        f"query cell type(s) {sorted(unseen)} in `obs[{cell_type_key!r}]` were never seen in "
        f"`fit` (fitted: {sorted(fitted)}); {model} predicts them zero-shot: {action}. "
        "See docs/zero_shot.md.",
        UnseenContextWarning,
        stacklevel=stacklevel + 1,
    )


def _to_lfc(deltas: np.ndarray, controls: np.ndarray, pseudocount: float) -> np.ndarray:
    if pseudocount == 1.0:
        return np.asarray(deltas, dtype=np.float64)
    base = np.expm1(controls.astype(np.float64)) + pseudocount
    return np.log((np.expm1(controls + deltas.astype(np.float64)) + pseudocount) / base)


@dataclass
class ContextTransfer:
    """The effects of the fitted contexts, ready to be carried to a new one.

    ``predict(label, control)`` is the predicted log1p delta of ``label`` in a
    context whose control mean is ``control``: with ``M`` the mean response and
    ``S[label]`` the label's specific effect (both log-fold changes, see the
    module docstring), the log-fold change ``coef[0] * M + coef[1] * S[label]``
    applied to ``control``.

    Attributes
    ----------
    contexts : list of str
        Fitted contexts the effects come from.
    mean_response : ndarray of shape (n_genes,)
        ``M``: the mean over fitted contexts of each context's mean delta.
    labels : list of str
        Labels measured in at least one fitted context.
    specific : ndarray of shape (n_labels, n_genes)
        ``S``: each label's delta minus its context's mean delta, averaged over
        the fitted contexts that measured it. An unmeasured combination gets
        the sum of its measured single targets' ``S``, anything else 0.
    coef : ndarray of shape (2,)
        Non-negative weights of ``M`` and ``S`` fitted by leave-one-context-out
        least squares (``[1, 1]`` with fewer than two fitted contexts, where
        there is nothing to fit them on).
    pseudocount : float
        ``c`` of the log-fold change; 1 means log1p deltas.
    """

    contexts: list[str]
    mean_response: np.ndarray
    labels: list[str]
    specific: np.ndarray
    coef: np.ndarray
    pseudocount: float
    control_label: str

    def effect(self, label: str) -> np.ndarray:
        """Log-fold change of ``label`` in a new context (before it meets a control profile)."""
        return self.coef[0] * self.mean_response + self.coef[1] * self._specific(label)

    def _specific(self, label: str) -> np.ndarray:
        index = {lab: i for i, lab in enumerate(self.labels)}
        if label in index:
            return self.specific[index[label]]
        out = np.zeros_like(self.mean_response)
        for t in split_targets(label, self.control_label):
            if t in index:
                out = out + self.specific[index[t]]
        return out

    def predict(self, label: str, control: np.ndarray) -> np.ndarray:
        """Predicted log1p delta of ``label`` in a context with control mean ``control``."""
        control = np.asarray(control, dtype=np.float64)
        lfc = self.effect(label)
        c = self.pseudocount
        if c == 1.0:
            # log((expm1(x) + 1) * e^lfc) = x + lfc: the log1p delta, floored at zero expression
            return np.maximum(control + lfc, 0.0) - control
        pert = (np.expm1(control) + c) * np.exp(lfc) - c
        return np.log1p(np.maximum(pert, 0.0)) - control


def _parts(lfc, labels, contexts, names):
    """Mean response and specific effect per label, averaged over ``names``."""
    means = {ct: lfc[contexts == ct].mean(0) for ct in names}
    M = np.mean([means[ct] for ct in names], axis=0)
    specific: dict[str, list[np.ndarray]] = {}
    for i in np.flatnonzero(np.isin(contexts, names)):
        specific.setdefault(labels[i], []).append(lfc[i] - means[contexts[i]])
    uniq = sorted(specific)
    S = np.stack([np.mean(specific[lab], axis=0) for lab in uniq]) if uniq else None
    return M, uniq, S


def fit_context_transfer(
    deltas: np.ndarray,
    labels,
    contexts,
    controls: dict,
    *,
    control_label: str,
    pseudocount: float = 1.0,
    shrink: bool = True,
) -> ContextTransfer:
    """Fit the zero-shot transfer of effects from the fitted contexts to a new one.

    Parameters
    ----------
    deltas : ndarray of shape (n_groups, n_genes)
        Pseudobulk log1p delta of each fitted (label, context) group to the
        controls of its context.
    labels, contexts : sequence of str
        Label and context of each group.
    controls : dict of str to ndarray
        Control mean (log1p) of each context.
    control_label : str
    pseudocount : float, default=1.0
        ``c`` of the log-fold change (1: log1p deltas, see the module docstring).
    shrink : bool, default=True
        Fit the weights of the mean response and of the specific effects by
        leave-one-context-out least squares (non-negative); ``False`` keeps
        both at 1 ("the same effect as in the fitted contexts").

    Returns
    -------
    ContextTransfer

    Examples
    --------
    >>> import numpy as np
    >>> d = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    >>> ctrl = {"a": np.ones(2), "b": np.ones(2)}
    >>> tr = fit_context_transfer(d, ["A", "B", "A", "B"], ["a", "a", "b", "b"], ctrl,
    ...                           control_label="ctrl")
    >>> tr.coef.round(3).tolist()
    [1.0, 1.0]
    >>> tr.predict("A", np.array([2.0, 2.0])).round(3).tolist()
    [1.0, 0.0]
    """
    labels = np.asarray(labels, dtype=object)
    contexts = np.asarray(contexts, dtype=object)
    ctrl = np.stack([np.asarray(controls[ct], dtype=np.float64) for ct in contexts])
    lfc = _to_lfc(np.asarray(deltas, dtype=np.float64), ctrl, pseudocount)
    names = sorted(set(contexts.tolist()))
    M, uniq, S = _parts(lfc, labels, contexts, names)
    if S is None:
        S = np.zeros((0, lfc.shape[1]))
    coef = np.ones(2)
    if shrink and len(names) > 1:
        coef = _loco_coef(lfc, labels, contexts, names, control_label)
    return ContextTransfer(
        contexts=names,
        mean_response=M,
        labels=uniq,
        specific=S,
        coef=coef,
        pseudocount=float(pseudocount),
        control_label=control_label,
    )


def _loco_coef(lfc, labels, contexts, names, control_label) -> np.ndarray:
    """Weights of (M, S) that best predict each fitted context from the others."""
    from scipy.optimize import nnls

    cols, ys = [], []
    for ct in names:
        rest = [c for c in names if c != ct]
        M, uniq, S = _parts(lfc, labels, contexts, rest)
        held = ContextTransfer(rest, M, uniq, S, np.ones(2), 1.0, control_label)
        for i in np.flatnonzero(contexts == ct):
            cols.append(np.stack([M, held._specific(labels[i])], axis=1))
            ys.append(lfc[i])
    A, y = np.concatenate(cols), np.concatenate(ys)
    if not np.any(A):
        return np.zeros(2)
    return nnls(A, y)[0]
