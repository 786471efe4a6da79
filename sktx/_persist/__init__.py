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

import json
import pickle
import platform
import warnings
import zipfile
from pathlib import Path
from typing import Any

from sktx._persist._classes import ModelFileError
from sktx._persist._decode import _Decoder
from sktx._persist._encode import _Encoder

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "load", "read_manifest", "save"]

FORMAT = "sktx-model"
#: Layout of the archive; a file with a larger number is refused, not guessed at.
FORMAT_VERSION = 1


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("sktx", "torch", "skorch", "scikit-learn", "numpy", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


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
