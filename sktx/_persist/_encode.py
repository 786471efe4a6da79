"""Estimators to a JSON tree plus tensors (the writing half of sktx model files)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import scipy.sparse as sp

from sktx._persist._classes import _SKORCH_REBUILT, _TORCH_DTYPES, _allowed, _name


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}
        self.dropped: list[str] = []

    def ref(self, value: Any) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = value
        return key

    def array(self, arr: np.ndarray, where: str) -> dict:
        import torch

        kind = arr.dtype.kind
        if kind in "biufc":
            code = arr.dtype.str[1:]
            # keep the memory order: BLAS results depend on it (bit-identical predictions)
            fortran = arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
            order = "F" if fortran else "C"
            flat = arr.reshape(-1, order=order).copy()
            if code in _TORCH_DTYPES and flat.dtype.isnative:
                data = torch.from_numpy(flat)
            else:  # dtypes torch lacks (uint16, float128, big-endian): raw bytes
                data = torch.from_numpy(np.frombuffer(flat.tobytes(), dtype=np.uint8).copy())
            return {
                "$": "ndarray",
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "order": order,
                "t": self.ref(data),
            }
        if kind in "USO":
            items = [self.value(v, f"{where}[]") for v in arr.reshape(-1).tolist()]
            return {"$": "objarray", "dtype": arr.dtype.str, "shape": list(arr.shape), "v": items}
        raise TypeError(f"cannot save {where}: arrays of dtype {arr.dtype} are not supported")

    def index(self, idx, where: str) -> dict:
        import pandas as pd

        if isinstance(idx, pd.MultiIndex):
            levels = [self.index(idx.get_level_values(i), where) for i in range(idx.nlevels)]
            return {"$": "multiindex", "levels": levels}
        return {
            "$": "index",
            "v": self.array(np.asarray(idx.to_numpy()), where),
            "name": self.value(idx.name, where),
            "dtype": str(idx.dtype),
        }

    def column(self, col, where: str) -> dict:
        import pandas as pd

        if isinstance(col.dtype, pd.CategoricalDtype):
            return {
                "$": "categorical",
                "codes": self.array(np.asarray(col.cat.codes), where),
                "categories": self.index(col.cat.categories, where),
                "ordered": bool(col.cat.ordered),
            }
        return {"$": "column", "v": self.array(col.to_numpy(), where), "dtype": str(col.dtype)}

    def estimator(self, est, where: str) -> dict:
        from skorch import NeuralNet

        cls = type(est)
        if not _allowed(cls, "estimator"):
            raise TypeError(
                f"cannot save {where}: {_name(cls)} is not an sktx estimator (a model file "
                "holds sktx estimators and scikit-learn Pipelines; pickle other objects)"
            )
        params = est.get_params(deep=False)
        node: dict[str, Any] = {"$": "estimator", "cls": _name(cls), "params": {}, "fitted": {}}
        for k, v in params.items():
            if k == "callbacks" and isinstance(est, NeuralNet) and v:
                v = [cb for cb in v if self._keep_callback(cb)]
            node["params"][k] = self.value(v, f"{where}.{k}")
        skip = set(params)
        if isinstance(est, NeuralNet) and getattr(est, "initialized_", False):
            skip |= _SKORCH_REBUILT
            node["net"] = {
                "module": self.ref(est.module_.state_dict()),
                "criterion": self.ref(est.criterion_.state_dict()),
                "optimizer": self.ref(est.optimizer_.state_dict()),
                "history": self.value(list(est.history_), f"{where}.history_"),
            }
        for k, v in vars(est).items():
            if k.endswith("_") and not k.startswith("_") and k not in skip:
                node["fitted"][k] = self.value(v, f"{where}.{k}")
        return node

    def _keep_callback(self, cb) -> bool:
        cb = cb[1] if isinstance(cb, tuple) else cb
        if isinstance(cb, type) or _allowed(type(cb), "callback"):
            return True
        self.dropped.append(_name(type(cb)))
        return False

    def value(self, v: Any, where: str) -> Any:
        import pandas as pd
        import torch
        from sklearn.base import BaseEstimator
        from skorch.callbacks import Callback
        from skorch.history import History

        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, np.generic):
            return {"$": "scalar", "dtype": v.dtype.str, "v": v.item()}
        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if sp.issparse(v):
            fmt = v.format if v.format in ("csr", "csc") else "csr"
            m = v.asformat(fmt)
            return {
                "$": "sparse",
                "format": fmt,
                "original": v.format,
                "shape": list(m.shape),
                "data": self.array(m.data, where),
                "indices": self.array(m.indices, where),
                "indptr": self.array(m.indptr, where),
                "matrix": isinstance(v, sp.spmatrix),
            }
        if isinstance(v, torch.Tensor):
            return {"$": "tensor", "t": self.ref(v.detach().cpu())}
        if isinstance(v, History):
            return {"$": "history", "v": [self.value(x, where) for x in v]}
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, (tuple, set, frozenset)):
            tag = {tuple: "tuple", set: "set", frozenset: "frozenset"}[type(v)]
            return {"$": tag, "v": [self.value(x, f"{where}[]") for x in v]}
        if isinstance(v, dict):
            keys = [self.value(k, where) for k in v]
            return {
                "$": "dict",
                "k": keys,
                "v": [self.value(x, f"{where}[{k!r}]") for k, x in v.items()],
            }
        if isinstance(v, pd.DataFrame):
            node = {"$": "frame", "index": self.index(v.index, where)}
            node["columns"] = self.index(v.columns, where)
            dtypes = set(v.dtypes)
            if len(dtypes) == 1 and isinstance(next(iter(dtypes)), np.dtype) and v.shape[1]:
                # one block, saved as one array in its memory order (bit-identical math)
                node["block"] = self.array(v.to_numpy(), where)
            else:
                node["data"] = [
                    self.column(v.iloc[:, i], f"{where}[{i}]") for i in range(v.shape[1])
                ]
            return node
        if isinstance(v, pd.Series):
            return {
                "$": "series",
                "v": self.column(v, where),
                "index": self.index(v.index, where),
                "name": self.value(v.name, where),
            }
        if isinstance(v, pd.Index):
            return self.index(v, where)
        if isinstance(v, type):
            if not _allowed(v, "type") and not _allowed(v, "estimator"):
                raise TypeError(f"cannot save {where}: the class {_name(v)} is not allowed")
            return {"$": "type", "name": _name(v)}
        if isinstance(v, BaseEstimator):
            return self.estimator(v, where)
        if isinstance(v, Callback):
            if not _allowed(type(v), "callback"):
                raise TypeError(f"cannot save {where}: callback {_name(type(v))} is not sktx's")
            # skorch lists every attribute without a trailing `_`: keep the constructor's
            init = inspect.signature(type(v).__init__).parameters
            params = {k: p for k, p in v.get_params(deep=False).items() if k in init}
            return {"$": "callback", "cls": _name(type(v)), "params": self.value(params, where)}
        if dataclasses.is_dataclass(v) and _allowed(type(v), "dataclass"):
            fields = {
                f.name: self.value(getattr(v, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(v)
                if f.init
            }
            return {"$": "dataclass", "cls": _name(type(v)), "fields": fields}
        if isinstance(v, np.random.RandomState):
            return {"$": "randomstate", "state": self.value(v.get_state(), where)}
        if isinstance(v, torch.amp.GradScaler):
            return {
                "$": "gradscaler",
                "device": str(v._device),
                "enabled": bool(v.is_enabled()),
                "state": self.ref(v.state_dict()),
            }
        raise TypeError(
            f"cannot save {where}: a {type(v).__module__}.{type(v).__qualname__} is not plain "
            "data (model files hold estimators, arrays, frames, tensors and plain values)"
        )
