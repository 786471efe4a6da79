"""ProgressiveFit: train over a growing, nested gene set, warm-starting every phase."""

from __future__ import annotations

import itertools
import numbers
import resource
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from sktx._params import Integer, check_value

__all__ = ["ProgressiveFit"]


def _default_estimator():
    # imported lazily: the default pipeline pulls in torch
    from sklearn.pipeline import Pipeline

    from sktx.regressor import PerturbationRegressor
    from sktx.selection import GeneSelector

    return Pipeline([("select", GeneSelector()), ("model", PerturbationRegressor())])


def _peak_rss_gb() -> float:
    # Linux reports KiB; this is the peak of the whole process so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _estimator_has(attr: str):
    """`available_if` check: the fitted (or, before fit, the template) estimator has `attr`."""

    def check(self) -> bool:
        est = getattr(self, "estimator_", None)
        if est is None:
            est = self._template()
        return hasattr(est, attr)

    return check


def _owner(estimator, param: str):
    """The object that owns a nested parameter (``"model__max_epochs"`` -> the ``model`` step)."""
    if "__" not in param:
        return estimator
    return estimator.get_params(deep=True)[param.rsplit("__", 1)[0]]


_KEYS = ("perturbation_key", "control_label", "cell_type_key", "layer")


def _prepare_once(X, estimator):
    """``X`` as one :class:`~sktx.PerturbationData` for every phase, when the steps agree.

    The keys come from the estimator's own parameters (``select__perturbation_key``,
    ``model__perturbation_key``, ...); estimators that are not sktx's get ``X`` as it is.
    """
    from sktx.data import PerturbationData, prepare

    if isinstance(X, PerturbationData) or not hasattr(X, "obs"):
        return X
    params = estimator.get_params(deep=True)
    keys = {}
    for key in _KEYS:
        values = {repr(v): v for k, v in params.items() if k == key or k.endswith("__" + key)}
        if len(values) > 1:
            return X  # steps disagree: let each prepare its own input
        if values:
            keys[key] = next(iter(values.values()))
    if "perturbation_key" not in keys:
        return X
    return prepare(X, **keys)


def _shared_features(estimator, X, model, param, n_last, seed):
    """Context giving every phase the PCA gene loadings of the last phase's panel.

    Only for a :class:`~sktx.regressor.PerturbationRegressor` alone or as the last
    step of a pipeline (its earlier steps, e.g. the selector, are fitted here with
    the last phase's ``param``; each phase fits them again). Anything else: no-op.
    """
    from sklearn.pipeline import Pipeline

    from sktx.regressor import PerturbationRegressor
    from sktx.regressor._state import final_tokens, gene_loadings, shared_loadings

    if not isinstance(model, PerturbationRegressor):
        return nullcontext()
    if isinstance(estimator, Pipeline) and estimator.steps[-1][1] is model:
        before = [s for _, s in estimator.steps[:-1] if s not in (None, "passthrough")]
    elif estimator is model:
        before = []
    else:
        return nullcontext()
    estimator.set_params(**{param: n_last})
    for step in before:
        X = step.fit_transform(X)
    data = model._prepare(X, require_control=False)
    X32 = data.X32
    loadings = gene_loadings(X32, data.is_control, 0 if seed is None else seed)
    genes = [str(g) for g in data.genes]
    tokens = final_tokens(X32, data, genes, model.max_tokens)
    return shared_loadings(genes, loadings, X32.shape[0], tokens=tokens)


def _sibling(param: str, name: str) -> str:
    """``name`` in the step owning ``param`` (``"model__x"`` -> ``"model__<name>"``)."""
    return f"{param.rsplit('__', 1)[0]}__{name}" if "__" in param else name


def _n_genes(X) -> int:
    if hasattr(X, "n_vars"):
        return int(X.n_vars)
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"ProgressiveFit needs an AnnData (cells x genes); got {type(X).__name__}."
        )
    return int(shape[1])


class ProgressiveFit(MetaEstimatorMixin, BaseEstimator):
    """Fit an estimator in phases over a growing gene set, warm-starting each phase.

    Phase ``k`` sets ``param`` (the gene count of the selector) to
    ``phases[k]`` and fits again. From the second phase on the model is the
    *same fitted object* with ``warm_start=True``, so every parameter learnt so
    far is carried over. With :class:`~sktx.regressor.PerturbationRegressor`
    nothing changes shape between phases: gene embeddings live in a global
    hashed vocabulary, so the genes added by a phase simply start training
    their (so far untouched) embedding rows while the attention blocks and the
    head continue from the previous phase. :class:`~sktx.selection.GeneSelector`
    selections are nested, so phase ``k`` contains the genes of phase ``k - 1``
    (with the default quotas: essential TF/pluripotency/target genes first,
    then cell cycle and regulators, then perturbation-responsive genes, then
    highly variable genes).

    Parameters
    ----------
    estimator : estimator, optional
        Fitted on an AnnData; must expose ``param``, ``warm_start_param`` and
        (with ``epochs_per_phase``) ``epochs_param``. ``None`` builds
        ``Pipeline([("select", GeneSelector()), ("model", PerturbationRegressor())])``
        in ``fit``. The estimator is cloned; it is never fitted in place.
    phases : sequence of int, default=(100, 1200, 2500, 5000)
        Gene count of each phase, strictly increasing and positive. Counts
        above the number of genes of the data are clipped to it (with a
        warning) and phases that become equal are merged.
    param : str, default="select__n_genes"
        Parameter of ``estimator`` that takes the gene count.
    epochs_per_phase : int, "auto" or sequence of int, "auto" or None, optional
        Epochs of each phase (one int for all, or one per phase). ``None``
        keeps the estimator's own ``max_epochs`` in every phase; a ``None``
        entry keeps them (and its own early stopping) in that phase only,
        e.g. ``(4, 2, None)``: short warm-up phases, then a last phase as the
        estimator would train alone. An ``"auto"``
        entry lets the validation curve end the phase: up to the estimator's
        own ``max_epochs``, stopping once the validation loss has not improved
        for ``phase_patience`` epochs (the estimator's early stopping, which
        restores the phase's best weights; switched on for these phases with
        ``early_stopping="auto"`` beside ``patience_param``, then set back).
        ``"auto"`` alone means ``"auto"`` for every phase but the last, which
        keeps the estimator's settings.
        When clipping merges phases, their epochs are added up so the total
        is unchanged (an ``"auto"`` entry is kept as it is).
    epochs_param : str, default="model__max_epochs"
        Parameter that takes the epoch count (used with ``epochs_per_phase``).
    phase_patience : int, default=2
        Patience of the ``"auto"`` phases, in epochs.
    patience_param : str, default="model__n_iter_no_change"
        Parameter that takes ``phase_patience`` in ``"auto"`` phases (set back
        to the estimator's own value in the other phases).
    warm_start_param : str, default="model__warm_start"
        Parameter switched to ``True`` from the second phase on (``False`` in
        the first phase of a fresh fit).
    shared_features : bool, default=True
        Fit the per-gene features of a
        :class:`~sktx.regressor.PerturbationRegressor` (PCA gene loadings) once,
        on the last phase's panel, and give every phase the rows of its genes.
        A gene then has the same features in every phase, so what the feature
        projection learnt early still applies later, and no phase pays for its
        own PCA. Under the model's ``max_tokens`` cap, a phase with a smaller
        panel also runs its network only on the last phase's token genes within
        its panel, so no phase trains a gene the last one drops. ``False``: each
        phase runs its own PCA over its panel (features differ between phases).
    reset_optimizer : bool, default=False
        Re-create the optimizer (fresh Adam moments and step count) at the
        start of every phase after the first. The default keeps the
        optimizer: the moments of the shared weights (attention blocks, head,
        the embeddings of genes already trained) stay calibrated, whereas a
        freshly initialised Adam takes a full ``lr``-sized step on *every*
        weight in its first updates and partly undoes the previous phase.
        The embedding rows of new genes have no gradient history either way.
        This parameter only acts on skorch nets (objects with
        ``initialize_optimizer``).
    warm_start : bool, default=False
        scikit-learn's convention: when ``True`` and this object is already
        fitted, ``fit`` continues from ``estimator_`` (all phases run again on
        the fitted model, and ``phase_history_`` grows) instead of starting
        from a fresh clone.
    random_state : int, RandomState or None, default=None
        When set, one seed drawn from it is given to every ``random_state``
        parameter of ``estimator`` for all phases (see Notes). ``None``
        leaves the estimator's own ``random_state`` parameters alone.
    verbose : int, default=0
        Print one line per phase when > 0.

    Attributes
    ----------
    estimator_ : estimator
        The model after the last phase; ``predict``/``score``/``transform``
        delegate to it.
    phases_ : list of int
        The phase plan that ran (after clipping).
    phase_history_ : list of dict
        One record per phase: ``phase``, ``n_genes``, ``epochs``, ``train_loss``
        and ``valid_loss`` (per-epoch lists), ``valid_metric`` (last
        ``valid_loss``, NaN without validation), ``wall_time_s`` (the whole
        phase, selection included), ``peak_rss_gb`` (peak resident memory of
        the process so far, from ``resource.getrusage``), ``seed``.
        :func:`sktx.report.phase_history_frame` turns it into a DataFrame.
    n_features_in_ : int
        Genes in the AnnData passed to ``fit``.
    feature_names_in_ : ndarray of str
        Their names (``var_names``); only set when ``X`` has ``var_names``.

    See Also
    --------
    sktx.selection.GeneSelector : nested gene selection.
    sktx.regressor.PerturbationRegressor : the warm-startable model.

    Notes
    -----
    Loss values of different phases are averaged over different genes and so
    are not directly comparable; only losses at the same gene count are.

    The same seed is used in every phase rather than one seed per phase:
    ``PerturbationRegressor`` draws its held-out validation perturbations
    from its ``random_state``, so changing the seed between phases would let
    a later phase validate on perturbations an earlier phase trained on.

    Examples
    --------
    >>> from sklearn.pipeline import Pipeline
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.progressive import ProgressiveFit
    >>> from sktx.regressor import PerturbationRegressor
    >>> from sktx.selection import GeneSelector
    >>> adata = make_perturbseq(n_cells=400, n_genes=60, n_perturbations=6, random_state=0)
    >>> model = PerturbationRegressor(d_model=16, set_size=16, crossfit=0)  # one network
    >>> pipe = Pipeline([("select", GeneSelector()), ("model", model)])
    >>> prog = ProgressiveFit(pipe, phases=(20, 60), epochs_per_phase=2, random_state=0)
    >>> prog = prog.fit(adata)
    >>> [(p["n_genes"], p["epochs"]) for p in prog.phase_history_]
    [(20, 2), (60, 2)]
    """

    def __init__(
        self,
        estimator=None,
        *,
        phases: Sequence[int] = (100, 1200, 2500, 5000),
        param: str = "select__n_genes",
        epochs_per_phase: int | Sequence[int] | None = None,
        epochs_param: str = "model__max_epochs",
        phase_patience: int = 2,
        patience_param: str = "model__n_iter_no_change",
        warm_start_param: str = "model__warm_start",
        shared_features: bool = True,
        reset_optimizer: bool = False,
        warm_start: bool = False,
        random_state=None,
        verbose: int = 0,
    ):
        self.estimator = estimator
        self.phases = phases
        self.param = param
        self.epochs_per_phase = epochs_per_phase
        self.epochs_param = epochs_param
        self.phase_patience = phase_patience
        self.patience_param = patience_param
        self.warm_start_param = warm_start_param
        self.shared_features = shared_features
        self.reset_optimizer = reset_optimizer
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    def _template(self):
        return _default_estimator() if self.estimator is None else self.estimator

    # ------------------------------------------------------------------ validation
    def _check_phases(self) -> list[int]:
        phases = self.phases
        if isinstance(phases, (numbers.Integral, str)) or not isinstance(
            phases, (Sequence, np.ndarray)
        ):
            raise ValueError(
                f"`phases` must be a sequence of gene counts such as (100, 1200, 2500), "
                f"got {phases!r}."
            )
        if len(phases) == 0:
            raise ValueError("`phases` is empty; give at least one gene count, e.g. (100, 500).")
        for p in phases:
            if not isinstance(p, numbers.Integral) or isinstance(p, bool) or p < 1:
                raise ValueError(
                    f"every phase must be a positive integer gene count; got {p!r} in "
                    f"`phases={tuple(phases)!r}`."
                )
        phases = [int(p) for p in phases]
        bad = [(a, b) for a, b in itertools.pairwise(phases) if b <= a]
        if bad:
            raise ValueError(
                f"`phases` must be strictly increasing (each phase adds genes); "
                f"{bad[0][1]} follows {bad[0][0]} in {tuple(phases)}."
            )
        return phases

    def _check_epochs(self, n_phases: int) -> list | None:
        epochs = self.epochs_per_phase
        if epochs is None:
            return None
        check_value("phase_patience", self.phase_patience, Integer(low=1))
        if isinstance(epochs, str) and epochs == "auto":
            # the last phase keeps the estimator's own epochs and early stopping
            return ["auto"] * (n_phases - 1) + [None]
        if isinstance(epochs, numbers.Integral) and not isinstance(epochs, bool):
            epochs = [epochs] * n_phases
        elif not isinstance(epochs, (Sequence, np.ndarray)) or isinstance(epochs, str):
            raise ValueError(
                f"`epochs_per_phase` must be None, an int or one int per phase; got {epochs!r}."
            )
        if len(epochs) != n_phases:
            raise ValueError(
                f"`epochs_per_phase` has {len(epochs)} entries but `phases` has {n_phases}; "
                "give one epoch count per phase or a single int."
            )
        for e in epochs:
            if e is None or (isinstance(e, str) and e == "auto"):
                continue
            if not isinstance(e, numbers.Integral) or isinstance(e, bool) or e < 1:
                raise ValueError(
                    f"epochs must be positive integers, 'auto' or None; got {e!r} in "
                    "`epochs_per_phase`."
                )
        return [e if e is None or isinstance(e, str) else int(e) for e in epochs]

    def _check_params_exist(self, estimator) -> None:
        names = estimator.get_params(deep=True)
        needed = [("param", self.param), ("warm_start_param", self.warm_start_param)]
        if self.epochs_per_phase is not None:
            needed.append(("epochs_param", self.epochs_param))
        if self._uses_auto():
            needed.append(("patience_param", self.patience_param))
        for arg, name in needed:
            if name not in names:
                raise ValueError(
                    f"`{arg}={name!r}` is not a parameter of {type(estimator).__name__}; "
                    f"pass the `<step>__<param>` name of an existing parameter "
                    f"(it has {_some(names)})."
                )

    def _uses_auto(self) -> bool:
        epochs = self.epochs_per_phase
        if isinstance(epochs, str):
            return epochs == "auto"
        return isinstance(epochs, (Sequence, np.ndarray)) and any(
            isinstance(e, str) and e == "auto" for e in epochs
        )

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, **fit_params):
        """Run every phase on ``X``.

        Parameters
        ----------
        X : AnnData
            Cells x genes, as the estimator expects.
        y : None
            Passed through to the estimator (ignored by sktx estimators).
        **fit_params
            Passed to the estimator's ``fit`` in every phase.

        Returns
        -------
        self
        """
        phases = self._check_phases()
        epochs = self._check_epochs(len(phases))
        n_available = _n_genes(X)
        source = X
        resume = bool(self.warm_start) and hasattr(self, "estimator_")
        estimator = self.estimator_ if resume else clone(self._template())
        self._check_params_exist(estimator)

        clipped = [min(p, n_available) for p in phases]
        if clipped != phases:
            warnings.warn(
                f"`phases` {tuple(phases)} ask for more genes than the data has "
                f"({n_available}); clipped to {tuple(dict.fromkeys(clipped))}.",
                UserWarning,
                stacklevel=2,
            )
        plan: list[int] = []
        plan_epochs: list[int] = []
        for i, n in enumerate(clipped):
            if plan and plan[-1] == n:
                if epochs is not None:
                    a, b = plan_epochs[-1], epochs[i]
                    # merged phases keep their total epochs; "auto" (or own) is kept as is
                    both = isinstance(a, int) and isinstance(b, int)
                    plan_epochs[-1] = a + b if both else (a if isinstance(a, str) else b)
                continue
            plan.append(n)
            if epochs is not None:
                plan_epochs.append(epochs[i])

        seed = None
        if self.random_state is not None:
            seed = int(check_random_state(self.random_state).randint(2**31 - 1))
            seeds = {
                k: seed
                for k in estimator.get_params(deep=True)
                if k == "random_state" or k.endswith("__random_state")
            }
            estimator.set_params(**seeds)

        model = _owner(estimator, self.warm_start_param)
        own = estimator.get_params(deep=True)
        own_epochs = own.get(self.epochs_param)
        own_patience = own.get(self.patience_param)
        # "auto" phases need the estimator's early stopping on, even where it has it
        # off (early_stopping=False); its switch sits beside the patience parameter
        stop_param = _sibling(self.patience_param, "early_stopping")
        own_stop = own.get(stop_param)
        has_stop = stop_param in own
        history = list(getattr(self, "phase_history_", [])) if resume else []
        # checked and normalised once for all phases (and the selector ranks it once)
        X = _prepare_once(X, estimator)
        start = time.perf_counter()
        shared = nullcontext()
        if self.shared_features:
            shared = _shared_features(estimator, X, model, self.param, plan[-1], seed)
        setup = time.perf_counter() - start  # counted in the first phase's wall time
        with shared:
            for k, n in enumerate(plan):
                warm = k > 0 or resume
                params = {self.param: n, self.warm_start_param: warm}
                if epochs is not None:
                    auto = plan_epochs[k] == "auto"
                    params[self.epochs_param] = (
                        own_epochs if auto or plan_epochs[k] is None else plan_epochs[k]
                    )
                    if self._uses_auto():
                        params[self.patience_param] = self.phase_patience if auto else own_patience
                        if has_stop:
                            params[stop_param] = "auto" if auto else own_stop
                estimator.set_params(**params)
                if warm and self.reset_optimizer and getattr(model, "initialized_", False):
                    model.initialize_optimizer()
                n_before = len(getattr(model, "history", None) or [])
                start = time.perf_counter()
                estimator.fit(X, y, **fit_params)
                wall = time.perf_counter() - start + (setup if k == 0 else 0.0)
                record = self._phase_record(model, n_before, n, wall, seed, len(history) + 1)
                history.append(record)
                if self.verbose > 0:
                    print(
                        f"[ProgressiveFit] phase {record['phase']}: {n} genes, "
                        f"{record['epochs']} epoch{'' if record['epochs'] == 1 else 's'}, "
                        f"train_loss {_last(record['train_loss']):.4g}, "
                        f"valid_loss {record['valid_metric']:.4g}, {wall:.1f} s"
                    )
        # leave the estimator as a plain (non-warm) fit would, so refitting it starts fresh
        restore = {self.warm_start_param: False}
        if self._uses_auto():
            restore.update({self.epochs_param: own_epochs, self.patience_param: own_patience})
            if has_stop:
                restore[stop_param] = own_stop
        estimator.set_params(**restore)
        self.estimator_ = estimator
        self.phases_ = plan
        self.phase_history_ = history
        self.n_features_in_ = n_available
        if hasattr(source, "var_names"):
            self.feature_names_in_ = np.asarray(source.var_names, dtype=object)
        else:  # a previous fit's names would be stale
            vars(self).pop("feature_names_in_", None)
        return self

    @staticmethod
    def _phase_record(model, n_before, n_genes, wall, seed, phase) -> dict:
        rows = list(getattr(model, "history", None) or [])[n_before:]

        def curve(key):
            return [float(r[key]) for r in rows if key in r]

        train, valid = curve("train_loss"), curve("valid_loss")
        return {
            "phase": phase,
            "n_genes": int(n_genes),
            "epochs": len(rows),
            "train_loss": train,
            "valid_loss": valid,
            "valid_metric": valid[-1] if valid else float("nan"),
            "wall_time_s": wall,
            "peak_rss_gb": _peak_rss_gb(),
            "seed": seed,
        }

    # ------------------------------------------------------------------ delegation
    @available_if(_estimator_has("predict"))
    def predict(self, X, *, output="log1p", all_genes=False, random_state=None, **params):
        """Predict with the model of the last phase (see the estimator's ``predict``).

        ``output="counts"`` / ``all_genes=True`` as in
        :meth:`PerturbationRegressor.predict` (also through a ``GeneSelector``);
        ``random_state`` None uses this estimator's.
        """
        check_is_fitted(self)
        if output == "log1p" and not all_genes:
            return self.estimator_.predict(X, **params)
        from sktx._counts import predict_output

        seed = self.random_state if random_state is None else random_state
        return predict_output(
            self.estimator_, X, output=output, all_genes=all_genes, random_state=seed, **params
        )

    @available_if(_estimator_has("predict"))
    def predict_perturbations(self, controls, perturbations=None, **kwargs):
        """Predict ``perturbations`` from the control cells of ``controls`` (AnnData out).

        See :func:`sktx.predict_perturbations` (``n_cells=``, ``with_controls=``, ...).
        """
        from sktx._perturbations import predict_perturbations

        return predict_perturbations(self, controls, perturbations, **kwargs)

    @available_if(_estimator_has("score"))
    def score(self, X, y=None, **params):
        """Score with the model of the last phase (see the estimator's ``score``)."""
        check_is_fitted(self)
        return self.estimator_.score(X, y, **params)

    @available_if(_estimator_has("transform"))
    def transform(self, X, **params):
        """Transform with the model of the last phase (see the estimator's ``transform``)."""
        check_is_fitted(self)
        return self.estimator_.transform(X, **params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            template = self._template()
            sub = get_tags(template)
            # the data reach the first step of a pipeline as given (Pipeline's own tags
            # do not carry `positive_only` over)
            steps = getattr(template, "steps", None)
            first = get_tags(steps[0][1]) if steps else sub
        except Exception:  # an estimator without tags; keep the defaults
            return tags
        tags.estimator_type = sub.estimator_type
        tags.regressor_tags = sub.regressor_tags
        tags.target_tags.required = sub.target_tags.required
        tags.target_tags.multi_output = sub.target_tags.multi_output
        tags.input_tags.sparse = sub.input_tags.sparse
        tags.input_tags.positive_only = first.input_tags.positive_only
        tags.non_deterministic = sub.non_deterministic
        return tags


def _some(names, k: int = 8) -> str:
    keys = sorted(names, key=lambda n: ("__" not in n, n))
    return ", ".join(keys[:k]) + (", ..." if len(keys) > k else "")


def _last(values) -> float:
    return values[-1] if values else float("nan")
