"""Durable file operations every face with local state uses.

A crash may interrupt any write. These helpers make each on-disk change
either fully visible or not at all: data goes to a temporary sibling, is
fsynced, then renamed over the target, and the directory entry itself is
fsynced so that the rename survives a power loss too.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames and creations inside ``path`` durable."""
    fsync_file(path)


def fsync_tree(root: Path) -> None:
    """Every file below ``root``, then every directory below it and ``root``
    itself (a freshly built directory): a subdirectory's entries are durable
    only once the subdirectory is synced."""
    for path in root.rglob("*"):
        if path.is_file():
            fsync_file(path)
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        fsync_dir(path)
    fsync_dir(root)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new bytes, never a mix."""
    write_atomic_with(path, lambda fh: fh.write(data))


def write_atomic_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Like ``write_atomic``, for writers that stream into a file (``np.save``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2: Callable[..., int] | bool | None = None


def exchange_dirs(a: Path, b: Path) -> None:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    A crash leaves either both in place or both swapped, never one missing.
    Where the call is unavailable, three renames do it (not crash-atomic).
    """
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            func = libc.renameat2
            func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_uint]
            func.restype = ctypes.c_int
            _renameat2 = func
        except (AttributeError, OSError):
            _renameat2 = False
    if callable(_renameat2):
        if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                      _RENAME_EXCHANGE) == 0:
            fsync_dir(a.parent)
            if b.parent != a.parent:
                fsync_dir(b.parent)
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(a))
    middle = a.with_name(a.name + ".exchange")
    os.replace(a, middle)
    os.replace(b, a)
    os.replace(middle, b)
    fsync_dir(a.parent)
