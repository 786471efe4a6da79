"""PerturbationRegressor: a skorch net that predicts single-cell responses to perturbations."""

from __future__ import annotations

import os
import resource
import time
import warnings
from contextlib import contextmanager, nullcontext
from copy import deepcopy

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.utils import RegressorTags, check_random_state
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping
from skorch.dataset import unpack_data

from sktx._backed import backed_rows, is_backed
from sktx._data import CellGroups, SetSampler
from sktx._effects import fit_by_cell_type
from sktx._pseudobulk import nonzero_level
from sktx._validation import (
    DataContractError,
    get_matrix,
    is_log_normalized,
    log_normalize,
    split_targets,
    validate_adata,
)
from sktx.graph import (
    build_gene_graph,
    gene_set_embedding,
    hash_genes,
    pca_gene_loadings,
    prior_gene_sets,
)
from sktx.nn import GeneTokenModel, SetLoss, predict_cells

__all__ = ["PerturbationRegressor"]

_N_PCA = 16
_N_PRIOR = 32
N_FEATURES = _N_PCA + _N_PRIOR + 2
_PRECISIONS = ("auto", "32", "bf16", "16")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class PerturbationRegressor(NeuralNet):
    """Gene-token network with sparse attention that predicts perturbed single cells.

    Each gene is a token (hashed symbol embedding + gene features + basal
    expression + a target flag); tokens attend to ``n_neighbors`` neighbours
    on a gene graph (shared gene sets + co-expression). The network runs once
    per *set* of cells and predicts a per-gene change that is added, as a
    residual, to a baseline: additive per-target effects fitted jointly on all
    training singles and combinations (``AdditiveBaseline(effects="joint")``;
    an unseen single gets the typical target effect, ``A+B`` the sum of its
    targets' effects, learned from combinations too). The residual head
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
        Autocast dtype. ``"auto"``: float32 on CPU (bf16 autocast was measured
        slower for this model on CPU), bf16 on CUDA when supported, else fp16
        with gradient scaling. ``"bf16"`` on CPU autocasts to bfloat16; ``"16"``
        is fp16 + ``GradScaler`` on CUDA (bf16 on CPU). Sparse attention always
        runs in float32 (there are no low-precision CSR kernels).
    gradient_checkpointing : bool, default=False
        Recompute attention blocks in backward to save memory.
    attention : {"sparse", "dense"}, default="sparse"
        ``"dense"`` (all genes attend to all) exists for benchmark comparison.
    distributional_loss : float, default=0.0
        Weight of an energy-distance term between predicted and observed cells;
        0 trains on the pseudobulk-delta loss alone. 1.0 lost to 0 on Datlinger
        2017 Jurkat (3-fold VCC 0.193 vs 0.268, ``benchmarks/bench_tuning.py``).
    validation_fraction : float, default=0.1
        Fraction of perturbations held out (whole perturbations, never random
        cells) for ``valid_loss``; 0 disables validation.
    basal : {"fitted", "query"}, default="fitted"
        Control mean a prediction starts from: the mean of the fitted control
        cells of the query's cell type (the query's own mean for a cell type
        not seen in ``fit``), or the mean of the query cells of each
        perturbation. Either way the query cells supply the cell-to-cell
        variation. ``"fitted"`` removes the sampling noise of a query drawn
        from the controls; use ``"query"`` when the query cells are a
        different state (e.g. a subset or another batch) than the fitted controls.
    early_stopping : bool or "auto", default="auto"
        Stop when ``valid_loss`` has not improved for ``n_iter_no_change``
        epochs and restore the weights of the best epoch (skorch
        ``EarlyStopping(load_best=True)``). ``"auto"``: on whenever a
        validation split exists. On held-out Norman K562 perturbations the
        validation loss bottoms out after 4-7 epochs and then climbs while the
        training loss keeps falling (the network memorises the training
        perturbations), so this is on by default.
    n_iter_no_change : int, default=5
        Patience of ``early_stopping`` in epochs.
    layer : str, optional
        Read expression from this layer instead of ``X``.
    n_jobs : int, optional
        Torch CPU threads during ``fit``/``predict`` (restored afterwards);
        ``None`` keeps torch's setting. On a shared machine, or inside a
        parallel ``GridSearchCV``, ``n_jobs=1`` avoids thread oversubscription,
        which was measured here to slow training by up to 10x.
    on_unknown_target : {"error", "warn"}, default="error"
        What ``predict``/``score`` do with a target gene that has no embedding
        (not fitted, not in ``gene_sets``, never perturbed in training):
        raise, or warn and predict it from the baseline and the network's
        response to an anonymous target (useful in cross-validation).
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
        by least squares on the validation perturbations (1.0 without them).

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
        validation_fraction: float = 0.1,
        basal: str = "fitted",
        early_stopping: bool | str = "auto",
        n_iter_no_change: int = 5,
        layer: str | None = None,
        n_jobs: int | None = None,
        on_unknown_target: str = "error",
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
        self.gene_sets = gene_sets
        self.set_size = set_size
        self.weight_decay = weight_decay
        self.precision = precision
        self.gradient_checkpointing = gradient_checkpointing
        self.attention = attention
        self.distributional_loss = distributional_loss
        self.validation_fraction = validation_fraction
        self.basal = basal
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.layer = layer
        self.n_jobs = n_jobs
        self.on_unknown_target = on_unknown_target
        self.random_state = random_state

    # ------------------------------------------------------------------ skorch hooks
    def get_default_callbacks(self):
        callbacks = list(super().get_default_callbacks())
        if self.early_stopping is not False:
            callbacks.append(("early_stopping", _EarlyStopping()))
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

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        self.scaler_.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def _step_optimizer(self, step_fn):
        step_fn()
        for name in self._optimizers:
            self.scaler_.step(getattr(self, name + "_"))
        self.scaler_.update()

    def get_loss(self, y_pred, y_true, X=None, training=False):
        return self.criterion_(y_pred, y_true)

    # Hooks for multi-process training (sktx.accelerate overrides them); one process here.
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

    # ------------------------------------------------------------------ validation
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
        # Measured on a 2-core avx512_bf16 CPU: bf16 autocast made this model ~2.5x
        # slower (small matmuls; the sparse attention must run in fp32 anyway, so
        # casts dominate). "auto" therefore keeps fp32 on CPU.
        return "32"

    def _check_params(self):
        names = ("d_model", "n_layers", "n_heads", "n_neighbors", "set_size", "batch_size")
        for name in (*names, "n_iter_no_change"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        epochs = self.max_epochs
        if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
            # a negative count used to train for zero epochs silently
            raise ValueError(f"`max_epochs` must be a non-negative integer, got {epochs!r}.")
        if self.attention not in ("sparse", "dense"):
            raise ValueError(f"`attention` must be 'sparse' or 'dense', got {self.attention!r}.")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"`validation_fraction` must be in [0, 1), got {self.validation_fraction!r}."
            )
        if self.basal not in ("fitted", "query"):
            raise ValueError(f"`basal` must be 'fitted' or 'query', got {self.basal!r}.")
        if self.early_stopping not in (True, False, "auto"):
            raise ValueError(
                f"`early_stopping` must be True, False or 'auto', got {self.early_stopping!r}."
            )
        if self.early_stopping is True and self.validation_fraction == 0:
            raise ValueError(
                "`early_stopping=True` needs held-out perturbations: set "
                "`validation_fraction` > 0 (e.g. 0.1) or `early_stopping='auto'`."
            )
        if self.on_unknown_target not in ("error", "warn"):
            raise ValueError(
                f"`on_unknown_target` must be 'error' or 'warn', got {self.on_unknown_target!r}."
            )
        if self.distributional_loss < 0:
            raise ValueError("`distributional_loss` must be >= 0.")
        self._resolve_precision()

    def _read(self, adata, *, require_control: bool, stream: bool = False):
        info = validate_adata(
            adata,
            perturbation_key=self.perturbation_key,
            control_label=self.control_label,
            cell_type_key=self.cell_type_key,
            layer=self.layer,
            require_control=require_control,
        )
        if is_backed(adata):
            # out-of-core: rows are read (and normalised) when needed, see sktx/_backed.py
            X = backed_rows(adata, layer=self.layer)
            if not stream:
                X = X.to_csr()
        else:
            if self.layer is not None or not is_log_normalized(adata):
                adata = log_normalize(adata, layer=self.layer)
            X = get_matrix(adata)
            X = sp.csr_matrix(X, dtype=np.float32)
        cts = info.cell_types if info.cell_types is not None else np.full(adata.n_obs, "all")
        return adata, X, info.labels, info.is_control, cts.astype(str)

    # ------------------------------------------------------------------ fitted context
    def _features(self, symbols, ctx) -> np.ndarray:
        """Fixed-width features of any gene symbols (zero where nothing is known)."""
        out = np.zeros((len(symbols), N_FEATURES), dtype=np.float32)
        gene_row = ctx["gene_row"]
        prior_row = ctx["prior_row"]
        pca = ctx["pca"]
        prior = ctx["prior_emb"]
        for i, s in enumerate(symbols):
            g = gene_row.get(s)
            if g is not None:
                out[i, :_N_PCA] = pca[g]
                out[i, -2] = 1.0
            p = prior_row.get(s.upper())
            if p is not None:
                out[i, _N_PCA : _N_PCA + _N_PRIOR] = prior[p]
                out[i, -1] = 1.0
        return out

    def _build_context(self, X, genes, labels, is_control, cts, train_ids, groups, rng):
        pca = pca_gene_loadings(X, _N_PCA, random_state=rng.randint(2**31 - 1))
        scale = float(np.sqrt(np.mean(pca**2))) or 1.0
        graph = build_gene_graph(
            X,
            genes,
            n_neighbors=self.n_neighbors,
            gene_sets=self.gene_sets,
            loadings=pca,
            random_state=0,
        )
        sets = prior_gene_sets(self.gene_sets)
        prior_genes, prior_emb = gene_set_embedding(sets, _N_PRIOR) if sets else ([], None)
        if prior_emb is None:
            prior_emb = np.zeros((0, _N_PRIOR), dtype=np.float32)
        ctx = {
            "genes": list(genes),
            "gene_row": {g: i for i, g in enumerate(genes)},
            "prior_row": {g: i for i, g in enumerate(prior_genes)},
            "pca": pca / scale,
            # unit-norm rows -> entries of order one
            "prior_emb": prior_emb * np.sqrt(_N_PRIOR),
        }
        # pseudobulk deltas of the training perturbations, per cell type
        from sktx._pseudobulk import group_means

        ct_names = sorted(set(cts[is_control].tolist()))
        ct_code = {c: i for i, c in enumerate(ct_names)}
        codes = np.full(len(labels), -1)
        ctrl_code = np.array([ct_code.get(c, -1) for c in cts])
        codes[is_control] = ctrl_code[is_control]
        ctrl_means = group_means(X, codes, len(ct_names))
        # The baseline is fitted on every fitted perturbation, validation ones included:
        # a perturbation's own baseline is the fit without it, so validation stays
        # honest, and the effects for unseen perturbations rest on all the data.
        codes = np.full(len(labels), -1)
        for j, rows in enumerate(groups.rows):
            codes[rows] = j
        means = group_means(X, codes, len(groups.rows))
        deltas = np.stack(
            [means[j] - ctrl_means[ct_code[ct]] for j, ct in enumerate(groups.cell_types)]
        )
        ctx.update(
            cell_types=ct_names,
            ctrl_means=ctrl_means.astype(np.float32),
            nonzero_level=nonzero_level(X),
            delta_labels=list(groups.labels),
            delta_cts=list(groups.cell_types),
            deltas=deltas.astype(np.float32),
            train_targets=sorted(
                {t for i in train_ids for t in split_targets(groups.labels[i], self.control_label)}
            ),
        )
        ctx["gene_hash"] = hash_genes(genes)
        ctx["gene_feat"] = self._features(genes, ctx)
        ctx["neighbors"] = graph.neighbors
        return ctx, graph

    def _effects(self, ctx) -> dict:
        """Target effects per cell type (``None`` key: all cell types pooled), memoised."""
        memo = getattr(self, "_effects_memo", None)
        if memo is not None and memo[0] is ctx:
            return memo[1]
        out = fit_by_cell_type(
            ctx["deltas"],
            list(ctx["delta_labels"]),
            list(ctx["delta_cts"]),
            self.control_label,
            pooled=True,
        )
        self._effects_memo = (ctx, out)
        return out

    def _baseline(self, label: str, ct: str, ctx) -> np.ndarray:
        """What the residual is added to: additive target effects fitted jointly on all labels.

        Per-target effects are fitted on the pseudobulk deltas of every fitted
        single and combination (:func:`sktx._effects.fit_target_effects`), so a
        target seen only inside combinations still gets an effect. A fitted
        label gets its leave-one-label-out prediction (its own delta never
        enters its baseline, so training learns what the baseline misses on
        unseen perturbations); an unseen cell type uses all cell types pooled.
        """
        effects = self._effects(ctx)
        fx, rows = effects.get(ct, effects[None])
        if label in rows:
            return fx.loo[rows[label]].astype(np.float32)
        targets = split_targets(label, self.control_label) or [label]
        return fx.predict(targets).astype(np.float32)

    def _group_inputs(self, label: str, ct: str, ctx) -> dict:
        targets = split_targets(label, self.control_label) or [label]
        mask = np.zeros(len(ctx["genes"]), dtype=np.float32)
        for t in targets:
            g = ctx["gene_row"].get(t)
            if g is not None:
                mask[g] = 1.0
        return {
            "baseline": self._baseline(label, ct, ctx),
            "target_mask": mask,
            "pert_hash": hash_genes(targets),
            "pert_feat": self._features(targets, ctx),
        }

    def _module_inputs(self, group_inputs: list[dict], basal: np.ndarray, ctx) -> dict:
        T = max(len(g["pert_hash"]) for g in group_inputs)
        B = len(group_inputs)
        pert_hash = np.zeros((B, T, ctx["gene_hash"].shape[1]), dtype=np.int64)
        pert_feat = np.zeros((B, T, N_FEATURES), dtype=np.float32)
        pert_mask = np.zeros((B, T), dtype=np.float32)
        for b, g in enumerate(group_inputs):
            n = len(g["pert_hash"])
            pert_hash[b, :n] = g["pert_hash"]
            pert_feat[b, :n] = g["pert_feat"]
            pert_mask[b, :n] = 1.0
        dev = self._device()
        t = self._gene_tensors_
        return {
            "gene_hash": t["gene_hash"],
            "gene_feat": t["gene_feat"],
            "neighbors": t["neighbors"],
            "basal": torch.as_tensor(basal, device=dev),
            "baseline": torch.as_tensor(
                np.stack([g["baseline"] for g in group_inputs]), device=dev
            ),
            "target_mask": torch.as_tensor(
                np.stack([g["target_mask"] for g in group_inputs]), device=dev
            ),
            "pert_hash": torch.as_tensor(pert_hash, device=dev),
            "pert_feat": torch.as_tensor(pert_feat, device=dev),
            "pert_mask": torch.as_tensor(pert_mask, device=dev),
        }

    def _set_gene_tensors_(self, ctx):
        dev = self._device()
        self._gene_tensors_ = {
            "gene_hash": torch.as_tensor(ctx["gene_hash"], device=dev),
            "gene_feat": torch.as_tensor(ctx["gene_feat"], device=dev),
            "neighbors": torch.as_tensor(ctx["neighbors"], device=dev),
            # for predict_cells in the distributional loss (not a module input)
            "nonzero_level": torch.as_tensor(ctx["nonzero_level"], device=dev),
        }

    @property
    def _ctx(self) -> dict:
        ctx = getattr(self._bare_module, "fitted_context", None) if self.initialized_ else None
        if ctx is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "This PerturbationRegressor is not fitted yet; call `fit(adata)` first."
            )
        if getattr(self, "_gene_tensors_", None) is None or len(
            self._gene_tensors_["gene_hash"]
        ) != len(ctx["genes"]):
            self._set_gene_tensors_(ctx)
        return ctx

    # ------------------------------------------------------------------ fit
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
        _, X, labels, is_control, cts = self._read(adata, require_control=True, stream=True)
        groups = CellGroups.from_labels(labels, is_control, cts)
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
        n_val = round(self.validation_fraction * len(perts))
        n_val = min(n_val, len(perts) - 1)
        val_perts = set(rng.permutation(perts)[:n_val].tolist()) if n_val > 0 else set()
        train_ids = [i for i, lab in enumerate(groups.labels) if lab not in val_perts]
        val_ids = [i for i, lab in enumerate(groups.labels) if lab in val_perts]
        genes = [str(g) for g in adata.var_names]
        ctx, graph = self._build_context(X, genes, labels, is_control, cts, train_ids, groups, rng)

        self.precision_ = self._resolve_precision()
        if not warm or not self.initialized_:
            self.initialize()
        core = self._bare_module
        core.gradient_checkpointing = self.gradient_checkpointing
        for block in core.blocks:
            block.attn.mode = self.attention
        core.fitted_context = ctx
        self._set_gene_tensors_(ctx)
        self.scaler_ = torch.amp.GradScaler(self._device().type, enabled=self.precision_ == "16")
        self.genes_ = genes
        self.feature_names_in_ = np.asarray(genes, dtype=object)
        self.n_features_in_ = len(genes)
        self.graph_ = graph
        self.train_perturbations_ = sorted({groups.labels[i] for i in train_ids})
        self.valid_perturbations_ = sorted(val_perts)

        with_cells = self.distributional_loss > 0
        self._group_inputs_ = [
            self._group_inputs(lab, ct, ctx)
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
            self.partial_fit(_Sets(train, valid), **fit_params)
            ctx["residual_scale"] = self._fit_residual_scale(valid)
        finally:
            # per-group training inputs can be large (groups x genes); not needed after
            del self._group_inputs_
        self.residual_scale_ = ctx["residual_scale"]
        return self

    def _fit_residual_scale(self, valid) -> float:
        """Least-squares shrinkage in [0, 1] of the learned residual on the validation sets.

        The network's residual over the baseline generalises only partly to
        perturbations it has not seen; scaling it by
        ``<r, t - b> / <r, r>`` (r = residual, t - b = what the baseline
        misses) on the held-out validation perturbations keeps the part that
        does. Without a validation split the residual is kept as is (1.0).
        """
        if valid is None or not len(self.history):
            return 1.0
        module = self._bare_module
        module.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self._device())
        with torch.no_grad():
            for sb in valid:
                Xi, yi = self._batch(sb)
                with self._autocast():
                    d, _ = module(**Xi)
                r = d.float() - Xi["baseline"]
                miss = yi["target"] - yi["basal"] - Xi["baseline"]
                sums += torch.stack([(r * miss).sum(), (r * r).sum()]).double()
        # validation sets are not sharded: every process gets the same factor
        num, den = sums.tolist()
        return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 1.0

    def _batch(self, sb):
        ctx = self._ctx
        Xi = self._module_inputs([self._group_inputs_[g] for g in sb.groups], sb.basal, ctx)
        dev = self._device()
        yi = {"basal": Xi["basal"], "target": torch.as_tensor(sb.target, device=dev)}
        if sb.control_cells is not None:
            yi["control_cells"] = torch.as_tensor(sb.control_cells, device=dev)
            yi["nonzero_level"] = self._gene_tensors_["nonzero_level"]
            yi["perturbed_cells"] = torch.as_tensor(sb.perturbed_cells, device=dev)
        return Xi, yi

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        fit_params.pop("_routing_method", None)
        self.check_training_readiness()
        epochs = epochs if epochs is not None else self.max_epochs
        kw = {"dataset_train": X.train, "dataset_valid": X.valid}
        for _ in range(epochs):
            self.notify("on_epoch_begin", **kw)
            start, cells = time.perf_counter(), 0
            for prefix, sampler, step_fn in (
                ("train", X.train, self.train_step),
                ("valid", X.valid, self.validation_step),
            ):
                if sampler is None:
                    continue
                n_batches = 0
                for sb in sampler:
                    batch = self._batch(sb)
                    training = prefix == "train"
                    self.notify("on_batch_begin", batch=batch, training=training)
                    step = step_fn(batch, **fit_params)
                    loss = self._reduce_loss(step["loss"])
                    if not np.isfinite(loss):
                        # stop before NaN weights spread; skorch would carry on silently
                        raise FloatingPointError(
                            f"{prefix} loss is {loss} in epoch {len(self.history)} (batch "
                            f"{n_batches + 1}); training stopped. Lower `lr` (now {self.lr}), "
                            f'use precision="32" (now {self.precision!r}), or check the '
                            "input for extreme values."
                        )
                    self.history.record_batch(prefix + "_loss", loss)
                    self.history.record_batch(prefix + "_batch_size", len(sb.groups))
                    self.history.record_batch("n_cells", sb.n_cells)
                    self.notify("on_batch_end", batch=batch, training=training, **step)
                    n_batches += 1
                    if training:
                        cells += sb.n_cells
                self.history.record(prefix + "_batch_count", n_batches)
                if prefix == "train":
                    train_time = time.perf_counter() - start
            self.history.record("cells_per_s", cells / max(train_time, 1e-9))
            self.history.record("peak_rss_gb", _peak_rss_gb())
            self.notify("on_epoch_end", **kw)
        return self

    # ------------------------------------------------------------------ predict
    def _query(self, adata):
        self._check_params()
        ctx = self._ctx
        genes = ctx["genes"]
        present = set(adata.var_names)
        missing = [g for g in genes if g not in present]
        if missing:
            raise DataContractError(
                f"{len(missing)} of the {len(genes)} genes the model was fitted on are not in "
                f"`var_names` (e.g. {missing[:5]}). Pass data with the same genes (the "
                "`GeneSelector` of the same pipeline selects them)."
            )
        adata_n, X, labels, is_control, cts = self._read(adata, require_control=False)
        idx = pd.Index(adata_n.var_names).get_indexer(genes)
        X = X[:, idx]
        known = set(genes) | set(ctx["prior_row"]) | set(ctx["train_targets"])
        unknown = sorted(
            {
                t
                for lab in set(labels[~is_control].tolist())
                for t in split_targets(lab, self.control_label)
                if t not in known and t.upper() not in ctx["prior_row"]
            }
        )
        if unknown:
            msg = (
                f"no embedding for target gene(s) {unknown} in `obs[{self.perturbation_key!r}]`: "
                "they are not among the fitted genes, not in the prior gene sets and were not "
                "perturbed in training. Pass `gene_sets=` (e.g. a GO BP GMT) covering them, "
                "check the spelling, or set `on_unknown_target='warn'`."
            )
            if self.on_unknown_target != "warn":
                raise DataContractError(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)
        return X, labels, is_control, cts, ctx

    def _predict_delta(self, group_keys, basal, ctx):
        """Predicted (delta, log_scale) for groups given their basal means."""
        module = self._bare_module
        module.eval()
        deltas, scales = [], []
        with torch.no_grad(), _threads(self.n_jobs):
            for s in range(0, len(group_keys), self.batch_size):
                keys = group_keys[s : s + self.batch_size]
                inputs = [self._group_inputs(lab, ct, ctx) for lab, ct in keys]
                Xi = self._module_inputs(inputs, basal[s : s + self.batch_size], ctx)
                with self._autocast():
                    d, ls = module(**Xi)
                # shrink the learned residual by the factor fitted on validation sets
                alpha = ctx.get("residual_scale", 1.0)
                d = Xi["baseline"] + alpha * (d.float() - Xi["baseline"])
                deltas.append(d.float().cpu().numpy())
                scales.append(ls.float().cpu().numpy())
        return np.concatenate(deltas), np.concatenate(scales)

    def predict(self, X):
        """Simulate perturbed cells from control cells.

        Parameters
        ----------
        X : AnnData
            Query cells: control cells whose ``obs[perturbation_key]`` names the
            perturbation to simulate (cells labelled ``control_label`` are
            returned unchanged). Counts or log1p; must contain the fitted genes.

        Returns
        -------
        AnnData
            Same ``obs`` (copied), ``var`` = ``genes_``, ``X`` dense float32
            log1p predictions (non-negative); ``uns['log1p']`` is set.
        """
        Xq, labels, is_control, cts, ctx = self._query(X)
        groups = CellGroups.from_labels(labels, is_control, cts)
        out = Xq.toarray()
        predicted = self._predict_groups(Xq, groups, ctx)
        for rows, (cells, _) in zip(groups.rows, predicted, strict=True):
            out[rows] = cells
        result = ad.AnnData(
            X=out.astype(np.float32),
            obs=X.obs.copy(),
            var=pd.DataFrame(index=pd.Index(ctx["genes"], name=X.var_names.name)),
        )
        result.uns["log1p"] = {"base": None}
        return result

    def predict_deltas(self, adata) -> pd.DataFrame:
        """Predicted pseudobulk delta per perturbation group, vs the control mean it starts from.

        Parameters
        ----------
        adata : AnnData
            Query cells as for :meth:`predict`.

        Returns
        -------
        DataFrame
            Rows ``"label"`` (or ``"label|cell_type"`` with a cell-type key), columns genes.
        """
        Xq, labels, is_control, cts, ctx = self._query(adata)
        groups = CellGroups.from_labels(labels, is_control, cts)
        return self._group_deltas(Xq, groups, ctx)

    def _predict_groups(self, Xq, groups, ctx):
        """Yield (predicted cells, basal) per group of query rows.

        ``basal`` is the control mean the prediction is anchored to: the fitted
        control mean of the group's cell type (``basal="fitted"``; the query's
        own mean for cell types not seen in fit) or the query rows' mean.
        """
        if not groups.labels:
            return
        query_mean = _row_means(Xq, groups.rows)
        basal = query_mean.copy()
        if self.basal == "fitted":
            # the fitted controls' mean is exact; a query drawn from them (with
            # replacement when there are more perturbed cells than controls)
            # only estimates it, and that noise went straight into the MAE
            seen = {ct: i for i, ct in enumerate(ctx["cell_types"])}
            for j, ct in enumerate(groups.cell_types):
                if ct in seen:
                    basal[j] = ctx["ctrl_means"][seen[ct]]
        keys = list(zip(groups.labels, groups.cell_types, strict=True))
        delta, log_scale = self._predict_delta(keys, basal, ctx)
        for j, rows in enumerate(groups.rows):
            cells = torch.as_tensor(Xq[rows].toarray()[None])
            pred = predict_cells(
                cells,
                torch.as_tensor(query_mean[j : j + 1]),
                torch.as_tensor(basal[j : j + 1] - query_mean[j : j + 1] + delta[j : j + 1]),
                torch.as_tensor(log_scale[j : j + 1]),
                torch.as_tensor(ctx["nonzero_level"]),
            )
            yield pred[0].numpy(), basal[j]

    def _group_deltas(self, Xq, groups, ctx) -> pd.DataFrame:
        rows = [cells.mean(0) - basal for cells, basal in self._predict_groups(Xq, groups, ctx)]
        keys = zip(groups.labels, groups.cell_types, strict=True)
        index = [lab if self.cell_type_key is None else f"{lab}|{ct}" for lab, ct in keys]
        return pd.DataFrame(np.array(rows), index=index, columns=ctx["genes"])

    def score(self, X, y=None) -> float:
        """Negative mean squared error of pseudobulk deltas on the perturbed cells of ``X``.

        Each perturbation (per cell type) is predicted from the control cells
        of ``X``; its delta (mean predicted - mean control) is compared with
        the observed delta (mean perturbed - mean control). Higher is better,
        as scikit-learn scorers expect.

        Parameters
        ----------
        X : AnnData
            Control and perturbed cells.
        y : None
            Ignored.

        Returns
        -------
        float
        """
        Xq, labels, is_control, cts, ctx = self._query(X)
        truth = CellGroups.from_labels(labels, is_control, cts)
        missing = sorted(set(truth.cell_types) - set(truth.control_rows))
        if missing or not truth.labels:
            raise DataContractError(
                "`score` needs perturbed cells and control cells of the same cell type in `X`; "
                f"cell types without controls: {missing}."
            )
        # query = the controls of each cell type, relabelled with each perturbation
        q_rows = [truth.control_rows[ct] for ct in truth.cell_types]
        query = CellGroups(truth.labels, truth.cell_types, q_rows, truth.control_rows)
        pred = self._group_deltas(Xq, query, ctx).to_numpy()
        errs = []
        for j, rows in enumerate(truth.rows):
            ctrl = np.asarray(Xq[truth.control_rows[truth.cell_types[j]]].mean(0)).ravel()
            obs = np.asarray(Xq[rows].mean(0)).ravel() - ctrl
            errs.append(np.mean((pred[j] - obs) ** 2))
        return -float(np.mean(errs))

    def __getstate__(self):
        state = super().__getstate__()
        # a cache of the baseline fit; rebuilt from the fitted context on demand
        state.pop("_effects_memo", None)
        return state

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


@contextmanager
def _threads(n_jobs: int | None):
    """Temporarily set torch's intra-op threads."""
    if n_jobs is None:
        yield
        return
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"`n_jobs` must be None or a non-zero integer, got {n_jobs!r}.")
    before = torch.get_num_threads()
    n = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _row_means(X, rows_list) -> np.ndarray:
    """Mean of ``X[rows]`` for each (possibly overlapping) list of rows."""
    return np.stack([np.asarray(X[rows].mean(0)).ravel() for rows in rows_list]).astype(np.float32)


class _EarlyStopping(EarlyStopping):
    """skorch ``EarlyStopping`` on ``valid_loss`` that restores the best weights.

    Reads its patience from the net's ``n_iter_no_change`` when training
    starts (so ``set_params`` takes effect without re-initialising), stays
    idle in fits without a validation split (``validation_fraction=0``, or a
    single training perturbation), and keeps the weights of the bare model
    (``net._bare_module``): under accelerate the module may be wrapped in DDP
    while training and unwrapped when training ends.
    """

    def __init__(self) -> None:
        super().__init__(monitor="valid_loss", load_best=True)

    def on_train_begin(self, net, **kwargs):
        self.patience = net.n_iter_no_change
        super().on_train_begin(net, **kwargs)

    def on_epoch_end(self, net, **kwargs):
        if "valid_loss" not in net.history[-1]:
            return
        score = net.history[-1, self.monitor]
        if self._is_score_improved(score):
            self.misses_ = 0
            self.dynamic_threshold_ = self._calc_new_threshold(score)
            self.best_epoch_ = net.history[-1, "epoch"]
            self.best_model_weights_ = deepcopy(net._bare_module.state_dict())
        else:
            self.misses_ += 1
        if self.misses_ == self.patience:
            raise KeyboardInterrupt  # skorch's way to end training

    def on_train_end(self, net, **kwargs):
        if (
            len(net.history)  # max_epochs=0 trains nothing
            and self.best_model_weights_ is not None
            and self.best_epoch_ != net.history[-1, "epoch"]
        ):
            net._bare_module.load_state_dict(self.best_model_weights_)


class _Sets:
    """Training and validation samplers handed through skorch's ``partial_fit``."""

    def __init__(self, train, valid):
        self.train = train
        self.valid = valid
