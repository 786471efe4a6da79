"""One parameter-validation mechanism for every sktx estimator.

An estimator declares what each constructor parameter may be, once, as a class
attribute ``_constraints = {name: constraint}``, and calls
:func:`check_params` at the start of ``fit`` (scikit-learn's rule: the
constructor only stores). Every refusal has the same form::

    `n_genes` must be a positive integer, got 0.

Constraints that depend on several parameters at once stay in the estimator,
after this check.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Integer", "Options", "Real", "check_params", "check_value", "describe"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Integer:
    """An integer ``>= low`` (and ``<= high`` when given); ``none_ok`` also admits None."""

    low: int | None = None
    high: int | None = None
    none_ok: bool = False

    def accepts(self, value) -> bool:
        if value is None:
            return self.none_ok
        return (
            _is_int(value)
            and (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
        )

    def describe(self) -> str:
        if self.high is not None:
            text = f"an integer in [{self.low}, {self.high}]"
        elif self.low == 0:
            text = "a non-negative integer"
        elif self.low == 1:
            text = "a positive integer"
        elif self.low is None:
            text = "an integer"
        else:
            text = f"an integer >= {self.low}"
        return f"None or {text}" if self.none_ok else text


@dataclass(frozen=True)
class Real:
    """A number in an interval; ``closed`` says which ends belong to it."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def accepts(self, value) -> bool:
        if not _is_real(value) or value != value:  # NaN is never a valid setting
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        return not (
            self.high is not None and (value > self.high or (value == self.high and not right))
        )

    def describe(self) -> str:
        if self.high is None:
            op = ">=" if self.closed in ("both", "left") else ">"
            return f"a number {op} {self.low}"
        if self.low is None:
            op = "<=" if self.closed in ("both", "right") else "<"
            return f"a number {op} {self.high}"
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        return f"a number in {lb}{self.low}, {self.high}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, booleans, None)."""

    values: tuple

    def __init__(self, *values) -> None:
        object.__setattr__(self, "values", values)

    def accepts(self, value) -> bool:
        # `True == 1` in Python: compare types too, so 1 is not accepted for True
        return any(value is v or (type(value) is type(v) and value == v) for v in self.values)

    def describe(self) -> str:
        names = [repr(v) for v in self.values]
        if len(names) == 1:
            return names[0]
        return ", ".join(names[:-1]) + " or " + names[-1]


Constraint = Integer | Real | Options


def describe(constraint: Constraint | tuple) -> str:
    """Words for a constraint (a tuple means any of its members)."""
    if isinstance(constraint, tuple):
        return " or ".join(c.describe() for c in constraint)
    return constraint.describe()


def _accepts(constraint, value) -> bool:
    if isinstance(constraint, tuple):
        return any(c.accepts(value) for c in constraint)
    return constraint.accepts(value)


def check_value(name: str, value, constraint: Constraint | tuple):
    """Refuse ``value`` of parameter ``name`` unless ``constraint`` accepts it; return it.

    Examples
    --------
    >>> check_value("n_genes", 5, Integer(low=1))
    5
    """
    if not _accepts(constraint, value):
        raise ValueError(f"`{name}` must be {describe(constraint)}, got {value!r}.")
    return value


def check_params(estimator, constraints: Mapping[str, Constraint | tuple] | None = None) -> None:
    """Refuse the first parameter of ``estimator`` that breaks its constraint.

    Parameters
    ----------
    estimator : object
        Reads ``getattr(estimator, name)`` for each constrained name.
    constraints : mapping, optional
        ``{name: constraint}``; default ``estimator._constraints``. A tuple of
        constraints accepts a value any of them accepts.

    Raises
    ------
    ValueError
        ```name` must be <what>, got <value>.``

    Examples
    --------
    >>> class Model:
    ...     _constraints = {"n_genes": Integer(low=1), "mode": Options("fast", "exact")}
    ...     def __init__(self, n_genes=10, mode="fast"):
    ...         self.n_genes, self.mode = n_genes, mode
    >>> check_params(Model())
    >>> check_params(Model(n_genes=0))
    Traceback (most recent call last):
    ...
    ValueError: `n_genes` must be a positive integer, got 0.
    """
    if constraints is None:
        constraints = getattr(type(estimator), "_constraints", {})
    for name, constraint in constraints.items():
        check_value(name, getattr(estimator, name), constraint)
