"""Giving freed heap memory back to the operating system.

glibc keeps memory that ``free`` returned inside its heaps, and it keeps a
heap per thread that allocated (up to eight per core). A segment build
allocates and frees hundreds of megabytes (row copies, payload lists, FAISS's
per-thread buffers) in the optimizer's and OpenMP's threads; without a trim
that memory stays in the process's RSS after the build, although nothing uses
it. ``malloc_trim(0)`` returns the free pages of every heap to the kernel
(``madvise``), which costs a few milliseconds once per build.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

_libc: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        _libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _libc = None


def release_free_memory() -> bool:
    """Return free heap pages to the kernel; False where the C library can't."""
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
