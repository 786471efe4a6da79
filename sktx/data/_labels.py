"""Canonical perturbation labels: one spelling per perturbation.

``"B+A"`` and ``" A+B "`` name the same double perturbation as ``"A+B"``; sktx
groups, splits and scores on the canonical form (targets sorted, surrounding
whitespace stripped, parts equal to the control label dropped, as in GEARS'
``"A+ctrl"``). Malformed labels are refused rather than guessed.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pandas as pd

from sktx.data._errors import DataContractError
from sktx.data._errors import fmt_items as _fmt

__all__ = ["canonical_label", "canonical_labels", "canonical_obs_labels", "split_targets"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_stacklevel() -> int:
    """``stacklevel`` of the first frame outside sktx, seen from the caller of this helper."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def canonical_label(
    label: str, control_label: str = "non-targeting", *, key: str = "target_gene"
) -> str:
    """The canonical spelling of one perturbation label.

    Parameters
    ----------
    label : str
        ``"A"``, ``"A+B"`` (any order, surrounding whitespace allowed) or the control label.
    control_label : str, default="non-targeting"
        Label of control cells; a part equal to it is dropped (``"A+ctrl"`` is ``"A"``).
    key : str, default="target_gene"
        ``obs`` column the label comes from (named in error messages).

    Returns
    -------
    str
        Targets sorted and joined with ``+``; ``control_label`` for a control.

    Raises
    ------
    DataContractError
        For an empty label, an empty part (``"A+"``, ``"+B"``, ``"A++B"``) or a
        repeated target (``"A+A"``).

    Examples
    --------
    >>> canonical_label(" KLF1+CEBPA ")
    'CEBPA+KLF1'
    >>> canonical_label("CEBPA+ctrl", "ctrl")
    'CEBPA'
    """
    control = control_label.strip()
    text = label.strip()
    if text == control:
        return control
    parts = [p.strip() for p in text.split("+")]
    if not text or any(not p for p in parts):
        raise DataContractError(
            f"perturbation label {label!r} in `obs[{key!r}]` has an empty target (labels are "
            "target genes joined with `+`, e.g. 'A' or 'A+B'). Fix or drop those cells, e.g. "
            f"`adata.obs[{key!r}] = adata.obs[{key!r}].replace({{{label!r}: ...}})`."
        )
    targets = [p for p in parts if p != control]
    if not targets:
        return control
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise DataContractError(
            f"perturbation label {label!r} in `obs[{key!r}]` names target {_fmt(repeated)} "
            "more than once; a combination lists each target gene once. Fix the label (e.g. "
            f"{'+'.join(dict.fromkeys(targets))!r}) or drop those cells."
        )
    return "+".join(sorted(targets))


def split_targets(label: str, control_label: str = "non-targeting") -> list[str]:
    """Target genes of one perturbation label (``"A+B"`` -> ``["A", "B"]``).

    Examples
    --------
    >>> split_targets("CEBPA+KLF1")
    ['CEBPA', 'KLF1']
    >>> split_targets("non-targeting")
    []
    """
    if label == control_label:
        return []
    return [t for t in label.split("+") if t and t != control_label]


def canonical_labels(
    labels: np.ndarray,
    *,
    control_label: str,
    key: str,
    genes: pd.Index | None = None,
) -> np.ndarray:
    """Canonical form of every label (computed once per distinct label).

    A target that matches a gene of ``genes`` only up to case (``Sox2`` vs
    ``SOX2``) takes the gene's spelling, with a warning naming each such target.

    Parameters
    ----------
    labels : ndarray of str
        Raw labels, one per cell.
    control_label : str
        Label of control cells (itself stripped of surrounding whitespace).
    key : str
        ``obs`` column the labels come from (for messages).
    genes : Index, optional
        Gene symbols of the data, for the case-insensitive match.

    Returns
    -------
    ndarray of str
        The canonical labels, in the input's order.

    Examples
    --------
    >>> import numpy as np
    >>> canonical_labels(np.array(["B+A", "A+B", "ctrl"]), control_label="ctrl", key="p").tolist()
    ['A+B', 'A+B', 'ctrl']
    """
    uniq, inverse = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    by_case: dict[str, str] = {}
    if genes is not None:
        exact = set(genes)
        for g in genes:
            by_case.setdefault(str(g).upper(), str(g))
    recased: dict[str, str] = {}
    out = []
    for raw in uniq.tolist():
        label = canonical_label(raw, control_label, key=key)
        if by_case and label != control_label.strip():
            targets = []
            for t in label.split("+"):
                gene = by_case.get(t.upper())
                if t not in exact and gene is not None:
                    recased[t] = gene
                    t = gene
                targets.append(t)
            repeated = sorted({t for t in targets if targets.count(t) > 1})
            if repeated:
                raise DataContractError(
                    f"perturbation label {raw!r} in `obs[{key!r}]` names target {_fmt(repeated)} "
                    "more than once (spellings that differ only in case match the same gene). "
                    "Fix the label or drop those cells."
                )
            label = "+".join(sorted(targets))
        out.append(label)
    if recased:
        pairs = [f"{a!r} -> {b!r}" for a, b in sorted(recased.items())]
        warnings.warn(
            f"target(s) in `obs[{key!r}]` match a gene of `var_names` only up to case: "
            f"{', '.join(pairs[:8])}; matched to the gene. Rename the labels to silence this.",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
    return np.asarray(out, dtype=object)[inverse].astype(str)


def canonical_obs_labels(adata, *, key: str, control_label: str) -> np.ndarray:
    """Canonical labels of ``adata.obs[key]`` without the case-match warning.

    For code that only groups cells (CV folds, run summaries): the estimator that
    fits the same data warns about recased targets itself, once.
    """
    raw = adata.obs[key].astype(str).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return canonical_labels(
            raw, control_label=control_label, key=key, genes=pd.Index(adata.var_names)
        )
