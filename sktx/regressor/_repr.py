"""A short scikit-learn-style repr for the skorch net (skorch prints the torch module)."""

from __future__ import annotations

import inspect

__all__ = ["short_repr"]


def _defaults(cls) -> dict:
    out = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            continue
        out.update({k: p.default for k, p in params.items() if p.default is not inspect._empty})
    return out


def _short(value) -> str:
    if inspect.isclass(value) or inspect.isfunction(value):
        return value.__name__
    if isinstance(value, (list, tuple)):
        items = [
            f"{v[0]!r}: {_short(v[1])}" if isinstance(v, tuple) and len(v) == 2 else _short(v)
            for v in value
        ]
        return "[" + ", ".join(items) + "]"
    if type(value).__repr__ is object.__repr__:  # e.g. skorch callbacks: no readable repr
        return f"{type(value).__name__}()"
    return repr(value)


def short_repr(net) -> str:
    """``Name(param=value, ...)`` with the parameters that differ from their defaults.

    Examples
    --------
    >>> from sktx.regressor import PerturbationRegressor
    >>> short_repr(PerturbationRegressor(max_epochs=3, set_size=8))
    'PerturbationRegressor(max_epochs=3, set_size=8)'
    """
    defaults = _defaults(type(net))
    # PerturbationRegressor sets skorch's train_split to None (it splits by perturbation)
    defaults["train_split"] = None
    shown = []
    for key, value in net.get_params(deep=False).items():
        if key in defaults and _short(value) == _short(defaults[key]):
            continue
        shown.append(f"{key}={_short(value)}")
    return f"{type(net).__name__}({', '.join(shown)})"
