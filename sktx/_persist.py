"""sktx model files: estimators saved without pickle, so loading one runs no code.

A model file is one ``torch.save`` archive of plain data: a JSON manifest (format and
library versions, the caller's metadata, and the estimator as a tree of class names,
``get_params`` and fitted attributes) plus tensors (arrays, torch weights, optimizer
state). It is read with ``torch.load(weights_only=True)``, whose unpickler only builds
tensors and plain containers, and the tree is rebuilt by :func:`load` from an allow-list:
estimators, callbacks and dataclasses defined in sktx (plus scikit-learn's ``Pipeline``
and skorch callbacks), and as parameter *types* torch modules, optimizers and data
loaders. A file naming anything else is refused; nothing is imported from outside
sktx, scikit-learn, skorch and torch.

What is saved of an estimator: ``get_params(deep=False)`` and every public fitted
attribute (``name_``). Private caches are rebuilt on use. A skorch net is re-initialised
from its parameters and given back its module, criterion and optimizer state and its
history; callbacks whose class is defined outside sktx and skorch are code, so they are
left out (listed in the manifest's ``callbacks_not_saved``).

See docs/security.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pickle
import platform
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "load", "read_manifest", "save"]

FORMAT = "sktx-model"
#: Layout of the archive; a file with a larger number is refused, not guessed at.
FORMAT_VERSION = 1

_TORCH_DTYPES = {"f4", "f8", "f2", "i1", "i2", "i4", "i8", "u1", "b1", "c8", "c16"}
# Attributes of a skorch net that ``initialize()`` rebuilds from the parameters.
_SKORCH_REBUILT = {
    "module_",
    "criterion_",
    "optimizer_",
    "callbacks_",
    "history_",
    "initialized_",
    "virtual_params_",
    "prefixes_",
    "cuda_dependent_attributes_",
    "init_context_",
}


class ModelFileError(ValueError):
    """A file that is not a readable sktx model file (or one this sktx cannot rebuild)."""


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("sktx", "torch", "skorch", "scikit-learn", "numpy", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# Class names and the allow-list -------------------------------------------------------------


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _root(module: str) -> str:
    return module.split(".")[0]


def _allowed(cls: type, kind: str) -> bool:
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

    root = _root(cls.__module__)
    if kind == "estimator":
        return cls is Pipeline or (root == "sktx" and issubclass(cls, BaseEstimator))
    if kind == "callback":
        from skorch.callbacks import Callback

        return root in ("sktx", "skorch") and issubclass(cls, Callback)
    if kind == "dataclass":
        return root == "sktx" and dataclasses.is_dataclass(cls)
    # "type": a class passed as a parameter (module=, criterion=, optimizer=, dataset=, ...)
    import torch

    bases = (torch.nn.Module, torch.optim.Optimizer, torch.utils.data.Dataset)
    bases += (torch.utils.data.DataLoader,)
    if not issubclass(cls, bases):
        return False
    return root in ("sktx", "skorch") or cls.__module__.startswith(
        ("torch.nn.modules.", "torch.optim.", "torch.utils.data.")
    )


def _resolve(name: str, *kinds: str) -> type:
    module, _, qual = str(name).partition(":")
    if _root(module) not in ("sktx", "sklearn", "skorch", "torch") or not qual:
        raise ModelFileError(f"names {name!r}, which is not an sktx, scikit-learn or torch class")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise ModelFileError(
            f"names {name!r}, which this installation does not have (written by another "
            "version of sktx?)"
        ) from None
    if not isinstance(obj, type) or not any(_allowed(obj, kind) for kind in kinds):
        raise ModelFileError(
            f"names {name!r}, which is not allowed as a {' or '.join(kinds)} in a model file"
        )
    return obj


def _accepted(cls: type) -> set[str]:
    """Constructor parameters of ``cls`` (a skorch net also takes its base's and ``x__y``)."""
    from skorch import NeuralNet

    if not issubclass(cls, NeuralNet):
        return set(cls._get_param_names())
    names = set()
    for c in (cls, NeuralNet):
        sig = inspect.signature(c.__init__).parameters.values()
        names |= {p.name for p in sig if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"self"}


# Encoding -----------------------------------------------------------------------------------


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


# Decoding -----------------------------------------------------------------------------------


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


# Files --------------------------------------------------------------------------------------


def save(estimator, path: str | Path, *, meta: dict | None = None) -> Path:
    """Write ``estimator`` (and JSON-able ``meta``) to ``path`` as an sktx model file.

    The file is written through a unique temporary file and swapped in atomically
    (:mod:`sktx._atomic`): a crash or a full disk leaves the previous file intact.

    Parameters
    ----------
    estimator : estimator
        An sktx estimator, a ``Pipeline`` of them, or a ``ProgressiveFit``; fitted or not.
    path : str or Path
        The file to write.
    meta : dict, optional
        Plain JSON data stored beside the estimator (the command line stores the run's
        configuration and a fingerprint of its data); :func:`read_manifest` returns it.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    TypeError
        The estimator holds something that is not plain data (the message names it).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sktx.baselines import MeanBaseline
    >>> from sktx.datasets import make_perturbseq
    >>> from sktx import _persist
    >>> adata = make_perturbseq(n_cells=200, n_genes=30, n_perturbations=3, random_state=0)
    >>> path = Path(tempfile.mkdtemp()) / "model.sktx"
    >>> _ = _persist.save(MeanBaseline().fit(adata), path, meta={"note": "demo"})
    >>> model, manifest = _persist.load(path)
    >>> type(model).__name__, manifest["meta"]["note"]
    ('MeanBaseline', 'demo')
    """

    from sktx._atomic import write_with

    enc = _Encoder()
    tree = enc.value(estimator, type(estimator).__name__)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "meta": meta or {},
        "callbacks_not_saved": sorted(set(enc.dropped)),
        "estimator": tree,
    }
    payload = {"format": FORMAT, "manifest": json.dumps(manifest), "tensors": enc.tensors}
    path = Path(path)
    write_with(path, lambda fh: _torch_save(payload, fh))
    return path


def _torch_save(payload: dict, fh) -> None:
    import torch

    try:
        torch.save(payload, fh)
    except RuntimeError as exc:
        # torch's zip writer turns a failed write (a full disk) into a RuntimeError while
        # closing; report the OSError underneath
        cause = exc.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is not None:
            raise cause from None
        raise


def _read_payload(path: Path) -> dict:
    import torch

    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise ModelFileError(f"{str(path)!r} is empty (0 bytes; an interrupted write?)")
    if head[:1] == b"\x80" or not head.startswith(b"PK"):
        # a pickle (older sktx wrote model.pkl) or something else altogether
        what = "a pickle" if head[:1] == b"\x80" else "not an sktx model file"
        raise ModelFileError(
            f"{str(path)!r} is {what}; sktx reads only its own model files, which cannot run "
            "code when loaded (a pickle can: see docs/security.md)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{str(path)!r} is corrupt, incomplete or not an sktx model file ({reason[:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is a torch file but not an sktx model file")
    return payload


def read_manifest(path: str | Path) -> dict:
    """The manifest of a model file (versions, ``meta``...) without rebuilding the estimator.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sktx import _persist
    >>> from sktx.baselines import ControlBaseline
    >>> path = _persist.save(ControlBaseline(), Path(tempfile.mkdtemp()) / "m.sktx")
    >>> _persist.read_manifest(path)["format"]
    'sktx-model'
    """
    path = Path(path)
    manifest = _manifest(_read_payload(path), path)
    manifest.pop("estimator", None)
    return manifest


def _manifest(payload: dict, path: Path) -> dict:
    try:
        manifest = json.loads(payload["manifest"])
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"{str(path)!r} has no readable manifest") from None
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by a newer sktx (file format {version}, sktx "
            f"{manifest.get('versions', {}).get('sktx')}); this sktx reads format "
            f"{FORMAT_VERSION}: upgrade sktx"
        )
    return manifest


def load(path: str | Path) -> tuple[Any, dict]:
    """Read a model file written by :func:`save`; returns ``(estimator, manifest)``.

    Nothing in the file is executed: it is read with ``torch.load(weights_only=True)`` and
    only allow-listed sktx classes are rebuilt. A file written by other library versions
    loads with a ``UserWarning`` naming both versions; one whose layout this sktx cannot
    rebuild (unknown parameters or classes, a newer file format) raises
    :class:`ModelFileError`.

    Raises
    ------
    ModelFileError
        Empty, truncated, foreign (a pickle, another torch file) or incompatible file.
    FileNotFoundError
        No file at ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from sktx import _persist
    >>> from sktx.baselines import ControlBaseline
    >>> path = _persist.save(ControlBaseline(), Path(tempfile.mkdtemp()) / "m.sktx")
    >>> type(_persist.load(path)[0]).__name__
    'ControlBaseline'
    """
    path = Path(path)
    payload = _read_payload(path)
    manifest = _manifest(payload, path)
    saved = manifest.get("versions") or {}
    here = _versions()
    changed = [k for k in ("sktx", "torch", "skorch") if saved.get(k) != here.get(k)]
    decoder = _Decoder(payload.get("tensors") or {}, saved)
    try:
        estimator = decoder.value(manifest["estimator"])
    except ModelFileError as exc:
        raise ModelFileError(f"{str(path)!r} {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(
            f"{str(path)!r} cannot be rebuilt by this sktx ({type(exc).__name__}: "
            f"{str(exc).strip()[:200]}; written by sktx {saved.get('sktx')})"
        ) from None
    if changed or decoder.notes:
        parts = ", ".join(f"{k} {saved.get(k)} (here {here.get(k)})" for k in changed)
        notes = "; ".join(decoder.notes)
        warnings.warn(
            f"{str(path)!r} was written with {parts or 'these libraries'}"
            + (f"; {notes}" if notes else "")
            + ". If its predictions look wrong, train it again with this version.",
            UserWarning,
            stacklevel=2,
        )
    return estimator, manifest
