"""The error every data-contract check raises, and how messages list offending values."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DataContractError", "fmt_items"]


class DataContractError(ValueError):
    """Raised when an AnnData does not follow the sktx data contract.

    Subclasses :class:`ValueError` so ``except ValueError`` keeps working and
    scikit-learn's error handling (e.g. ``error_score`` in searches) sees it.
    """


def fmt_items(items: Iterable[object], limit: int = 8) -> str:
    """```a`, `b` (+3 more)``: the first ``limit`` items in backticks, for messages."""
    items = list(items)
    shown = ", ".join(f"`{x}`" for x in items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return shown + more
