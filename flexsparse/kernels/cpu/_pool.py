"""SpGEMM output buffers kept for the next product once their arrays are freed.

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

Mid-sized buffers (from :data:`~._spgemm_output.KEPT_SMALL_MIN_BYTES` up) are kept mappings
too, of 4 KiB pages (:func:`take_kept` with ``huge=False``): from ``malloc`` their pages were fresh in
most calls, and the advice and population around them (``madvise``: the heap's, each
buffer's, each expected range's) took 50-60 us of a 0.4-0.5 ms product (pygsp Airfoil,
144K multiply-adds), against 13-15 us for two kept mappings whose pages the result before
wrote (no population then: 0.05 minor faults a call). A kept mapping of 4 KiB pages serves
only a request of at least half its length. Where no mapping can be made (``vm.max_map_count``
reached), a buffer is a plain NumPy array.

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

__all__ = ["anonymous", "free_buffers", "keeping", "keeps", "kept_bytes", "libc_function", "take", "take_kept"]

_keep: contextvars.ContextVar = contextvars.ContextVar("flexsparse_keep_buffers", default=True)
_lock = threading.Lock()
#: Freed mappings, their resident bytes and whether they are advised for huge pages, least
#: recently freed first.
_kept: list[tuple[mmap.mmap, int, bool]] = []


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


def _release(mm: mmap.mmap, huge: bool) -> None:
    """Called when the last array on ``mm`` is freed: keep it while the resident bytes of
    what is kept stay within the limit, the least recently freed unmapped first (a mapping
    over the limit alone goes at once, and the others stay)."""
    size = _resident(mm)
    if size > _limit():
        _unmap(mm)
        return
    with _lock:
        _kept.append((mm, size, huge))
        total = sum(k[1] for k in _kept)
        while _kept and total > _limit():
            old, r, _ = _kept.pop(0)
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


def keeps() -> bool:
    """Whether :func:`take` keeps buffers here: outside ``keeping(False)``, on a platform with
    private anonymous mappings."""
    return _keep.get() and hasattr(mmap, "MAP_PRIVATE")


def take(n: int, dtype, huge: bool = True) -> np.ndarray:
    """An uninitialised ``dtype[n]`` array on a kept mapping of at least its size, or on a
    fresh one (advised for transparent huge pages, as NumPy advises its large arrays, or with
    ``huge=False`` against them); a plain NumPy array inside ``keeping(False)``. See
    :func:`take_kept`."""
    return take_kept(n, dtype, huge)[0]


def take_kept(n: int, dtype, huge: bool = True) -> tuple[np.ndarray, bool]:
    """:func:`take`, and whether the array lies on a kept mapping (whose pages the result
    before it wrote are resident).

    A kept mapping serves only requests of its own page kind; one of 4 KiB pages serves only
    requests of at least half its length, so that a small result never holds the pages a much
    larger one left resident."""
    dtype = np.dtype(dtype)
    if not keeps():
        return np.empty(int(n), dtype=dtype), False
    nbytes = max(1, int(n) * dtype.itemsize)
    mm = None
    with _lock:
        fits = [k for k in _kept if k[2] == huge and len(k[0]) >= nbytes and (huge or len(k[0]) <= 2 * nbytes)]
        if fits:
            best = min(fits, key=lambda k: len(k[0]))
            _kept.remove(best)
            mm = best[0]
    kept = mm is not None
    if not kept:
        try:
            mm = anonymous(nbytes, huge=huge)
        except OSError:  # out of mappings (``vm.max_map_count``) or address space: the heap's
            mm = None
        if mm is None:
            return np.empty(int(n), dtype=dtype), False
    raw = (ctypes.c_char * len(mm)).from_buffer(mm)   # the arrays' base: freed with the last of them
    weakref.finalize(raw, _release, mm, huge)
    return np.frombuffer(raw, dtype=dtype, count=int(n)), kept


def kept_bytes() -> int:
    """Resident bytes of the mappings kept for reuse (when they were freed)."""
    with _lock:
        return sum(k[1] for k in _kept)


def free_buffers() -> int:
    """Unmap every kept buffer; returns the resident bytes given back."""
    with _lock:
        total = sum(k[1] for k in _kept)
        while _kept:
            _unmap(_kept.pop()[0])
    return total
