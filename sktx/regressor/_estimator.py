"""PerturbationRegressor: a skorch net that predicts single-cell responses to perturbations."""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import ClassVar

import numpy as np
import torch
from sklearn.utils import RegressorTags, check_random_state
from skorch import NeuralNet

from sktx._params import Integer, Options, Real, check_params
from sktx.data import DataContractError, SetSampler, prepare
from sktx.nn import GeneTokenModel, SetLoss, cpu_autocast_precision
from sktx.regressor._crossfit import CrossfitMixin, crossfit_folds
from sktx.regressor._inputs import InputsMixin
from sktx.regressor._predict import PredictMixin
from sktx.regressor._repr import short_repr
from sktx.regressor._state import N_FEATURES, FittedState, build_state
from sktx.regressor._training import TrainingMixin, _EarlyStopping, _Sets, _threads

__all__ = ["PerturbationRegressor"]

_PRECISIONS = ("auto", "32", "bf16", "16")


_POSITIVE = ("d_model", "n_layers", "n_heads", "n_neighbors", "set_size", "batch_size")
_CONSTRAINTS = {
    **{name: Integer(low=1) for name in (*_POSITIVE, "n_iter_no_change")},
    "crossfit": Integer(low=0),
    "max_tokens": Integer(low=1, none_ok=True),
    # a negative count used to train for zero epochs silently
    "max_epochs": Integer(low=0),
    "attention": Options("sparse", "dense"),
    "validation_fraction": Real(0, 1, closed="left"),
    "residual_shrinkage": Options("global", "gene"),
    "start": Options("shrunk", "knn"),
    "basal": Options("fitted", "query"),
    "early_stopping": Options(True, False, "auto"),
    "on_unknown_target": Options("error", "warn"),
    "distributional_loss": Real(low=0),
}


class PerturbationRegressor(CrossfitMixin, PredictMixin, TrainingMixin, InputsMixin, NeuralNet):
    """Gene-token network with sparse attention that predicts perturbed single cells.

    Each gene is a token (hashed symbol embedding + gene features + basal
    expression + a target flag); tokens attend to ``n_neighbors`` neighbours
    on a gene graph (shared gene sets + co-expression). The network runs once
    per *set* of cells and predicts a per-gene change that is added, as a
    residual, to a start: additive per-target effects fitted jointly on all
    training singles and combinations (``AdditiveBaseline(effects="joint")``),
    an unseen target's from its most similar fitted targets (see ``start``). The residual head
    starts at zero, so an untrained model is the baseline and training can
    only add what the data supports. Cells are predicted as
    control cell + predicted delta (clipped at zero).

    Parameters
    ----------
    perturbation_key : str, default="target_gene"
        ``obs`` column naming each cell's perturbation (``"A+B"`` for combinations).
    control_label : str, default="non-targeting"
        Label of control cells.
    cell_type_key : str, optional
        ``obs`` column with the cell type; sets pair perturbed and control
        cells of the same cell type.
    d_model : int, default=64
        Token width.
    n_layers : int, default=2
        Attention blocks.
    n_heads : int, default=4
        Attention heads.
    n_neighbors : int, default=16
        Neighbours per gene in the attention graph (self included).
    max_tokens : int or None, default=2048
        The network runs on at most this many genes: the measured training
        targets, then the genes the training perturbations move most; the
        others keep the start (see docs/model.md). Caps the cost per set at
        large panels (18,080 genes: docs/performance.md); None: every gene.
    gene_sets : None, False, dict, path or list of paths, default=None
        Prior knowledge for graph edges and gene embeddings: ``None`` uses the
        built-in curated lists, ``False`` none, or a dict / GMT path(s) (e.g.
        GO BP, which embeds targets that are not measured).
    set_size : int, default=64
        Cells per set (control and perturbed side each).
    max_epochs : int, default=20
    lr : float, default=1e-3
    weight_decay : float, default=0.1
        Weight decay of the optimizer (AdamW's own 0.01 overfit the training
        perturbations; 0.1 was chosen on Datlinger 2017, ``benchmarks/bench_tuning.py``).
        ``optimizer__weight_decay`` overrides it.
    batch_size : int, default=8
        Sets per optimisation step.
    precision : {"auto", "32", "bf16", "16"}, default="auto"
        Autocast dtype. ``"auto"``: on CPU bf16 where the CPU has native bf16
        (avx512_bf16/AMX) and a timed step is faster with it, else float32
        (decided once per process, :func:`sktx.nn.cpu_autocast_precision`);
        bf16 on CUDA when supported, else fp16 with gradient scaling. ``"bf16"``
        on CPU autocasts to bfloat16; ``"16"`` is fp16 + ``GradScaler`` on CUDA
        (bf16 on CPU). Sparse attention always runs in float32 (there are no
        low-precision CSR kernels).
    gradient_checkpointing : bool, default=False
        Recompute attention blocks in backward to save memory.
    attention : {"sparse", "dense"}, default="sparse"
        ``"dense"`` (all genes attend to all) exists for benchmark comparison.
    distributional_loss : float, default=0.0
        Weight of an energy-distance term between predicted and observed cells;
        0 trains on the pseudobulk-delta loss alone (1.0 lost, docs/model.md).
    crossfit : int, default=3
        Cross-fitted networks: the fitted perturbations are split into
        ``crossfit`` folds; network ``j`` trains on the other folds,
        early-stops on fold ``j``, and predictions average the networks'
        residuals. The residual scale is fitted on every fitted perturbation,
        each predicted by the network that did not train on it (not on the
        ~3 perturbations of a 10 % split), so a residual that does not carry
        over to unseen perturbations is shrunk towards the baseline. Costs
        about ``crossfit * (crossfit - 1) / crossfit`` single fits. 0 (or 1)
        trains one network with a ``validation_fraction`` split.
    residual_shrinkage : {"global", "gene"}, default="global"
        How the learned residual is shrunk at prediction: by one factor
        (``residual_scale_``), or with ``crossfit >= 2`` by a factor per gene
        fitted on the same out-of-fold perturbations and shrunk towards the
        global one (``fitted_state_.gene_scale``; a prediction-time choice,
        ``set_params`` on a fitted model takes effect without refitting).
    start : {"shrunk", "knn"}, default="shrunk"
        How the start predicts a target never fitted: the typical effect moved
        towards similar fitted targets and shrunk, by factors fitted for the
        absolute error (``"shrunk"``: the 2025 MAE), or the mean effect of its
        most similar fitted targets, unshrunk (``"knn"``: KNNBaseline's rule,
        for the ranking and fold-change metrics of 2026; docs/model.md).
    validation_fraction : float, default=0.1
        With ``crossfit < 2``: fraction of perturbations held out (whole
        perturbations, never random cells) for ``valid_loss``; 0 disables
        validation.
    basal : {"fitted", "query"}, default="fitted"
        Control mean a prediction starts from: the mean of the fitted control
        cells of the query's cell type (for a cell type not seen in ``fit``,
        the mean of all its query cells; docs/zero_shot.md), or the mean of the query cells of each
        perturbation. Either way the query cells supply the cell-to-cell
        variation. ``"fitted"`` removes the sampling noise of a query drawn from
        the controls; ``"query"`` suits query cells in another state or batch.
    early_stopping : bool or "auto", default="auto"
        Stop when ``valid_loss`` has not improved for ``n_iter_no_change``
        epochs and restore the weights of the best epoch (skorch
        ``EarlyStopping(load_best=True)``). ``"auto"``: on whenever a
        validation split exists (on held-out Norman K562 perturbations the
        validation loss climbs after 4-7 epochs; measured in docs/model.md).
    n_iter_no_change : int, default=5
        Patience of ``early_stopping`` in epochs.
    layer : str, optional
        Read expression from this layer instead of ``X``.
    n_jobs : int, optional
        Torch CPU threads during ``fit``/``predict`` (restored afterwards);
        ``None`` keeps torch's setting. In a parallel ``GridSearchCV`` use
        ``n_jobs=1`` (oversubscription slowed training by up to 10x here).
    on_unknown_target : {"warn", "error"}, default="warn"
        What ``predict``/``score`` do with a target gene that has no embedding
        (not fitted, not in ``gene_sets``, never perturbed in training): warn
        and predict it from the baseline and the network's response to an
        anonymous target (the default, as in ``sktx train``: a grid search or
        cross-validation always gets a number, and the sktx scorers count such
        perturbations), or raise.
    device : str, default="cpu"
    random_state : int, RandomState or None, default=None
        Seeds weights, set sampling and the validation split (CPU runs are reproducible).
    verbose : int, default=0
    warm_start : bool, default=False
        Keep the weights between calls to ``fit`` (works across gene panels).
    **kwargs
        skorch parameters (``module__*``, ``optimizer__*``, ``callbacks``, ...).

    Attributes
    ----------
    genes_ : list of str
        Genes the model was fitted on (the ``var_names`` of predictions).
    feature_names_in_ : ndarray of str
        The same genes, as scikit-learn names them.
    n_features_in_ : int
        Number of genes seen in ``fit``.
    graph_ : GeneGraph
        The attention graph.
    train_perturbations_, valid_perturbations_ : list of str
    history_ : skorch History
        Per epoch: ``train_loss``, ``valid_loss``, ``cells_per_s``, ``peak_rss_gb``, ``dur``.
    precision_ : str
        The resolved precision.
    residual_scale_ : float
        Factor in [0, 1] applied to the learned residual at prediction, fitted
        by least squares on whole pseudobulks of the out-of-fold perturbations
        and corrected for the networks' average (``crossfit >= 2``), or of the
        validation perturbations (1.0 without them).
    crossfit_folds_ : list of list of str
        The perturbations each cross-fitted network was validated on (empty
        for a single network).

    See Also
    --------
    sktx.graph.build_gene_graph : the attention graph.

    Examples
    --------
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx.regressor import PerturbationRegressor
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> model = PerturbationRegressor(max_epochs=2, set_size=16, random_state=0).fit(adata)
    >>> query = adata[adata.obs["target_gene"] == "non-targeting"].copy()
    >>> query.obs["target_gene"] = adata.obs["target_gene"].cat.categories[0]
    >>> model.predict(query).shape == (query.n_obs, 40)
    True
    """

    _constraints: ClassVar[dict] = _CONSTRAINTS

    def __init__(
        self,
        module=GeneTokenModel,
        criterion=SetLoss,
        optimizer=torch.optim.AdamW,
        *,
        perturbation_key: str = "target_gene",
        control_label: str = "non-targeting",
        cell_type_key: str | None = None,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        n_neighbors: int = 16,
        max_tokens: int | None = 2048,
        gene_sets=None,
        set_size: int = 64,
        max_epochs: int = 20,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        batch_size: int = 8,
        precision: str = "auto",
        gradient_checkpointing: bool = False,
        attention: str = "sparse",
        distributional_loss: float = 0.0,
        crossfit: int = 3,
        residual_shrinkage: str = "global",
        start: str = "shrunk",
        validation_fraction: float = 0.1,
        basal: str = "fitted",
        early_stopping: bool | str = "auto",
        n_iter_no_change: int = 5,
        layer: str | None = None,
        n_jobs: int | None = None,
        on_unknown_target: str = "warn",
        device: str = "cpu",
        random_state=None,
        verbose: int = 0,
        warm_start: bool = False,
        callbacks=None,
        **kwargs,
    ):
        kwargs.setdefault("train_split", None)
        super().__init__(
            module,
            criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            warm_start=warm_start,
            verbose=verbose,
            device=device,
            **kwargs,
        )
        self.perturbation_key = perturbation_key
        self.control_label = control_label
        self.cell_type_key = cell_type_key
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_neighbors = n_neighbors
        self.max_tokens = max_tokens
        self.gene_sets = gene_sets
        self.set_size = set_size
        self.weight_decay = weight_decay
        self.precision = precision
        self.gradient_checkpointing = gradient_checkpointing
        self.attention = attention
        self.distributional_loss = distributional_loss
        self.crossfit = crossfit
        self.residual_shrinkage = residual_shrinkage
        self.start = start
        self.validation_fraction = validation_fraction
        self.basal = basal
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.layer = layer
        self.n_jobs = n_jobs
        self.on_unknown_target = on_unknown_target
        self.random_state = random_state

    def get_default_callbacks(self):
        callbacks = list(super().get_default_callbacks())
        # always there, idle with early_stopping=False (read when training starts)
        callbacks.append(("early_stopping", _EarlyStopping()))
        from sktx.callbacks import TrainingProgress

        # bars in terminals and notebooks (not in logs or CI); `callbacks__progress=None` drops it
        callbacks.append(("progress", TrainingProgress()))
        return callbacks

    def initialize_module(self):
        kwargs = {
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_features": N_FEATURES,
            "attention": self.attention,
            "gradient_checkpointing": self.gradient_checkpointing,
        }
        kwargs.update(self.get_params_for("module"))
        self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def initialize_criterion(self):
        kwargs = {"distributional": self.distributional_loss}
        kwargs.update(self.get_params_for("criterion"))
        self.criterion_ = self.initialized_instance(self.criterion, kwargs)
        return self

    def initialize_optimizer(self, triggered_directly=None):
        args, kwargs = self.get_params_for_optimizer("optimizer", self.get_all_learnable_params())
        kwargs.setdefault("weight_decay", self.weight_decay)
        if self.optimizer in (torch.optim.AdamW, torch.optim.Adam):
            # fused kernels: ~7x faster steps over the 4M-row hashed embedding table on CPU
            kwargs.setdefault("fused", True)
        self.optimizer_ = self.optimizer(*args, **kwargs)
        return self

    def _autocast(self):
        prec = getattr(self, "precision_", None) or self._resolve_precision()
        if prec == "32":
            return nullcontext()
        dtype = torch.bfloat16 if prec == "bf16" else torch.float16
        return torch.autocast(device_type=self._device().type, dtype=dtype)

    def infer(self, x, **fit_params):
        with self._autocast():
            return super().infer(x, **fit_params)

    def _device(self) -> torch.device:
        """Device the batches and gene tensors are placed on."""
        return torch.device(self.device)

    @property
    def _bare_module(self) -> GeneTokenModel:
        """The ``GeneTokenModel`` itself, without any data-parallel wrapper."""
        return self.module_

    def _shard(self) -> tuple[int, int]:
        """``(index, count)``: this process trains on sets ``index::count`` of each epoch."""
        return 0, 1

    def _reduce_loss(self, loss: torch.Tensor) -> float:
        """The batch loss recorded in ``history`` (the mean over processes when sharded)."""
        return loss.item()

    def _resolve_precision(self) -> str:
        if self.precision not in _PRECISIONS:
            raise ValueError(f"`precision` must be one of {_PRECISIONS}, got {self.precision!r}.")
        dev = self._device().type
        if self.precision != "auto":
            if self.precision == "16" and dev == "cpu":
                return "bf16"  # fp16 autocast on CPU is slow and unscaled; bf16 is the CPU path
            return self.precision
        if dev == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "16"
        # bf16 is ~2x slower where the CPU only emulates it (AVX2) and faster where it
        # is native (avx512_bf16/AMX): measured once per process
        return cpu_autocast_precision() if dev == "cpu" else "32"

    def _check_params(self):
        check_params(self)  # one value at a time (_CONSTRAINTS); combinations below
        if self.early_stopping is True and self.validation_fraction == 0 and self.crossfit < 2:
            raise ValueError(
                "`early_stopping=True` needs held-out perturbations: set `crossfit` >= 2, "
                "`validation_fraction` > 0 (e.g. 0.1) or `early_stopping='auto'`."
            )
        cores = os.cpu_count() or 1
        jobs = self.n_jobs
        if isinstance(jobs, (int, np.integer)) and not isinstance(jobs, bool) and jobs > cores:
            # threads beyond the cores only slow torch down, and a huge count crashes it
            raise ValueError(
                f"`n_jobs`={jobs} is more than the {cores} CPU cores of this machine; use "
                f"`n_jobs=-1` (all cores) or at most {cores}."
            )
        self._resolve_precision()

    def _prepare(self, X, *, require_control: bool):
        """The one entry of data: an AnnData is checked and normalised once per call."""
        return prepare(
            X,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
            layer=self.layer,
            require_control=require_control,
        )

    def fit(self, X, y=None, **fit_params):
        """Fit on an AnnData of control and perturbed cells.

        Parameters
        ----------
        X : AnnData
            Cells x genes, raw counts or log1p, with ``obs[perturbation_key]``.
            May be backed (``anndata.read_h5ad(path, backed="r")``, CSR or
            dense ``X``): rows are then read from disk per minibatch and per
            chunk, and the fit equals the in-memory one (see docs/scaling.md).
        y : None
            Ignored (the targets are the perturbed cells in ``X``).

        Returns
        -------
        self
        """
        self._check_params()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))
        with torch.random.fork_rng(devices=[]), _threads(self.n_jobs):
            torch.manual_seed(seed)
            return self._fit(X, rng, warm=self.warm_start, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training on ``X`` (an AnnData), keeping the current weights.

        Like ``fit`` with ``warm_start=True``; the gene panel may differ from
        the previous call. Returns ``self``.
        """
        if isinstance(X, _Sets):  # skorch's own call from `_fit`
            return super().partial_fit(X, y, classes=classes, **fit_params)
        self._check_params()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(2**31 - 1))
        with torch.random.fork_rng(devices=[]), _threads(self.n_jobs):
            torch.manual_seed(seed)
            return self._fit(X, rng, warm=True, **fit_params)

    def _fit(self, adata, rng, *, warm: bool, **fit_params):
        data = self._prepare(adata, require_control=True)
        # out-of-core data stay a reader: rows are read (and normalised) per minibatch
        X = data.X32
        groups = data.groups
        if not groups.labels:
            raise DataContractError(
                f"every cell is a control (`{self.control_label}`); at least one perturbation "
                f"with cells is needed in `obs[{self.perturbation_key!r}]`."
            )
        missing_ctrl = sorted(set(groups.cell_types) - set(groups.control_rows))
        if missing_ctrl:
            raise DataContractError(
                f"cell types {missing_ctrl} in `obs[{self.cell_type_key!r}]` have perturbed "
                f"cells but no `{self.control_label}` cells; add controls or drop those cells."
            )
        perts = sorted(set(groups.labels))
        n_folds = min(self.crossfit, len(perts))
        folds = crossfit_folds(perts, n_folds, rng) if n_folds >= 2 else None
        n_val = round(self.validation_fraction * len(perts)) if folds is None else 0
        n_val = min(n_val, len(perts) - 1)
        val_perts = set(rng.permutation(perts)[:n_val].tolist()) if n_val > 0 else set()
        train_ids = [i for i, lab in enumerate(groups.labels) if lab not in val_perts]
        val_ids = [i for i, lab in enumerate(groups.labels) if lab in val_perts]
        state, graph = build_state(
            X,
            data,
            groups,
            train_ids,
            rng,
            n_neighbors=self.n_neighbors,
            gene_sets=self.gene_sets,
            max_tokens=self.max_tokens,
            start=self.start,
        )
        self.precision_ = self._resolve_precision()
        previous = getattr(self, "fitted_state_", None) if warm else None
        if not warm or not self.initialized_:
            self.initialize()
        core = self._bare_module
        core.gradient_checkpointing = self.gradient_checkpointing
        for block in core.blocks:
            block.attn.mode = self.attention
        self.fitted_state_ = state
        self._set_gene_tensors_(state)
        self.scaler_ = torch.amp.GradScaler(self._device().type, enabled=self.precision_ == "16")
        self.genes_ = state.genes
        self.feature_names_in_ = np.asarray(state.genes, dtype=object)
        self.n_features_in_ = len(state.genes)
        self.graph_ = graph
        self.train_perturbations_ = sorted({groups.labels[i] for i in train_ids})
        self.valid_perturbations_ = sorted(val_perts)
        self.crossfit_folds_ = [sorted(f) for f in folds] if folds else []

        with_cells = self.distributional_loss > 0
        self._group_inputs_ = [
            self._group_inputs(lab, ct, state)
            for lab, ct in zip(groups.labels, groups.cell_types, strict=True)
        ]
        sampler = dict(
            set_size=self.set_size,
            batch_size=self.batch_size,
            with_cells=with_cells,
            shard=self._shard(),
        )
        train = SetSampler(X, groups, train_ids, rng=rng, **sampler)
        valid = None
        if val_ids:
            vrng = np.random.RandomState(rng.randint(2**31 - 1))
            # every process scores all validation sets (few, and no padding duplicates),
            # so early stopping and the residual scale agree with a one-process fit
            valid = SetSampler(
                X, groups, val_ids, rng=vrng, fixed=True, **{**sampler, "shard": (0, 1)}
            )
        try:
            if folds is None:
                self.partial_fit(_Sets(train, valid), **fit_params)
                state.residual_scale = self._fit_residual_scale(valid)
            else:
                state.residual_scale = self._fit_members(
                    X, groups, folds, sampler, rng, previous, fit_params
                )
        finally:
            # per-group training inputs can be large (groups x genes); not needed after
            del self._group_inputs_
        self.residual_scale_ = state.residual_scale
        return self

    def __repr__(self) -> str:
        # skorch prints the whole torch module once initialised; show what was set
        return short_repr(self)

    def predict_perturbations(self, controls, perturbations=None, **kwargs):
        """Predict ``perturbations`` from the control cells of ``controls`` (AnnData out).

        See :func:`sktx.predict_perturbations` (``n_cells=``, ``with_controls=``, ...).
        """
        from sktx._perturbations import predict_perturbations

        return predict_perturbations(self, controls, perturbations, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        # a cache of the baseline fit; rebuilt from the fitted state on demand
        state.pop("_effects_memo", None)
        return state

    # The fitted state travels with the weights in `f_params`: the module carries it
    # (as tensors, `torch.load(weights_only=True)` reads them) only while saving/loading.
    def save_params(self, f_params=None, **kwargs):
        module = self._bare_module if f_params is not None else None
        if module is not None:
            module.saved_state = self._state.to_tensors()
        try:
            return super().save_params(f_params=f_params, **kwargs)
        finally:
            if module is not None:
                module.saved_state = None

    def load_params(self, f_params=None, **kwargs):
        out = super().load_params(f_params=f_params, **kwargs)
        if f_params is not None:
            module = self._bare_module
            saved, module.saved_state = module.saved_state, None
            if saved is None:
                raise ValueError(
                    f"{f_params!s} holds weights without the fitted state of a "
                    "PerturbationRegressor (saved by another version or another model); refit."
                )
            self.fitted_state_ = FittedState.from_tensors(saved)
            self._gene_tensors_ = None
            self.genes_ = list(self.fitted_state_.genes)
            self.feature_names_in_ = np.asarray(self.genes_, dtype=object)
            self.n_features_in_ = len(self.genes_)
            self.residual_scale_ = self.fitted_state_.residual_scale
        return out

    def _get_param_names(self):
        # skorch lists every public-or-private attribute without a trailing `_`, which
        # exposes bookkeeping such as `_params_to_validate` (and AccelerateMixin's
        # `_wrapped_with_accelerator`) as parameters: `set_params` could overwrite them
        # (sklearn's `check_set_params`) and clone would pass them to `__init__`.
        # Parameters are never private; clone recomputes the rest.
        return [k for k in super()._get_param_names() if not k.startswith("_")]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
        tags.target_tags.required = False
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True  # counts or log1p; negatives are rejected
        tags.non_deterministic = self._device().type == "cuda"
        return tags
