"""einsum's path for the product of two sparse matrices (``ij,jk->ik`` and its transposes).

A contraction of two 2-D sparse operands over one shared index, with the two other
indices in the output, is one SpGEMM (:func:`flexsparse.kernels.cpu.spgemm.spgemm`). This
path reaches the kernel without coordinates or key grouping:

* each operand's CSR in the orientation the product reads (rows = its free index): the
  backing CSR of a COO built from a CSR or by an earlier product, and a SciPy CSR's own
  buffers, are used as they are (zero-copy); a canonical COO costs one row count
  (O(nnz + n_rows)); any other COO a counting sort by row (O(nnz + n_rows), duplicates
  kept -- the kernel sums them); an operand indexed the other way round (``ji``) one
  counting-sort transpose;
* ``ik`` out is ``A @ B``; ``ki`` out is computed as ``B^T @ A^T`` (transposing the inputs,
  which the kernel reads, rather than the output);
* the product keeps the compressed layout it was computed in: rows stay jumbled unless
  sorted output is needed (``format="csf"``), and the result is a COO backed by the
  product's CSR (``format="auto"``/``"coo"``, coordinates built only when read), that
  CSR (``format="csr"``), a 2-D CSF, or a dense array (``format="dense"``, or ``"auto"``
  above the dense-output density) computed straight into the array by
  :mod:`~flexsparse.kernels.cpu.spgemm_dense` (no sparse intermediate).

Cost: O(1) Python work on top of the kernel's O(nnz(A) + nnz(B) + flops), plus
O(nnz + n) per operand that needs a row count, bucketing or transpose.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from flexsparse.contract._dense import NONFINITE
from flexsparse.contract.execute import choose_format
from flexsparse.contract.plan import DOT_FACTOR
from flexsparse.formats.coo import COO
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spgemm import count_flops, count_flops_checked, spgemm_small, spgemm_trusted
from flexsparse.kernels.cpu.spgemm_dense import estimate_nnz, spgemm_dense_trusted

__all__ = ["matmul_2d", "product_plan"]

#: Dense results up to this many bytes are attempted without the sampled nnz estimate: a failed
#: attempt costs less than the estimate (pygsp DavidSensorNet64, 64 x 64: estimate 6 us of a
#: 20 us product).
_SMALL_DENSE_BYTES = 1 << 18
#: Rows sampled first for that estimate: a result whose estimate from them is under half the
#: dense density goes to the sparse kernel without the full sample of ``ESTIMATE_ROWS``
#: (pygsp Bunny, 2503 rows of ~4,000 multiply-adds, 8.7 % dense: 16 rows 0.026 ms, 64 rows
#: 0.091 ms, both within 4 % of the exact nnz).
_COARSE_ESTIMATE_ROWS = 16


@functools.lru_cache(maxsize=1024)
def product_plan(spec: Any) -> tuple[bool, bool, bool] | None:
    """``(swap, a_transposed, b_transposed)`` when ``spec`` is a plain matrix product of two
    2-D operands, else ``None``.

    ``swap``: the output lists B's free index first (computed as ``B^T @ A^T``);
    ``a_transposed``: A is stored contracted index first (``ji``); ``b_transposed``: B is
    stored free index first (``kj``).

    >>> from flexsparse.contract.parser import parse_einsum
    >>> product_plan(parse_einsum("ij,jk->ik", [(2, 3), (3, 4)]))
    (False, False, False)
    >>> product_plan(parse_einsum("ji,kj->ki", [(3, 2), (4, 3)]))
    (True, True, True)
    >>> product_plan(parse_einsum("ij,jk->ijk", [(2, 3), (3, 4)])) is None
    True
    """
    if len(spec.inputs) != 2 or any(spec.broadcast):
        return None
    ai, bi = spec.inputs
    out = spec.output
    if len(ai) != 2 or len(bi) != 2 or len(out) != 2 or ai[0] == ai[1] or bi[0] == bi[1]:
        return None
    shared = set(ai) & set(bi)
    if len(shared) != 1:
        return None
    (c,) = shared
    fa = ai[1 - ai.index(c)]
    fb = bi[1 - bi.index(c)]
    if c in out or fa == fb or set(out) != {fa, fb}:
        return None
    return out[0] == fb, ai[0] == c, bi[1] == c


def _csr_of(t: COO, transposed: bool, work: np.dtype) -> CSR:
    """CSR of ``t`` (``transposed``: of ``t.T``) with rows in any column order and values in
    ``work``."""
    csr = t.to_csr(sort=False)
    if csr.data.dtype != work:
        csr = CSR._trusted(csr.indptr, csr.indices, csr.data.astype(work), csr.shape, csr.sorted_indices)
    return csr.transpose() if transposed else csr


def _dense_product(left: CSR, right: CSR, fmt: str, dtype: np.dtype, work: np.dtype, threads: int | None,
                   counted: tuple[np.ndarray, int] | None = None
                   ) -> tuple[np.ndarray | None, tuple[np.ndarray, int] | None, float | None]:
    """``(dense left @ right, (row flops, total), None)`` when the result is dense
    (``fmt="dense"``, or ``"auto"`` and at least the dense-output density of cells nonzero),
    else ``(None, (row flops, total) or None, the sampled nnz estimate or None)``.

    Under ``"auto"`` the dense kernel runs only when ``sum_i min(flops_i, n_cols)``, an upper
    bound of nnz, and (above ``_SMALL_DENSE_BYTES``) an estimate from the exact counts of 64
    evenly spaced rows reach the dense density (16 rows first: under half of it is sparse): a
    dense attempt that fails costs the dense bytes (pyamg local_disc_galerkin, 12 % dense,
    passes the bound). If the result then holds fewer nonzero values than that, it is dropped
    and the sparse kernel decides on its stored entries (the ``"auto"`` rule counts entries,
    and entries that cancel are still entries).
    ``counted``: the ``(flops, total)`` of every output row, when the caller counted them.
    """
    shape = (left.shape[0], right.shape[1])
    cells = shape[0] * shape[1]
    if fmt == "auto" and choose_format(cells, shape, dtype.itemsize) != "dense":
        return None, counted, None  # dense at no density (empty, or beyond the dense cap)
    counted = counted if counted is not None else count_flops(left, right, threads)
    flops, total = counted
    if fmt == "auto":
        # the total flops bound the bound: below the dense density, no need to clip every row
        if choose_format(total, shape, dtype.itemsize) != "dense":
            return None, counted, None
        bound = int(np.minimum(flops, shape[1]).sum())
        if choose_format(bound, shape, dtype.itemsize) != "dense":
            return None, counted, None
        if cells * dtype.itemsize > _SMALL_DENSE_BYTES:
            estimate = estimate_nnz(left, right, _COARSE_ESTIMATE_ROWS)
            if choose_format(int(2 * estimate), shape, dtype.itemsize) == "dense":  # not clearly sparse
                estimate = estimate_nnz(left, right)
            if choose_format(int(estimate), shape, dtype.itemsize) != "dense":
                return None, counted, estimate  # the sparse kernel sizes its output pages by it
    out = spgemm_dense_trusted(left, right, flops, work, threads)
    if fmt == "auto" and choose_format(int(np.count_nonzero(out)), shape, dtype.itemsize) != "dense":
        return None, counted, None
    return (out if out.dtype == dtype else out.astype(dtype)), counted, None


def matmul_2d(spec: Any, a: COO, b: COO, fmt: str, dtype: np.dtype, work: np.dtype, threads: int | None,
              product: Any = None, checked: bool = True, plan: tuple[bool, bool, bool] | None = None) -> Any:
    """The product for :func:`~flexsparse.contract.execute.einsum`, or ``None`` when the
    spec is not a plain product of two 2-D sparse operands, or when its output has so few
    cells that the planner should weigh the dot-product and dense engines (the general
    path then runs).

    The product runs in ``work`` (:func:`flexsparse._util.compute_dtype` of the result dtype
    ``dtype``: float16 in float32, booleans counted in int64) and is cast to ``dtype``.
    Duplicate entries of an operand are kept and meet the kernel's accumulator, which sums
    their products: the same as summing them first, in any ring (booleans as counts).

    ``product``: ``(left CSR, right CSR, sort) -> CSR`` computing the SpGEMM elsewhere (the
    distributed runner's tiles); ``None`` runs :func:`spgemm_trusted` here.

    ``checked=False``: einsum has not scanned the operands for inf and nan; the flops count
    scans them in its own parallel pass (:func:`count_flops_checked`), and :data:`NONFINITE`
    is returned when it finds one.

    ``plan``: :func:`product_plan` of ``spec``, when the caller has it.
    """
    if not (isinstance(a, COO) and isinstance(b, COO) and len(a.shape) == 2 and len(b.shape) == 2):
        return None
    plan = product_plan(spec) if plan is None else plan
    if plan is None:
        return None
    swap, a_t, b_t = plan
    if max(a.shape[a_t], b.shape[1 - b_t]) >= 2**32 - 1:
        return None  # beyond the SpGEMM engine's 32-bit row stamps: the general path
    if a.shape[a_t] * b.shape[1 - b_t] <= DOT_FACTOR * (a.data.shape[0] + b.data.shape[0]):
        return None  # a small or dense output: the planner weighs the dot and dense engines
    if swap:  # C^T = B^T @ A^T: B as [free_b, c] times A as [c, free_a]
        left, right = _csr_of(b, not b_t, work), _csr_of(a, not a_t, work)
    else:  # A as [free_a, c] times B as [c, free_b]
        left, right = _csr_of(a, a_t, work), _csr_of(b, b_t, work)
    c = counted = None
    if product is None:
        # a small product in one compiled call; the result's format is then decided on its
        # entries, as after a dense attempt that falls short (see _dense_product), and one
        # that succeeds has at least as many entries: the same result either way
        c, counted, nonfinite = spgemm_small(left, right, fmt == "csf", not checked)
        if nonfinite:
            return NONFINITE
    if c is None:
        if not checked and counted is None:
            flops, total, nonfinite = count_flops_checked(left, right, threads)
            if nonfinite:
                return NONFINITE
            counted = flops, total
        if product is not None:   # computed elsewhere (the distributed runner): no in-process dense kernel
            c = product(left, right, fmt == "csf")
        else:
            estimate = None
            if fmt in ("auto", "dense"):
                out, counted, estimate = _dense_product(left, right, fmt, dtype, work, threads, counted)
                if out is not None:
                    return out
            c = spgemm_trusted(left, right, sort=fmt == "csf", threads=threads, counted=counted, nnz_hint=estimate)
    if c.data.dtype != dtype:
        c = CSR._trusted(c.indptr, c.indices, c.data.astype(dtype), c.shape, c.sorted_indices)
    if fmt == "auto":
        fmt = "dense" if choose_format(c.data.shape[0], c.shape, dtype.itemsize) == "dense" else "coo"
    if fmt == "dense":
        return c.toarray()
    if fmt == "csr":
        return c
    if fmt == "csf":
        from flexsparse.formats.fiber import CSF

        return CSF.from_csr(c)
    return COO.from_csr(c)
