"""Tiles computed straight into the shared-memory result: gathering without a copy.

The two-phase gather of :mod:`._gather` computes each output block in the worker's memory and
then copies it into the result's shared-memory file once every block's entry count is known (a
prefix sum on the caller): one extra pass over the result (290 MB of R-MAT scale 15 ``A @ A``:
0.05-0.06 s of a worker's CPU, ~40 % of the product itself) and one more round trip. When a plain
CSR product is at most two row blocks (one id window, one column panel), neither is needed:

* the caller sizes the file for the product's multiply-adds (an upper bound of its entries;
  address space only, tmpfs allocates the pages written): ``indptr int64[m + 1]``,
  ``indices [F]``, ``data [F]`` (the :class:`~._gather.Target` layout with ``nnz = F``);
* the first block writes its rows *down* to slot ``F0`` (its own multiply-adds), last row first,
  and the second block writes its rows *up* from ``F0`` (the Gustavson kernel's two-ended mode,
  :func:`flexsparse.kernels.cpu.spgemm.spgemm_csr_csr_numeric` with ``back0``), so the two
  meet at ``F0`` and the result is the contiguous range ``[start, end)`` whatever their counts
  (one block writes up from 0);
* each task writes its rows' pointers (absolute slots) and returns ``(start, end)``; the caller
  fills the pointers of rows no block covers and subtracts ``start`` (O(m)), and the result's
  arrays are views of ``[start, end)`` of the mapped file.

The same kernel as the in-process engine (and :func:`._tasks.run_tile`) runs on one thread; its
workspaces and partition are set up here as :func:`flexsparse.kernels.cpu.spgemm.spgemm` sets
them up for one thread. Cost: the product's O(flops) plus a page fault per 4 KiB written (pages
of a reused file already exist); O(m) on the caller.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["direct_capable", "mapping", "release_mappings", "spgemm_into", "write_tile"]


def direct_capable(a_dtype: Any, b_dtype: Any) -> bool:
    """Whether the kernel computes ``a @ b`` in the result's dtype itself (not for booleans,
    which it accumulates as int64 and converts afterwards)."""
    return np.result_type(a_dtype, b_dtype) != np.bool_


def spgemm_into(a: Any, b: Any, c_indptr: np.ndarray, c_indices: np.ndarray, c_data: np.ndarray, offset: int,
                back: bool, room: int, sort: bool) -> tuple[int, int]:
    """``a @ b`` (flexsparse CSR) on one thread into caller-given buffers; ``(start, end)`` slots.

    ``back=False``: the rows go up from slot ``offset``; ``back=True``: down to ``offset``, last row
    first. ``c_indptr`` (``int64[a.n_rows + 1]``) receives every row's absolute start slot and the
    end. ``room``: the slots available (above ``offset``, or below it with ``back``); the product's
    multiply-adds must fit them (they bound its entries).
    """
    from flexsparse.kernels.cpu import spgemm as sp
    from flexsparse.kernels.cpu._spgemm_output import POPULATE_SLACK, estimate_nnz, populate
    from flexsparse.kernels.cpu.partition import _cost_partition_trusted, thread_scope

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
    part = _cost_partition_trusted(flops + 1, 1, sp.PARTS_PER_WORKER)
    bounds, worker_bounds = part.bounds, part.worker_bounds
    use_dense = sp._dense_flags(sp._rule_auto, bounds, part.part_costs - np.diff(bounds), n_cols)
    nd = n_cols if use_dense.any() else 0
    tag = np.zeros((1, nd), dtype=np.uint64)
    marker = np.zeros((1, nd), dtype=np.uint32)
    acc = np.zeros((1, nd), dtype=work)
    trace = np.full((1, sp.TRACE_FIELDS), np.nan)
    c_indptr[m if back else 0] = offset
    # fault in the expected range in one call (a fault taken in the kernel costs ~1.4 us a
    # 4 KiB page, ~10x more): the exact count of sampled rows, with slack
    expect = int(min(total, estimate_nnz(a, b) * POPULATE_SLACK))
    lo, hi = (offset - expect, offset) if back else (offset, offset + expect)
    populate(c_indices, max(0, lo), hi)
    populate(c_data, max(0, lo), hi)
    with thread_scope(1):
        sp.spgemm_csr_csr_numeric(a.indptr, a.indices, a.data.astype(work, copy=False), b.indptr, b.indices,
                                  b.data.astype(work, copy=False), b.sorted_indices, flops, bounds, worker_bounds,
                                  use_dense, 0, bool(sort), bool(back), c_indptr, c_indices, c_data, tag, marker,
                                  acc, trace)
    pos = int(trace[0, 3])
    if back:
        return pos, offset
    c_indptr[m] = pos
    return offset, pos


# mappings of result files kept by this (worker) process: path -> ((inode, size), mapping)
_maps: OrderedDict[str, tuple[tuple[int, int], mmap.mmap]] = OrderedDict()
_maps_lock = threading.Lock()


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
        while len(_maps) > _limits.DIRECT_KEPT_MAPPINGS:
            _drop(_maps.popitem(last=False)[1][1])
        return mm


def release_mappings() -> None:
    """Unmap every kept mapping of this process (their files' memory is then freed with them)."""
    with _maps_lock:
        while _maps:
            _drop(_maps.popitem()[1][1])


def write_tile(a: Any, b: Any, target: Any, r0: int, offset: int, back: bool, room: int,
               sort: bool) -> tuple[int, int]:
    """Compute the block of rows ``[r0, r0 + a.n_rows)`` into ``target``'s file (a
    :class:`~._gather.Target` sized for the product's multiply-adds); ``(start, end)`` slots."""
    from flexsparse.distributed import _gather

    out = _gather.arrays(mapping(target), target)
    return spgemm_into(a, b, out["indptr"][r0:r0 + a.shape[0] + 1], out["indices"], out["data"], offset,
                       back, room, sort)
