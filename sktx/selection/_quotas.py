"""Quota schedules: how many genes of each category a selection of ``n`` genes takes."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from sktx._params import Integer, check_value

__all__ = ["QUOTA_KEYS", "default_quotas"]

#: Selection categories in priority order (earlier = placed earlier in a block).
QUOTA_KEYS: tuple[str, ...] = (
    "targets",
    "tf",
    "pluripotency",
    "cell_cycle",
    "metabolic",
    "responsive",
    "hvg",
)
_HVG_FLAVORS = ("auto", "seurat", "seurat_v3", "cell_ranger")

# The default schedule: cumulative genes per category at anchor sizes of the
# first block. The first 100 genes are the "essential" ones (targets, TFs,
# pluripotency), the next 100 add cell-cycle and metabolic regulators and the
# first responsive genes, the rest of the block responsive genes and HVGs. At
# 500 genes the curated counts are those of the seed design (46 TF, 40 cell
# cycle, 32 metabolic, 22 pluripotency). Every further block of 500 repeats
# the 500-gene composition, so quotas scale linearly with `n_genes`.
_BLOCK = 500
_DEFAULT_ANCHORS: tuple[tuple[int, dict[str, int]], ...] = (
    (100, {"targets": 34, "tf": 44, "pluripotency": 22}),
    (
        200,
        {
            "targets": 40,
            "tf": 46,
            "pluripotency": 22,
            "cell_cycle": 40,
            "metabolic": 32,
            "responsive": 20,
        },
    ),
    (
        _BLOCK,
        {
            "targets": 40,
            "tf": 46,
            "pluripotency": 22,
            "cell_cycle": 40,
            "metabolic": 32,
            "responsive": 100,
            "hvg": 220,
        },
    ),
)
# scanpy's default number of HVGs for seurat_v3; only the scores are used.
_V3_TOP = 2000


def _segment(start: float, length: float, counts: Mapping[str, int]) -> list[tuple[float, int]]:
    """Slots of one schedule segment, spread evenly (stride scheduling).

    The ``i``-th slot of category ``c`` sits at ``start + (i + a_c) * length /
    counts[c]`` with an offset ``a_c`` in (0, 1) that grows with priority
    rank; exactly ``counts[c]`` slots of ``c`` fall inside the segment.
    """
    slots = []
    for p, cat in enumerate(QUOTA_KEYS):
        n = counts.get(cat, 0)
        offset = (p + 1) / (len(QUOTA_KEYS) + 1)
        slots.extend((start + (i + offset) * length / n, p) for i in range(n))
    return slots


def _default_slots(n_total: int) -> list[int]:
    slots: list[tuple[float, int]] = []
    prev_n, prev = 0, dict.fromkeys(QUOTA_KEYS, 0)
    for n, counts in _DEFAULT_ANCHORS:
        diff = {c: counts.get(c, 0) - prev[c] for c in QUOTA_KEYS}
        slots.extend(_segment(prev_n, n - prev_n, diff))
        prev_n, prev = n, {c: counts.get(c, 0) for c in QUOTA_KEYS}
    block = _DEFAULT_ANCHORS[-1][1]
    while prev_n < n_total:
        slots.extend(_segment(prev_n, _BLOCK, block))
        prev_n += _BLOCK
    return [p for _, p in sorted(slots)][:n_total]


def _share_slots(shares: Mapping[str, float], n_total: int) -> list[int]:
    slots: list[tuple[float, int]] = []
    for p, cat in enumerate(QUOTA_KEYS):
        share = shares.get(cat, 0.0)
        if share <= 0:
            continue
        offset = (p + 1) / (len(QUOTA_KEYS) + 1)
        n = math.ceil(share * n_total) + 1
        slots.extend(((i + offset) / share, p) for i in range(n))
    return [p for _, p in sorted(slots)][:n_total]


def _slot_counts(slots: list[int], n: int) -> dict[str, int]:
    counts = np.bincount(np.asarray(slots[:n], dtype=int), minlength=len(QUOTA_KEYS))
    return {cat: int(k) for cat, k in zip(QUOTA_KEYS, counts, strict=True)}


def default_quotas(n_genes: int = 500) -> dict[str, int]:
    """Genes per category that the default schedule reserves at ``n_genes``.

    Parameters
    ----------
    n_genes : int, default=500
        Selection size.

    Returns
    -------
    dict of str to int
        Keys are :data:`QUOTA_KEYS`; values sum to ``n_genes``. Quotas a
        dataset cannot fill (e.g. few targets measured) spill to ``hvg`` when
        fitting.

    Examples
    --------
    >>> q = default_quotas(500)
    >>> q["tf"], q["cell_cycle"], q["metabolic"], q["pluripotency"]
    (46, 40, 32, 22)
    >>> default_quotas(100)["tf"]
    44
    """
    n_genes = _check_n_genes(n_genes)
    return _slot_counts(_default_slots(n_genes), n_genes)


def _check_n_genes(n_genes) -> int:
    return int(check_value("n_genes", n_genes, Integer(low=1)))


def _shares_from_quotas(quotas, n_genes: int) -> dict[str, float]:
    """Turn user quotas (counts at ``n_genes`` or fractions) into shares summing to 1."""
    if not isinstance(quotas, Mapping):
        raise TypeError(
            f"`quotas` must be a dict {{category: count}}, got {type(quotas).__name__}; "
            f"e.g. `quotas={{'tf': 100, 'cell_cycle': 40}}`. Categories: {list(QUOTA_KEYS)}."
        )
    unknown = [k for k in quotas if k not in QUOTA_KEYS]
    if unknown:
        raise ValueError(f"unknown `quotas` keys {unknown}; known categories: {list(QUOTA_KEYS)}.")
    shares = {}
    for cat, value in quotas.items():
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
            shares[cat] = int(value) / n_genes
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1:
            shares[cat] = float(value)
        else:
            raise ValueError(
                f"`quotas[{cat!r}]` must be a non-negative integer (genes at `n_genes`) or a "
                f"fraction in [0, 1], got {value!r}."
            )
    total = sum(shares.values())
    if total > 1 + 1e-9:
        raise ValueError(
            f"`quotas` ask for {round(total * n_genes)} genes but `n_genes={n_genes}`; lower "
            "the quotas or raise `n_genes`."
        )
    shares["hvg"] = shares.get("hvg", 0.0) + max(0.0, 1.0 - total)
    return shares
