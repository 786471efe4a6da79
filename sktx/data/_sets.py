"""Minibatches of cell sets drawn from CSR rows (the full matrix is never densified).

A training example is a *set*: ``set_size`` control cells and ``set_size``
cells of one perturbation, from the same cell type. A batch holds
``batch_size`` sets. Set means (pseudobulks) are computed as a sparse
indicator matrix times the selected CSR rows; the individual cells are only
densified when a distributional loss needs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["CellGroups", "SetBatch", "SetSampler"]


@dataclass(frozen=True)
class CellGroups:
    """Row indices of each (perturbation, cell type) group and of each cell type's controls.

    Attributes
    ----------
    labels : list of str
        Perturbation of each group.
    cell_types : list of str
        Cell type of each group.
    rows : list of ndarray
        Cell rows of each group.
    control_rows : dict of str to ndarray
        Control rows per cell type.
    """

    labels: list[str]
    cell_types: list[str]
    rows: list[np.ndarray]
    control_rows: dict[str, np.ndarray]

    @classmethod
    def from_labels(
        cls, labels: np.ndarray, is_control: np.ndarray, cell_types: np.ndarray
    ) -> CellGroups:
        """Group cells by (label, cell type); controls are kept apart per cell type."""
        ctrl = {
            str(ct): np.flatnonzero(is_control & (cell_types == ct))
            for ct in np.unique(cell_types[is_control])
        }
        pert = ~is_control
        keys = np.char.add(np.char.add(labels.astype(str), "\x1f"), cell_types.astype(str))
        uniq, inverse = np.unique(keys[pert], return_inverse=True)
        pert_rows = np.flatnonzero(pert)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        out_labels, out_cts, out_rows = [], [], []
        for i, key in enumerate(uniq):
            label, ct = str(key).split("\x1f")
            out_labels.append(label)
            out_cts.append(ct)
            out_rows.append(pert_rows[order[bounds[i] : bounds[i + 1]]])
        return cls(out_labels, out_cts, out_rows, ctrl)


@dataclass
class SetBatch:
    """One minibatch of sets.

    Attributes
    ----------
    groups : ndarray of int, shape (B,)
        Group index of each set.
    basal : ndarray (B, G)
        Mean of each set's control cells.
    target : ndarray (B, G)
        Mean of each set's perturbed cells.
    control_cells, perturbed_cells : ndarray (B, S, G) or None
        The cells themselves (only when requested).
    n_cells : int
        Perturbed cells in the batch (the unit of throughput).
    """

    groups: np.ndarray
    basal: np.ndarray
    target: np.ndarray
    control_cells: np.ndarray | None
    perturbed_cells: np.ndarray | None
    n_cells: int


class SetSampler:
    """Yield :class:`SetBatch` objects for an epoch.

    Parameters
    ----------
    X : csr_matrix or BackedRows of shape (n_cells, n_genes)
        log1p expression (float32). Only ``X[rows]`` is used, so a backed file
        (:class:`sktx.data.BackedRows`) gives the same batches while reading
        just the rows of each batch.
    groups : CellGroups
    group_ids : sequence of int
        Groups to sample from (training or validation perturbations).
    set_size : int
        Cells per set, on each side (control and perturbed).
    batch_size : int
        Sets per batch.
    with_cells : bool
        Also return the dense cells (for a distributional loss).
    rng : RandomState
    fixed : bool, default=False
        Draw the sets once and replay them every epoch (for validation, so the
        validation loss is comparable across epochs).
    shard : tuple of int, default=(0, 1)
        ``(index, count)``: yield only sets ``index::count`` of each epoch's
        plan. Every process draws the same full plan (same ``rng`` state), so
        the shards are disjoint and cover the epoch; the plan is padded by
        repeating its first sets to a multiple of ``count`` so that all
        processes run the same number of batches (as torch's
        ``DistributedSampler`` does).
    """

    def __init__(
        self,
        X,
        groups,
        group_ids,
        *,
        set_size,
        batch_size,
        with_cells,
        rng,
        fixed=False,
        shard=(0, 1),
    ):
        self.X = X
        self.groups = groups
        self.group_ids = np.asarray(group_ids, dtype=int)
        self.set_size = int(set_size)
        self.batch_size = int(batch_size)
        self.with_cells = with_cells
        self.rng = rng
        self.fixed = fixed
        index, count = (int(v) for v in shard)
        if count < 1 or not 0 <= index < count:
            raise ValueError(
                f"`shard` must be (index, count) with 0 <= index < count, got {shard!r}."
            )
        self.shard = (index, count)
        self._plan = None

    def _draw_plan(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        rng, S = self.rng, self.set_size
        sets = []
        for g in self.group_ids:
            rows = self.groups.rows[g]
            ctrl = self.groups.control_rows[self.groups.cell_types[g]]
            n_sets = max(1, round(len(rows) / S))
            for _ in range(n_sets):
                pert = rng.choice(rows, S, replace=len(rows) < S)
                base = rng.choice(ctrl, S, replace=len(ctrl) < S)
                sets.append((int(g), base, pert))
        order = rng.permutation(len(sets))
        plan = [sets[i] for i in order]
        index, count = self.shard
        if count == 1:
            return plan
        # with several shards the plan may have fewer sets than shards, so repeat it
        pad = -len(plan) % count
        plan = plan + [plan[i % len(plan)] for i in range(pad)]
        return plan[index::count]

    def n_sets(self) -> int:
        S = self.set_size
        return sum(max(1, round(len(self.groups.rows[g]) / S)) for g in self.group_ids)

    def __iter__(self) -> Iterator[SetBatch]:
        if self.fixed:
            if self._plan is None:
                self._plan = self._draw_plan()
            plan = self._plan
        else:
            plan = self._draw_plan()
        for start in range(0, len(plan), self.batch_size):
            yield self._materialise(plan[start : start + self.batch_size])

    def _materialise(self, chunk) -> SetBatch:
        B, S = len(chunk), self.set_size
        rows = np.concatenate([np.concatenate([base, pert]) for _, base, pert in chunk])
        sub = self.X[rows]
        # row r of `sub` belongs to set-side r // S (even = control, odd = perturbed)
        side = np.arange(len(rows)) // S
        indicator = sp.csr_matrix(
            (np.full(len(rows), 1.0 / S, dtype=np.float32), (side, np.arange(len(rows)))),
            shape=(2 * B, len(rows)),
        )
        means = np.asarray((indicator @ sub).toarray() if sp.issparse(sub) else indicator @ sub)
        means = means.reshape(B, 2, -1).astype(np.float32, copy=False)
        ctrl_cells = pert_cells = None
        if self.with_cells:
            dense = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
            dense = dense.reshape(B, 2, S, -1).astype(np.float32, copy=False)
            ctrl_cells, pert_cells = dense[:, 0], dense[:, 1]
        return SetBatch(
            groups=np.array([g for g, _, _ in chunk]),
            basal=means[:, 0],
            target=means[:, 1],
            control_cells=ctrl_cells,
            perturbed_cells=pert_cells,
            n_cells=B * S,
        )
