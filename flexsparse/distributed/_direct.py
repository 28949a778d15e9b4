"""Tiles computed straight into the shared-memory result: gathering without a copy.

The two-phase gather of :mod:`._gather` computes each output block in the worker's memory and
then copies it into the result's shared-memory file once every block's entry count is known (a
prefix sum on the caller): one extra pass over the result (290 MB of R-MAT scale 15 ``A @ A``:
0.05-0.06 s of a worker's CPU, ~40 % of the product itself) and one more round trip. When a plain
CSR product is at most two row blocks (one id window, one column panel), neither is needed:

* the caller sizes the file for the product's multiply-adds (an upper bound of its entries)
  plus :data:`~flexsparse._limits.DIRECT_MEET_SLACK` of them (address space only, tmpfs
  allocates the pages written): ``indptr int64[m + 1]``, ``indices [F]``, ``data [F]`` (the
  :class:`~._gather.Target` layout with ``nnz = F``);
* the first block writes its rows *down* to a meeting slot ``M`` (at least its own
  multiply-adds), last row first, and the second block writes its rows *up* from ``M`` (the
  Gustavson kernel's two-ended mode,
  :func:`flexsparse.kernels.cpu.spgemm.spgemm_csr_csr_numeric` with ``back0``), so the two
  meet at ``M`` and the result is the contiguous range ``[start, end)`` whatever their counts
  (one block writes up from 0). The client keeps ``M`` for the product while both blocks fit
  beside it (:func:`meeting_slot`), and each block runs on the same worker every time, so a
  worker writes into pages it faulted in before;
* each task writes its rows' pointers (absolute slots) and, last, its thread CPU seconds into
  the margin of ``indices`` no entry reaches (:func:`note_seconds`); the caller learns of each
  block's end from that mark (:func:`await_marks`, before the scheduler reports it), fills the
  pointers of rows no block covers and subtracts ``start`` (O(m)), and the result's arrays are
  views of ``[start, end)`` of the mapped file.

The caller cuts the rows where the first block's work, weighted by :func:`back_factor`, equals
the second's: a prior until enough runs of the same product are measured, then the median of
the factors those runs showed (their noted CPU seconds).

The same kernel as the in-process engine (and :func:`._tasks.run_tile`) runs on one thread; its
workspaces and partition are set up here as :func:`flexsparse.kernels.cpu.spgemm.spgemm` sets
them up for one thread. Cost: the product's O(flops) plus a page fault per 4 KiB written (pages
of a reused file already exist); O(m) on the caller.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import platform
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["MARGIN", "await_marks", "back_factor", "capacity", "direct_capable", "expected_wait", "kept",
           "mapping", "marks_follow_rows", "meeting_slot", "note_seconds", "noted_seconds", "record_back_factor",
           "record_wait", "release_mappings", "spgemm_into", "write_tile"]

#: Slots of each block's room beyond its multiply-adds (an upper bound of its entries): the
#: outermost of them hold the block's CPU seconds (:func:`note_seconds`; 16 slots >= 8 bytes).
MARGIN = 16


def _product_key(A: Any, B: Any) -> tuple[int, ...]:
    return (*A.shape, B.shape[1], int(A.nnz), int(B.nnz))


def back_factor(client: Any, A: Any, B: Any) -> float:
    """Work of the first of two direct blocks over the second's per unit of estimated work: the
    median of the last :data:`~flexsparse._limits.DIRECT_BACK_FACTOR_KEPT` factors measured on
    ``client``'s workers for a product of this shape and these entry counts
    (:func:`record_back_factor`) once there are :data:`~flexsparse._limits.DIRECT_BACK_FACTOR_MIN_SEEN`
    of them, :data:`~flexsparse._limits.DIRECT_BACK_WORK_FACTOR` before; the factor returned last
    for the product while the median stays within :data:`~flexsparse._limits.DIRECT_BACK_FACTOR_STEP`
    of it."""
    from flexsparse import _limits

    seen = _per_product(client, "back_factor").get(_product_key(A, B), [])
    factor = float(np.median(seen)) if len(seen) >= _limits.DIRECT_BACK_FACTOR_MIN_SEEN \
        else _limits.DIRECT_BACK_WORK_FACTOR
    # the factor the last cut used stays while the median is within DIRECT_BACK_FACTOR_STEP of it:
    # a cut that moves puts rows on pages the other block's worker wrote (page faults)
    used = _per_product(client, "back_used")
    last = used.get(_product_key(A, B))
    if last is not None and abs(factor - last) <= _limits.DIRECT_BACK_FACTOR_STEP:
        return last
    _remember(used, _product_key(A, B), factor)
    return factor


def record_back_factor(client: Any, A: Any, B: Any, plan: Any, order: list[int],
                        spans: dict[int, Any]) -> None:
    """Record the factor the two direct blocks showed: their thread CPU seconds per unit of
    estimated work, first over second (only when both wrote through mappings their workers
    kept: page faults of a fresh one doubled a block's time, R-MAT scale 15). CPU time, not wall
    time: it does not count the time a block waited for a core. One block's CPU time varied
    by +-20 % on a loaded 2-core machine, so the next cut takes a median over several
    (:func:`back_factor`), clamped to :data:`~flexsparse._limits.DIRECT_BACK_FACTOR_RANGE`."""
    from flexsparse import _limits

    works = [plan.group_tiles(g)[0].flops + plan.group_tiles(g)[0].nnz_a for g in order]
    secs = [float(spans[g][2]) if len(spans[g]) > 2 else 0.0 for g in order]
    if not min(secs) >= _limits.DIRECT_BACK_MIN_SECONDS or min(works) <= 0:
        return   # too short to measure, or a block faulted in a fresh mapping (NaN)
    lo, hi = _limits.DIRECT_BACK_FACTOR_RANGE
    measured = min(hi, max(lo, (secs[0] / works[0]) / (secs[1] / works[1])))
    factors = _per_product(client, "back_factor")
    seen = factors.get(_product_key(A, B), [])
    _remember(factors, _product_key(A, B), (seen + [measured])[-_limits.DIRECT_BACK_FACTOR_KEPT:])


def _per_product(client: Any, name: str) -> dict[Any, Any]:
    """A dictionary kept on ``client`` (attribute ``_flexsparse_<name>``), by product, least
    recently run first; callers trim it to :data:`~flexsparse._limits.DIRECT_BACK_PRODUCTS_KEPT`."""
    kept = getattr(client, f"_flexsparse_{name}", None)
    if kept is None:
        kept = {}
        setattr(client, f"_flexsparse_{name}", kept)
    return kept


def _remember(kept: dict[Any, Any], key: Any, value: Any) -> None:
    """``kept[key] = value`` as the most recent entry, dropping the least recent beyond
    :data:`~flexsparse._limits.DIRECT_BACK_PRODUCTS_KEPT`."""
    from flexsparse import _limits

    kept.pop(key, None)
    kept[key] = value
    while len(kept) > _limits.DIRECT_BACK_PRODUCTS_KEPT:
        kept.pop(next(iter(kept)))


def expected_wait(client: Any, A: Any, B: Any) -> float | None:
    """Thread CPU seconds of the longest direct block of ``A @ B`` the last time ``client`` ran
    this product with every block measured (:func:`record_wait`); ``None`` before. A lower bound
    of the wait for the blocks' ends: not the time a caller waited, which would carry any
    oversleeping of one call into the next."""
    return _per_product(client, "direct_wait").get(_product_key(A, B))


def record_wait(client: Any, A: Any, B: Any, seconds: float) -> None:
    """Keep the longest block's CPU seconds of ``A @ B``, for :func:`expected_wait`."""
    _remember(_per_product(client, "direct_wait"), _product_key(A, B), float(seconds))


@functools.cache
def marks_follow_rows() -> bool:
    """Whether a block's end mark, seen by another process, implies its rows are seen too: the
    worker stores the mark after the kernel's last store, and x86 processors make one core's
    stores visible to the others in the order they were made (total store order). Weakly
    ordered processors (ARM, POWER) may show the mark first, so there the caller waits for
    dask's report instead, which goes through the workers' locks and sockets."""
    return platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


def await_marks(finals: dict[Any, int], marked: Any, expect: float | None, advance: Any) -> bool:
    """Wait for direct blocks by the marks they write into the result's file when done
    (:func:`note_seconds`), not for the scheduler's report of their tasks' ends, which reached
    the caller 1.0-3.8 ms after a block's end (worker to scheduler to client, each stream
    batched; R-MAT scale 15 on 2 workers, 2026-11-30). ``finals``: ``{future: group}``;
    ``marked(group)``: whether the group's mark is written; ``expect``: the longest block's CPU
    seconds in the product's last call (:func:`expected_wait`; the tasks start ~3 ms after
    submission), slept through for :data:`~flexsparse._limits.DIRECT_POLL_SLEEP_SHARE` of it,
    then polled every :data:`~flexsparse._limits.DIRECT_POLL_SECONDS` (every sixteenth of the
    time waited so far when that is longer, past the expected end); ``advance()`` per block
    done. True when every block marked its end; False as soon as a task ended without its mark
    (an error, a lost worker, a worker that could not open the file), and at once on a machine
    whose stores may be seen out of order (:func:`marks_follow_rows`)."""
    from flexsparse import _limits

    if not marks_follow_rows():
        return False

    t0 = time.perf_counter()
    if expect is not None:
        time.sleep(expect * _limits.DIRECT_POLL_SLEEP_SHARE)
    waiting = dict(finals)
    while waiting:
        for fut, g in list(waiting.items()):
            if marked(g):
                del waiting[fut]
                advance()
            elif fut.status != "pending" and not marked(g):   # ended without its mark
                return False
        if waiting:
            waited = time.perf_counter() - t0
            late = expect is None or waited > expect * _limits.DIRECT_POLL_LATE_SHARE
            time.sleep(max(_limits.DIRECT_POLL_SECONDS, waited / 16) if late else _limits.DIRECT_POLL_SECONDS)
    return True


def capacity(flops: int) -> int:
    """Slots of a direct result file for a product of ``flops`` multiply-adds in one or two blocks:
    the multiply-adds, :data:`MARGIN` per block and :data:`~flexsparse._limits.DIRECT_MEET_SLACK`
    of them to move the meeting slot in (:func:`meeting_slot`). The same for one block as for two,
    so that clusters of one and two workers reuse one result file (:mod:`._gather`'s pool) without
    resizing it: a resized file drops its pages and every worker's mapping of it."""
    from flexsparse import _limits

    return int(flops) + 2 * MARGIN + int(int(flops) * _limits.DIRECT_MEET_SLACK)


def meeting_slot(client: Any, A: Any, B: Any, rooms: list[int], cap: int) -> int:
    """The slot where two direct blocks needing ``rooms`` slots (their multiply-adds plus
    :data:`MARGIN`) meet in a file of ``cap`` slots (:func:`capacity`): the first block is
    written down to it, the second up from it. The slot ``client`` kept for a product of this
    shape and these entry counts is reused, moved only as far as a block that no longer fits
    beside it needs (the first time, the spare slots are split evenly around the first block's
    room). A fixed slot keeps each block on the pages its worker wrote before when a new cut moves
    rows between the blocks."""
    spare = cap - int(sum(rooms))
    if spare < 0:
        raise ValueError(f"blocks of {rooms} slots do not fit a file of {cap}")
    meets = _per_product(client, "meet")
    key = (*_product_key(A, B), cap)
    meet = meets.get(key)
    # the first time, the spare slots split evenly; then the kept slot, moved only as far as a
    # block that outgrew its side needs (the fewest pages change sides)
    meet = int(rooms[0]) + spare // 2 if meet is None else min(max(meet, int(rooms[0])), cap - int(rooms[1]))
    _remember(meets, key, meet)
    return meet


def direct_capable(a_dtype: Any, b_dtype: Any) -> bool:
    """Whether the kernel computes ``a @ b`` in the result's dtype itself (not for booleans,
    which it accumulates as int64 and converts afterwards)."""
    return np.result_type(a_dtype, b_dtype) != np.bool_


def spgemm_into(a: Any, b: Any, c_indptr: np.ndarray, c_indices: np.ndarray, c_data: np.ndarray, offset: int,
                back: bool, room: int, sort: bool, prefault: Any = None) -> tuple[int, int]:
    """``a @ b`` (flexsparse CSR) on one thread into caller-given buffers; ``(start, end)`` slots.

    ``back=False``: the rows go up from slot ``offset``; ``back=True``: down to ``offset``, last row
    first. ``c_indptr`` (``int64[a.n_rows + 1]``) receives every row's absolute start slot and the
    end. ``room``: the slots available (above ``offset``, or below it with ``back``); the product's
    multiply-adds must fit them (they bound its entries). ``prefault(lo, hi)``: faults in the
    pages of slots ``[lo, hi)`` of both arrays (default: every page of the range).
    """
    from flexsparse.kernels.cpu import spgemm as sp
    from flexsparse.kernels.cpu._spgemm_output import POPULATE_SLACK, estimate_nnz, populate
    from flexsparse.kernels.cpu.partition import cost_split, thread_scope

    m, n_cols = a.shape[0], b.shape[1]
    if c_indptr.shape[0] != m + 1:
        raise ValueError(f"c_indptr has {c_indptr.shape[0]} slots for {m} rows")
    work = np.result_type(a.data.dtype, b.data.dtype)
    if c_data.dtype != work or c_indices.dtype != (np.dtype(np.int32) if n_cols <= np.iinfo(np.int32).max
                                                   else np.dtype(np.int64)):
        raise TypeError(f"buffers {c_indices.dtype}/{c_data.dtype} do not hold this product's entries")
    if m == 0 or a.indptr[-1] == 0 or b.indptr[-1] == 0:
        c_indptr[:] = offset
        return offset, offset
    flops, total = sp.count_flops(a, b, threads=1)
    if total > room:
        raise ValueError(f"the block has {total} multiply-adds, room for {room} entries")
    part = cost_split(flops + 1, 1, sp.PARTS_PER_WORKER)
    bounds, worker_bounds = part.bounds, part.worker_bounds
    use_dense = sp._dense_flags(sp._rule_auto, bounds, part.part_costs - np.diff(bounds), n_cols)
    code, tag, marker, acc, zero = sp.dense_workspaces(1, n_cols if use_dense.any() else 0, total, 0, work)
    trace = np.full((1, sp.TRACE_FIELDS), np.nan)
    c_indptr[m if back else 0] = offset
    # fault in the expected range in one call (a fault taken in the kernel costs ~1.4 us a
    # 4 KiB page, ~10x more): the exact count of sampled rows, with slack
    expect = int(min(total, estimate_nnz(a, b) * POPULATE_SLACK))
    lo, hi = (offset - expect, offset) if back else (offset, offset + expect)
    if prefault is None:
        populate(c_indices, max(0, lo), hi)
        populate(c_data, max(0, lo), hi)
    else:
        prefault(max(0, lo), hi)
    with thread_scope(1):
        sp.spgemm_csr_csr_numeric(a.indptr, a.indices, a.data.astype(work, copy=False), b.indptr, b.indices,
                                  b.data.astype(work, copy=False), b.sorted_indices, flops, bounds, worker_bounds,
                                  use_dense, code, bool(sort), bool(back), c_indptr, c_indices, c_data, tag, marker,
                                  acc, zero, trace, *sp.no_stealing(1))
    pos = int(trace[0, 3])
    if back:
        return pos, offset
    c_indptr[m] = pos
    return offset, pos


# mappings of result files kept by this (worker) process: path -> ((inode, size), mapping)
_maps: OrderedDict[str, tuple[tuple[int, int], mmap.mmap]] = OrderedDict()
# slots [lo, hi) of each kept mapping whose pages this process faulted in (path -> range)
_faulted: dict[str, tuple[int, int]] = {}
_maps_lock = threading.Lock()


def _prefault(path: str, arrays: tuple[np.ndarray, ...]) -> Any:
    """A ``prefault(lo, hi)`` for :func:`spgemm_into` that faults in only the slots of ``[lo, hi)``
    this process has not faulted in through its kept mapping of ``path`` before: those pages
    are mapped already, and populating them again walked every page (145 MB: 6-7 ms of a
    block's ~75 ms, R-MAT scale 15, two workers writing into one file at once)."""
    from flexsparse.kernels.cpu._spgemm_output import populate

    def prefault(lo: int, hi: int) -> None:
        with _maps_lock:
            f0, f1 = _faulted.get(path, (0, 0))
        parts = [(lo, min(hi, f0)), (max(lo, f1), hi)] if f1 > f0 else [(lo, hi)]
        for p0, p1 in parts:
            if p1 > p0:
                for arr in arrays:
                    populate(arr, p0, p1)
        with _maps_lock:
            if path in _maps:   # one contiguous range: the union when they touch, else the new one
                _faulted[path] = (min(lo, f0), max(hi, f1)) if f1 > f0 and lo <= f1 and hi >= f0 else (lo, hi)

    return prefault


def _drop(mm: mmap.mmap) -> None:
    with contextlib.suppress(BufferError):   # a task still writing through it: unmapped when it ends
        mm.close()


def mapping(target: Any) -> mmap.mmap:
    """A writable shared mapping of ``target``'s file, kept for the next task on the same file.

    The caller reuses a result's file for the next result (:mod:`._gather`); a mapping kept from
    one call to the next already has its pages in this process's page tables, whereas a fresh one
    takes a fault per 4 KiB page (R-MAT scale 15 ``A @ A``, 290 MB: 0.145 s for both blocks
    through a kept mapping against 0.20 s through a fresh one and 0.13 s into private memory,
    one thread). At most :data:`~flexsparse._limits.DIRECT_KEPT_MAPPINGS` are kept; one whose
    file was removed or replaced is dropped when the next is asked for, so a removed result's
    pages live at most until this process's next direct tile (or its exit).
    """
    from flexsparse import _limits

    st = os.stat(target.path)
    if st.st_size != target.nbytes:
        raise ValueError(f"{target.path} is not this product's result buffer")
    ident = (st.st_ino, st.st_size)
    with _maps_lock:
        for path in list(_maps):   # files removed or replaced since they were mapped
            try:
                cur = os.stat(path)
                stale = (cur.st_ino, cur.st_size) != _maps[path][0]
            except OSError:
                stale = True
            if stale:
                _faulted.pop(path, None)
                _drop(_maps.pop(path)[1])
        hit = _maps.get(target.path)
        if hit is not None:
            _maps.move_to_end(target.path)
            return hit[1]
        fd = os.open(target.path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, target.nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        _maps[target.path] = (ident, mm)
        _faulted.pop(target.path, None)
        while len(_maps) > _limits.DIRECT_KEPT_MAPPINGS:
            old_path, (_, old_mm) = _maps.popitem(last=False)
            _faulted.pop(old_path, None)
            _drop(old_mm)
        return mm


def kept(target: Any) -> bool:
    """Whether this process keeps a mapping of ``target``'s file (its pages already mapped)."""
    try:
        st = os.stat(target.path)
    except OSError:
        return False
    with _maps_lock:
        hit = _maps.get(target.path)
    return hit is not None and hit[0] == (st.st_ino, st.st_size)


def release_mappings() -> None:
    """Unmap every kept mapping of this process (their files' memory is then freed with them)."""
    with _maps_lock:
        _faulted.clear()
        while _maps:
            _drop(_maps.popitem()[1][1])


def note_seconds(indices: np.ndarray, back: bool, seconds: float) -> None:
    """Write a block's thread CPU seconds into the margin of the result's ``indices`` that no
    entry reaches (the first :data:`MARGIN` slots for the block written down, the last for the
    block written up: each block's room exceeds its multiply-adds by :data:`MARGIN`), where the
    caller reads them (:func:`noted_seconds`) without fetching the task's result."""
    raw = indices.view(np.uint8)
    pos = 0 if back else raw.size - 8
    raw[pos:pos + 8].view(np.float64)[0] = seconds


def noted_seconds(indices: np.ndarray, back: bool) -> float:
    """What :func:`note_seconds` wrote (NaN, the caller's mark, when the block did not run here)."""
    raw = indices.view(np.uint8)
    pos = 0 if back else raw.size - 8
    return float(raw[pos:pos + 8].view(np.float64)[0])


def write_tile(a: Any, b: Any, target: Any, r0: int, offset: int, back: bool, room: int,
               sort: bool, measure: bool = True) -> tuple[int, int, float]:
    """Compute the block of rows ``[r0, r0 + a.n_rows)`` into ``target``'s file (a
    :class:`~._gather.Target` sized for the product's multiply-adds plus :data:`MARGIN` slots per
    block); ``(start, end)`` slots and the thread CPU seconds it took (-1 unless ``measure``, or when
    it took more than :data:`~flexsparse._limits.DIRECT_BACK_MAX_FAULTS` page faults), which are
    also noted in the file's margin (:func:`note_seconds`)."""
    import resource

    from flexsparse import _limits
    from flexsparse.distributed import _gather

    out = _gather.arrays(mapping(target), target)
    f0, t0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt, time.thread_time()
    start, end = spgemm_into(a, b, out["indptr"][r0:r0 + a.shape[0] + 1], out["indices"], out["data"], offset,
                             back, room, sort, _prefault(target.path, (out["indices"], out["data"])))
    seconds = time.thread_time() - t0
    # pages this block mapped for the first time (a cut that moved rows onto them, a new result
    # file) cost system time that is no measure of its work: such a block is not measured
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - f0
    if not measure or faults > _limits.DIRECT_BACK_MAX_FAULTS:
        seconds = -1.0
    note_seconds(out["indices"], back, seconds)
    return start, end, seconds
