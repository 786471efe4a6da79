"""The JSON tree plus tensors back to estimators (the reading half of sktx model files)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from sktx._persist._classes import ModelFileError, _accepted, _resolve


class _Decoder:
    def __init__(self, tensors: dict, versions: dict) -> None:
        self.tensors = tensors
        self.versions = versions
        self.notes: list[str] = []

    def tensor(self, key: str):
        if key not in self.tensors:
            raise ModelFileError(f"refers to tensor {key!r}, which the file does not hold")
        return self.tensors[key]

    def array(self, node: dict) -> np.ndarray:
        dtype = np.dtype(node["dtype"])
        shape = tuple(int(s) for s in node["shape"])
        if node["$"] == "objarray":
            items = [self.value(x) for x in node["v"]]
            out = np.empty(len(items), dtype=dtype if dtype.kind in "US" else object)
            out[:] = items
            return out.reshape(shape)
        if dtype.kind not in "biufc":
            raise ModelFileError(f"holds an array of dtype {dtype}, which is not numeric")
        data = self.tensor(node["t"]).numpy()
        if data.dtype == np.uint8 and dtype != np.uint8:
            data = np.frombuffer(data.tobytes(), dtype=dtype)
        order = "F" if node.get("order") == "F" else "C"
        return data.astype(dtype, copy=False).reshape(shape, order=order)

    def index(self, node: dict):
        import pandas as pd

        if node["$"] == "multiindex":
            return pd.MultiIndex.from_arrays([self.index(n) for n in node["levels"]])
        values = self.array(node["v"])
        return pd.Index(values, name=self.value(node["name"]), dtype=node["dtype"])

    def column(self, node: dict, index):
        import pandas as pd

        if node["$"] == "categorical":
            cat = pd.Categorical.from_codes(
                self.array(node["codes"]),
                categories=self.index(node["categories"]),
                ordered=node["ordered"],
            )
            return pd.Series(cat, index=index)
        return pd.Series(self.array(node["v"]), index=index).astype(node["dtype"])

    def estimator(self, node: dict):
        import torch
        from skorch import NeuralNet
        from skorch.history import History

        cls = _resolve(node["cls"], "estimator")
        params = {k: self.value(v) for k, v in node["params"].items()}
        accepted = _accepted(cls)
        unknown = sorted(k for k in set(params) - accepted if "__" not in k)
        if unknown:
            raise ModelFileError(
                f"holds a {cls.__name__} with parameters {unknown} that this sktx does not have "
                f"(file written by sktx {self.versions.get('sktx')}); train again, or load it "
                "with that version"
            )
        defaults = sorted(accepted - set(params) - {"callbacks"})
        if defaults and not issubclass(cls, NeuralNet):
            self.notes.append(
                f"{cls.__name__} parameters {defaults} are not in the file; defaults used"
            )
        est = cls(**params)
        net = node.get("net")
        if net is not None and issubclass(cls, NeuralNet):
            if str(est.device).startswith("cuda") and not torch.cuda.is_available():
                self.notes.append("saved on CUDA; loaded on cpu (no CUDA device here)")
                est.set_params(device="cpu")
            est.initialize()
            est.module_.load_state_dict(self.tensor(net["module"]))
            est.criterion_.load_state_dict(self.tensor(net["criterion"]))
            est.optimizer_.load_state_dict(self.tensor(net["optimizer"]))
            est.history_ = History(self.value(net["history"]))
        for k, v in node["fitted"].items():
            if not (isinstance(k, str) and k.endswith("_") and not k.startswith("_")):
                raise ModelFileError(f"holds the attribute {k!r}, which is not a fitted attribute")
            setattr(est, k, self.value(v))
        return est

    def value(self, node: Any) -> Any:
        import pandas as pd
        import torch
        from skorch.history import History

        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.value(x) for x in node]
        if not isinstance(node, dict) or "$" not in node:
            raise ModelFileError(f"holds a value it cannot read ({str(node)[:60]!r})")
        tag = node["$"]
        if tag == "scalar":
            dtype = np.dtype(node["dtype"])
            if dtype.kind not in "biufc":
                raise ModelFileError(f"holds a scalar of dtype {dtype}, which is not numeric")
            return dtype.type(node["v"])
        if tag in ("ndarray", "objarray"):
            return self.array(node)
        if tag == "sparse":
            kind = {"csr": (sp.csr_matrix, sp.csr_array), "csc": (sp.csc_matrix, sp.csc_array)}
            matrix, array = kind[node["format"]]
            parts = (
                self.array(node["data"]),
                self.array(node["indices"]),
                self.array(node["indptr"]),
            )
            out = (matrix if node.get("matrix", True) else array)(parts, shape=tuple(node["shape"]))
            original = str(node.get("original", node["format"]))
            return out if original == node["format"] else out.asformat(original)
        if tag == "tensor":
            return self.tensor(node["t"])
        if tag == "history":
            return History([self.value(x) for x in node["v"]])
        if tag in ("tuple", "set", "frozenset"):
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](
                self.value(x) for x in node["v"]
            )
        if tag == "dict":
            return {self._key(k): self.value(v) for k, v in zip(node["k"], node["v"], strict=True)}
        if tag == "frame":
            index, columns = self.index(node["index"]), self.index(node["columns"])
            if "block" in node:
                return pd.DataFrame(self.array(node["block"]), index=index, columns=columns)
            data = {i: self.column(c, index) for i, c in enumerate(node["data"])}
            frame = pd.DataFrame(data, index=index)
            frame.columns = columns
            return frame
        if tag == "series":
            out = self.column(node["v"], self.index(node["index"]))
            out.name = self.value(node["name"])
            return out
        if tag in ("index", "multiindex"):
            return self.index(node)
        if tag == "type":
            return _resolve(node["name"], "type", "estimator")
        if tag == "estimator":
            return self.estimator(node)
        if tag == "callback":
            return _resolve(node["cls"], "callback")(**self.value(node["params"]))
        if tag == "dataclass":
            cls = _resolve(node["cls"], "dataclass")
            return cls(**{k: self.value(v) for k, v in node["fields"].items()})
        if tag == "randomstate":
            rs = np.random.RandomState()
            rs.set_state(self.value(node["state"]))
            return rs
        if tag == "gradscaler":
            scaler = torch.amp.GradScaler(node["device"], enabled=bool(node["enabled"]))
            state = self.tensor(node["state"])
            if state:
                scaler.load_state_dict(state)
            return scaler
        raise ModelFileError(f"holds a value of unknown kind {tag!r}")

    def _key(self, k: Any) -> Any:
        k = self.value(k)
        return tuple(k) if isinstance(k, list) else k
