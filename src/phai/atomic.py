"""Files written whole or not at all (labels, data sets, exports).

:func:`atomic_output` gives a temporary file beside the target; the caller writes it by name
(``open``, ``h5py.File``, ``numpy.save``), and only a block that ends normally moves it onto
the target with ``os.replace`` (atomic on POSIX) after an ``fsync``. A crash or an exception
leaves the old file (or none), never a part of the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "fsync_folder", "umask_mode"]


def umask_mode() -> int:
    """``0o666`` minus the process umask: the mode an ordinary ``open`` would give (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_folder(folder) -> None:
    """``fsync`` a folder, so that a rename inside it survives a crash (a file system that
    cannot open or sync a folder is left as it is: the rename has happened either way)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


@contextlib.contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Write a file atomically: ``with atomic_output(path) as tmp:`` write ``tmp`` by name.

    ``tmp`` is a new empty file ``.<name>.*.tmp`` in ``path``'s folder (which must exist), with
    the mode an ordinary ``open`` would give (:func:`umask_mode`). When the block ends
    normally, ``tmp`` is ``fsync``-ed and moved onto ``path`` by ``os.replace``, and the folder
    is ``fsync``-ed; when it raises, ``tmp`` is deleted and ``path`` is untouched.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, umask_mode())
        finally:
            os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
