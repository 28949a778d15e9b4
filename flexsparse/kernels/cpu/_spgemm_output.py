"""Output buffers of the Gustavson SpGEMM (:mod:`flexsparse.kernels.cpu.spgemm`).

The kernel writes each thread's rows back to back into room for their flops (an upper bound
of their entries), so a buffer holds ``capacity`` slots of which only ``nnz(C)`` are touched.
What those touched slots cost depends on the pages behind them:

* large buffers (above :data:`SMALL_PAGES_MAX_BYTES`): mappings advised for transparent
  huge pages (as NumPy advises its arrays from 4 MiB up; first-touch faults of 2 MiB pages
  were ~4x cheaper than of 4 KiB pages, 5.2M entries: 22 ms -> 6 ms, and the rounding of
  the last partial huge page of each written range is small next to the result), kept for
  the next product when the result is freed (:mod:`._pool`: its writes then take no fault);
* smaller buffers: 4 KiB pages (from :data:`KEPT_SMALL_MIN_BYTES` up kept mappings of
  :mod:`._pool` as well, below it numba's allocator, glibc ``malloc``), since a partial huge
  page is resident as a whole: with huge pages the peak RSS growth of mid-sized products was
  3.0x (pyamg local_disc_galerkin, 1.4 MB result) and 3.1x (ca-HepTh, 5 MB) their inputs and
  output, against 0.63x and 1.27x with 4 KiB pages. A freed NumPy array leaves its part of
  the heap advised for huge pages, and ``malloc`` hands that range to the next buffers: its
  header writes then fault whole 2 MiB pages in before any advice on a buffer can act
  (ca-GrQc's 3.9 MB value buffer held 1.96 MB the moment it was allocated; peak RSS growth
  1.36-1.66x in most fresh processes). So the heap's advice is cleared first
  (:func:`_heap_small_pages`, one ``madvise``): ca-GrQc 0.83-0.88x, pyamg bar 1.35x -> 0.84x.
  The range each thread is expected to write on fresh pages
  (its flops times the output entries per multiply-add of :data:`ESTIMATE_ROWS` sampled rows,
  plus :data:`POPULATE_SLACK`) is faulted in one call (``madvise(MADV_POPULATE_WRITE)``,
  Linux >= 5.14; elsewhere pages fault on first write as usual): 0.15 us a page instead of
  ~1.4 us for a fault taken inside the kernel.

:func:`estimate_nnz` samples the exact row counts of evenly spaced rows (a stamped dense
marker): O(flops of the sampled rows + n_cols).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
from numba import njit

from flexsparse.kernels.cpu._pool import anonymous, keeps, libc_function, take, take_kept
from flexsparse.kernels.cpu._spgemm_rows import count_row_dense

__all__ = ["ESTIMATE_ROWS", "KEPT_SMALL_MIN_BYTES", "POPULATE_SLACK", "SMALL_PAGES_MAX_BYTES", "estimate_nnz",
           "output_buffers", "populate", "sampled_row_nnz", "small_pages_empty", "trim"]

#: Buffers of at most this many bytes of capacity get 4 KiB pages (see the module docstring).
SMALL_PAGES_MAX_BYTES = 64 * 2**20
#: Buffers of 4 KiB pages of at least this many bytes of capacity are kept mappings too
#: (:func:`~._pool.take_kept` with ``huge=False``), smaller ones come from ``malloc``. Each kept
#: buffer is a mapping of its own (the kernel bounds them: ``vm.max_map_count``, ~65K), so only
#: buffers whose advice costs more than a mapping: the two buffers with half their room
#: written, min of 300 (2026-12-03, Zen 4 guest), malloc's path against kept mappings: 96 KiB
#: 23.4 / 9.7 us, 384 KiB 30.6 / 12.7 us, 1.5 MiB 61.8 / 24.3 us; einsum, alternating
#: processes, three each: ca-HepTh 1.66 -> 1.46 ms, pyamg helmholtz_2D 1.15 -> 0.99 ms,
#: pygsp Airfoil 0.44 -> 0.40 ms (minima). Kept mappings are not populated: the pages the
#: result before wrote are resident, and ``MADV_POPULATE_WRITE`` on resident pages costs about
#: what faulting them in did (1.2 MB: 40 us, 585 KB: 22 us; min of 300).
KEPT_SMALL_MIN_BYTES = 256 * 2**10
#: Rows sampled by :func:`estimate_nnz` for the populated range.
ESTIMATE_ROWS = 64
#: The populated range is the estimate times this (an underestimate only costs lazy faults).
POPULATE_SLACK = 1.1
_MADV_POPULATE_WRITE = 23
_MADV_NOHUGEPAGE = 15
_PAGE = 4096


@njit(cache=True)
def sampled_row_nnz(a_indptr, a_indices, b_indptr, b_indices, n_cols, step):
    """``(rows, entries)``: the number of sampled output rows (every ``step``-th) and their
    distinct columns in all (the engine's symbolic row count, no prefetch)."""
    marker = np.zeros(n_cols, dtype=np.uint32)
    rows = 0
    total = 0
    for i in range(0, a_indptr.shape[0] - 1, step):
        rows += 1
        total += count_row_dense(np.uint32(i + 1), a_indptr[i], a_indptr[i + 1], np.uint64(0), a_indices,
                                 b_indptr, b_indices, marker)
    return rows, total


def estimate_nnz(a, b, samples: int = ESTIMATE_ROWS) -> float:
    """nnz of the CSR product ``a @ b`` estimated from the exact counts of ``samples`` evenly
    spaced rows."""
    if a.shape[0] == 0:
        return 0.0
    rows, entries = sampled_row_nnz(a.indptr, a.indices, b.indptr, b.indices, b.shape[1],
                                    max(1, a.shape[0] // samples))
    return entries / rows * a.shape[0]


@njit(cache=True)
def _empty_like(n, like):
    """``np.empty(n, like.dtype)`` from numba's allocator (glibc ``malloc``: no huge pages)."""
    return np.empty(n, dtype=like.dtype)


def _madvise():
    return libc_function("madvise", ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _advise(arr: np.ndarray, start: int, stop: int, advice: int) -> bool:
    """``madvise(advice)`` on the whole pages inside ``arr[start:stop]`` (best effort; ``False``
    where the system cannot)."""
    fn = _madvise()
    if fn is None or stop <= start:
        return False
    lo = arr.ctypes.data + start * arr.itemsize
    hi = arr.ctypes.data + stop * arr.itemsize
    lo = (lo + _PAGE - 1) & ~(_PAGE - 1)
    hi &= ~(_PAGE - 1)
    return hi > lo and fn(lo, hi - lo, advice) == 0


@functools.cache
def _heap_start_and_sbrk():
    """``(start of the heap, sbrk)``, or ``None`` where either cannot be had (no ``/proc``)."""
    try:
        sbrk = ctypes.CDLL(None).sbrk
        sbrk.argtypes = [ctypes.c_ssize_t]
        sbrk.restype = ctypes.c_void_p
        with open("/proc/self/maps") as f:
            starts = [int(line.split("-", 1)[0], 16) for line in f if line.rstrip().endswith("[heap]")]
    except (OSError, AttributeError, ValueError):
        return None
    return (min(starts), sbrk) if starts else None


def _heap_small_pages() -> bool:
    """``MADV_NOHUGEPAGE`` on the whole heap, up to the program break (one call; best effort,
    ``False`` where the system cannot). A freed NumPy array leaves its range advised for huge
    pages; ``malloc`` hands that range to the next buffers, and its own header writes then
    fault whole 2 MiB pages in before any advice on the buffer can act. Pages already
    resident are not touched."""
    found, fn = _heap_start_and_sbrk(), _madvise()
    if found is None or fn is None:
        return False
    start, sbrk = found
    top = sbrk(0)
    if not top or top <= start:
        return False
    return fn(start, (top - start) & ~(_PAGE - 1), _MADV_NOHUGEPAGE) == 0


def populate(arr: np.ndarray, start: int, stop: int) -> bool:
    """Fault in the pages of ``arr[start:stop]`` in one call (best effort; ``False`` where the
    system cannot). Only whole pages inside the range are populated."""
    return _advise(arr, start, stop, _MADV_POPULATE_WRITE)


def small_pages_empty(n: int, dtype) -> np.ndarray:
    """``np.empty(n, dtype)`` whose resident size is its touched 4 KiB pages, for buffers whose
    bytes are charged against a memory limit as they are written (the tiled product's output
    buffer). An anonymous mapping of its own, advised against huge pages: NumPy advises
    arrays from 4 MiB up for them, and a partly written 2 MiB page is resident whole (a
    300K-row tiled product grew 1.10x its limit in one process of three)."""
    dtype = np.dtype(dtype)
    nbytes = int(n) * dtype.itemsize
    if nbytes == 0:
        return np.empty(n, dtype=dtype)
    buf = anonymous(nbytes, huge=False)
    if buf is None:
        return np.empty(n, dtype=dtype)
    return np.frombuffer(buf, dtype=dtype, count=n)


def output_buffers(capacity: int, idx_dtype: np.dtype, work_dtype: np.dtype,
                   ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, data)`` buffers of ``capacity`` slots; with 4 KiB pages, the slot ``ranges``
    expected to be written are faulted in first, unless both buffers lie on kept mappings (see
    the module docstring)."""
    nbytes = capacity * (idx_dtype.itemsize + work_dtype.itemsize)
    if nbytes > SMALL_PAGES_MAX_BYTES:
        return take(capacity, idx_dtype), take(capacity, work_dtype)  # kept from freed results
    if nbytes >= KEPT_SMALL_MIN_BYTES and keeps():
        (indices, kept_i), (data, kept_d) = (take_kept(capacity, dt, False) for dt in (idx_dtype, work_dtype))
        if kept_i and kept_d:  # the pages the result before wrote are resident
            return indices, data
    else:
        _heap_small_pages()
        indices = _empty_like(capacity, np.empty(0, dtype=idx_dtype))
        data = _empty_like(capacity, np.empty(0, dtype=work_dtype))
        for buf in (indices, data):  # malloc may have mapped them apart from the heap (THP "always")
            _advise(buf, 0, capacity, _MADV_NOHUGEPAGE)
    for lo, hi in ranges:
        lo, hi = max(0, int(lo)), min(capacity, int(hi))
        populate(indices, lo, hi)
        populate(data, lo, hi)
    return indices, data


def trim(arr: np.ndarray, n: int) -> np.ndarray:
    """``arr[:n]``, giving the unused tail back to the allocator when ``arr`` owns its buffer."""
    if arr.shape[0] == n:
        return arr
    try:
        arr.resize(n, refcheck=False)  # realloc: shrinks in place (mremap for large blocks)
        return arr
    except ValueError:
        return arr[:n]
