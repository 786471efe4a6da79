"""Files in and out of the command line: label detection, reading, subsampling, splitting.

Every call into the data layer (``load_h5ad``, ``validate_adata``, ``is_log_normalized``,
``log_normalize``) is made in this module only, in :func:`_load`, :func:`_load_query` and
:func:`_load_pred`, so the command line can move to a new data layer in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from sktx.cli._app import BadInput, _echo

DEMO = "demo"
# sktx model files (sktx._persist): loading one runs no code, unlike the pickles of old.
_MODEL_FILE = "model.sktx"
_CHECKPOINT_FILE = "checkpoint.sktx"
# The embedded demo screen: big enough to show held-out quality, small enough
# that `make demo` (simulate, select, train, 5 baselines, report) takes minutes on 2 cores.
# It simulates as many genes as the model uses, so every held-out target is measured.
_DEMO_SIM = {"n_perturbations": 24, "n_combinations": 8}
_DEMO_CELLS = 4000


@dataclass
class Keys:
    perturbation_key: str = "target_gene"
    control_label: str = "non-targeting"
    cell_type_key: str | None = None


# Tried in order when a label option is not given (common Perturb-seq conventions).
_PERT_KEYS = ("target_gene", "perturbation", "gene", "target", "condition", "guide_target")
_CONTROLS = ("non-targeting", "control", "ctrl", "NT", "non_targeting", "Non-Targeting")
_CELL_TYPE_KEYS = ("cell_type", "celltype", "cell_line")


def _detect_keys(path: str, pkey: str | None, ctrl: str | None, ctkey: str | None):
    """Fill label options the user did not give from the file's ``obs`` (read backed)."""
    import anndata as ad

    try:
        backed = ad.read_h5ad(path, backed="r")
    except (OSError, ValueError, KeyError):
        return pkey, ctrl, ctkey, []  # unreadable: the loader reports it
    try:
        obs = backed.obs
        found = []
        # keys sktx recorded (load_h5ad, heldout.h5ad of a run) come first, then the columns
        record = backed.uns.get("sktx")
        if isinstance(record, dict):
            given = {"perturbation_key": pkey, "control_label": ctrl, "cell_type_key": ctkey}
            for name, value in given.items():
                if value is None and isinstance(record.get(name), str):
                    given[name] = record[name]
                    found.append(f"--{name.replace('_', '-')} {record[name]}")
            pkey, ctrl, ctkey = given.values()
        if pkey is None:
            pkey = next((k for k in _PERT_KEYS if k in obs.columns), None)
            if pkey not in (None, "target_gene"):
                found.append(f"--perturbation-key {pkey}")
        if ctrl is None and pkey in obs.columns:
            labels = set(obs[pkey].astype(str).unique().tolist())
            ctrl = next((c for c in _CONTROLS if c in labels), None)
            if ctrl not in (None, "non-targeting"):
                found.append(f"--control-label {ctrl}")
        if ctkey is None:
            ctkey = next((k for k in _CELL_TYPE_KEYS if k in obs.columns), None)
            if ctkey is not None:
                found.append(f"--cell-type-key {ctkey}")
    finally:
        backed.file.close()
    return pkey, ctrl, ctkey, found


def _keys_for(
    data: str,
    pkey: str | None,
    ctrl: str | None,
    ctkey: str | None,
    *,
    quiet: bool = True,
) -> Keys:
    if data == DEMO:
        # The simulator writes these; a user's flags would only break the demo.
        return Keys("target_gene", "non-targeting", None)
    if Path(data).is_file() and None in (pkey, ctrl, ctkey):
        pkey, ctrl, ctkey, found = _detect_keys(data, pkey, ctrl, ctkey)
        if found:
            _echo(quiet, f"using {' '.join(found)} (found in the file; pass options to override)")
    return Keys(pkey or "target_gene", ctrl or "non-targeting", ctkey)


def _existing_file(path: str | Path, option: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{option}: file {str(path)!r} not found")
    if path.is_dir():
        raise BadInput(f"{option}: {str(path)!r} is a directory, expected an .h5ad file")
    return path


# HDF5's signature; h5py also finds it after a user block of 512, 1024, 2048... bytes.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _existing_h5ad(path: str | Path, option: str) -> Path:
    """An existing file that is HDF5 (an .h5ad), else a one-line error saying what it is."""
    path = _existing_file(path, option)
    with open(path, "rb") as fh:
        head = fh.read(8)
        offset = 512
        while head != _HDF5_SIGNATURE and offset <= min(path.stat().st_size, 1 << 20):
            fh.seek(offset)
            head, offset = fh.read(8), offset * 2
    if head == _HDF5_SIGNATURE:
        return path
    with open(path, "rb") as fh:
        start = fh.read(512)
    if not start:
        what = "it is empty"
    elif b"\0" not in start and (b"," in start or b"\t" in start):
        what = "it looks like a CSV/TSV text file"
    else:
        what = "it is not HDF5"
    raise BadInput(
        f"{option}: {str(path)!r} is not an .h5ad file ({what}); pass an AnnData written "
        "with `write_h5ad` (a CSV table can be read with `anndata.read_csv` and saved so)"
    )


def _gene_set_paths(paths: list[Path] | None) -> list[str] | None:
    if not paths:
        return None
    return [str(_existing_file(p, "--gene-sets")) for p in paths]


# Reading data (the data-layer calls) ----------------------------------------------------------


def _load(
    data: str,
    keys: Keys,
    *,
    n_cells: int | None,
    seed: int,
    n_genes: int = 500,
    option: str = "--data",
):
    """Read ``data`` (a .h5ad file or ``demo``) as log1p AnnData following the contract."""
    from sktx import log_normalize
    from sktx.datasets import load_h5ad, make_perturbseq

    if data == DEMO:
        # Real symbols so the selector's curated categories (TFs, cell cycle, ...) apply.
        try:
            adata = make_perturbseq(
                n_cells=n_cells or _DEMO_CELLS,
                n_genes=n_genes,
                gene_names="symbols",
                random_state=seed,
                **_DEMO_SIM,
            )
        except ImportError:  # no built-in gene sets in this installation
            adata = make_perturbseq(
                n_cells=n_cells or _DEMO_CELLS, n_genes=n_genes, random_state=seed, **_DEMO_SIM
            )
        return log_normalize(adata)
    path = _existing_h5ad(data, option)
    try:
        return load_h5ad(
            path,
            perturbation_key=keys.perturbation_key,
            control_label=keys.control_label,
            cell_type_key=keys.cell_type_key,
        )
    except OSError as exc:
        raise BadInput(f"{option}: cannot read {str(path)!r} as .h5ad ({exc})") from None


def _load_query(data: str, keys: Keys):
    """Query cells: need the perturbation labels, not control cells; log1p like training."""
    import anndata as ad

    from sktx import is_log_normalized, log_normalize, validate_adata

    path = _existing_h5ad(data, "--data")
    try:
        query = ad.read_h5ad(path)
    except OSError as exc:
        raise BadInput(f"--data: cannot read {str(path)!r} as .h5ad ({exc})") from None
    validate_adata(query, **asdict(keys), require_control=False)
    return query if is_log_normalized(query) else log_normalize(query)


def _load_pred(pred: str, keys: Keys):
    """Predicted cells as written (not checked against the contract); returns (path, AnnData)."""
    import anndata as ad

    pred_path = _existing_h5ad(pred, "--pred")
    pred_ad = ad.read_h5ad(pred_path)
    if keys.perturbation_key not in pred_ad.obs:
        raise BadInput(
            f"--pred: `obs[{keys.perturbation_key!r}]` not found; pass --perturbation-key"
        )
    return pred_path, pred_ad


# Shaping data ---------------------------------------------------------------------------------


def _subsample(adata, n_cells: int | None, key: str, seed: int):
    """At most ``n_cells`` cells, each perturbation keeping its share (at least one cell)."""
    if n_cells is None or n_cells >= adata.n_obs:
        return adata
    rng = np.random.RandomState(seed)
    labels = adata.obs[key].astype(str).to_numpy()
    uniq, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    want = np.maximum(1, np.floor(counts * n_cells / adata.n_obs)).astype(int)
    keep = [
        rng.choice(np.flatnonzero(codes == i), want[i], replace=False) for i in range(len(uniq))
    ]
    return adata[np.sort(np.concatenate(keep))].copy()


def _split(data, keys: Keys, holdout: float, seed: int):
    """Hold out a fraction of the perturbations (of a PerturbationData); controls go to both."""
    from sktx.model_selection import PerturbationSplit

    perts = set(data.labels[~data.is_control].tolist())
    if len(perts) < 2:
        raise BadInput(
            f"need at least 2 perturbations to hold some out, found {len(perts)} in "
            f"`obs[{keys.perturbation_key!r}]`"
        )
    n_splits = int(min(len(perts), max(2, round(1 / holdout))))
    cv = PerturbationSplit(
        n_splits,
        shuffle=True,
        random_state=seed,
        perturbation_key=keys.perturbation_key,
        control_label=keys.control_label,
    )
    train_idx, test_idx = next(cv.split(data))
    return data[train_idx], data[test_idx]


def _summary(data, train, test, keys: Keys, source: str) -> dict:
    """What ``data.json`` says of the run's data (PerturbationData: canonical labels)."""
    labels = pd.Series(data.labels)
    heldout = sorted(set(test.labels.tolist()) - {keys.control_label})
    trained = sorted(set(train.labels.tolist()) - {keys.control_label})
    out = {
        "source": source,
        "cells": int(data.n_obs),
        "genes measured": int(data.n_vars),
        "control cells": int((labels == keys.control_label).sum()),
        "perturbations": int(labels.nunique() - 1),
        "combinations (A+B)": int(sum("+" in p for p in set(labels) - {keys.control_label})),
        "training cells": int(train.n_obs),
        "training perturbations": len(trained),
        "held-out cells (incl. controls)": int(test.n_obs),
        "heldout_perturbations": heldout,
        "train_perturbations": trained,
    }
    if keys.cell_type_key:
        out["cell types"] = sorted(set(data.cell_types.astype(str).tolist()))
    return out


# Model files ----------------------------------------------------------------------------------


def _save_model(estimator, path: Path, *, meta: dict | None = None) -> None:
    """Write ``estimator`` as an sktx model file (atomic; see :mod:`sktx._persist`)."""
    from sktx._persist import save

    try:
        save(estimator, path, meta=meta)
    except TypeError as exc:  # something in the estimator is not plain data
        raise BadInput(f"cannot save the model to {str(path)!r}: {exc}") from None


def _load_model_file(path: Path) -> tuple[object, dict]:
    """``(estimator, manifest)`` of a model or checkpoint file; one-line errors."""
    import warnings

    from sktx._persist import ModelFileError, load

    path = Path(path)
    if not path.exists():
        raise BadInput(f"no model file at {str(path)!r}; train one with `sktx train`")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            estimator, manifest = load(path)
    except ModelFileError as exc:
        raise BadInput(f"{exc}; delete it and train again") from None
    except OSError as exc:
        raise BadInput(f"cannot read {str(path)!r} ({exc.strerror or exc})") from None
    for w in caught:  # one line each: versions that differ from the file's
        typer.echo(f"warning: {w.message}", err=True)
    if not hasattr(estimator, "predict"):
        raise BadInput(f"{str(path)!r} holds a {type(estimator).__name__}, not a fitted sktx model")
    return estimator, manifest


def _load_model(path: Path):
    """The fitted estimator in an sktx model file (``model.sktx``), for ``sktx predict``.

    Stable entry point: ``sktx submit`` (sktx/cli/_submit.py) calls it too, so keep the
    name and signature. Nothing in the file is executed (``torch.load(weights_only=True)``
    and allow-listed sktx classes, :mod:`sktx._persist`); a pickle, a foreign, empty or
    truncated file raises :class:`~sktx.cli._app.BadInput` (one line, exit 2).
    """
    return _load_model_file(path)[0]


# The name ``sktx submit`` first called; the same safe loader.
_load_pickle = _load_model
