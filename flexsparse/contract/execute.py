"""einsum / tensordot / matmul over sparse and dense operands of any order.

Algorithm:

1. Parse (:mod:`.parser`) and bring every operand to COO or a dense ``ndarray`` -- except
   structured operands (BlockSparse, NM, HSS), which stay as they are until a step needs
   them as COO (the format rule of :mod:`.plan`).
2. Unary pass per operand: drop broadcast (size-1) modes, take diagonals of repeated
   indices, sum away indices no other operand or the output needs.
3. Plan (:mod:`.plan`): a pairwise order chosen with sparsity-aware cost estimates, and a
   method per step: ``dense`` (BLAS through ``numpy.einsum``), ``gustavson`` (row-wise
   SpGEMM, hash or dense accumulator per row block), ``dot`` (inner-product engine: the
   output is small or dense), ``spmm`` (sparse x dense), ``block``/``nm``/``hss`` (structured
   x dense: the structured class's ``matmul``/``tmatmul``/``linear``/``linear_grad_input``,
   whichever reads the dense operand in place; :mod:`._structured` sends CUDA tensors to the
   Triton kernels of :mod:`flexsparse.gpu`). When every operand is dense or dense-ish, the
   sparse planning is skipped: :mod:`._dense` densifies the COO operands and runs one
   batched GEMM per pair.
4. Each sparse step is matricised: A's rows are its (batch, free) keys, its columns the
   (batch, contracted) keys, and likewise for B (:mod:`._keys` gives compact ids with no
   linear key that could overflow, grouped by bitmap ranks, radix sorts and counting sorts;
   an operand contracted with itself is grouped once). Putting the batch modes into both the
   row and the column keys makes cross-batch products structurally zero, so batched
   contractions need no loop. A matrix product (one mode per key) runs the 2-D SpGEMM of
   :mod:`flexsparse.kernels.cpu.spgemm` and decodes its CSR; a high-order step runs
   :mod:`flexsparse.kernels.cpu.outer` when its whole result fits the cache-sized budget of
   :data:`flexsparse._limits.OUTER_MAX_BYTES` (outer products into a dense accumulator), else
   :mod:`flexsparse.kernels.cpu.sptc` (Gustavson writing COO coordinates directly). Both emit
   canonical COO: no output sort.
5. The result is returned dense or sparse by the ``format`` rule (:func:`choose_format`).

Cost: each sparse step is O(nnz(A) + nnz(B)) for key grouping (plus O(space / 64) for a
bitmap rank or O(n * bits / 11) for a radix rank when keys must be compacted, O(n log n)
beyond int64) plus the kernel's O(flops + nnz(C) * ndim(C)); dense steps are BLAS.

>>> import numpy as np, flexsparse as fs
>>> a = fs.COO.from_numpy(np.array([[1.0, 0, 2], [0, 3, 0]]))
>>> fs.einsum("ij,jk->ik", a, a.T, format="dense")
array([[5., 0.],
       [0., 9.]])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from flexsparse import _limits
from flexsparse._util import check_numeric_dtype, index_dtype_for, result_dtype
from flexsparse.contract._bounded import PRODUCT_RUNNER, make_tiling_options, save_result
from flexsparse.contract._calls import call_dtypes, hot, parsed_spec, reductions
from flexsparse.contract._dense import (
    NONFINITE,
    coo_pair_fast,
    dense_enough,
    dense_pair_fast,
    dense_result_nonfinite,
    densify_checked,
    has_nonfinite,
    memory_order,
    pair_dense,
    split_pair,
)
from flexsparse.contract._keys import KeySpace, group_modes, split_modes
from flexsparse.contract._structured import einsum_on_device, pair_structured, structured_backend
from flexsparse.contract.parser import TermReduction, parse_einsum, parse_interleaved
from flexsparse.contract.plan import (
    DENSE_THRESHOLD,
    DOT_FACTOR,
    OUTPUT_DENSE_THRESHOLD,
    check_optimize,
    choose_output_format,
    structured_kernel,
)
from flexsparse.formats.base import SparseArray
from flexsparse.formats.block import StructuredMatrix
from flexsparse.formats.coo import COO
from flexsparse.formats.store import StoredTensor

__all__ = ["einsum", "tensordot", "matmul", "choose_format", "structured_backend", "AUTO_DENSE_MAX_BYTES"]

#: ``format="auto"`` returns a dense result only when it takes at most this many bytes.
AUTO_DENSE_MAX_BYTES = _limits.AUTO_DENSE_MAX_BYTES
_FORMATS = ("auto", "coo", "csf", "csr", "dense")


def choose_format(nnz: int, shape: tuple[int, ...], itemsize: int) -> str:
    """The ``format="auto"`` rule: the planner's :func:`~flexsparse.contract.plan.choose_output_format`
    (dense above 25% density) with a 2 GiB cap on the dense result, applied to the real nnz.
    0-d results are always dense (a NumPy scalar, as ``np.einsum``), and so are results whose
    operands were all dense NumPy arrays (checked by :func:`einsum`).

    >>> choose_format(30, (10, 10), 8), choose_format(3, (10, 10), 8), choose_format(1, (), 8)
    ('dense', 'coo', 'dense')
    """
    if not shape:
        return "dense"
    size = math.prod(shape)
    # choose_output_format's rule with the cap inlined: it runs up to three times per call of
    # a small product, where resolving the cap through parse_bytes cost ~0.5 us each time
    return "dense" if size and nnz / size > OUTPUT_DENSE_THRESHOLD and size * itemsize <= AUTO_DENSE_MAX_BYTES \
        else "coo"


# ---------------------------------------------------------------------- operand handling
def _as_operand(x: Any, k: int) -> COO | StructuredMatrix | np.ndarray:
    """COO for sparse inputs (structured ones stay structured), a numeric ndarray for everything
    else (original dtype).

    Sparse inputs of other libraries go through :func:`~flexsparse.formats.convert.as_coo`,
    whose own checks name the problem (a pydata array with a nonzero fill value, a non-numeric
    dtype); such an object is never densified with ``np.asarray`` (pydata refuses with a
    RuntimeError, and a huge tensor would be densified silently).
    """
    if isinstance(x, (COO, StructuredMatrix)):
        return x
    if isinstance(x, SparseArray):
        return x.to_coo()
    if isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        check_numeric_dtype(arr.dtype, f"operand {k}")
        return arr
    from flexsparse.formats.convert import as_coo, is_foreign_sparse

    if is_foreign_sparse(x):
        try:
            return as_coo(x)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"operand {k}: {exc}") from None
    try:
        return as_coo(x)
    except TypeError:
        pass
    arr = np.asarray(x)
    check_numeric_dtype(arr.dtype, f"operand {k}")
    return arr


def _promote(op: COO | np.ndarray, dtype: np.dtype) -> COO | np.ndarray:
    """``op`` with its values in the compute dtype.

    A COO's duplicate coordinates are summed in its OWN dtype first: that is the tensor the
    user means (``todense()`` sums them so: booleans OR, small integers wrap), and summing them
    after promotion would count a boolean pair twice.
    """
    if op.dtype == dtype:
        return op
    if isinstance(op, StructuredMatrix):  # float32/float64 values only: other dtypes go COO
        return op.astype(dtype) if dtype in (np.float32, np.float64) else _promote(op.to_coo(), dtype)
    if isinstance(op, COO):
        return _canonical(op).astype(dtype, copy=False)
    return op.astype(dtype, copy=False)


def _unary(op: COO | np.ndarray, red: TermReduction, dtype: np.dtype, sum_private: bool = True
           ) -> tuple[COO | np.ndarray, str]:
    """Apply one :class:`~flexsparse.contract.parser.TermReduction` (broadcast drop, diagonal,
    private sums); returns the operand over distinct indices and those indices.

    With ``sum_private=False`` the private indices stay (the exact non-finite evaluation
    multiplies every term before summing it).
    """
    idx, bcast = red.term, red.squeezed
    if not (bcast or red.diagonal or (sum_private and red.summed)):
        return op, idx  # nothing to apply (the common case: ~3 us of Python saved per operand)
    if isinstance(op, StructuredMatrix) and (bcast or red.diagonal or (sum_private and red.summed)):
        op = op.to_coo()  # a transformed structured matrix is no longer in its pattern
    # 1. size-1 broadcast modes carry no information: drop them.
    if bcast:
        keep = [m for m, c in enumerate(idx) if c not in bcast]
        if isinstance(op, np.ndarray):
            op = op.reshape([op.shape[m] for m in keep])
        else:
            op = COO(op.coords[keep], op.data, tuple(op.shape[m] for m in keep), canonical=op.canonical)
        idx = "".join(idx[m] for m in keep)
    # 2. repeated index: the diagonal.
    uniq = "".join(dict.fromkeys(idx))
    if len(uniq) < len(idx):
        if isinstance(op, np.ndarray):
            op = np.einsum(f"{idx}->{uniq}", op)
        else:
            mask = np.ones(op.nnz, dtype=bool)
            first = {c: idx.index(c) for c in uniq}
            for m, c in enumerate(idx):
                if m != first[c]:
                    mask &= op.coords[m] == op.coords[first[c]]
            keep = [first[c] for c in uniq]
            op = COO(op.coords[keep][:, mask], op.data[mask], tuple(op.shape[m] for m in keep),
                     canonical=False).sum_duplicates()
        idx = uniq
    # 3. indices nobody else needs: sum them away now (cheapest place), in the compute dtype.
    if sum_private and red.summed:
        op, idx = _sum_modes(op, idx, set(red.summed), dtype)
    return op, idx


def _sum_modes(op: COO | np.ndarray, idx: str, drop: set[str], dtype: np.dtype
               ) -> tuple[COO | np.ndarray, str]:
    """Sum ``op`` over the modes in ``drop``, keeping the values in ``dtype``."""
    axes = tuple(m for m, c in enumerate(idx) if c in drop)
    if not axes:
        return op, idx
    if isinstance(op, StructuredMatrix):
        op = op.to_coo()
    if isinstance(op, np.ndarray):
        op = np.asarray(op.sum(axis=axes, dtype=dtype))
    else:
        op = op.sum(axis=axes)  # a COO (0-D when every mode is summed), NumPy's sum dtype
        op = op.astype(dtype, copy=False)
    return op, "".join(c for c in idx if c not in drop)


def _canonical(t: COO) -> COO:
    return t if t.canonical else t.sum_duplicates()


def _transpose_to(op: COO | np.ndarray, idx: str, target: str) -> COO | np.ndarray:
    if idx == target:
        return op
    return op.transpose([idx.index(c) for c in target])


# ---------------------------------------------------------------------- matricisation
def _csr(row_ids: np.ndarray, col_ids: np.ndarray, vals: np.ndarray, shape: tuple[int, int]):
    """CSR from unique (row, col) pairs by a stable counting sort on the row ids.

    Callers pass the entries of a canonical operand, whose column ids then ascend within
    every row (both ids are order-preserving key ranks): the rows come out sorted.
    """
    from flexsparse.formats.csr import CSR
    from flexsparse.kernels.cpu.grouping import csr_from_ids

    n_rows, n_cols = shape
    idt = np.dtype(np.int32 if n_cols <= np.iinfo(np.int32).max else np.int64)
    indptr, indices, data = csr_from_ids(row_ids, col_ids, vals, n_rows, idt)
    return CSR._trusted(indptr, indices, data, (n_rows, n_cols), True)


def _modes(idx: str, letters: str) -> list[int]:
    return [idx.index(c) for c in letters]


def _trusted_coo(coords: list[np.ndarray], vals: np.ndarray, shape: tuple[int, ...],
                 canonical: bool) -> COO:
    """COO from coordinates a kernel just produced in bounds (skips the bounds checks)."""
    idt = index_dtype_for(shape)
    stacked = np.empty((len(coords), len(vals)), dtype=idt)
    for m, c in enumerate(coords):
        stacked[m] = c
    # COO._new only reads ``self`` when no shape is given: it is the internal trusted constructor.
    return COO._new(None, stacked, vals, shape, canonical)


def _assemble(row_ks: KeySpace, col_ks: KeySpace, rows: np.ndarray, cols: np.ndarray,
              vals: np.ndarray, n_batch: int, shape: tuple[int, ...], canonical: bool) -> COO:
    """COO over (row key modes + column key modes minus the batch) from compact ids.

    Ids grow with the lexicographic order of their keys and the batch modes of the column
    key repeat the row's, so row-major (row id, col id) order is canonical coordinate order.
    """
    coords = row_ks.decode(rows) + col_ks.decode(cols)[n_batch:]
    return _trusted_coo(coords, vals, shape, canonical)


def _assemble_csr(row_ks: KeySpace, col_ks: KeySpace, C: Any, n_batch: int,
                  shape: tuple[int, ...], threads: int | None = None) -> COO:
    """:func:`_assemble` for a CSR product, in one parallel pass: every row copies its decoded
    key, every column id is looked up in the column key's coordinate table."""
    from flexsparse.kernels.cpu.grouping import assemble_coo
    from flexsparse.kernels.cpu.partition import thread_scope

    idt = index_dtype_for(shape)
    with thread_scope(threads):
        coords = assemble_coo(C.indptr, C.indices, row_ks.coord_table(idt), col_ks.coord_table(idt),
                              n_batch, idt)
    return COO._new(None, coords, C.data, shape, C.sorted_indices)


def _outer_fits(n_cells: int, dtype: np.dtype, a: COO, b: COO, threads: int | None) -> bool:
    """The outer-product engine's rule (:data:`flexsparse._limits.OUTER_MAX_BYTES`)."""
    import numba

    from flexsparse.kernels.cpu.outer import outer_workspace_bytes

    work = outer_workspace_bytes(n_cells, 1, max(dtype.itemsize, 8 if dtype == np.bool_ else 1),
                                 threads or numba.get_num_threads())
    operands = a.coords.nbytes + a.data.nbytes + b.coords.nbytes + b.data.nbytes
    return work <= _limits.OUTER_MAX_BYTES and (work <= 2**20 or 2 * work <= operands)


def _outer(a: COO, a_rows: np.ndarray, a_cols: np.ndarray, B: Any, row_ks: KeySpace, col_ks: KeySpace,
           k_ks: KeySpace, n_batch: int, shape: tuple[int, ...], dtype: np.dtype, x_is_x: bool,
           threads: int | None) -> COO:
    """Outer-product engine (:mod:`flexsparse.kernels.cpu.outer`): the result fits in cache."""
    from flexsparse.kernels.cpu.outer import outer_csr_csr
    from flexsparse.kernels.cpu.partition import thread_scope

    if x_is_x:  # X x X: A grouped by k is B itself
        at_ptr, at_idx, at_val = B.indptr, B.indices, B.data
    else:
        at = _csr(a_cols, a_rows, a.data.astype(dtype, copy=False), (k_ks.n_ids, row_ks.n_ids))
        at_ptr, at_idx, at_val = at.indptr, at.indices, at.data
    idt = index_dtype_for(shape)
    work = np.dtype(np.int64) if dtype == np.bool_ else dtype
    with thread_scope(threads):
        coords, vals = outer_csr_csr(at_ptr, at_idx, at_val, B.indptr, B.indices, B.data, row_ks.n_ids,
                                     col_ks.n_ids, row_ks.coord_table(idt), col_ks.coord_table(idt),
                                     n_batch, idt, work)
    return COO._new(None, coords, vals.astype(dtype, copy=False), shape, True)


def _pair_sparse(a: COO, ai: str, b: COO, bi: str, out: str, sizes: dict[str, int], method: str,
                 threads: int | None) -> tuple[Any, str]:
    """Sparse x sparse contraction; returns (result, its index order)."""
    batch, contr, free_a, free_b = split_pair(ai, bi, out)
    a, b = _canonical(a), _canonical(b)
    sz = lambda s: tuple(sizes[c] for c in s)  # noqa: E731
    rows_a, rows_b = _modes(ai, batch + free_a), _modes(bi, batch + free_b)
    row_ks, a_rows = group_modes(a.coords, rows_a, sz(batch + free_a))
    k_ks, a_cols, b_rows = split_modes(a.coords, _modes(ai, batch + contr), b.coords,
                                       _modes(bi, batch + contr), sz(batch + contr))
    if a.coords is b.coords and rows_a == rows_b:  # X x X: the free keys are the same grouping
        col_ks, b_cols = row_ks, a_rows
    else:
        col_ks, b_cols = group_modes(b.coords, rows_b, sz(batch + free_b))
    dtype = result_dtype(a.dtype, b.dtype)
    B = _csr(b_rows, b_cols, b.data.astype(dtype, copy=False), (k_ks.n_ids, col_ks.n_ids))
    res_idx = batch + free_a + free_b
    res_shape = sz(res_idx)
    n_cells = row_ks.n_ids * col_ks.n_ids
    # Matrix products (one mode per key, no batch) stay on the 2-D SpGEMM path below.
    high_order = bool(batch) or len(free_a) > 1 or len(free_b) > 1 or len(contr) > 1
    if high_order and _outer_fits(n_cells, dtype, a, b, threads):
        x_is_x = col_ks is row_ks and b_rows is a_cols and a.data is b.data
        return _outer(a, a_rows, a_cols, B, row_ks, col_ks, k_ks, len(batch), res_shape, dtype,
                      x_is_x, threads), res_idx
    A = _csr(a_rows, a_cols, a.data.astype(dtype, copy=False), (row_ks.n_ids, k_ks.n_ids))
    if method == "dot" and n_cells <= _limits.DOT_DENSE_MAX_CELLS and not batch:
        from flexsparse.kernels.cpu.dot import dot_csr_csr

        dense = dot_csr_csr(A, B.transpose())
        r, c = np.nonzero(dense)
        return _assemble(row_ks, col_ks, r, c, dense[r, c], len(batch), res_shape, True), res_idx
    if high_order:
        # High-order step: the SpTC kernel writes COO coordinates directly.
        return _sptc(A, B, row_ks, col_ks, len(batch), res_shape, dtype, threads), res_idx
    from flexsparse.kernels.cpu.spgemm import spgemm

    C = spgemm(A, B, threads=threads)
    return _assemble_csr(row_ks, col_ks, C, len(batch), res_shape, threads), res_idx


def _sptc(A: Any, B: Any, row_ks: KeySpace, col_ks: KeySpace, n_batch: int, shape: tuple[int, ...],
          dtype: np.dtype, threads: int | None) -> COO:
    """Gustavson SpTC emitting COO (:mod:`flexsparse.kernels.cpu.sptc`); canonical output."""
    from flexsparse.kernels.cpu.partition import thread_scope
    from flexsparse.kernels.cpu.sptc import sptc_csr_csr

    idt = index_dtype_for(shape)
    work = np.dtype(np.int64) if dtype == np.bool_ else dtype
    with thread_scope(threads):
        coords, vals = sptc_csr_csr(A.indptr, A.indices, A.data, B.indptr, B.indices, B.data, B.n_cols,
                                    row_ks.coord_table(idt), col_ks.coord_table(idt), n_batch, idt, work)
    return COO._new(None, coords, vals.astype(dtype, copy=False), shape, True)


def _pair_sparse_dense(a: COO, ai: str, d: np.ndarray, di: str, out: str, sizes: dict[str, int],
                       threads: int | None, dense_out: bool | None) -> tuple[COO | np.ndarray, str]:
    """Sparse x dense: A's (batch, contracted) keys index rows of the reshaped dense operand.
    ``dense_out=None``: the ``format="auto"`` rule on the exact share of output rows that
    some stored value reaches (each such row is computed whole)."""
    from flexsparse.kernels.cpu import spmm as spk
    from flexsparse.kernels.cpu.grouping import linear_key

    batch, contr, free_a, free_d = split_pair(ai, di, out)
    a = _canonical(a)
    sz = lambda s: tuple(sizes[c] for c in s)  # noqa: E731
    dtype = result_dtype(a.dtype, d.dtype)
    # d: [batch..., contr..., free_d...] -> [B*K, F]; contiguous rows for the SpMM inner loop
    d2 = np.ascontiguousarray(_transpose_to(d, di, batch + contr + free_d), dtype=dtype)
    bk, f = math.prod(sz(batch + contr)), math.prod(sz(free_d))
    d2 = d2.reshape(bk, f)
    row_ks, a_rows = group_modes(a.coords, _modes(ai, batch + free_a), sz(batch + free_a))
    lin = linear_key(a.coords, _modes(ai, batch + contr), sz(batch + contr))
    A = _csr(a_rows, lin, a.data.astype(dtype, copy=False), (row_ks.n_ids, bk))
    C = spk.spmm_csr_dense(A, d2, threads=threads) if f else np.zeros((row_ks.n_ids, 0), dtype)
    res_idx = batch + free_a + free_d
    res_shape = sz(res_idx)
    present = np.flatnonzero(np.diff(A.indptr))  # rows holding any entry
    if dense_out is None:
        cells = math.prod(res_shape)
        dense_out = cells > 0 and choose_output_format(present.size * f / cells, cells * C.itemsize) == "dense"
    if dense_out:
        full = np.zeros(res_shape, dtype=dtype)
        if present.size == 0:  # no stored entry: the result is all zeros
            return full, res_idx
        keys = row_ks.decode(present)
        full.reshape(sz(batch + free_a) + (f,))[tuple(keys)] = C[present]
        return full, res_idx
    sub = C[present]
    r, c = np.nonzero(sub)
    coords = row_ks.decode(present[r])
    rest = c
    tail = []
    for s in reversed(sz(free_d)):
        rest, x = np.divmod(rest, s)
        tail.append(x)
    coords += tail[::-1]
    return _trusted_coo(coords, sub[r, c], res_shape, True), res_idx


def _pair(x: COO | np.ndarray, xi: str, y: COO | np.ndarray, yi: str, out: str, sizes: dict[str, int],
          method: str, threads: int | None, dense_out: bool, tiling: Any, final: str | None,
          reserved: int = 0) -> tuple[Any, str]:
    # Guard: an index neither the other side nor the result needs is summed away first.
    dtype = result_dtype(x.dtype, y.dtype)
    x, xi = _sum_modes(x, xi, set(xi) - set(yi) - set(out), dtype)
    y, yi = _sum_modes(y, yi, set(yi) - set(xi) - set(out), dtype)
    if tiling is not None:  # memory_limit=: every step is tiled and charged (see _bounded)
        from flexsparse.contract._bounded import bounded_pair

        x = x.to_coo() if isinstance(x, StructuredMatrix) else x
        y = y.to_coo() if isinstance(y, StructuredMatrix) else y
        return bounded_pair(x, xi, y, yi, out, sizes, tiling, final, reserved)
    # Structured x dense runs the structured product; any other step takes the matrix as COO.
    for w, wi, d, di in ((x, xi, y, yi), (y, yi, x, xi)):
        if isinstance(w, StructuredMatrix) and isinstance(d, np.ndarray) and d.dtype.kind in "biuf":
            kernel = structured_kernel(wi, di, out)
            if kernel is not None:
                return pair_structured(w, wi, d, di, sizes, kernel)
    x = x.to_coo() if isinstance(x, StructuredMatrix) else x
    y = y.to_coo() if isinstance(y, StructuredMatrix) else y
    xs, ys = isinstance(x, COO), isinstance(y, COO)
    if method == "dense":
        return pair_dense(x.todense() if xs else x, xi, y.todense() if ys else y, yi, out, sizes)
    if xs and ys:
        return _pair_sparse(x, xi, y, yi, out, sizes, method, threads)
    if xs:
        return _pair_sparse_dense(x, xi, y, yi, out, sizes, threads, dense_out)
    if ys:
        return _pair_sparse_dense(y, yi, x, xi, out, sizes, threads, dense_out)
    return pair_dense(x, xi, y, yi, out, sizes)


def _finish(res: COO | np.ndarray, fmt: str, dtype: np.dtype) -> Any:
    """Cast to the einsum result dtype and store the result as ``fmt`` decides."""
    sparse = isinstance(res, COO)
    if sparse:
        res = res if res.dtype == dtype else res.astype(dtype)
    else:
        res = np.asarray(res).astype(dtype, copy=False)
    if fmt == "auto":
        if sparse:
            nnz = res.nnz
        else:  # only "more than OUTPUT_DENSE_THRESHOLD non-zero?" matters: stop counting past it
            nnz = hot().count_nonzero_upto(memory_order(res), int(OUTPUT_DENSE_THRESHOLD * res.size))
        fmt = choose_format(nnz, res.shape, dtype.itemsize)
    if fmt == "dense":
        dense = res.todense() if sparse else res
        return dense[()] if dense.ndim == 0 else dense
    if fmt == "csr":
        if res.ndim != 2:
            raise ValueError(f"format='csr' needs a 2-D result, got shape {res.shape}")
        return (res if sparse else COO.from_numpy(res)).to_csr()
    coo = _canonical(res) if sparse else COO.from_numpy(res)
    if fmt == "csf":
        from flexsparse.formats.fiber import CSF

        return CSF.from_coo(coo)
    return coo


def einsum(subscripts: Any, *operands: Any, format: str = "auto", optimize: Any = "auto",
           threads: int | None = None, memory_limit: int | str | None = None,
           tiling: str = "overbook", overbook: float = 0.10, out: Any = None,
           progress: bool = False, return_report: bool = False) -> Any:
    """Evaluate an Einstein summation over sparse and dense operands, as ``numpy.einsum``.

    Semantics are NumPy's: the result dtype is ``np.result_type`` of the operands (a Python
    scalar counts as ``np.asarray`` of it, as ``np.einsum`` converts it) and the arithmetic runs
    in that dtype (:func:`flexsparse._util.compute_dtype`: float16 accumulates in float32,
    booleans count), integers wrap at their own width, size-1 axes broadcast on summed and kept
    indices, and inf/nan give NumPy's values wherever they meet implicit zeros
    (:mod:`flexsparse.contract._nonfinite`).

    Args:
        subscripts: a spec such as ``"ij,jk->ik"`` (explicit or implicit output, ``...``,
            repeated indices), or NumPy's interleaved form ``einsum(a, [0, 1], b, [1, 2])``.
        *operands: NumPy arrays, scalars, :class:`~flexsparse.COO`/``CSF``, SciPy sparse,
            pydata/sparse or torch sparse tensors, in any mix.
        format: ``"auto"`` (see :func:`choose_format`), ``"coo"``, ``"csf"``, ``"csr"`` (2-D
            results: the :class:`~flexsparse.formats.csr.CSR` itself) or ``"dense"``.
        optimize: path optimizer name (``"auto"``, ``"greedy"``, ``"optimal"``, ``"left"``)
            or an explicit list of pairs, as ``numpy.einsum_path``.
        threads: worker threads for the numba engines (default: all cores); checked up front.
        memory_limit: bound on the working set of every sparse x sparse step (bytes or a
            string such as ``"512MB"``); the step then runs tile by tile (:mod:`flexsparse.tiling`).
        tiling: ``"overbook"`` (Swiftiles + Tailors), ``"conservative"`` or ``"prescient"``.
        overbook: target fraction of overflowing tiles for ``tiling="overbook"``.
        out: with ``memory_limit``, a ``.npz`` path or directory that receives the final
            result tile by tile, in the store format of :mod:`flexsparse.formats.store` (the
            same format ``fs.save`` writes; ``fs.load`` reads it in any process); a
            :class:`~flexsparse.formats.store.StoredTensor` handle (``.load()``, ``.tiles()``,
            ``.shape``, ``.nnz``) is returned instead of the tensor.
        progress: show a progress bar over tiles.
        return_report: also return the tiling report(s) (``(result, reports)``).

    Returns:
        A NumPy array/scalar or a sparse tensor, as ``format`` decides. A product of two
        sparse matrices keeps the compressed rows the kernel produced: its COO is backed by
        that CSR (coordinates built when first read) and its rows are in any column order
        (``canonical=False``; :meth:`~flexsparse.formats.coo.COO.sum_duplicates` sorts them
        per row).

    Raises:
        ValueError: invalid subscripts, size mismatches, unknown format/optimizer/path, bad
            ``threads`` (all checked before any work).
        TypeError: non-numeric operands.

    >>> import numpy as np
    >>> x = np.arange(6.0).reshape(2, 3)
    >>> float(einsum("ij,ij->", x, x))
    55.0
    >>> float(einsum("i,i->", np.ones(1), np.arange(3.0)))   # size-1 broadcasting on a summed index
    3.0
    """
    if format not in _FORMATS:
        raise ValueError(f"unknown format {format!r}; valid formats: {', '.join(_FORMATS)}")
    if threads is not None:  # None is valid; the check's module loads numba
        hot().check_threads(threads)
    known_nonfinite = False  # found by the sparse pair fast path's flops count
    if len(operands) == 2 and memory_limit is None and out is None and not return_report and \
            type(subscripts) is str and type(optimize) is str:
        if format in ("auto", "dense"):
            res = dense_pair_fast(subscripts, operands[0], operands[1], optimize)
            if res is not None:
                return res
        res = _sparse_pair_fast(subscripts, operands[0], operands[1], format, optimize, threads)
        if res is NONFINITE:
            known_nonfinite = True
        elif res is not None:
            return res
        else:
            res = coo_pair_fast(subscripts, operands[0], operands[1], optimize)
            if res is not None:
                return _finish(res, format, res.dtype)
    if not isinstance(subscripts, str):
        subscripts, operands = parse_interleaved((subscripts,) + tuple(operands))
    if out is not None and memory_limit is None:
        raise ValueError("out= streams tiles to disk and needs memory_limit=")
    gpu_res = einsum_on_device(subscripts, operands, format, out)
    if gpu_res is not None:
        return (gpu_res, []) if return_report else gpu_res
    ops, seen = [], {}
    for k, x in enumerate(operands):  # an operand passed twice (A @ A) is converted once
        if id(x) not in seen:
            seen[id(x)] = _as_operand(x, k)
        ops.append(seen[id(x)])
    spec = parsed_spec(subscripts, tuple(op.shape for op in ops))
    check_optimize(optimize, spec.n_operands)
    dtype, work = call_dtypes(tuple(op.dtype for op in ops))
    tiling_opts = None
    if memory_limit is not None:
        tiling_opts = make_tiling_options(memory_limit, tiling, overbook, progress, out)
        tiling_opts.out_dtype = dtype  # a streamed result is stored in the result dtype
        tiling_opts.inputs = [a for op in ops for a in
                              ((op.coords, op.data) if isinstance(op, COO) else (op._data(),)
                               if isinstance(op, SparseArray) else (op,))]

    if format == "auto" and all(isinstance(op, np.ndarray) for op in ops):
        format = "dense"  # dense in, dense out, as numpy.einsum
    dense_ops = all(dense_enough(op) for op in ops)  # unchanged by the densify below
    if spec.n_operands > 1 and tiling_opts is None and dense_ops:
        # Every operand goes to BLAS (see _run_plan): densify now, and take the inf/nan check
        # from the scatter's own pass instead of a separate scan of the values (abQ,icQ->abic
        # from COO, one thread: 35 of 1250 us saved).
        ops, nonfinite, unchecked = densify_checked(ops)
    else:
        distinct = {id(op): op for op in ops}.values()  # an operand passed twice is scanned once
        # a product of two sparse matrices in this process scans the values in its flops count
        # (matmul_2d, checked=False: one parallel pass); the other paths scan them here
        deferred = len(ops) == 2 and tiling_opts is None
        nonfinite = known_nonfinite or (not deferred and spec.n_operands > 1 and
                                        any(has_nonfinite(op, threads) for op in distinct))
        unchecked = []
    # a product runner that takes plain products (the distributed one) computes this SpGEMM
    runner = PRODUCT_RUNNER.get() if out is None else None
    plain = getattr(runner, "plain_product", None)
    if len(ops) == 2 and (tiling_opts is None or plain is not None) and not nonfinite and not dense_ops:
        res = hot().matmul_2d(spec, ops[0], ops[1], format, dtype, work, threads,
                              product=None if tiling_opts is None else plain, checked=not deferred)
        if res is NONFINITE:
            nonfinite = True
        elif res is not None:
            return (res, tiling_opts.reports if tiling_opts is not None else []) if return_report else res
        elif deferred:
            nonfinite = any(has_nonfinite(op, threads) for op in distinct)
    if not nonfinite:
        res, ri = _run_plan(spec, [_promote(op, work) for op in ops], work, optimize, threads, tiling_opts,
                            out is not None)
        nonfinite = dense_result_nonfinite(res, unchecked)  # then computed again, exactly
    if nonfinite:
        from flexsparse.contract._nonfinite import evaluate_nonfinite

        def run(finite_ops: list) -> tuple[Any, str]:
            return _run_plan(spec, finite_ops, work, optimize, threads, tiling_opts, False)

        res, ri = evaluate_nonfinite(subscripts, spec, ops, work, run,
                                     None if tiling_opts is None else tiling_opts.limit)
    reports = tiling_opts.reports if tiling_opts is not None else []
    if not isinstance(res, StoredTensor):
        res = _finish(_transpose_to(res, ri, spec.output), format, dtype)
        if out is not None:
            res = save_result(res, tiling_opts.out)
    return (res, reports) if return_report else res


def _sparse_pair_fast(subscripts: str, x: Any, y: Any, fmt: str, optimize: str, threads: int | None) -> Any:
    """Two 2-D COO operands, not both dense enough for BLAS, in a plain matrix product: the
    product of :func:`~flexsparse.contract._matmul2d.matmul_2d` straight away, with the
    operand conversion, the tiling and device checks and the operand bookkeeping of the full
    path skipped (none applies to two COO matrices in this process). Returns the result,
    :data:`NONFINITE` when the flops count found an inf or nan, or ``None`` for the full path.

    Measured on pyamg airfoil (260 rows, 11,300 multiply-adds; ``overhead_report`` of
    ``benchmarks/bench_spgemm.py``), einsum above its kernel: 97 us through the full path,
    56 us through this one, 35 us with the product's count, scan and kernel in one compiled
    call (:func:`~flexsparse.kernels.cpu.spgemm.spgemm_small`), on a 2-core Zen VM.
    """
    if type(x) is not COO or type(y) is not COO or len(x.shape) != 2 or len(y.shape) != 2 or \
            (dense_enough(x) and dense_enough(y)):
        return None
    spec, dtype, work, plan = _pair_setup(subscripts, x.shape, y.shape, x.dtype, y.dtype, optimize)
    if plan is None:
        return None
    return hot().matmul_2d(spec, x, y, fmt, dtype, work, threads, checked=False, plan=plan)


@functools.lru_cache(maxsize=256)
def _pair_setup(subscripts: str, x_shape: tuple[int, ...], y_shape: tuple[int, ...], x_dtype: np.dtype,
                y_dtype: np.dtype, optimize: str) -> tuple[Any, np.dtype, np.dtype, Any]:
    """``(spec, result dtype, compute dtype, product plan)`` of a call on two operands
    (:func:`parsed_spec`, :func:`~flexsparse.contract.plan.check_optimize`,
    :func:`call_dtypes`, :func:`~flexsparse.contract._matmul2d.product_plan`), remembered: one
    lookup instead of four (~2 us a call on the 2-core Zen VM). An invalid call raises on
    every call: exceptions are not remembered."""
    spec = parsed_spec(subscripts, (x_shape, y_shape))
    check_optimize(optimize, spec.n_operands)
    dtype, work = call_dtypes((x_dtype, y_dtype))
    return spec, dtype, work, hot().product_plan(spec)


def _run_plan(spec: Any, ops: list, dtype: np.dtype, optimize: Any, threads: int | None, tiling_opts: Any,
              stream_final: bool) -> tuple[Any, str]:
    """Unary pass, plan, pairwise steps over operands already in the compute ``dtype``;
    returns the last result and its index order."""
    # Unary pass (the spec's one normalisation): every operand keeps distinct indices that
    # another operand or the output needs.
    work = [_unary(op, red, dtype) for op, red in zip(ops, reductions(spec))]
    if len(work) == 1:
        op, idx = work[0]
        return op, idx
    sizes = spec.sizes.as_dict()
    if tiling_opts is None and all(dense_enough(op) for op, _ in work):
        # Every operand is dense or dense-ish (chemistry integrals): BLAS, no sparse planning.
        densified: dict[int, np.ndarray] = {}  # the same operand twice is densified once
        dense = []
        for op, idx in work:
            if isinstance(op, SparseArray):
                if id(op) not in densified:
                    densified[id(op)] = op.todense()
                op = densified[id(op)]
            dense.append((op, idx))
        if len(dense) == 2:
            (x, xi), (y, yi) = dense
            return pair_dense(x, xi, y, yi, spec.output, sizes)
        subs = ",".join(idx for _, idx in dense) + "->" + spec.output
        return np.einsum(subs, *[op for op, _ in dense], optimize=True), spec.output
    if len(work) == 2 and tiling_opts is not None:
        (x, xi), (y, yi) = work
        return _pair(x, xi, y, yi, spec.output, sizes, "gustavson", threads, False, tiling_opts,
                     spec.output if stream_final else None, _held(work, tiling_opts))
    if len(work) == 2:
        # One possible path: skip the path search, keep the sparsity-aware engine choice.
        from flexsparse.contract.cost import estimate_pair
        from flexsparse.contract.plan import DEFAULT_DENSE_LIMIT, choose_method
        from flexsparse.contract.stats import operand_stats

        (x, xi), (y, yi) = work
        for w, wi, d, di in ((x, xi, y, yi), (y, yi, x, xi)):
            if isinstance(w, StructuredMatrix) and isinstance(d, np.ndarray) and \
                    structured_kernel(wi, di, spec.output) is not None:
                # structured x dense: the structured product, no statistics needed (they would
                # cost a COO copy of W on every call)
                return _pair(x, xi, y, yi, spec.output, sizes, w.format, threads, True, tiling_opts,
                             spec.output if stream_final else None)
        for w, d in ((x, y), (y, x)):
            if type(w) is COO and type(d) is np.ndarray and w.nnz <= DENSE_THRESHOLD * math.prod(w.shape):
                # sparse x dense below the dense method's density: the product that
                # choose_method picks, its output format from the rows it reaches (exact, and
                # no statistics of the operands: 0.35-0.5 ms of the demo's FLAASH layer)
                return _pair(x, xi, y, yi, spec.output, sizes, "spmm", threads, None, tiling_opts,
                             spec.output if stream_final else None)
        cells = math.prod(sizes[c] for c in spec.output)
        batch, contr, free_x, free_y = split_pair(xi, yi, spec.output)
        high_order = bool(batch) or len(free_x) > 1 or len(free_y) > 1 or len(contr) > 1
        if isinstance(x, COO) and isinstance(y, COO) and (
                cells > DOT_FACTOR * (x.nnz + y.nnz) or
                (high_order and _outer_fits(cells, result_dtype(x.dtype, y.dtype), x, y, threads))):
            # Too many output cells for inner products: Gustavson is the only candidate, and
            # the output format is decided from the real nnz afterwards; no statistics needed.
            # A result that fits in cache goes to the outer-product engine (in _pair_sparse).
            return _pair(x, xi, y, yi, spec.output, sizes, "gustavson", threads, False, tiling_opts,
                         spec.output if stream_final else None)
        sx, sy = operand_stats(xi, x), operand_stats(yi, y)
        est = estimate_pair(sx, sy, spec.output)
        method = choose_method(sx, sy, est, DEFAULT_DENSE_LIMIT)
        dense_out = choose_output_format(est.density, est.dense_bytes) == "dense"
        return _pair(x, xi, y, yi, spec.output, sizes, method, threads, dense_out, tiling_opts,
                     spec.output if stream_final else None)
    from flexsparse.contract.plan import plan_einsum
    from flexsparse.contract.stats import operand_stats

    reduced = ",".join(idx for _, idx in work) + "->" + spec.output
    rspec = parse_einsum(reduced, [tuple(op.shape) for op, _ in work])
    stats = [operand_stats(idx, op) for op, idx in work]
    plan = plan_einsum(rspec, stats, optimize=optimize)
    for n_step, step in enumerate(plan.steps):
        i, j = step.lhs, step.rhs
        (x, xi), (y, yi) = work[i], work[j]
        for p in sorted((i, j), reverse=True):
            work.pop(p)
        final = spec.output if stream_final and n_step == len(plan.steps) - 1 else None
        held = _held(work + [(x, xi), (y, yi)], tiling_opts) if tiling_opts is not None else 0
        res, ri = _pair(x, xi, y, yi, step.out_indices, sizes, step.method, threads,
                        step.out_format == "dense", tiling_opts, final, held)
        work.append((res, ri))
    (res, ri), = work
    return res, ri


def _held(work: list, tiling_opts: Any) -> int:
    """Bytes the call holds in ``work`` beyond the caller's own arrays (charged to memory_limit)."""
    from flexsparse.contract._bounded import owned_bytes

    return sum(owned_bytes(op, tiling_opts.inputs) for op, _ in work)


# ---------------------------------------------------------------------- tensordot / matmul
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def tensordot(a: Any, b: Any, axes: int | Sequence = 2, *, format: str = "auto",
              threads: int | None = None) -> Any:
    """``numpy.tensordot`` for sparse/dense operands (contract ``axes`` of ``a`` with ``b``).

    >>> import numpy as np
    >>> x = np.arange(24.0).reshape(2, 3, 4)
    >>> bool(np.allclose(tensordot(x, x, axes=([1, 2], [1, 2])), np.tensordot(x, x, ([1, 2], [1, 2]))))
    True
    """
    na, nb = np.ndim(a) if not hasattr(a, "ndim") else a.ndim, b.ndim if hasattr(b, "ndim") else np.ndim(b)
    if isinstance(axes, (int, np.integer)):
        n = int(axes)
        if n < 0 or n > min(na, nb):
            raise ValueError(f"axes={n} is out of range for operands with {na} and {nb} dimensions")
        ax_a, ax_b = list(range(na - n, na)), list(range(n))
    else:
        try:
            ax_a, ax_b = axes
        except (TypeError, ValueError):
            raise ValueError("axes must be an int or a pair of sequences") from None
        ax_a = [ax_a] if isinstance(ax_a, (int, np.integer)) else list(ax_a)
        ax_b = [ax_b] if isinstance(ax_b, (int, np.integer)) else list(ax_b)
        if len(ax_a) != len(ax_b):
            raise ValueError(f"axes lengths differ: {len(ax_a)} for a and {len(ax_b)} for b")
    if na + nb > len(_LETTERS):
        raise ValueError(f"tensordot supports at most {len(_LETTERS)} dimensions in total")
    ax_a = [_axis(x, na, "a") for x in ax_a]
    ax_b = [_axis(x, nb, "b") for x in ax_b]
    la = list(_LETTERS[:na])
    lb = list(_LETTERS[na:na + nb])
    for x, y in zip(ax_a, ax_b):
        lb[y] = la[x]
    out = "".join(c for m, c in enumerate(la) if m not in ax_a) + \
        "".join(c for m, c in enumerate(lb) if m not in ax_b)
    return einsum(f"{''.join(la)},{''.join(lb)}->{out}", a, b, format=format, threads=threads)


def _axis(x: Any, ndim: int, name: str) -> int:
    """``x`` as an axis of an ``ndim``-D operand (negative counts from the end), or ValueError."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"tensordot axes must be ints, got {x!r} for operand {name}")
    if not -ndim <= x < ndim:
        raise ValueError(f"axis {x} is out of bounds for operand {name} with {ndim} dimension(s)")
    return int(x) % ndim


def matmul(a: Any, b: Any, *, format: str = "auto", threads: int | None = None) -> Any:
    """``numpy.matmul`` semantics (1-D promotion, broadcast batch dims) for sparse/dense operands.

    >>> import numpy as np
    >>> x = np.arange(6.0).reshape(2, 3)
    >>> matmul(x, np.ones(3)).tolist()
    [3.0, 12.0]
    """
    na = a.ndim if hasattr(a, "ndim") else np.ndim(a)
    nb = b.ndim if hasattr(b, "ndim") else np.ndim(b)
    if na == 0 or nb == 0:
        raise ValueError("matmul: input operand does not have enough dimensions (scalars are not allowed)")
    if na == 1 and nb == 1:
        spec = "i,i->"
    elif na == 1:
        spec = "j,...jk->...k"
    elif nb == 1:
        spec = "...ij,j->...i"
    else:
        spec = "...ij,...jk->...ik"
    return einsum(spec, a, b, format=format, threads=threads)
