"""Large SpGEMM output buffers kept for the next product once their arrays are freed.

A product's output buffers (room for its multiply-adds, of which ``nnz(C)`` entries are
written) are fresh memory, and every page written is a page fault: 2 MiB pages for the large
buffers (:mod:`._spgemm_output`), yet 16-50 ms of system time in a 130-215 ms product of
19-28M entries (R-MAT 20 ef 16 rows/512, uniform 2^18 x 8; this project's VM). On a guest
whose freed memory goes back to the host (free page reporting, a DAMON ``pageout`` scheme),
the same faults took 137-311 ms in one call in four, with the same fault count.

So the large buffers (above :data:`~._spgemm_output.SMALL_PAGES_MAX_BYTES`) are anonymous
mappings of their own: when the last array viewing one is freed, the mapping is kept
(:func:`take` hands the smallest kept one that is large enough to the next product, whose
writes then land on pages already mapped), up to
:data:`~flexsparse._limits.SPGEMM_KEPT_BUFFER_BYTES` in all, the oldest unmapped first. What
is kept is the memory the freed result held (at most); :func:`free_buffers` unmaps it (as
``mkl_free_buffers`` does for MKL's pool), and a limit of 0 keeps nothing.

Cost: O(kept mappings) per buffer; no copy.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import mmap
import threading
import weakref

import numpy as np

__all__ = ["free_buffers", "kept_bytes", "keeping", "take"]

_keep: contextvars.ContextVar = contextvars.ContextVar("flexsparse_keep_buffers", default=True)
_lock = threading.Lock()
_kept: list[mmap.mmap] = []   # freed mappings, least recently freed first


def _limit() -> int:
    from flexsparse import _limits

    return int(_limits.SPGEMM_KEPT_BUFFER_BYTES)


def _unmap(mm: mmap.mmap) -> None:
    # the array that just died may not have released its export yet (this runs from its
    # finalizer): the mapping then goes with the last reference to it instead
    with contextlib.suppress(BufferError):
        mm.close()


def _release(mm: mmap.mmap) -> None:
    """Called when the last array on ``mm`` is freed: keep it, within the limit."""
    with _lock:
        _kept.append(mm)
        total = sum(len(m) for m in _kept)
        while _kept and total > _limit():
            old = _kept.pop(0)
            total -= len(old)
            _unmap(old)


@contextlib.contextmanager
def keeping(keep: bool):
    """Within the block, buffers taken are kept after use (``True``, the default) or not: a
    tile on a dask worker, whose memory limit counts resident memory, keeps none."""
    token = _keep.set(bool(keep))
    try:
        yield
    finally:
        _keep.reset(token)


def take(n: int, dtype) -> np.ndarray:
    """An uninitialised ``dtype[n]`` array on a kept mapping of at least its size, or on a
    fresh one (advised for transparent huge pages, as NumPy advises its large arrays); a
    plain NumPy array inside ``keeping(False)``."""
    dtype = np.dtype(dtype)
    if not _keep.get():
        return np.empty(int(n), dtype=dtype)
    nbytes = max(1, int(n) * dtype.itemsize)
    mm = None
    with _lock:
        fits = [m for m in _kept if len(m) >= nbytes]
        if fits:
            mm = min(fits, key=len)
            _kept.remove(mm)
    if mm is None:
        mm = mmap.mmap(-1, nbytes)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            mm.madvise(mmap.MADV_HUGEPAGE)
    raw = (ctypes.c_char * len(mm)).from_buffer(mm)   # the arrays' base: freed with the last of them
    weakref.finalize(raw, _release, mm)
    return np.frombuffer(raw, dtype=dtype, count=int(n))


def kept_bytes() -> int:
    """Bytes of address space kept for reuse (their resident part is at most this)."""
    with _lock:
        return sum(len(m) for m in _kept)


def free_buffers() -> int:
    """Unmap every kept buffer; returns the bytes of address space given back."""
    with _lock:
        total = sum(len(m) for m in _kept)
        while _kept:
            _unmap(_kept.pop())
    return total
