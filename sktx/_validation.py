# Transitional re-exports while the data layer moves to sktx.data (removed at the end).
from sktx.data._checks import *  # noqa: F403
from sktx.data._checks import _SNIFF_ROWS, PerturbationInfo, backed_rows  # noqa: F401
from sktx.data._errors import DataContractError  # noqa: F401
from sktx.data._errors import fmt_items as _fmt  # noqa: F401
from sktx.data._normalize import log_normalize_inplace as _log_normalize_inplace  # noqa: F401
from sktx.data._values import bad_rows as _bad_rows  # noqa: F401
from sktx.data._values import check_finite_nonnegative as _check_finite_nonnegative  # noqa: F401
from sktx.data._values import check_numeric_dtype as _check_numeric_dtype  # noqa: F401
from sktx.data._labels import split_targets  # noqa: F401
