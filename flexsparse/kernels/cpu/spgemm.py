"""Row-wise (Gustavson) sparse x sparse matrix product ``C = A @ B`` on CSR buffers.

Algorithm: output row ``i`` is ``sum_k A[i, k] * B[k, :]``; the partial products are
merged by an *accumulator* (:mod:`._spgemm_rows`). Every thread owns one contiguous block
of output rows (split by :func:`~flexsparse.kernels.cpu.partition.cost_partition` on the
flops of each row, ``sum_{k in A[i,:]} nnz(B[k,:])``) and writes its rows back to back
from the block's output offset, so

* one thread needs no symbolic pass at all: its rows go into buffers with room for the
  product's flops, of which only the ``nnz(C)`` written slots are ever touched (the rest
  costs address space, not memory), then the buffers are trimmed
  (:func:`spgemm_csr_csr_serial`, and :func:`_run` on one thread);
* ``t`` threads count (:func:`spgemm_csr_csr_symbolic`, all threads) only the rows before
  the last thread's block -- the offsets the other blocks need -- then compute every block
  in one pass (:func:`spgemm_csr_csr_numeric`). On two threads that is a quarter of a
  symbolic pass instead of a whole one. With :data:`TWO_ENDED` (the default) the first
  thread writes its rows *down* from the second block's offset into room for its flops
  below it (in chunks of :data:`~._spgemm_worker.BACK_CHUNK` multiply-adds, last chunk first, each chunk's
  rows forward; the result starts where its first row lands), so only the blocks between
  the first and the last are counted -- none on two threads.
  Blocks that would need more than :data:`ONE_PASS_MAX_BYTES` of room are counted too
  (a classic symbolic + numeric pair).

The symbolic pass costs 20-50 % of the numeric one (measured: 3-D Poisson 11 vs 23 ms,
R-MAT scale 14 12 vs 50 ms, one thread), which is what these one-pass blocks save.

Rows come out *jumbled* (columns in first-touch order, no duplicates) unless ``sort=True``
asks for strictly increasing columns; sorted rows are sorted right after they are
computed, while they are in cache (:func:`~flexsparse.kernels.cpu.rowsort.sort_row_pairs`),
and a jumbled result can be sorted later with :func:`~flexsparse.kernels.cpu.rowsort.sort_csr_rows`.

Accumulators (a rule in :data:`ACCUMULATORS` picks one per *part*, a block of
consecutive output rows, :data:`PARTS_PER_WORKER` per thread):

* ``dense``: per-thread workspaces of ``n_cols`` slots carrying a row stamp, so they are
  never reset; lazily zeroed (``np.zeros``), so only the pages a product touches cost
  anything. The numeric pass has two dense variants, a position map and a branch-free
  value accumulator (see :mod:`._spgemm_rows`): with ``variant="auto"`` each thread times
  both on its first rows (pairs of stretches of :data:`~._spgemm_worker.ADAPT_CHUNK` multiply-adds, taking
  turns, the second of each pair timed with the CPU cycle counter) and keeps the faster
  for its other rows -- the position map wins on meshes and stencils (predictable
  branches), the value accumulator on graphs (3-D Poisson 23 vs 33 ms, R-MAT scale 14 81
  vs 50 ms, one thread), but only while the value workspaces of all threads fit
  :data:`~flexsparse._limits.SPGEMM_VALUE_MAX_BYTES`.
* ``hash``: stamped linear-probing tables sized to each row's flops (load <= 1/2).

Rule ``"auto"``: dense when ``n_cols <= DENSE_MAX_COLS`` (measured on this project's VM:
a dense workspace beat the hash table for every column count up to 2^22, one thread --
symbolic 1.1-2.6 vs 5.7 ns, numeric 2.4-7 vs 7 ns per multiply-add on uniformly random
columns; R-MAT scale 20 rows/128 with 2^20 columns: position map 469 ms, hash 748 ms),
else when a part's flops per row reach ``n_cols / DENSE_FILL_RATIO``; hash otherwise.
The sort-merge of tiny rows that the accumulators could fall back to did not pay: the
stamped dense workspace needs no reset, so a tiny row costs its flops and nothing more.

Threads: a block's cost is at most ``total / threads + max(row cost)``; hub rows are not
split (an R-MAT scale-18 hub row holds well under 1 % of the flops). Rows of equal flops do
not cost the same (worker 0 also moves its chunks; the variants differ per worker), so on
two threads each worker claims its parts as it reaches them and, once done, takes the
other's parts from their far end (:mod:`._spgemm_steal`; 3-D Poisson: busy 7.0 / 5.9 ms ->
6.1 / 6.5 ms). Products below
:data:`~flexsparse._limits.SPGEMM_PARALLEL_MIN_FLOPS` multiply-adds run on one thread (a
fixed rule of the product's size, measured; never of the machine's momentary load).

Rows of ``A`` with a single entry are a scaled copy of one row of ``B`` (no merge) when
``B`` has sorted, duplicate-free rows.

Formats: :class:`~flexsparse.formats.csr.CSR` inputs with any indices order and
duplicates allowed (they are summed); int32 or int64 indices; values bool/int/float/complex,
promoted like NumPy (``np.result_type``; bool x bool is computed in int64 and returned as
bool, i.e. "any"). Entries are structural: stored zeros and cancellations stay in ``C``
(unlike SciPy, which drops exact zeros), and NaN/inf propagate.

Cost: O(nnz(A) + nnz(B) + flops) time, plus O(k * passes) per sorted output row of k
entries when ``sort=True``; O(threads * n_cols) dense workspace (touched pages only) or
O(threads * largest table) hash workspace, plus the output (and untouched address space
for the flops of the one-pass block).

>>> import numpy as np, scipy.sparse as sp
>>> a = CSR.from_scipy(sp.random_array((30, 20), density=0.2, rng=0, format="csr"))
>>> b = CSR.from_scipy(sp.random_array((20, 40), density=0.2, rng=1, format="csr"))
>>> c = spgemm(a, b)
>>> c.sorted_indices, bool(np.allclose(c.toarray(), a.toarray() @ b.toarray()))
(True, True)
>>> spgemm(a, b, sort=False).sorted_indices
False
>>> spgemm(a, a)
Traceback (most recent call last):
...
ValueError: spgemm: inner dimensions differ: a has 20 columns (shape (30, 20)) but b has 30 rows (shape (30, 20))
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numba
import numpy as np
from numba import njit, prange

from flexsparse._limits import SPGEMM_NARROW_MIN_FLOPS_PER_ENTRY as NARROW_MIN_FLOPS_PER_ENTRY
from flexsparse._limits import SPGEMM_PARALLEL_MIN_FLOPS as PARALLEL_MIN_FLOPS
from flexsparse._limits import SPGEMM_STEAL_MIN_BYTES as STEAL_MIN_BYTES
from flexsparse._limits import SPGEMM_VALUE_MAX_BYTES as VALUE_MAX_BYTES
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu._spgemm_flops import (
    _row_flops_blocked,
    _row_flops_checked,
    count_flops,
    count_flops_checked,
)
from flexsparse.kernels.cpu._spgemm_output import (
    POPULATE_SLACK,
    SMALL_PAGES_MAX_BYTES,
    estimate_nnz,
    output_buffers,
    populate,
    trim,
)
from flexsparse.kernels.cpu._spgemm_rows import position_tag_dtype
from flexsparse.kernels.cpu._spgemm_steal import no_stealing, stitch
from flexsparse.kernels.cpu._spgemm_worker import (
    ADAPT_CHUNK,
    ADAPT_RETIME,
    BACK_CHUNK,
    MIN_TIMED_FLOPS,
    POPULATE_FLOPS_PER_COLUMN,
    TRACE_FIELDS,
    _numeric_worker,
    _symbolic_worker,
)
from flexsparse.kernels.cpu.partition import check_threads, cost_split, thread_scope
from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES

__all__ = [
    "ACCUMULATORS",
    "ADAPT_CHUNK",
    "ADAPT_RETIME",
    "DENSE_FILL_RATIO",
    "DENSE_MAX_COLS",
    "PARALLEL_MIN_FLOPS",
    "PARTS_PER_WORKER",
    "POPULATE_FLOPS_PER_COLUMN",
    "SMALL_FLOPS",
    "STEAL",
    "TAIL_SHARES",
    "TRACE_FIELDS",
    "TWO_ENDED",
    "BACK_CHUNK",
    "VARIANTS",
    "ONE_PASS_MAX_BYTES",
    "WORKER_ZEROED_MAX_BYTES",
    "WORKSPACE_POPULATE_MIN_BYTES",
    "check_operands",
    "count_flops",
    "count_flops_checked",
    "dense_workspaces",
    "get_accumulator",
    "no_stealing",
    "spgemm",
    "spgemm_csr_csr_counted",
    "spgemm_csr_csr_numeric",
    "spgemm_csr_csr_serial",
    "spgemm_csr_csr_symbolic",
    "spgemm_small",
    "spgemm_trusted",
]

#: ``"auto"`` uses the dense accumulator up to this many output columns (see the module
#: docstring for the measurement).
DENSE_MAX_COLS = 1 << 22
#: Beyond that, ``"auto"`` uses the dense accumulator for parts with flops per row >=
#: n_cols / DENSE_FILL_RATIO (the row touches a sizeable share of the workspace anyway).
DENSE_FILL_RATIO = 256
#: Parts per thread: the granularity at which the accumulator is chosen and at which two
#: workers take work from each other (:mod:`._spgemm_steal`). 16 against 8, 2 threads, stealing,
#: min of 5 interleaved einsum calls (2026-11-30, load ~1): R-MAT 18 ef 16 rows/64 56.5 against
#: 60.9 ms, R-MAT 16 ef 8 rows/2 54.8 against 57.1, 3-D Poisson 9.28 against 9.58, Bunny 5.35
#: against 5.41, R-MAT 18 ef 8 78.7 against 77.4 (24: within 2 % of 16).
PARTS_PER_WORKER = 16
#: Shares of a worker's flops in its parts, in the order it computes them, on two workers that
#: take each other's parts (:data:`STEAL`): the parts computed last, which the other worker takes
#: from the far end, are smaller, so the two finish closer together (equal parts: one finished
#: 0.2-0.3 ms early on 3-D Poisson, about half a part).
TAIL_SHARES = (0.1,) * 8 + (0.025,) * 8
#: Products with fewer multiply-adds than this run as one compiled call
#: (:func:`spgemm_csr_csr_serial`: numba allocates its small buffers, no Python glue).
SMALL_FLOPS = 1 << 15
#: Dense workspaces of at most this many bytes a thread are zeroed by their workers, in
#: parallel, rather than by ``np.zeros``: blocks that size come from the heap once larger
#: ones were freed, and ``calloc`` then clears them on one thread (3-D Poisson, two threads:
#: 7 MB in 0.25-0.28 ms). Larger ones are fresh mappings whose untouched pages cost nothing.
#: Zeroing also faults every page in before any timed stretch, so it replaces the one-thread
#: populate of :data:`POPULATE_FLOPS_PER_COLUMN` on several threads (R-MAT 18 ef 16 rows/64,
#: two threads: 0.45 ms of populate before the kernel against workers starting 0.05 ms later).
WORKER_ZEROED_MAX_BYTES = 16 * 2**20
#: ... and a workspace of fewer bytes is not faulted in first: it comes from the heap (below
#: glibc's ``mmap`` threshold), whose pages an earlier buffer has mostly made resident, and the
#: ``madvise`` on them is a system call for nothing (pygsp Airfoil, 4,253 columns, one thread:
#: the three workspaces 15.8 us with it, 2.2 us without; min of 500, 2026-12-03).
WORKSPACE_POPULATE_MIN_BYTES = 128 * 2**10
#: Numeric dense variants by name (the code the workers take).
VARIANTS = {"auto": 0, "position": 1, "value": 2}
#: One-thread products write their rows back to back into buffers of flops capacity (no
#: symbolic pass: measured 20-35 % of the two-pass time) when that capacity takes at most
#: this many bytes of address space; only the written slots are ever touched.
ONE_PASS_MAX_BYTES = 8 * 2**30
_INT32 = np.dtype(np.int32)
_INT64 = np.dtype(np.int64)
_INT32_MAX = 2**31 - 1
#: Worker 0 writes its rows down from worker 1's offset (no counted rows on two threads; see
#: :func:`_run`). Walking its rows one by one last to first, worker 0 prefetched B rows of rows
#: it had already computed (the prefetch looks ahead in A's entry order) and latency-bound
#: products lost their second thread (2 threads over 1: uniform 2^18 x 8 per row 1.75x ->
#: 0.97x); fills walking backwards as well, inlined beside the forward ones, slowed the
#: forward loops on short rows (tridiagonal 32768: 1.12 -> 1.45 ms). Chunks computed forward
#: and moved up (:data:`~._spgemm_worker.BACK_CHUNK`) keep the forward code: 2 threads over 1, same runs,
#: counted -> two-ended: R-MAT 16/8 1.93x -> 2.00x, 16/16 1.63x -> 1.79x, 18/16 1.42x -> 1.63x,
#: uniform 1.57x -> 1.65x, arrow 1.32x -> 1.60x, 3-D Poisson 1.37x -> 1.37x (2026-11-29,
#: other jobs paused, min of 5, TWO_ENDED toggled in one process).
TWO_ENDED = True
#: Row stamps are ``i + 1`` in 32 bits.
_MAX_ROWS = 2**32 - 1
_ONE_DENSE_PART = np.ones(1, dtype=np.bool_)
_ONE_DENSE_PART.flags.writeable = False
_INT32_LIKE, _INT64_LIKE = np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64)  # index dtype carriers
#: Per-thread trace of the last parallel product (see :func:`~._spgemm_worker._numeric_worker`), for benchmarks.
LAST_TRACE = np.empty((0, TRACE_FIELDS))
#: Offset of the first entry of the last parallel product in its buffers (see :func:`_run`).
LAST_START = 0
#: Parts each worker of the last parallel product took from the other (see :func:`_run`).
LAST_STOLEN = np.zeros(0, dtype=np.int64)
#: Two workers of a two-ended product claim their parts and take the other's once done with
#: theirs (:mod:`._spgemm_steal`), when the output buffers are kept ones (above
#: ``SMALL_PAGES_MAX_BYTES``: a stolen entry written into a fresh 4 KiB page pays its fault)
#: and the product's bytes reach ``SPGEMM_STEAL_MIN_BYTES``.
STEAL = True


# ------------------------------------------------------------------ accumulator rules
def _rule_auto(part_flops: np.ndarray, part_rows: np.ndarray, n_cols: int) -> np.ndarray:
    if n_cols <= DENSE_MAX_COLS:
        return np.ones(part_flops.shape, dtype=np.bool_)
    return part_flops * DENSE_FILL_RATIO >= np.maximum(part_rows, 1) * float(n_cols)


def _rule_dense(part_flops: np.ndarray, part_rows: np.ndarray, n_cols: int) -> np.ndarray:
    return np.ones(part_flops.shape, dtype=np.bool_)


def _rule_hash(part_flops: np.ndarray, part_rows: np.ndarray, n_cols: int) -> np.ndarray:
    return np.zeros(part_flops.shape, dtype=np.bool_)


#: Accumulator rules by name: ``(part_flops, part_rows, n_cols) -> bool[n_parts]``,
#: ``True`` where a part uses the dense accumulator.
ACCUMULATORS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "auto": _rule_auto,
    "dense": _rule_dense,
    "hash": _rule_hash,
}


def get_accumulator(name: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """Look up an accumulator rule by name.

    >>> get_accumulator("spa")
    Traceback (most recent call last):
    ...
    ValueError: unknown accumulator 'spa'; valid names: auto, dense, hash
    """
    try:
        return ACCUMULATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown accumulator {name!r}; valid names: {', '.join(ACCUMULATORS)}") from None


# --------------------------------------------------------------------------- kernels
@njit(cache=True, parallel=True)
def spgemm_csr_csr_symbolic(a_indptr, a_indices, b_indptr, b_indices, b_sorted, row_flops, bounds,
                            worker_bounds, use_dense, marker, out_counts):
    """Count the distinct columns of the output rows ``bounds[0]:bounds[-1]`` of ``A @ B``.

    Args:
        a_indptr, a_indices: CSR structure of ``A`` (``int64[n_rows+1]``, ``[nnz_a]``).
        b_indptr, b_indices: CSR structure of ``B``.
        b_sorted: ``B`` rows are strictly increasing (single-entry rows of ``A`` then copy
            a row of ``B`` without merging).
        row_flops: ``int64[n_rows]`` flops per output row (sizes the hash tables).
        bounds: ``int64[n_parts+1]`` row ranges of the parts.
        worker_bounds: ``int64[n_workers+1]`` part ranges of the workers (one ``prange``
            iteration per worker, so each allocates its workspace once).
        use_dense: ``bool[n_parts]`` accumulator of each part.
        marker: ``uint32[n_workers, n_cols]`` zeros (one dense workspace per worker; may
            have 0 columns when no part is dense).
        out_counts: ``int64[n_rows]``, filled with the output row lengths.
    """
    for w in prange(worker_bounds.shape[0] - 1):
        _symbolic_worker(w, a_indptr, a_indices, b_indptr, b_indices, b_sorted, row_flops, bounds,
                         worker_bounds, use_dense, marker[w], out_counts)


@njit(cache=True, parallel=True)
def spgemm_csr_csr_numeric(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted,
                           row_flops, bounds, worker_bounds, use_dense, variant, sort, back0, c_indptr,
                           c_indices, c_data, tag, marker, acc, zero, trace, claims, part_costs, reserve, stolen,
                           n_stolen):
    """Compute ``C = A @ B``, each worker's rows back to back from its first row's offset
    (``back0``: worker 0's rows down to the offset of worker 1's first row).

    Args are those of :func:`spgemm_csr_csr_symbolic` plus the values ``a_data``,
    ``b_data`` (already of the output dtype), ``variant`` (:data:`VARIANTS`), ``sort``
    (order each row by column), ``back0``, the output ``c_indptr: int64[n_rows+1]`` holding
    the offset of every worker's first row (of worker 1's with ``back0``; the rest is filled
    here, but ``c_indptr[-1]``: the end of the last worker, ``trace[-1, 3]``; with ``back0``
    the start of worker 0's rows is ``trace[0, 3]``), ``c_indices``/``c_data`` with room
    for every worker's flops past its offset (below it for worker 0 with ``back0``),
    per-worker dense workspaces ``tag: [n_workers, n_cols]`` of
    :func:`~._spgemm_rows.position_tag_dtype`, ``marker: uint32[n_workers, n_cols]`` and
    ``acc: [n_workers, n_cols]`` of the output dtype (``marker``/``acc`` with 0 columns for
    ``variant=1``), zeroed, or cleared here by their workers with ``zero``
    (:func:`dense_workspaces`), ``trace: float64[n_workers, 6]``, and the stealing state of two workers
    (``claims`` empty: none; see :func:`~._spgemm_worker._numeric_worker`).
    """
    for w in prange(worker_bounds.shape[0] - 1):
        if zero:  # each worker clears its own workspaces (see WORKER_ZEROED_MAX_BYTES)
            tag[w][:] = 0
            marker[w][:] = 0
            acc[w][:] = 0
        _numeric_worker(w, back0 and w == 0, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted,
                        row_flops, bounds, worker_bounds, use_dense, variant, sort, c_indptr,
                        c_indices, c_data, tag[w], marker[w], acc[w], trace[w], claims, part_costs, reserve,
                        stolen, n_stolen)


@njit(cache=True)
def spgemm_csr_csr_serial(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, b_sorted,
                          row_flops, total, bounds, use_dense, variant, sort, index_like):
    """One-thread ``C = A @ B`` in a single compiled call and a single pass (no symbolic
    count): rows are written back to back into buffers of ``total`` (flops) capacity.
    For small products (the allocations are numba's). Returns ``(c_indptr, c_indices,
    c_data)``, the last two views of the first ``nnz(C)`` slots."""
    dense = False
    for part in range(bounds.shape[0] - 1):
        dense |= use_dense[part]
    nd = n_cols if dense else 0
    if variant == 0 and total < MIN_TIMED_FLOPS:
        variant = 1  # too small to time the variants: the position map alone
    nv = nd if variant != 1 else 0
    worker_bounds = np.empty(2, dtype=np.int64)
    worker_bounds[0] = 0
    worker_bounds[1] = bounds.shape[0] - 1
    n_rows = a_indptr.shape[0] - 1
    c_indptr = np.empty(n_rows + 1, dtype=np.int64)
    c_indptr[0] = 0
    c_indices = np.empty(total, dtype=index_like.dtype)
    c_data = np.empty(total, dtype=a_data.dtype)
    trace = np.empty(TRACE_FIELDS)
    no_claims = np.zeros(0, dtype=np.int64)  # one worker: nothing to claim
    _numeric_worker(0, False, a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, b_sorted, row_flops,
                    bounds, worker_bounds, use_dense, variant, sort, c_indptr, c_indices, c_data,
                    np.zeros(nd, dtype=np.uint32), np.zeros(nv, dtype=np.uint32),
                    np.zeros(nv, dtype=a_data.dtype), trace, no_claims, np.zeros(0, dtype=np.float64),
                    np.zeros((1, 2), dtype=np.int64), np.zeros((1, 0, 3), dtype=np.int64), no_claims)
    nnz = np.int64(trace[3])
    c_indptr[n_rows] = nnz
    return c_indptr, c_indices[:nnz], c_data[:nnz]


@njit(cache=True)
def spgemm_csr_csr_counted(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, b_sorted,
                           sort, check, max_flops, index_like):
    """The flops count, with the inf/nan scan of both operands' values when ``check``, then
    :func:`spgemm_csr_csr_serial` (one part, the rule's one dense part, ``variant="auto"``),
    in one compiled call: the small product of :func:`spgemm_small`. Returns ``(row_flops,
    total, bad, c_indptr, c_indices, c_data)``; the product is computed only when no value is
    inf or nan and ``total < max_flops``, else ``c_indptr`` is empty."""
    n_rows = a_indptr.shape[0] - 1
    row_flops = np.empty(n_rows, dtype=np.int64)
    if check:
        total, bad = _row_flops_checked(a_indptr, a_indices, b_indptr, row_flops, a_data, b_data)
    else:
        total, bad = _row_flops_blocked(a_indptr, a_indices, b_indptr, False, row_flops, 0, n_rows), False
    if bad or total >= max_flops:
        return (row_flops, total, bad, np.empty(0, dtype=np.int64), index_like[:0], a_data[:0])
    bounds = np.empty(2, dtype=np.int64)
    bounds[0] = 0
    bounds[1] = n_rows
    c_indptr, c_indices, c_data = spgemm_csr_csr_serial(
        a_indptr, a_indices, a_data, b_indptr, b_indices, b_data, n_cols, b_sorted, row_flops, total,
        bounds, np.ones(1, dtype=np.bool_), 0, sort, index_like)
    return row_flops, total, bad, c_indptr, c_indices, c_data


# --------------------------------------------------------------------------- wrapper
def check_operands(a: object, b: object, op: str = "spgemm") -> None:
    """``TypeError`` unless both operands are :class:`CSR`, ``ValueError`` unless their inner
    dimensions match (messages name ``op``)."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, CSR):
            raise TypeError(f"{op}: {name} must be a flexsparse CSR, got {type(x).__name__}")
    if a.n_cols != b.n_rows:
        raise ValueError(f"{op}: inner dimensions differ: a has {a.n_cols} columns (shape {a.shape}) "
                         f"but b has {b.n_rows} rows (shape {b.shape})")


def _dense_flags(rule: Callable, bounds: np.ndarray, part_costs: np.ndarray, n_cols: int) -> np.ndarray:
    part_rows = np.diff(bounds)
    return np.asarray(rule(part_costs, part_rows, n_cols), dtype=np.bool_)


def dense_workspaces(n_threads: int, n_cols: int, total: int, code: int, work_dtype: np.dtype
                     ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, bool]:
    """``(code, tag, marker, acc, zero)`` for :func:`spgemm_csr_csr_numeric`: the variant code
    to run (``"auto"`` becomes the position map alone when the value accumulator's workspaces
    of all threads would outgrow ``SPGEMM_VALUE_MAX_BYTES``) and per-thread dense workspaces
    of ``n_cols`` columns (0 when no part is dense) for a product of ``total`` multiply-adds:
    on several threads with at most :data:`WORKER_ZEROED_MAX_BYTES` a thread, left for each
    worker to zero (``zero``); else zeroed, and faulted in at once when the product will touch
    most of their pages (:data:`POPULATE_FLOPS_PER_COLUMN`)."""
    if code == 0 and n_threads * min(n_cols, total) * (work_dtype.itemsize + 4) > VALUE_MAX_BYTES:
        code = 1  # the value accumulator's workspaces would outgrow the shared cache
    nv = n_cols if code != 1 else 0
    tag_dtype = position_tag_dtype(total)
    populate_all = n_cols and total >= POPULATE_FLOPS_PER_COLUMN * n_threads * n_cols
    zero = n_threads > 1 and \
        n_cols * tag_dtype.itemsize + nv * (4 + work_dtype.itemsize) <= WORKER_ZEROED_MAX_BYTES
    alloc = np.empty if zero else np.zeros
    tag = alloc((n_threads, n_cols), dtype=tag_dtype)
    marker = alloc((n_threads, nv), dtype=np.uint32)
    acc = alloc((n_threads, nv), dtype=work_dtype)
    if populate_all and not zero:
        for ws in (tag, marker, acc):  # every page will be touched: fault them in at once
            if ws.nbytes >= WORKSPACE_POPULATE_MIN_BYTES:
                populate(ws, 0, ws.size)
    return code, tag, marker, acc, zero


def spgemm(a: CSR, b: CSR, *, accumulator: str = "auto", sort: bool = True, variant: str = "auto",
           threads: int | None = None) -> CSR:
    """Sparse x sparse product ``a @ b`` (Gustavson, see the module docstring).

    Args:
        a: ``[m, k]`` CSR.
        b: ``[k, n]`` CSR (any row order, duplicates summed).
        accumulator: a name in :data:`ACCUMULATORS` (``"auto"``, ``"dense"``, ``"hash"``).
        sort: return rows with strictly increasing columns; ``False`` leaves them in
            first-touch order (no duplicates either way), which is cheaper.
        variant: dense numeric variant, a name in :data:`VARIANTS` (``"auto"`` times both).
        threads: numba threads for this call (``None``: numba's current setting); an upper
            bound: products below ``SPGEMM_PARALLEL_MIN_FLOPS`` multiply-adds run on one
            thread.

    Returns:
        ``[m, n]`` CSR with duplicate-free rows, indices int32 when ``n < 2**31``, dtype
        ``np.result_type(a.dtype, b.dtype)``, ``sorted_indices == sort``.

    Raises:
        TypeError: an operand is not a :class:`CSR`.
        ValueError: inner dimensions differ, unknown accumulator/variant or bad ``threads``.
    """
    check_operands(a, b)
    if a.n_rows >= _MAX_ROWS:
        raise ValueError(f"spgemm: a has {a.n_rows} rows; the accumulators stamp rows in 32 bits, "
                         f"so at most {_MAX_ROWS - 1} are supported")
    rule = get_accumulator(accumulator)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid names: {', '.join(VARIANTS)}")
    check_threads(threads)
    return spgemm_trusted(a, b, rule, VARIANTS[variant], bool(sort), threads)


def spgemm_trusted(a: CSR, b: CSR, rule: Callable = _rule_auto, code: int = 0, sort: bool = False,
                   threads: int | None = None, counted: tuple[np.ndarray, int] | None = None,
                   nnz_hint: float | None = None) -> CSR:
    """:func:`spgemm` without the argument checks, for callers that established them (the
    einsum path): CSR operands of matching inner size, a rule, a variant code, valid
    ``threads``, and optionally ``counted``: the flops of every output row and their sum,
    already counted (:func:`count_flops`), and ``nnz_hint``: the product's nnz as
    :func:`~._spgemm_output.estimate_nnz` estimated it (sampled again here when needed)."""
    a_dtype, b_dtype = a.data.dtype, b.data.dtype  # np.result_type costs ~1 us: not for one dtype
    out_dtype = a_dtype if a_dtype == b_dtype else np.result_type(a_dtype, b_dtype)
    work_dtype = _INT64 if out_dtype == np.bool_ else out_dtype
    n_rows, n_cols = a.shape[0], b.shape[1]
    idx_dtype = _INT32 if n_cols <= _INT32_MAX else _INT64
    if n_rows == 0 or n_cols == 0 or a.indices.shape[0] == 0 or b.indices.shape[0] == 0:
        return CSR._trusted(np.zeros(n_rows + 1, dtype=np.int64), np.empty(0, dtype=idx_dtype),
                            np.empty(0, dtype=out_dtype), (n_rows, n_cols), True)
    a_data = a.data.astype(work_dtype, copy=False)
    b_data = b.data.astype(work_dtype, copy=False)
    flops, total = count_flops(a, b, threads) if counted is None else counted
    if total >= NARROW_MIN_FLOPS_PER_ENTRY * (a.indices.shape[0] + b.indices.shape[0]):
        # a row of b is read per entry of a: 4-byte indices halve its index bytes
        narrow = a.compact_indices()
        a, b = narrow, (narrow if b is a else b.compact_indices())
    if total < SMALL_FLOPS:
        if n_cols <= DENSE_MAX_COLS:  # one part (the registered rules decide per part)
            bounds = np.array([0, n_rows], dtype=np.int64)
            use_dense = _ONE_DENSE_PART if rule is _rule_auto else \
                _dense_flags(rule, bounds, np.array([float(total)]), n_cols)
        else:
            part = cost_split(flops + 1, 1, PARTS_PER_WORKER)
            bounds = part.bounds
            use_dense = _dense_flags(rule, bounds, part.part_costs - np.diff(bounds), n_cols)
        # one compiled call; its small allocations stay in numba
        c_indptr, c_indices, c_data = spgemm_csr_csr_serial(
            a.indptr, a.indices, a_data, b.indptr, b.indices, b_data, n_cols, b.sorted_indices, flops,
            total, bounds, use_dense, code, sort, np.empty(0, dtype=idx_dtype))
    else:
        n_threads = _threads_for(int(total), numba.get_num_threads() if threads is None else threads)
        with thread_scope(n_threads if n_threads == 1 else threads):
            c_indptr, c_indices, c_data = _run(a, b, a_data, b_data, flops, int(total), rule, code, sort,
                                               n_threads, idx_dtype, work_dtype, nnz_hint)
    if work_dtype != out_dtype:
        c_data = c_data.astype(out_dtype)
    # a product without entries is sorted whatever was asked (as the empty-operand return above)
    return CSR._trusted(c_indptr, c_indices, c_data, (n_rows, n_cols), sort or c_indices.shape[0] == 0)


def spgemm_small(a: CSR, b: CSR, sort: bool, check: bool) -> tuple[CSR | None, tuple[np.ndarray, int] | None, bool]:
    """``(C, (row flops, total), bad)`` of a small product in one compiled call
    (:func:`spgemm_csr_csr_counted`): the einsum path's flops count, inf/nan scan (``check``)
    and one-thread product, as :func:`spgemm_trusted` would run them with the default rule and
    variant. ``C`` is ``None`` when an operand holds an inf or nan (``bad``), or when the
    product has ``SMALL_FLOPS`` multiply-adds or more (the counts are returned for the general
    path); ``(None, None, False)`` when the operands are not small (``SMALL_FLOPS`` stored
    entries or more), empty, of different or uncompiled value dtypes, or wider than
    ``DENSE_MAX_COLS`` columns.

    Measured on pyamg airfoil (260 rows, 11,300 multiply-adds, one thread): the count, the
    scan and the kernel's wrapper took ~25 us above the kernel as separate calls.
    """
    n_rows, n_cols = a.shape[0], b.shape[1]
    a_nnz, b_nnz = a.indices.shape[0], b.indices.shape[0]
    dtype = a.data.dtype
    if not (0 < a_nnz and 0 < b_nnz and a_nnz + b_nnz < SMALL_FLOPS and 0 < n_cols <= DENSE_MAX_COLS) or \
            b.data.dtype != dtype or dtype not in COMPILED_DTYPES:
        return None, None, False
    like = _INT32_LIKE if n_cols <= _INT32_MAX else _INT64_LIKE
    flops, total, bad, c_indptr, c_indices, c_data = spgemm_csr_csr_counted(
        a.indptr, a.indices, a.data, b.indptr, b.indices, b.data, n_cols, b.sorted_indices, sort,
        check and dtype.kind in "fc", SMALL_FLOPS, like)
    if bad or c_indptr.shape[0] == 0:
        return None, (flops, int(total)), bool(bad)
    return CSR._trusted(c_indptr, c_indices, c_data, (n_rows, n_cols), sort or c_indices.shape[0] == 0), \
        (flops, int(total)), False


@functools.lru_cache(maxsize=4)
def _tail_cuts(tail_shares: tuple[float, ...]) -> np.ndarray:
    """Part cuts of two workers from ``tail_shares`` (:data:`TAIL_SHARES`; worker 0 walks its
    rows down, so its last parts are its first rows); read-only, kept."""
    shares = np.asarray(tail_shares, dtype=np.float64)
    if shares.shape != (PARTS_PER_WORKER,):
        raise ValueError(f"TAIL_SHARES needs {PARTS_PER_WORKER} shares, got {shares.shape[0]}")
    cuts = np.zeros((2, PARTS_PER_WORKER + 1))
    cuts[0, 1:] = np.cumsum(shares[::-1])
    cuts[1, 1:] = np.cumsum(shares)
    cuts /= cuts[:, -1:]
    cuts.flags.writeable = False
    return cuts


def _large_enough_to_steal(a: CSR, b: CSR, entry_bytes: int, nnz_hint: float | None = None) -> bool:
    """Whether the operands and the expected result (``nnz_hint``, or 16 sampled rows) take at
    least ``SPGEMM_STEAL_MIN_BYTES``: a stolen part's reserve pages then stay a small share of
    the product's memory."""
    inputs = sum(x.indptr.nbytes + x.indices.nbytes + x.data.nbytes for x in ({id(a): a, id(b): b}.values()))
    if inputs >= STEAL_MIN_BYTES:
        return True
    return inputs + (estimate_nnz(a, b, 16) if nnz_hint is None else nnz_hint) * entry_bytes >= STEAL_MIN_BYTES


def _threads_for(total: int, n_threads: int) -> int:
    """Threads for a product of ``total`` multiply-adds (see
    :data:`~flexsparse._limits.SPGEMM_PARALLEL_MIN_FLOPS`)."""
    return 1 if total < PARALLEL_MIN_FLOPS else n_threads


def _run(a: CSR, b: CSR, a_data: np.ndarray, b_data: np.ndarray, flops: np.ndarray, total: int, rule: Callable,
         code: int, sort: bool, n_threads: int, idx_dtype: np.dtype, work_dtype: np.dtype,
         nnz_hint: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Products of at least ``SMALL_FLOPS`` multiply-adds on ``n_threads`` threads
    (``nnz_hint``: see :func:`spgemm_trusted`).

    Every worker writes its contiguous block of rows back to back from the block's output
    offset, the last worker into room for its flops, so only the rows before the last
    worker's block need counting first (phase 1, the symbolic kernel on all threads), and
    one thread needs no counting at all. With :data:`TWO_ENDED`, worker 0 writes its rows
    *down* from worker 1's offset, into room for its flops below it, so only the rows of the
    workers in between are counted: none on two threads (the quarter of a symbolic pass
    saved, see :data:`TWO_ENDED`). Only the entries of that room are ever
    touched (the rest costs address space, not memory); blocks whose flops would need more
    than ``ONE_PASS_MAX_BYTES`` of room are counted too. The result starts where worker 0's
    first row landed; the buffers are trimmed at its end.

    NumPy allocates large outputs and the workspaces: large blocks get transparent huge pages
    (numba's allocator does not), which made first-touch page faults ~4x cheaper (5.2M
    entries: 22 ms -> 6 ms).
    """
    n_rows, n_cols = a.n_rows, b.n_cols
    # +1 per row: the fixed per-row overhead, so flop-free rows are not free
    part = cost_split(flops + 1, n_threads, PARTS_PER_WORKER,
                      _tail_cuts(TAIL_SHARES) if STEAL and TWO_ENDED and n_threads == 2 and TAIL_SHARES else None)
    bounds, worker_bounds = part.bounds, part.worker_bounds
    part_flops = part.part_costs - np.diff(bounds)
    use_dense = _dense_flags(rule, bounds, part_flops, n_cols)
    # flops of the rows before each part (float64: exact below 2^53), instead of sums over rows
    before = np.concatenate(([0.0], np.cumsum(part_flops)))
    n_parts = bounds.shape[0] - 1
    entry_bytes = idx_dtype.itemsize + work_dtype.itemsize
    last = int(bounds[worker_bounds[-2]])  # first row of the last worker
    last_flops = int(before[n_parts] - before[worker_bounds[-2]])
    first = int(bounds[worker_bounds[1]]) if n_threads > 1 else 0  # first row of worker 1
    room0 = int(before[worker_bounds[1]]) if n_threads > 1 else 0
    back0 = TWO_ENDED and n_threads > 1 and room0 * entry_bytes <= ONE_PASS_MAX_BYTES
    lo = first if back0 else 0  # rows lo:hi are counted first
    hi, hi_flops = (last, last_flops) if last_flops * entry_bytes <= ONE_PASS_MAX_BYTES else (n_rows, 0)
    c_indptr = np.empty(n_rows + 1, dtype=np.int64)
    c_indptr[lo] = room0 if back0 else 0
    if hi > lo:
        cpart = cost_split(flops[lo:hi] + 1, n_threads, PARTS_PER_WORKER)
        cdense = _dense_flags(rule, cpart.bounds, cpart.part_costs - np.diff(cpart.bounds), n_cols)
        marker = np.zeros((n_threads, n_cols if cdense.any() else 0), dtype=np.uint32)
        spgemm_csr_csr_symbolic(a.indptr, a.indices, b.indptr, b.indices, b.sorted_indices, flops,
                                cpart.bounds + lo, cpart.worker_bounds, cdense, marker, c_indptr[1:])
        counted = c_indptr[lo + 1:hi + 1]
        np.cumsum(counted, out=counted)
        counted += c_indptr[lo]
    capacity = int(c_indptr[hi]) + hi_flops
    # two workers, two-ended, buffers kept between products: each claims its parts and takes
    # the other's from their far end into a reserve past the room
    steal = STEAL and back0 and n_threads == 2 and hi == lo and 2 * n_rows + 1 < _MAX_ROWS and \
        capacity * entry_bytes > SMALL_PAGES_MAX_BYTES and _large_enough_to_steal(a, b, entry_bytes, nnz_hint)
    reserve = np.zeros((n_threads, 2), dtype=np.int64)
    if steal:  # room for half the other's flops, or its largest part (worker 0 takes from worker 1)
        costs = part.part_costs
        rooms = [int(max(total_w // 2, costs[p_lo:p_hi].max(initial=0)))
                 for total_w, p_lo, p_hi in ((last_flops, worker_bounds[1], worker_bounds[2]),
                                             (room0, worker_bounds[0], worker_bounds[1]))]
        reserve[0] = capacity, capacity + rooms[0]
        reserve[1] = capacity + rooms[0], capacity + rooms[0] + rooms[1]
        capacity += rooms[0] + rooms[1]
    ranges = []
    if capacity * entry_bytes <= SMALL_PAGES_MAX_BYTES:  # 4 KiB pages: the expected writes
        per_flop = (estimate_nnz(a, b) if nnz_hint is None else nnz_hint) / max(total, 1) * POPULATE_SLACK
        if back0:
            ranges.append((room0 - per_flop * room0, room0))
        ranges.append((c_indptr[lo], c_indptr[hi]))  # counted rows: exact
        ranges.append((c_indptr[hi], c_indptr[hi] + per_flop * hi_flops))
    c_indices, c_data = output_buffers(capacity, idx_dtype, work_dtype, ranges)
    code, tag, marker, acc, zero = dense_workspaces(n_threads, n_cols if use_dense.any() else 0, total, code,
                                                    work_dtype)
    trace = np.full((n_threads, TRACE_FIELDS), np.nan)
    claims = np.zeros(n_parts if steal else 0, dtype=np.int64)
    stolen = np.empty((n_threads, n_parts if steal else 0, 3), dtype=np.int64)
    n_stolen = np.zeros(n_threads, dtype=np.int64)
    spgemm_csr_csr_numeric(a.indptr, a.indices, a_data, b.indptr, b.indices, b_data, b.sorted_indices,
                           flops, bounds, worker_bounds, use_dense, code, sort, back0, c_indptr, c_indices,
                           c_data, tag, marker, acc, zero, trace, claims, part.part_costs, reserve, stolen,
                           n_stolen)
    end = int(trace[-1, 3])
    start = int(trace[0, 3]) if back0 else 0  # where worker 0's first row landed
    if steal:  # also sets c_indptr[-1] and shifts the offsets by the result's start
        start, end = (int(x) for x in stitch(bounds, stolen, n_stolen, c_indptr, c_indices, c_data, start, end))
    else:
        c_indptr[n_rows] = end
        if start:
            c_indptr -= start
    global LAST_STOLEN
    LAST_STOLEN = n_stolen
    global LAST_TRACE, LAST_START
    LAST_TRACE, LAST_START = trace, start
    return c_indptr, trim(c_indices, end)[start:], trim(c_data, end)[start:]
