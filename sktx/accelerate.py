"""PerturbationRegressor on several devices (data parallel) and in mixed precision via accelerate.

skorch's :class:`~skorch.hf.AccelerateMixin` prepares the module, criterion and
optimizer with an :class:`accelerate.Accelerator` (DDP wrapping, device
placement, autocast, gradient scaling) and runs the backward pass through it.
:class:`~sktx.regressor.PerturbationRegressor` feeds the net with its own set
sampler rather than a DataLoader, so the pieces a DataLoader would give
accelerate are supplied here through the regressor's hooks: every process
draws the same plan of sets per epoch and trains on its own shard of it, batch
losses are averaged over processes before they enter ``history`` (so early
stopping decides the same on every process), inputs go to the accelerator's
device, and the fitted context lives on the bare (unwrapped) module.
"""

from __future__ import annotations

import warnings

import torch
from accelerate import PartialState
from accelerate.optimizer import AcceleratedOptimizer
from skorch.dataset import unpack_data
from skorch.exceptions import DeviceWarning
from skorch.hf import AccelerateMixin

from sktx.nn import GeneTokenModel
from sktx.regressor import PerturbationRegressor

__all__ = ["AcceleratedPerturbationRegressor"]


class AcceleratedPerturbationRegressor(AccelerateMixin, PerturbationRegressor):
    """:class:`~sktx.regressor.PerturbationRegressor` trained through ``accelerate``.

    Data-parallel training on several GPUs (or CPU processes), on several
    machines, and mixed precision, all configured on the
    :class:`accelerate.Accelerator` passed as ``accelerator=`` and launched
    with ``accelerate launch``. Each process draws the same sets per epoch
    (same ``random_state``) and trains on every ``num_processes``-th of them;
    DDP averages the gradients, so the parameters stay identical on all
    processes and every process predicts the same.

    Parameters
    ----------
    accelerator : accelerate.Accelerator
        Decides devices, processes and mixed precision
        (``Accelerator(mixed_precision="bf16")``).
    device : None, default=None
        Leave ``None``: the accelerator places the model and the batches.
    unwrap_after_train : bool, default=True
        Unwrap the module after ``fit`` (needed to pickle it; prediction then
        runs in float32). It is wrapped again when training resumes
        (``warm_start=True``, ``partial_fit``).
    precision : {"auto", "32"}, default="auto"
        Must stay ``"auto"`` or ``"32"``: mixed precision is the accelerator's
        job here, and asking for it in both places raises a ``ValueError``.
    random_state : int or RandomState
        Required (not ``None``) with more than one process, so that all
        processes draw the same validation split, sets and initial weights.
    **kwargs
        Every other :class:`~sktx.regressor.PerturbationRegressor` parameter.

    Attributes
    ----------
    Those of :class:`~sktx.regressor.PerturbationRegressor`. ``history_``
    holds the same ``train_loss``/``valid_loss`` on every process (batch losses
    averaged over processes); ``cells_per_s`` and ``peak_rss_gb`` are per process.

    See Also
    --------
    skorch.hf.AccelerateMixin : the skorch integration this builds on.
    sktx.regressor.PerturbationRegressor : the single-process model.

    Notes
    -----
    ``batch_size`` sets are drawn per process and step, so one optimiser step
    sees ``batch_size * num_processes`` sets and an epoch has about
    ``1 / num_processes`` as many steps; scale ``lr`` or ``batch_size`` as for
    any data-parallel run. Each shard is padded by repeating sets from the
    start of the epoch's plan, so all processes run the same number of batches.

    :func:`sklearn.base.clone` shares the accelerator (``Accelerator`` deep-copies
    to itself). Pickling (and ``copy.deepcopy``) drops it: accelerate's state
    belongs to one process. A loaded model predicts; to train it again pass
    ``set_params(accelerator=Accelerator(...))``. ``save_params`` and
    ``load_params`` must be called on every process and write on the main one.

    Examples
    --------
    >>> from accelerate import Accelerator
    >>> from sktx.accelerate import AcceleratedPerturbationRegressor
    >>> from sktx.datasets import make_perturbseq
    >>> adata = make_perturbseq(n_cells=300, n_genes=40, n_perturbations=4, random_state=0)
    >>> model = AcceleratedPerturbationRegressor(
    ...     accelerator=Accelerator(cpu=True), max_epochs=2, set_size=16, random_state=0
    ... ).fit(adata)
    >>> query = adata[adata.obs["target_gene"] == "non-targeting"].copy()
    >>> query.obs["target_gene"] = adata.obs["target_gene"].cat.categories[0]
    >>> model.predict(query).shape == (query.n_obs, 40)
    True
    """

    # ------------------------------------------------------------------ regressor hooks
    def _device(self) -> torch.device:
        if self.accelerator is not None:
            return self.accelerator.device
        module = getattr(self, "module_", None)  # unpickled: the accelerator was dropped
        return next(module.parameters()).device if module is not None else torch.device("cpu")

    @property
    def _bare_module(self) -> GeneTokenModel:
        if self.accelerator is None:
            return self.module_
        return self.accelerator.unwrap_model(self.module_)

    def _shard(self) -> tuple[int, int]:
        if self.accelerator is None:
            return 0, 1
        return self.accelerator.process_index, self.accelerator.num_processes

    def _reduce_loss(self, loss: torch.Tensor) -> float:
        return self.accelerator.reduce(loss.detach().float(), reduction="mean").item()

    def _resolve_precision(self) -> str:
        if self.precision not in ("auto", "32"):
            mp = self.accelerator.mixed_precision
            if mp != "no":
                raise ValueError(
                    f"`precision={self.precision!r}` and `Accelerator(mixed_precision={mp!r})` "
                    "both ask for mixed precision; set it on the accelerator only and leave "
                    "`precision='auto'`."
                )
            raise ValueError(
                f"`precision={self.precision!r}` is not used with accelerate; set mixed "
                "precision on the accelerator instead, e.g. "
                "`Accelerator(mixed_precision='bf16')`, and leave `precision='auto'`."
            )
        return "32"  # our own autocast stays off; the accelerator's autocast applies

    # ------------------------------------------------------------------ skorch
    def _initialize_accelerator(self):
        # accelerate wraps every module it prepares in DDP when there are several
        # processes, and DDP refuses one without trainable parameters (our loss)
        criteria = self._criteria
        self._criteria = [n for n in criteria if _trainable(getattr(self, n + "_"))]
        try:
            return super()._initialize_accelerator()
        finally:
            self._criteria = criteria

    def initialize(self):
        # `initialize` builds a fresh module and optimizer, which must be prepared
        # even if the previous ones were left wrapped (`unwrap_after_train=False`)
        self._wrapped_with_accelerator = False
        return super().initialize()

    def _initialize_callbacks(self):
        if self.callbacks__print_log__sink != "auto":
            return super()._initialize_callbacks()
        # skorch's PrintLog ignores `verbose` for any sink but `print`, and the mixin
        # would replace "auto" by `accelerator.print` for good: resolve it per call
        self.callbacks__print_log__sink = _print_on_main if self.verbose else print
        try:
            return super()._initialize_callbacks()
        finally:
            self.callbacks__print_log__sink = "auto"

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        with self.accelerator.autocast():
            y_pred = self.infer(Xi, **fit_params)
            loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        # backward outside autocast (skorch's mixin runs it inside), as torch advises:
        # the sparse attention's backward calls CSR kernels that have no bf16 version
        self.accelerator.backward(loss)
        return {"loss": loss, "y_pred": y_pred}

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        # resumed training (`warm_start=True`, `partial_fit`, ProgressiveFit phases):
        # `unwrap_after_train` unwrapped the modules, and `initialize_optimizer` (as
        # ProgressiveFit's `reset_optimizer` calls it) makes a bare optimizer
        if not self._wrapped_with_accelerator:
            for name in self._modules + self._criteria:
                module = getattr(self, name + "_")
                if _trainable(module):
                    setattr(self, name + "_", self.accelerator.prepare_model(module))
            self._wrapped_with_accelerator = True
        for name in self._optimizers:
            optimizer = getattr(self, name + "_")
            if not isinstance(optimizer, AcceleratedOptimizer):
                setattr(self, name + "_", self.accelerator.prepare_optimizer(optimizer))

    def __getstate__(self):
        state = super().__getstate__()
        # accelerate's state belongs to one process: unpickling an Accelerator elsewhere
        # overwrites that process's state and breaks every later Accelerator()
        state["accelerator"] = None
        return state

    def __setstate__(self, state):
        device = state["device"]
        with warnings.catch_warnings():
            # skorch swaps device=None for "cpu" on load, which the mixin then rejects
            warnings.simplefilter("ignore", DeviceWarning)
            super().__setstate__(state)
        self.device = device

    def fit(self, X, y=None, **fit_params):
        self._check_processes()
        return super().fit(X, y, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        self._check_processes()
        return super().partial_fit(X, y, classes=classes, **fit_params)

    def _check_processes(self) -> None:
        if self.accelerator is None:
            raise ValueError(
                "`accelerator` is None (a pickled model does not keep it). Pass one to "
                "train again: `model.set_params(accelerator=Accelerator(...))`."
            )
        if self.accelerator.num_processes > 1 and self.random_state is None:
            raise ValueError(
                f"`random_state=None` with {self.accelerator.num_processes} processes: each "
                "process would draw its own validation split and sets. Pass an integer "
                "`random_state` (the same on all processes)."
            )


def _trainable(obj) -> bool:
    return isinstance(obj, torch.nn.Module) and any(p.requires_grad for p in obj.parameters())


def _print_on_main(*args, **kwargs) -> None:
    """``print`` on the main process only; a module function, so the net still pickles."""
    PartialState().print(*args, **kwargs)
