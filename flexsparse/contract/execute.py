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
   whichever reads the dense operand in place; :func:`structured_backend` sends CUDA tensors
   to the Triton kernels of :mod:`flexsparse.gpu`).
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
from flexsparse._util import check_numeric_dtype, compute_dtype, index_dtype_for, result_dtype
from flexsparse.contract._bounded import PRODUCT_RUNNER, make_tiling_options, save_result
from flexsparse.contract._keys import KeySpace, group_modes, split_modes
from flexsparse.contract.parser import EinsumSpec, TermReduction, parse_einsum, parse_interleaved
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


def _split(ai: str, bi: str, out: str) -> tuple[str, str, str, str]:
    batch = "".join(c for c in ai if c in bi and c in out)
    contr = "".join(c for c in ai if c in bi and c not in out)
    free_a = "".join(c for c in ai if c not in bi)
    free_b = "".join(c for c in bi if c not in ai)
    return batch, contr, free_a, free_b


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
    batch, contr, free_a, free_b = _split(ai, bi, out)
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
                       threads: int | None, dense_out: bool) -> tuple[COO | np.ndarray, str]:
    """Sparse x dense: A's (batch, contracted) keys index rows of the reshaped dense operand."""
    from flexsparse.kernels.cpu import spmm as spk
    from flexsparse.kernels.cpu.grouping import linear_key

    batch, contr, free_a, free_d = _split(ai, di, out)
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


def structured_backend(x: Any) -> str:
    """Where a structured x dense product runs: ``"triton"`` for a tensor on a CUDA device
    (:mod:`flexsparse.gpu`), ``"numba"`` (the CPU kernels) for everything else.

    >>> import numpy as np
    >>> structured_backend(np.ones(3))
    'numba'
    """
    device = getattr(x, "device", None)
    return "triton" if getattr(device, "type", None) == "cuda" else "numba"


def _pair_structured(w: StructuredMatrix, wi: str, d: np.ndarray, di: str, sizes: dict[str, int],
                     kernel: str) -> tuple[np.ndarray, str]:
    """Structured ``W[wi]`` x dense ``D[di]`` on the structured class's own product.

    ``kernel`` (from :func:`~flexsparse.contract.plan.structured_kernel`) names the contracted
    index: ``W``'s reduction index for ``"matmul"``, its row index for ``"tmatmul"``. ``D`` is
    read in place when its (free..., contracted) view is row-major (``W.linear`` /
    ``W.linear_grad_input``), else copied once as ``[contracted, free]`` (``W.matmul`` /
    ``W.tmatmul``).
    """
    c, kept = (wi[1], wi[0]) if kernel == "matmul" else (wi[0], wi[1])
    free = "".join(x for x in di if x != c)
    n_free = math.prod(sizes[x] for x in free)
    lead = _transpose_to(d, di, free + c)
    if lead.flags.c_contiguous:
        x2 = lead.reshape(n_free, sizes[c])
        res = w.linear(x2) if kernel == "matmul" else w.linear_grad_input(x2)
        idx = free + kept
    else:
        x2 = np.ascontiguousarray(_transpose_to(d, di, c + free)).reshape(sizes[c], n_free)
        res = w.matmul(x2) if kernel == "matmul" else w.tmatmul(x2)
        idx = kept + free
    return res.reshape(tuple(sizes[x] for x in idx)), idx


def _torch_structured(w: StructuredMatrix, wi: str, t: Any, ti: str, out: str, kernel: str) -> Any:
    """:func:`_pair_structured` for a torch tensor on a CUDA device: Triton, result on the device."""
    from flexsparse import gpu

    c, kept = (wi[1], wi[0]) if kernel == "matmul" else (wi[0], wi[1])
    free = "".join(x for x in ti if x != c)
    perm = [ti.index(x) for x in free + c]
    x2 = t.permute(*perm).reshape(-1, int(t.shape[ti.index(c)])).contiguous()
    res = gpu.linear(w, x2) if kernel == "matmul" else gpu.linear_grad_input(w, x2)
    shape = [int(t.shape[ti.index(x)]) for x in free] + [int(w.shape[wi.index(kept)])]
    idx = free + kept
    return res.reshape(shape).permute(*[idx.index(x) for x in out])


def _perm(idx: str, target: str) -> tuple[int, ...] | None:
    """The axes taking an operand over ``idx`` to ``target`` order (``None``: already there)."""
    return None if idx == target else tuple(idx.index(c) for c in target)


@functools.lru_cache(maxsize=256)
def _dense_pair_layout(xi: str, yi: str, out: str, extents: tuple[int, ...]) -> tuple:
    """What :func:`_pair_dense` needs about a pair, remembered per (indices, sizes) (its
    string work took ~15 us a call): per operand the axes and ``[B, R, C]`` shape of the
    (batch, rows, cols) order and of the (batch, cols, rows) order; the result's indices and
    shape. ``extents`` are the sizes of the indices of ``xi + yi``, in that order."""
    sizes = dict(zip(xi + yi, extents))
    batch, contr, free_x, free_y = _split(xi, yi, out)
    sz = lambda s: math.prod(sizes[c] for c in s)  # noqa: E731

    def layouts(idx: str, rows: str, cols: str) -> tuple:
        return (_perm(idx, batch + rows + cols), (sz(batch), sz(rows), sz(cols)),
                _perm(idx, batch + cols + rows), (sz(batch), sz(cols), sz(rows)))

    res_idx = batch + free_x + free_y
    return layouts(xi, free_x, contr), layouts(yi, contr, free_y), res_idx, tuple(sizes[c] for c in res_idx)


def _as_batched(op: np.ndarray, layout: tuple, dtype: np.dtype) -> np.ndarray:
    """``op`` as a ``[B, R, C]`` array, a view wherever its memory allows (else one copy).

    Tries the (batch, rows, cols) axis order and the (batch, cols, rows) order followed by a
    swap of the last two axes (``layout`` from :func:`_dense_pair_layout`): either is a
    BLAS-ready view when it matches the stored layout.
    """
    perm, shape, perm_swapped, shape_swapped = layout
    op = op.astype(dtype, copy=False)
    direct = op if perm is None else op.transpose(perm)
    if direct.flags.c_contiguous:
        return direct.reshape(shape)
    swapped = op if perm_swapped is None else op.transpose(perm_swapped)
    if swapped.flags.c_contiguous:
        return swapped.reshape(shape_swapped).swapaxes(1, 2)
    return np.ascontiguousarray(direct).reshape(shape)


def _pair_dense(x: np.ndarray, xi: str, y: np.ndarray, yi: str, out: str, sizes: dict[str, int]
                ) -> tuple[np.ndarray, str]:
    """Dense x dense as one batched GEMM: [B, Fx, K] @ [B, K, Fy] (BLAS through ``np.matmul``).

    Skips ``numpy.einsum``'s per-call path search; indices private to one side were summed
    away by the unary pass, so every index is batch, contracted or free. Operands are passed
    as (possibly transposed) views, so BLAS reads them in place.
    """
    lx, ly, idx, shape = _dense_pair_layout(xi, yi, out, tuple(sizes[c] for c in xi + yi))
    dtype = x.dtype if x.dtype == y.dtype and x.dtype.isnative else result_dtype(x.dtype, y.dtype)
    return _batched_gemm(x, lx, y, ly, dtype).reshape(shape), idx


def _batched_gemm(x: np.ndarray, lx: tuple, y: np.ndarray, ly: tuple, dtype: np.dtype) -> np.ndarray:
    """``[B, R, K] @ [B, K, C]`` of ``x`` and ``y`` in the layouts of :func:`_dense_pair_layout`
    (one 2-D GEMM when ``B == 1``)."""
    xm = _as_batched(x, lx, dtype)
    ym = _as_batched(y, ly, dtype)
    if dtype.kind not in "fc":  # integer/bool GEMM has no BLAS; numpy.einsum's loops beat matmul's
        return np.einsum("bik,bkj->bij", xm, ym)
    return np.matmul(xm[0], ym[0]) if xm.shape[0] == 1 else np.matmul(xm, ym)


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
                return _pair_structured(w, wi, d, di, sizes, kernel)
    x = x.to_coo() if isinstance(x, StructuredMatrix) else x
    y = y.to_coo() if isinstance(y, StructuredMatrix) else y
    xs, ys = isinstance(x, COO), isinstance(y, COO)
    if method == "dense":
        return _pair_dense(x.todense() if xs else x, xi, y.todense() if ys else y, yi, out, sizes)
    if xs and ys:
        return _pair_sparse(x, xi, y, yi, out, sizes, method, threads)
    if xs:
        return _pair_sparse_dense(x, xi, y, yi, out, sizes, threads, dense_out)
    if ys:
        return _pair_sparse_dense(y, yi, x, xi, out, sizes, threads, dense_out)
    return _pair_dense(x, xi, y, yi, out, sizes)


def _dense_enough(op: COO | np.ndarray) -> bool:
    """Dense arrays, and COO tensors >= 30% dense that densify within 256 MiB (O(1) check).

    Structured matrices never are: they run their own product, which picks BLAS itself above
    its measured crossover density.
    """
    if isinstance(op, StructuredMatrix):
        return False
    if not isinstance(op, COO):
        return True
    return op.density >= DENSE_THRESHOLD and op.size * op.dtype.itemsize <= _limits.DENSE_OPERAND_MAX_BYTES


def _has_nonfinite(op: COO | np.ndarray) -> bool:
    """Whether ``op`` stores an inf or nan: one reduction, no temporary the size of ``op``.

    Contiguous values of a compiled dtype: one compiled pass (``v - v`` is non-zero only for
    inf and nan). Others are summed in 64-bit precision: any inf or nan makes the sum
    non-finite; a finite sum that overflows float64 only sends the call to the exact
    non-finite evaluation, which is exact for finite values too.
    """
    vals = op._data() if isinstance(op, SparseArray) else op
    if vals.dtype.kind not in "fc" or vals.size == 0:
        return False
    hot = _hot()  # numba: on first use
    if vals.flags.c_contiguous and vals.dtype in hot.compiled_dtypes:
        return bool(hot.nonfinite_kernel(vals.reshape(-1)))  # 18 us against 35 us for the sum below (165K)
    wide = np.complex128 if vals.dtype.kind == "c" else np.float64
    with np.errstate(over="ignore", invalid="ignore"):
        return not bool(np.isfinite(vals.sum(dtype=wide)))


def _densify_checked(ops: list) -> tuple[list, bool, list]:
    """``(arrays, nonfinite, unchecked)``: dense arrays of dense-enough operands (one per
    distinct operand), whether the scatter that densified a COO found an inf or nan, and the
    distinct arrays no pass has checked (operands given dense, or densified by a copy).

    The unchecked ones are scanned only if the dense product's result is not finite (see
    :func:`_dense_result_nonfinite`): an all-dense product sends every stored value into at
    least one output cell (it multiplies every entry along the other operands' indices), and
    inf or nan times anything, summed with anything, stays inf or nan. So a finite result
    proves finite operands, and the scan NumPy does not make leaves the common path
    (chemistry ``abQ,ijQ->abij`` on dense 24x24x375 operands: ~25 us of a 0.2 ms call)."""
    done: dict[int, tuple[np.ndarray, bool | None]] = {}
    for op in ops:
        if id(op) not in done:
            done[id(op)] = op._todense_checked() if isinstance(op, COO) else (op, None)
    return ([done[id(op)][0] for op in ops], any(flag for _, flag in done.values()),
            [arr for arr, flag in done.values() if flag is None])


def _dense_result_nonfinite(res: Any, unchecked: list) -> bool:
    """Whether an unchecked operand of an all-dense product holds an inf or nan, given the
    product's result ``res`` (see :func:`_densify_checked`): only a result that is not finite
    makes the operands worth scanning (a finite product that overflowed keeps its result)."""
    return bool(unchecked) and isinstance(res, (np.ndarray, np.generic)) and _has_nonfinite(np.asarray(res)) \
        and any(_has_nonfinite(arr) for arr in unchecked)


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
            nnz = _hot().count_nonzero_upto(res, int(OUTPUT_DENSE_THRESHOLD * res.size))
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
        _hot().check_threads(threads)
    if len(operands) == 2 and memory_limit is None and out is None and not return_report and \
            format in ("auto", "dense") and type(subscripts) is str and type(optimize) is str:
        res = _dense_pair_fast(subscripts, operands[0], operands[1], optimize)
        if res is not None:
            return res
    if not isinstance(subscripts, str):
        subscripts, operands = parse_interleaved((subscripts,) + tuple(operands))
    if out is not None and memory_limit is None:
        raise ValueError("out= streams tiles to disk and needs memory_limit=")
    gpu_res = _einsum_on_device(subscripts, operands, format, out)
    if gpu_res is not None:
        return (gpu_res, []) if return_report else gpu_res
    ops, seen = [], {}
    for k, x in enumerate(operands):  # an operand passed twice (A @ A) is converted once
        if id(x) not in seen:
            seen[id(x)] = _as_operand(x, k)
        ops.append(seen[id(x)])
    spec = _parsed(subscripts, tuple(op.shape for op in ops))
    check_optimize(optimize, spec.n_operands)
    dtype, work = _dtypes(tuple(op.dtype for op in ops))
    tiling_opts = None
    if memory_limit is not None:
        tiling_opts = make_tiling_options(memory_limit, tiling, overbook, progress, out)
        tiling_opts.out_dtype = dtype  # a streamed result is stored in the result dtype
        tiling_opts.inputs = [a for op in ops for a in
                              ((op.coords, op.data) if isinstance(op, COO) else (op._data(),)
                               if isinstance(op, SparseArray) else (op,))]

    if format == "auto" and all(isinstance(op, np.ndarray) for op in ops):
        format = "dense"  # dense in, dense out, as numpy.einsum
    dense_ops = all(_dense_enough(op) for op in ops)  # unchanged by the densify below
    if spec.n_operands > 1 and tiling_opts is None and dense_ops:
        # Every operand goes to BLAS (see _run_plan): densify now, and take the inf/nan check
        # from the scatter's own pass instead of a separate scan of the values (abQ,icQ->abic
        # from COO, one thread: 35 of 1250 us saved).
        ops, nonfinite, unchecked = _densify_checked(ops)
    else:
        distinct = {id(op): op for op in ops}.values()  # an operand passed twice is scanned once
        nonfinite = spec.n_operands > 1 and any(_has_nonfinite(op) for op in distinct)
        unchecked = []
    # a product runner that takes plain products (the distributed one) computes this SpGEMM
    runner = PRODUCT_RUNNER.get() if out is None else None
    plain = getattr(runner, "plain_product", None)
    if len(ops) == 2 and (tiling_opts is None or plain is not None) and not nonfinite and not dense_ops:
        res = _hot().matmul_2d(spec, ops[0], ops[1], format, dtype, work, threads,
                                  product=None if tiling_opts is None else plain)
        if res is not None:
            return (res, tiling_opts.reports if tiling_opts is not None else []) if return_report else res
    if not nonfinite:
        res, ri = _run_plan(spec, [_promote(op, work) for op in ops], work, optimize, threads, tiling_opts,
                            out is not None)
        nonfinite = _dense_result_nonfinite(res, unchecked)  # then computed again, exactly
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


@functools.lru_cache(maxsize=256)
def _dense_pair_plan(subscripts: str, x_shape: tuple, y_shape: tuple, x_dtype: np.dtype, y_dtype: np.dtype,
                     optimize: str) -> tuple | None:
    """``(x layout, y layout, result shape, permutation to the output, dtype)`` for a pair of
    float arrays of one dtype whose subscripts need no unary step (no broadcast, diagonal or
    private sum), remembered per call shape; ``None`` for everything else. Parsing errors
    raise here as in the full path."""
    spec = _parsed(subscripts, (x_shape, y_shape))
    check_optimize(optimize, spec.n_operands)
    dtype, work = _dtypes((x_dtype, y_dtype))
    if spec.n_operands != 2 or not spec.output or not (x_dtype == y_dtype == dtype == work) or \
            dtype.kind not in "fc" or not dtype.isnative:
        return None
    if any(red.squeezed or red.diagonal or red.summed for red in _reductions(spec)):
        return None
    xi, yi = spec.inputs
    lx, ly, idx, shape = _dense_pair_layout(xi, yi, spec.output, tuple(x_shape) + tuple(y_shape))
    return lx, ly, shape, None if idx == spec.output else tuple(idx.index(c) for c in spec.output), dtype


def _dense_pair_fast(subscripts: str, x: Any, y: Any, optimize: str) -> np.ndarray | None:
    """Two float ndarrays of one dtype: the dense product straight through BLAS, with the plan
    remembered per (subscripts, shapes, dtype); ``None`` sends the call down the full path.

    The full path's Python around the same GEMM (operand conversion, dtype rules, densify
    check, unary pass, format choice) cost ~25 us a call: 219 us against the GEMM's 193 us on
    the demo's chemistry row (576 x 375 x 16, one thread), where NumPy's ``tensordot`` takes
    200 us. A result holding an inf or nan goes down the full path, which reproduces NumPy's
    non-finite semantics exactly.
    """
    if type(x) is not np.ndarray or type(y) is not np.ndarray:
        return None
    plan = _dense_pair_plan(subscripts, x.shape, y.shape, x.dtype, y.dtype, optimize)
    if plan is None:
        return None
    lx, ly, shape, perm, dtype = plan
    res = _batched_gemm(x, lx, y, ly, dtype).reshape(shape)
    if _hot().nonfinite_kernel(res.reshape(-1)):
        return None
    return res if perm is None else res.transpose(perm)


@functools.lru_cache(maxsize=256)
def _parsed(subscripts: str, shapes: tuple[tuple[int, ...], ...]) -> EinsumSpec:
    """:func:`~flexsparse.contract.parser.parse_einsum`, remembered per (subscripts, shapes):
    the spec is frozen and hashable, and parsing plus :func:`_reductions` took ~40% of the
    fixed cost of a call (about 30 of 70 us on one core of the 2-core test VM), which
    matters for sub-millisecond products such as the chemistry contractions. The shapes are
    the operands' own tuples (an extent equal to a Python int hashes as one, so the key is
    the same) and are made Python ints only on a miss."""
    return parse_einsum(subscripts, tuple(tuple(int(n) for n in shape) for shape in shapes))


@functools.lru_cache(maxsize=64)
def _dtypes(dtypes: tuple[np.dtype, ...]) -> tuple[np.dtype, np.dtype]:
    """``(result dtype, compute dtype)`` of operands of ``dtypes`` (:func:`result_dtype`,
    :func:`compute_dtype`), remembered: the two took ~3 us of a call's ~30 us fixed cost."""
    dtype = result_dtype(*dtypes)
    return dtype, compute_dtype(dtype)


class _HotImports:
    """Modules einsum's per-call path needs that cannot load with this one (numba kernels,
    the 2-D product module, which imports this one): imported on first use and kept, since a
    function-level ``from ... import`` costs ~1 us per call even when the module is loaded."""

    def __init__(self) -> None:
        from flexsparse.contract._matmul2d import matmul_2d
        from flexsparse.kernels.cpu.nonzero import count_nonzero_upto
        from flexsparse.kernels.cpu.partition import check_threads
        from flexsparse.kernels.cpu.scatter import COMPILED_DTYPES, nonfinite_kernel

        self.check_threads = check_threads
        self.count_nonzero_upto = count_nonzero_upto
        self.matmul_2d = matmul_2d
        self.compiled_dtypes = COMPILED_DTYPES
        self.nonfinite_kernel = nonfinite_kernel


_HOT: _HotImports | None = None


def _hot() -> _HotImports:
    global _HOT
    if _HOT is None:
        _HOT = _HotImports()
    return _HOT


@functools.lru_cache(maxsize=256)
def _reductions(spec: EinsumSpec) -> tuple[TermReduction, ...]:
    """``spec.reductions()``, remembered per spec (see :func:`_parsed`)."""
    return spec.reductions()


def _einsum_on_device(subscripts: str, operands: Sequence[Any], format: str, out: Any) -> Any:
    """A structured matrix times a CUDA tensor, run by Triton; ``None`` for every other call."""
    if len(operands) != 2 or out is not None or format not in ("auto", "dense"):
        return None
    for k in (0, 1):
        w, t = operands[k], operands[1 - k]
        if isinstance(w, StructuredMatrix) and structured_backend(t) == "triton":
            spec = parse_einsum(subscripts, [tuple(w.shape), tuple(t.shape)])
            wi, ti = spec.inputs[k], spec.inputs[1 - k]
            kernel = structured_kernel(wi, ti, spec.output)
            if kernel is None or any(spec.broadcast) or len(set(ti)) < len(ti) or \
                    any(c not in spec.output and c not in wi for c in ti):
                return None
            return _torch_structured(w, wi, t, ti, spec.output, kernel)
    return None


def _run_plan(spec: Any, ops: list, dtype: np.dtype, optimize: Any, threads: int | None, tiling_opts: Any,
              stream_final: bool) -> tuple[Any, str]:
    """Unary pass, plan, pairwise steps over operands already in the compute ``dtype``;
    returns the last result and its index order."""
    # Unary pass (the spec's one normalisation): every operand keeps distinct indices that
    # another operand or the output needs.
    work = [_unary(op, red, dtype) for op, red in zip(ops, _reductions(spec))]
    if len(work) == 1:
        op, idx = work[0]
        return op, idx
    sizes = spec.sizes.as_dict()
    if tiling_opts is None and all(_dense_enough(op) for op, _ in work):
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
            return _pair_dense(x, xi, y, yi, spec.output, sizes)
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
        cells = math.prod(sizes[c] for c in spec.output)
        batch, contr, free_x, free_y = _split(xi, yi, spec.output)
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
