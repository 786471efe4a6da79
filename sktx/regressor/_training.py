"""The training loop: set minibatches, mixed precision steps, early stopping."""

from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from copy import deepcopy

import numpy as np
import torch
from skorch.callbacks import EarlyStopping
from skorch.dataset import unpack_data

__all__ = ["TrainingMixin"]


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class TrainingMixin:
    """skorch's ``fit_loop`` over :class:`~sktx.data.SetSampler` batches, and its steps."""

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

    def _batch(self, sb, groups):
        state = self._state
        Xi = self._module_inputs([self._group_inputs_[g] for g in sb.groups], sb.basal, state)
        dev = self._device()
        # the set's controls are a sample of the fitted ones: tell the network how far
        # their mean is from the fitted mean (0 at prediction), so it need not learn
        # every gene's control level to undo that noise (docs/model.md, "The basal shift")
        ct_row = {c: i for i, c in enumerate(state.cell_types)}
        ref = state.ctrl_means[[ct_row[groups.cell_types[g]] for g in sb.groups]]
        Xi["basal_shift"] = torch.as_tensor(ref - sb.basal, device=dev)
        yi = {"basal": Xi["basal"], "target": torch.as_tensor(sb.target, device=dev)}
        if sb.control_cells is not None:
            yi["control_cells"] = torch.as_tensor(sb.control_cells, device=dev)
            yi["nonzero_level"] = self._gene_tensors_["nonzero_level"]
            yi["perturbed_cells"] = torch.as_tensor(sb.perturbed_cells, device=dev)
        return Xi, yi

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        fit_params.pop("_routing_method", None)
        self.check_training_readiness()
        _pad_moments(self.optimizer_)
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
                    batch = self._batch(sb, sampler.groups)
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


def _pad_moments(optimizer) -> None:
    """Zero-pad optimizer moments saved for a narrower weight to the weight's shape.

    A model saved before the basal shift input has a 2-column first value layer
    (the module pads the weight on load); its Adam moments keep 2 columns. A
    zero moment for the new column is what a fresh optimizer would hold.
    """
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    for group in optimizer.param_groups:
        for p in group["params"]:
            for k, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.ndim == p.ndim == 2 and v.shape[0] == p.shape[0]:
                    if v.shape[1] < p.shape[1]:
                        pad = v.new_zeros(v.shape[0], p.shape[1] - v.shape[1])
                        optimizer.state[p][k] = torch.cat([v, pad], dim=1)


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


class _EarlyStopping(EarlyStopping):
    """skorch ``EarlyStopping`` on ``valid_loss`` that restores the best weights.

    Reads ``early_stopping`` and its patience (``n_iter_no_change``) from the
    net when training starts (so ``set_params`` takes effect without
    re-initialising), stays idle with ``early_stopping=False`` and in fits
    without a validation split (``validation_fraction=0``, or a
    single training perturbation), and keeps the weights of the bare model
    (``net._bare_module``): under accelerate the module may be wrapped in DDP
    while training and unwrapped when training ends.
    """

    def __init__(self) -> None:
        super().__init__(monitor="valid_loss", load_best=True)
        self.active_ = True

    def on_train_begin(self, net, **kwargs):
        self.patience = net.n_iter_no_change
        # read here, not when callbacks are built, so `set_params(early_stopping=...)`
        # between warm-started fits (ProgressiveFit's "auto" phases) takes effect
        self.active_ = net.early_stopping is not False
        super().on_train_begin(net, **kwargs)

    def on_epoch_end(self, net, **kwargs):
        if not self.active_ or "valid_loss" not in net.history[-1]:
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
            self.active_
            and len(net.history)  # max_epochs=0 trains nothing
            and self.best_model_weights_ is not None
            and self.best_epoch_ != net.history[-1, "epoch"]
        ):
            net._bare_module.load_state_dict(self.best_model_weights_)


class _Sets:
    """Training and validation samplers handed through skorch's ``partial_fit``."""

    def __init__(self, train, valid):
        self.train = train
        self.valid = valid
