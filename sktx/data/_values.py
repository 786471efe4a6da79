"""Value checks of an expression matrix (NaN/inf, negatives, dtype), shared by the
in-memory and the backed (chunked) paths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sktx.data._errors import DataContractError
from sktx.data._errors import fmt_items as _fmt

__all__ = ["ValueStats", "bad_rows", "check_finite_nonnegative", "check_numeric_dtype"]

# Values per step of the integer scan: bounds the temporaries on 1e9 non-zeros.
_SCAN_STEP = 1 << 22


@dataclass(frozen=True)
class ValueStats:
    """What a value scan saw: the largest value and whether every value is a whole number.

    ``integer`` uses the tolerance of :func:`numpy.allclose`, as
    :func:`sktx.is_log_normalized` always has.
    """

    vmax: float
    integer: bool

    def merge(self, other: ValueStats) -> ValueStats:
        return ValueStats(max(self.vmax, other.vmax), self.integer and other.integer)


def _all_whole(data: np.ndarray) -> bool:
    for start in range(0, data.size, _SCAN_STEP):
        part = data[start : start + _SCAN_STEP]
        if not np.allclose(part, np.round(part)):
            return False
    return True


def check_numeric_dtype(dtype, where: str) -> None:
    if not np.issubdtype(dtype, np.number):
        raise DataContractError(f"{where} has non-numeric dtype {dtype}; expected floats.")


def check_finite_nonnegative(X, where: str, obs_names: Sequence[str]) -> ValueStats:
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size == 0:
        return ValueStats(0.0, True)
    check_numeric_dtype(data.dtype, where)
    finite = np.isfinite(data)
    if not finite.all():
        rows = bad_rows(X, ~finite)
        raise DataContractError(
            f"{where} contains {int((~finite).sum())} NaN/inf values in {len(rows)} cells "
            f"(e.g. {_fmt([obs_names[i] for i in rows[:5]])}). Remove those cells "
            "(`adata = adata[mask].copy()`) or impute before fitting."
        )
    vmin = data.min()
    if vmin < 0:
        rows = bad_rows(X, data < 0)
        raise DataContractError(
            f"{where} contains negative values (min {float(vmin):.4g}) in {len(rows)} cells "
            f"(e.g. {_fmt([obs_names[i] for i in rows[:5]])}). sktx expects raw counts or "
            "log1p-normalised expression; scaled/centred data (e.g. after `sc.pp.scale`) "
            "cannot be used. Pass the unscaled matrix (e.g. a `layer=` holding log1p values)."
        )
    return ValueStats(float(data.max()), _all_whole(data))


def bad_rows(X, mask: np.ndarray) -> np.ndarray:
    if sp.issparse(X):
        csr = sp.csr_matrix(X)
        row_of = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        return np.unique(row_of[mask])
    return np.unique(np.nonzero(mask)[0])
