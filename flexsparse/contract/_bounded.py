"""Bounded-memory glue between :func:`flexsparse.einsum` and :mod:`flexsparse.tiling`.

With ``memory_limit=``, every pairwise step of an einsum plan is a matricised SpGEMM
``C[rows, cols] = A[rows, k] @ B[k, cols]`` (:func:`bounded_pair`) run through
:func:`flexsparse.tiling.tiled_spgemm` (Swiftiles sizing, Tailors overflow absorption); the
per-step :class:`~flexsparse.tiling.TilingReport` are collected. With ``out=``, the final step
streams its tiles to disk -- a store of :mod:`flexsparse.formats.store` whose manifest decodes
tile indices into the einsum output's coordinates -- and the caller gets a
:class:`~flexsparse.formats.store.StoredTensor` (``.load()``, ``.tiles()``); a result computed
in memory is saved to the same format (:func:`save_result`).

Memory: the limit covers everything the call allocates, charged before it is allocated. The
step is given, as ``reserved``, the bytes the call already holds (operand copies made by
promotion or the unary pass, live intermediate results) plus the CSR matrices built here;
the tiler charges its statistics and buffers on top (:func:`flexsparse.tiling.tiled_spgemm`).
Matricising reads a COO in place when it is canonical in the step's (batch, free,
contracted) mode order and every key is direct (one mode, or a small linear index space):
only the row pointers are new. Otherwise one sorted copy is made; a conversion whose
estimated peak does not fit is refused up front (:class:`~flexsparse.tiling.MemoryLimitError`).
A dense x dense step whose operands and result fit runs dense; any other dense operand is
converted to COO (charged). Intermediates are charged to the steps after them.

Where the product runs is pluggable: :data:`PRODUCT_RUNNER` (a context variable, unset by
default) may hold a callable with the signature of :func:`flexsparse.tiling.tiled_spgemm`;
:mod:`flexsparse.distributed` sets it for the duration of one call so the same einsum semantics
run with each product's tiles spread over a cluster. A runner with a true ``decodes`` attribute
is also given ``decode=(row key space, column key space, batch modes, result shape)`` and may
return the step's COO itself (laid out where the product ran) instead of the CSR product.

Cost: that of the tiled SpGEMM, plus O(nnz) for each conversion (O(nnz log nnz) when a
sorted copy is needed); the options are validated before any work.
"""

from __future__ import annotations

import contextvars
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexsparse._util import parse_bytes
from flexsparse.formats.store import KeyDecoder, MatrixLayout, StoredTensor, write_coo

__all__ = ["PRODUCT_RUNNER", "TilingOptions", "bounded_pair", "make_tiling_options", "owned_bytes",
           "save_result"]

#: A callable with the signature of :func:`flexsparse.tiling.tiled_spgemm` (returning ``(result,
#: report)``) that runs the products of :func:`bounded_pair` in the current context instead of
#: this process; ``None`` (the default) runs them here.
PRODUCT_RUNNER: contextvars.ContextVar = contextvars.ContextVar("flexsparse_product_runner", default=None)


@dataclass
class TilingOptions:
    """Validated tiling settings plus the reports the steps append (mutable by design)."""

    limit: int
    strategy: str
    overbook: float
    progress: bool
    out: Path | None = None
    out_dtype: np.dtype | None = None  # the einsum result's dtype, which a streamed store records
    reports: list = field(default_factory=list)
    inputs: list = field(default_factory=list)  # the caller's arrays: not charged to the limit


def make_tiling_options(memory_limit: int | str, tiling: str, overbook: float, progress: bool,
                        out: str | os.PathLike | None = None) -> TilingOptions:
    """Validate everything up front so bad options fail before any work.

    >>> make_tiling_options("1MB", "overbook", 0.1, False).limit
    1000000
    >>> make_tiling_options("1MB", "guess", 0.1, False)
    Traceback (most recent call last):
    ...
    ValueError: unknown tiling strategy 'guess'; valid names: conservative, overbook, prescient
    """
    from flexsparse.tiling.strategies import get_strategy

    limit = parse_bytes(memory_limit)
    get_strategy(tiling)
    if isinstance(overbook, bool) or not isinstance(overbook, (int, float)) or not 0.0 <= overbook < 1.0:
        raise ValueError(f"overbook must be a fraction in [0, 1), got {overbook!r}")
    path = None
    if out is not None:
        from flexsparse.tiling.outfile import check_output_target

        path = check_output_target(out, 0)
    return TilingOptions(limit, tiling, float(overbook), bool(progress), path)


def save_result(result: Any, path: Path) -> StoredTensor:
    """Save an in-memory result (COO or dense) atomically as a store at ``path``; return its handle."""
    from flexsparse.formats.coo import COO

    coo = result if isinstance(result, COO) else COO.from_numpy(np.asarray(result))
    write_coo(path, coo)
    return StoredTensor(path)


# ----------------------------------------------------------------------------- accounting
def owned_bytes(op: Any, inputs: list) -> int:
    """Bytes of ``op``'s arrays that the call allocated (those sharing no memory with an input)."""
    from flexsparse.formats.coo import COO

    arrays = [op.coords, op.data] if isinstance(op, COO) else [np.asarray(op)]
    return sum(a.nbytes for a in arrays if not any(np.may_share_memory(a, x) for x in inputs))


def _direct(space: int, n: int) -> bool:
    """Whether a key's index space is small enough for linear ids: at most 4 ids per entry (the
    rule of :func:`._keys.group_keys` without its 2**20 floor -- here every id costs charged
    row pointers and statistics, so a sparse key of a huge space is compacted)."""
    from flexsparse.contract._keys import is_direct

    return is_direct(space, n, floor=0)


def _linear(coords: list[np.ndarray], sizes: tuple[int, ...], n: int) -> np.ndarray:
    if len(coords) == 1:
        return coords[0]
    lin = np.zeros(n, dtype=np.int64)
    for c, s in zip(coords, sizes):
        lin *= s
        lin += c
    return lin


def _sorted_for(t: Any, idx: str, order: str) -> Any:
    """``t`` with its modes in ``order``, canonical (the input itself when it already is)."""
    if idx == order and t.canonical:
        return t
    t = t.transpose([idx.index(c) for c in order])
    return t.sum_duplicates()


def _conversion_bytes(t: Any, idx: str, order: str, keys: list[tuple[str, int]]) -> int:
    """Estimated peak bytes of matricising ``t`` (a sort when it is not in ``order``, linear ids
    of multi-mode direct keys, compaction of the others, the row pointers)."""
    n = t.nnz
    total = 0
    if not (idx == order and t.canonical):
        total += 24 * n + t.coords.nbytes + t.data.nbytes       # argsort key + order, sorted copy
    for letters, space in keys:
        if len(letters) > 1 or not _direct(space, n):
            total += 8 * n * (len(letters) + 4) if not _direct(space, n) else 8 * n
    return total


def _indptr(ids: np.ndarray, n_rows: int) -> np.ndarray:
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    if ids.size:
        np.cumsum(np.bincount(ids, minlength=n_rows), out=indptr[1:])
    return indptr


def _key_ids(t: Any, letters: str, order: str, sizes: dict[str, int], sorted_by: bool) -> tuple[Any, np.ndarray]:
    """``(KeySpace, ids)`` of the key ``letters`` (a prefix of ``order`` when ``sorted_by``)."""
    from flexsparse.contract._keys import KeySpace, group_keys

    sz = tuple(sizes[c] for c in letters)
    space = math.prod(sz)
    cols = [t.coords[order.index(c)] for c in letters]
    if not letters:
        return KeySpace((), 1, "direct", None), np.zeros(t.nnz, dtype=np.int32)
    if _direct(space, t.nnz):
        return KeySpace(sz, space, "direct", None), _linear(cols, sz, t.nnz)
    if sorted_by:  # the entries are sorted by this key: its distinct values are runs
        change = np.zeros(t.nnz, dtype=bool)
        if t.nnz:
            change[0] = True
            for c in cols:
                change[1:] |= c[1:] != c[:-1]
        ids = np.cumsum(change) - 1
        table = np.stack([c[change].astype(np.int64) for c in cols])
        return KeySpace(sz, int(table.shape[1]), "unique", table), ids
    return group_keys(cols, sz, t.nnz, floor=0)


def bounded_pair(x: Any, xi: str, y: Any, yi: str, out: str, sizes: dict[str, int], opts: TilingOptions,
                 final: str | None, reserved: int) -> tuple[Any, str]:
    """One pairwise step under ``opts.limit`` (see the module docstring).

    ``x``/``y`` are COO tensors or ndarrays over distinct indices, every index needed by the
    other side or the result; ``reserved`` is what the call already holds. Returns ``(result,
    its indices)``: a COO, or with ``final`` and ``opts.out`` the :class:`StoredTensor` written there,
    whose coordinates follow ``final``.
    """
    from flexsparse.contract._dense import pair_dense, split_pair
    from flexsparse.contract._keys import split_groups
    from flexsparse.contract.execute import _assemble_csr
    from flexsparse.formats.coo import COO
    from flexsparse.formats.csr import CSR
    from flexsparse.tiling.executor import MemoryLimitError
    from flexsparse.tiling.workingset import accounted_limit

    budget = accounted_limit(opts.limit)
    batch, contr, free_x, free_y = split_pair(xi, yi, out)
    dtype = np.result_type(x.dtype, y.dtype)
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        dense_bytes = x.nbytes + y.nbytes + math.prod(sizes[c] for c in out) * dtype.itemsize
        if reserved + dense_bytes <= budget:  # BLAS, copies of both operands charged; with
            return pair_dense(x, xi, y, yi, out, sizes)  # out=, the caller saves it whole
    ops = []
    for op in (x, y):
        if isinstance(op, np.ndarray):
            nnz = int(np.count_nonzero(op))
            need = nnz * (dtype.itemsize + 16 * op.ndim)       # np.nonzero's int64 coords, then the COO
            if reserved + need > budget:
                raise MemoryLimitError(opts.limit, reserved + need,
                                       f"a dense operand of shape {op.shape} becomes {nnz:,} stored entries "
                                       f"({need:,} bytes) for the tiled product")
            op = COO.from_numpy(op)
            reserved += op.coords.nbytes + op.data.nbytes
        ops.append(op)
    a, b = ops
    row_letters, k_letters, col_letters = batch + free_x, batch + contr, batch + free_y
    order_a, order_b = batch + free_x + contr, batch + contr + free_y
    k_space = math.prod(sizes[c] for c in k_letters)
    k_direct = _direct(k_space, a.nnz + b.nnz)
    keys_a = [(row_letters, math.prod(sizes[c] for c in row_letters)), (k_letters, k_space)]
    keys_b = [(k_letters, k_space), (col_letters, math.prod(sizes[c] for c in col_letters))]
    need = _conversion_bytes(a, xi, order_a, keys_a) + _conversion_bytes(b, yi, order_b, keys_b)
    need += 16 * (a.nnz + b.nnz) * (len(k_letters) + 4) if not k_direct else 0
    if reserved + need > budget:
        raise MemoryLimitError(opts.limit, reserved + need,
                               f"matricising the operands ({a.nnz:,} and {b.nnz:,} entries) for the tiled product "
                               f"needs about {need:,} bytes on top of {reserved:,} already held")
    inputs = [a.coords, a.data, b.coords, b.data]
    sa, sb = _sorted_for(a, xi, order_a), _sorted_for(b, yi, order_b)
    row_ks, a_rows = _key_ids(sa, row_letters, order_a, sizes, True)
    col_ks, b_cols = _key_ids(sb, col_letters, order_b, sizes, False)
    if k_direct:
        from flexsparse.contract._keys import KeySpace

        k_ks = KeySpace(tuple(sizes[c] for c in k_letters), k_space, "direct", None)
        a_cols = _linear([sa.coords[order_a.index(c)] for c in k_letters], k_ks.sizes, sa.nnz) \
            if k_letters else np.zeros(sa.nnz, np.int32)
        b_rows = _linear([sb.coords[order_b.index(c)] for c in k_letters], k_ks.sizes, sb.nnz) \
            if k_letters else np.zeros(sb.nnz, np.int32)
    else:
        k_ks, a_cols, b_rows = split_groups([sa.coords[order_a.index(c)] for c in k_letters],
                                            [sb.coords[order_b.index(c)] for c in k_letters],
                                            tuple(sizes[c] for c in k_letters), sa.nnz, sb.nnz, floor=0)
    A = CSR._trusted(_indptr(a_rows, row_ks.n_ids), _index_array(a_cols, k_ks.n_ids), sa.data,
                     (row_ks.n_ids, k_ks.n_ids), True)
    B = CSR._trusted(_indptr(b_rows, k_ks.n_ids), _index_array(b_cols, col_ks.n_ids), sb.data,
                     (k_ks.n_ids, col_ks.n_ids), True)
    del a_rows, b_rows, b_cols, a_cols
    held = sum(arr.nbytes for arr in (A.indptr, A.indices, A.data, B.indptr, B.indices, B.data,
                                      *(ks.table for ks in (row_ks, col_ks, k_ks) if ks.table is not None))
               if not any(np.may_share_memory(arr, i) for i in inputs))
    res_idx = batch + free_x + free_y
    res_shape = tuple(sizes[c] for c in res_idx)
    from flexsparse.tiling import tiled_spgemm

    stream = final is not None and opts.out is not None
    layout = None
    if stream:  # the store's manifest decodes ids into the output's coordinates (``final`` order)
        layout = MatrixLayout(
            (row_ks.n_ids, col_ks.n_ids),
            KeyDecoder(tuple(final.index(c) for c in row_letters), row_ks.sizes, row_ks.table),
            KeyDecoder(tuple(-1 if t < len(batch) else final.index(c) for t, c in enumerate(col_letters)),
                       col_ks.sizes, col_ks.table))
    product = PRODUCT_RUNNER.get() or tiled_spgemm
    # a runner that ``decodes`` lays the result out as this step's COO itself (on its workers)
    decode = {"decode": (row_ks, col_ks, len(batch), res_shape)} \
        if getattr(product, "decodes", False) and not stream else {}
    result, report = product(A, B, memory_limit=opts.limit, tiling=opts.strategy, overbook=opts.overbook,
                             out=opts.out if stream else None, progress=opts.progress,
                             reserved=reserved + held,
                             out_shape=tuple(sizes[c] for c in final) if stream else None,
                             out_layout=layout, out_dtype=opts.out_dtype if stream else None, **decode)
    opts.reports.append(report)
    if stream:
        return StoredTensor(opts.out), final
    if isinstance(result, COO):
        return result, res_idx
    return _assemble_csr(row_ks, col_ks, result, len(batch), res_shape), res_idx


def _index_array(ids: np.ndarray, n: int) -> np.ndarray:
    """CSR column ids in int32 when they fit (a view when they already are)."""
    if n <= np.iinfo(np.int32).max:
        return ids if ids.dtype == np.int32 else ids.astype(np.int32)
    return ids if ids.dtype == np.int64 else ids.astype(np.int64)
