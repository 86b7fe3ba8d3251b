"""Back a loaded HNSW index with 2 MiB pages (Linux transparent huge pages).

A graph walk touches a few thousand vectors scattered over hundreds of MiB,
and with 4 KiB pages nearly each one costs a TLB miss and a page walk (under a
hypervisor, a two-level one). Backing the index's vectors and neighbour lists
with huge pages cut single-query search time by ~15% at p50 and p99 on 200k x
384 (see docs/benchmarks-http.md). FAISS allocates those arrays with plain
malloc, which the common ``madvise`` THP setting leaves on small pages, so the
ranges are advised (``MADV_HUGEPAGE``) and collapsed at once
(``MADV_COLLAPSE``, Linux >= 6.1; older kernels leave it to khugepaged).

Collapsing ~300 MiB takes ~0.5 s, so it runs on one background thread and a
segment is searchable meanwhile. madvise never changes memory contents, so a
range that was freed and reused before its turn comes is harmless.
The ``runtime.huge_pages`` setting (``PEREGRINE_RUNTIME_HUGE_PAGES=0``) turns
it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

_HUGE = 2 << 20
_MADV_HUGEPAGE = 14
_MADV_COLLAPSE = 25
_MIN_BYTES = 4 * _HUGE  # smaller buffers are not worth a system call

_pending: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
_worker: threading.Thread | None = None
_worker_lock = threading.Lock()
_madvise: Any = None


_switched_on = True


def configure(on: bool) -> None:
    """The ``runtime.huge_pages`` setting (the process's composition root sets it)."""
    global _switched_on
    _switched_on = on


def enabled() -> bool:
    return (sys.platform == "linux" and _switched_on
            and os.environ.get("PEREGRINE_RUNTIME_HUGE_PAGES", "1").lower()
            not in ("0", "false", "no", "off"))


def index_buffers(index: Any, faiss: Any) -> list[tuple[int, int]]:
    """(address, bytes) of an HNSW index's vector codes and neighbour lists.

    Only buffers worth a system call; an index of another kind gives none.
    """
    out: list[tuple[int, int]] = []
    try:
        storage = faiss.downcast_index(index.storage)
        arrays = [(storage.codes, int(index.ntotal) * int(storage.code_size)),
                  (index.hnsw.neighbors, int(index.hnsw.neighbors.size()) * 4)]
        for vector, size in arrays:
            if size >= _MIN_BYTES:
                out.append((int(faiss.rev_swig_ptr(vector.data(), 1).ctypes.data), size))
    except Exception:  # an optimisation only: never fail loading a segment over it
        log.debug("no huge pages for %s", type(index).__name__, exc_info=True)
        return []
    return out


def back_with_huge_pages(buffers: list[tuple[int, int]]) -> None:
    """Queue the buffers for collapsing into huge pages (returns at once)."""
    if not buffers or not enabled():
        return
    global _worker
    with _worker_lock:
        for buffer in buffers:
            _pending.put(buffer)
        if _worker is None:
            _worker = threading.Thread(target=_run, name="peregrine-hugepages", daemon=True)
            _worker.start()


def _run() -> None:
    global _worker
    while True:
        try:
            address, size = _pending.get(timeout=5.0)
        except queue.Empty:
            with _worker_lock:  # exit only if nothing was queued meanwhile
                if _pending.empty():
                    _worker = None
                    return
            continue
        collapse(address, size)


def collapse(address: int, size: int) -> bool:
    """Advise and collapse the whole huge pages inside [address, address + size)."""
    global _madvise
    start = (address + _HUGE - 1) & ~(_HUGE - 1)
    stop = (address + size) & ~(_HUGE - 1)
    if stop <= start:
        return False
    if _madvise is None:
        libc = ctypes.CDLL(None, use_errno=True)  # ctypes drops the GIL during the call
        _madvise = libc.madvise
        _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _madvise.restype = ctypes.c_int
    if _madvise(start, stop - start, _MADV_HUGEPAGE) != 0:
        return False  # THP disabled ("never") or not supported
    return bool(_madvise(start, stop - start, _MADV_COLLAPSE) == 0)
