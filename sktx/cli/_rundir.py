"""A run directory kept consistent: one writer at a time, no run replaced by accident,
saves that finish once started, and a fingerprint of the data a checkpoint was trained on.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from sktx.cli._app import BadInput

LOCK_FILE = ".sktx.lock"
# Files a run writes (sktx train / demo, RunRecord.save, write_report): removed together
# when a run is replaced, so a directory never mixes two runs' files.
RUN_FILES = (
    "model.sktx",
    "checkpoint.sktx",
    "config.json",
    "data.json",
    "history.csv",
    "metrics.csv",
    "metrics.json",
    "metrics_vcc2026.csv",
    "per_perturbation.csv",
    "genes.csv",
    "deltas.csv.gz",
    "heldout.h5ad",
    "query.h5ad",
    "report.html",
    "report.md",
)
# What makes a directory "a run" worth protecting.
_RUN_MARKERS = ("model.sktx", "checkpoint.sktx", "metrics.csv", "config.json", "model.pkl")


class RunLock:
    """Exclusive lock on a run directory (``flock`` on ``.sktx.lock``), released on exit.

    The kernel drops the lock when the holding process dies (``kill -9`` included), so
    there is no stale lock to clean up. A second writer gets a :class:`BadInput` naming
    the holder (pid, host, start time, command).
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        path = self.out / LOCK_FILE
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise BadInput(f"--out: cannot lock {str(path)!r} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip() or "holder unknown"
            os.close(fd)
            raise BadInput(
                f"--out: {str(self.out)!r} is in use by another sktx run ({holder}); wait for "
                "it to finish or choose another --out"
            ) from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        command = " ".join(["sktx", *sys.argv[1:]])[:300]
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"pid {os.getpid()} on {socket.gethostname()}, since {started}: {command}\n".encode(),
            0,
        )
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def claim_run_dir(out: Path, *, overwrite: bool, resume: bool, replace_quietly: bool = False):
    """Refuse to write over an existing run unless asked; remove the old run's files if so.

    ``replace_quietly`` (``sktx demo``, whose directory is scratch) replaces without
    ``--overwrite``. Called with the directory locked.
    """
    out = Path(out)
    found = [name for name in _RUN_MARKERS if (out / name).exists()]
    if resume or not found:
        return
    if not (overwrite or replace_quietly):
        hint = (
            "continue it with --resume, "
            if "checkpoint.sktx" in found and "model.sktx" not in found
            else ""
        )
        raise BadInput(
            f"--out: {str(out)!r} already holds a run ({', '.join(found)}); {hint}pass "
            "--overwrite to replace it, or choose another --out"
        )
    for name in (*RUN_FILES, "model.pkl", "checkpoint.pkl"):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


def refuse_input_as_output(out: Path, inputs: dict[str, object], *, overwrite: bool) -> None:
    """Refuse ``--out`` naming one of the command's input files (unless ``--overwrite``)."""
    out = Path(out)
    if overwrite or not out.exists():
        return
    for option, path in inputs.items():
        if path is None:
            continue
        with contextlib.suppress(OSError):
            if os.path.samefile(out, path):
                raise BadInput(
                    f"--out: {str(out)!r} is the {option} input; writing there would destroy "
                    "it. Choose another --out (or pass --overwrite if you mean it)"
                )


@contextlib.contextmanager
def finish_before_exit(what: str) -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM while ``what`` is written; the caller exits once it is done.

    The first signal prints that the save is finishing; every signal is recorded in the
    yielded list. The write itself is atomic (:mod:`sktx._atomic`): even ``kill -9`` leaves
    the previous file or the new one.
    """
    hits: list[int] = []

    def handler(signum, frame):
        if not hits:
            typer.echo(
                f"\nstill writing {what}; it is saved in full or not at all. Please wait", err=True
            )
        hits.append(signum)

    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        old = {}
    try:
        yield hits
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def data_fingerprint(data) -> dict:
    """Shape, gene names and per-cell labels (canonical) of a PerturbationData, hashed."""

    def digest(values) -> str:
        h = hashlib.sha256()
        for v in values:
            h.update(str(v).encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()[:16]

    return {
        "cells": int(data.n_obs),
        "genes": int(data.n_vars),
        "genes_sha256": digest(data.genes),
        "labels_sha256": digest(data.labels),
        "cell_types_sha256": digest(data.cell_types) if data.cell_types is not None else None,
    }


def describe_mismatch(saved: dict, now: dict) -> str:
    """``"300 cells x 60 genes now, 280 x 60 in the checkpoint; gene names differ"``."""
    parts = []
    if (saved.get("cells"), saved.get("genes")) != (now["cells"], now["genes"]):
        parts.append(
            f"{now['cells']} cells x {now['genes']} genes now, {saved.get('cells')} x "
            f"{saved.get('genes')} in the checkpoint"
        )
    for key, what in (
        ("genes_sha256", "gene names"),
        ("labels_sha256", "perturbation labels"),
        ("cell_types_sha256", "cell types"),
    ):
        if saved.get(key) != now.get(key):
            parts.append(f"{what} differ")
    return "; ".join(parts)


#: Options a resumed run must share with its checkpoint (``--epochs``, ``--baselines``,
#: ``--device`` and the output options may change).
RESUME_FIXED = (
    "strategy",
    "genes",
    "cells",
    "phases",
    "holdout",
    "precision",
    "checkpointing",
    "seed",
    "gene_sets",
    "start",
    "perturbation_key",
    "control_label",
    "cell_type_key",
)


#: options newer than some checkpoints -> the value those checkpoints ran with
ADDED_LATER = {"start": "shrunk"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_resume(saved: dict, now: dict) -> None:
    """Refuse to resume a checkpoint trained on other data or with other options.

    ``saved`` and ``now`` are ``{"config": TrainConfig.as_json(), "data": data_fingerprint}``.
    """
    if not saved.get("data"):
        raise BadInput(
            "--resume: the checkpoint does not record the data or options it was trained "
            "with; start a new run with --overwrite"
        )
    old, new = saved.get("config") or {}, now.get("config") or {}
    # options added later are absent from older checkpoints: those ran with the default
    old = {**ADDED_LATER, **old}
    changed = [k for k in RESUME_FIXED if old.get(k) != new.get(k)]
    if changed:
        what = ", ".join(f"{_flag(k)} {new.get(k)!r} (checkpoint: {old.get(k)!r})" for k in changed)
        raise BadInput(
            f"--resume: {what}; resume with the checkpoint's options (omit them: --resume "
            "reads them) or start a new run with --overwrite"
        )
    mismatch = describe_mismatch(saved["data"], now["data"])
    if mismatch:
        raise BadInput(
            f"--resume: the data differ from the checkpoint's ({mismatch}); resume with the "
            "same --data, or start a new run with --overwrite"
        )
