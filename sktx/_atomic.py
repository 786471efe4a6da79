"""Write a file so that readers see the old file or the whole new one, never a part.

The bytes go to a temporary file with a unique, unpredictable name created in the
target's directory with exclusive creation (``O_CREAT | O_EXCL``: a file or symlink
already at that name is never opened, so a planted symlink cannot redirect the write),
are flushed and ``fsync``-ed, then ``os.replace`` swaps it in (atomic on POSIX) and the
directory is ``fsync``-ed so the rename itself survives a crash. On any error, Ctrl-C
included, the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["TEMP_SUFFIX", "atomic_write", "write_bytes", "write_text", "write_with"]

#: Suffix of the temporary files (``.<name>.<random>.tmp``); never read by sktx.
TEMP_SUFFIX = ".tmp"


def _open_temp(directory: Path, name: str) -> tuple[IO[bytes], Path]:
    # mkstemp: O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, random name retried on collision.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory)
    # the mode an ordinary open() would give (0666 minus the umask), not mkstemp's 0600
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return os.fdopen(fd, "wb"), Path(tmp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces ``path`` atomically when the block ends without error.

    Parameters
    ----------
    path : str or Path
        The file to (re)place. Its directory must exist.

    Yields
    ------
    file
        A binary file object open for writing (a unique temporary file beside ``path``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write(b"all or nothing")
    >>> target.read_bytes()
    b'all or nothing'
    """
    path = Path(path)
    fh, tmp = _open_temp(path.parent, path.name)
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "a.bin"
    >>> write_bytes(target, b"x")
    >>> target.read_bytes()
    b'x'
    """
    with atomic_write(path) as fh:
        fh.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "config.json"
    >>> write_text(target, "{}\\n")
    >>> target.read_text()
    '{}\\n'
    """
    write_bytes(path, text.encode("utf-8"))


def write_with(path: str | Path, writer: Callable[[IO[bytes]], object]) -> None:
    """Call ``writer(fh)`` on a temporary file and swap it in atomically.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "b.bin"
    >>> write_with(target, lambda fh: fh.write(b"yz"))
    >>> target.read_bytes()
    b'yz'
    """
    with atomic_write(path) as fh:
        writer(fh)
