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
writes then land on pages already mapped), while their resident bytes (``mincore``: the pages
their last results wrote, not their room) stay within
:data:`~flexsparse._limits.SPGEMM_KEPT_BUFFER_BYTES`, the least recently freed unmapped first.
What is kept is memory the freed results held; :func:`free_buffers` unmaps it (as
``mkl_free_buffers`` does for MKL's pool), and a limit of 0 keeps nothing.

Cost: O(kept mappings) per buffer; no copy.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import mmap
import threading
import weakref

import numpy as np

__all__ = ["anonymous", "free_buffers", "kept_bytes", "keeping", "libc_function", "take"]

_keep: contextvars.ContextVar = contextvars.ContextVar("flexsparse_keep_buffers", default=True)
_lock = threading.Lock()
_kept: list[tuple[mmap.mmap, int]] = []   # freed mappings and their resident bytes, least recently freed first


def _limit() -> int:
    from flexsparse import _limits

    return int(_limits.SPGEMM_KEPT_BUFFER_BYTES)


def _unmap(mm: mmap.mmap) -> None:
    # the array that just died may not have released its export yet (this runs from its
    # finalizer): the mapping then goes with the last reference to it instead
    with contextlib.suppress(BufferError):
        mm.close()


def anonymous(nbytes: int, huge: bool) -> mmap.mmap | None:
    """A private anonymous mapping of ``nbytes`` (not ``mmap``'s default shared one: shared
    anonymous memory is shmem, which this kind of host gives no huge pages), advised for
    transparent huge pages or against them (``huge``) where the platform can; ``None`` where
    it has no such mapping."""
    if not hasattr(mmap, "MAP_PRIVATE"):
        return None
    mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0))
    advice = getattr(mmap, "MADV_HUGEPAGE" if huge else "MADV_NOHUGEPAGE", None)
    if advice is not None:
        mm.madvise(advice)
    return mm


@functools.cache
def libc_function(name: str, *argtypes):
    """The C library's ``name`` (returning ``int``) with ``argtypes``, or ``None`` where there is
    no such function (``madvise``, ``mincore`` outside Linux and the BSDs)."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


def _resident(mm: mmap.mmap) -> int:
    """Resident bytes of ``mm`` (``mincore``: one byte a page), or its length where that
    cannot be had: what a kept mapping holds is the pages its last result wrote, far less
    than its room for the product's multiply-adds (arrow: 107 of 1,320 MB)."""
    fn = libc_function("mincore", ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    if fn is None:
        return len(mm)
    page = mmap.PAGESIZE
    vec = np.zeros(-(-len(mm) // page), dtype=np.uint8)
    raw = (ctypes.c_char * len(mm)).from_buffer(mm)
    try:
        if fn(ctypes.addressof(raw), len(mm), vec.ctypes.data) != 0:
            return len(mm)
    finally:
        del raw
    return int(np.count_nonzero(vec & 1)) * page


def _release(mm: mmap.mmap) -> None:
    """Called when the last array on ``mm`` is freed: keep it while the resident bytes of
    what is kept stay within the limit, the least recently freed unmapped first (a mapping
    over the limit alone goes at once, and the others stay)."""
    size = _resident(mm)
    if size > _limit():
        _unmap(mm)
        return
    with _lock:
        _kept.append((mm, size))
        total = sum(r for _, r in _kept)
        while _kept and total > _limit():
            old, r = _kept.pop(0)
            total -= r
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
    if not _keep.get() or not hasattr(mmap, "MAP_PRIVATE"):
        return np.empty(int(n), dtype=dtype)
    nbytes = max(1, int(n) * dtype.itemsize)
    mm = None
    with _lock:
        fits = [k for k in _kept if len(k[0]) >= nbytes]
        if fits:
            best = min(fits, key=lambda k: len(k[0]))
            _kept.remove(best)
            mm = best[0]
    if mm is None:
        mm = anonymous(nbytes, huge=True)
    raw = (ctypes.c_char * len(mm)).from_buffer(mm)   # the arrays' base: freed with the last of them
    weakref.finalize(raw, _release, mm)
    return np.frombuffer(raw, dtype=dtype, count=int(n))


def kept_bytes() -> int:
    """Resident bytes of the mappings kept for reuse (when they were freed)."""
    with _lock:
        return sum(r for _, r in _kept)


def free_buffers() -> int:
    """Unmap every kept buffer; returns the resident bytes given back."""
    with _lock:
        total = sum(r for _, r in _kept)
        while _kept:
            _unmap(_kept.pop()[0])
    return total
