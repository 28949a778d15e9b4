"""Column classes of a pair of dense matricised operands ``x[R, K]``, ``y[C, K]``: the kernels
behind the class product of :mod:`flexsparse.contract._classes`.

Dense-ish tensors often hold exact zeros in a block pattern (point-group symmetry makes the
density-fitted integrals ``(ab|Q)`` vanish unless the irreducible representations of ``ab``
and ``Q`` match; files store many of those zeros). Contracted columns ``q`` whose nonzero
rows are the same set in ``x`` and in ``y`` form a *class*: the product restricted to a class
is one dense GEMM of only the rows that class touches.

Algorithms:

* :func:`column_keys`: one pass over ``dense[n, k]`` row by row; column ``q``'s key is the sum
  (mod 2^64) of a random 64-bit salt of every row holding a nonzero in it, and its count the
  number of such rows. Equal row sets give equal keys; unequal sets collide with probability
  ~2^-64, and a collision is caught later by the counts (see :func:`gather_classes`). The pass
  also flags an inf or nan (``v - v != 0``), since skipped zeros would hide ``0 * inf``.
  ``densify.sorted_coo_to_dense`` can take the same keys inside the densify of a sorted COO
  (no second read).
* :func:`gather_classes`: every class's block ``src[rows, cols]`` into one buffer, one call for
  all classes, and the number of nonzeros gathered; when a class's rows miss a row with a
  nonzero in its columns, that count falls short of the columns' counts, and the caller takes
  the plain product. :func:`scatter_classes` adds every class's GEMM result into the output.
* :func:`merge_classes` (the plan: row sets as bitsets, no values): greedy agglomeration.
  Each class costs a modelled GEMM (``densify._gemm_seconds``, SYRK for a self-product) plus a
  gather per operand cell and a scatter-add per output cell; the pair whose union (rows
  united, columns joined) saves the most is merged while a merge saves anything. A merge
  multiplies the zeros the union brings in, but saves a call and a scatter of the rows the
  two share. O(n^2 w) for the first pair costs and O(n w) per merge (n classes, w words).

Formats: C-contiguous ``dense[n, k]`` of a float or complex dtype, ``salt`` uint64 ``[n]``,
int64 ``rows`` and ``cols`` with CSR-like pointers per class, flat block buffers. Cost: O(n k)
for the keys (vectorised compare and add along a row), O(rows x cols) per class for the
gather and the scatter, O(n^2 w) for the merge.

>>> import numpy as np
>>> d = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
>>> keys, counts, bad = column_keys(d, np.array([5, 7], dtype=np.uint64))
>>> keys.tolist(), counts.tolist(), bool(bad)
([5, 0, 12], [1, 0, 2], False)
>>> buf = np.empty(3)  # class 0: rows 0-1 of column 2; class 1: row 0 of column 0
>>> p = np.array([0, 2, 3])
>>> int(gather_classes(d, np.array([0, 1, 0]), p, np.array([2, 0]), np.array([0, 1, 2]), buf)), buf.tolist()
(3, [2.0, 3.0, 1.0])
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flexsparse.kernels.cpu.densify import _gemm_seconds, scatter_add_block

__all__ = ["column_keys", "gather_classes", "merge_classes", "scatter_classes"]


@njit(cache=True)
def column_keys(dense, salt):
    """``(keys uint64[k], counts int64[k], whether a value is inf or nan)`` of ``dense[n, k]``."""
    n, k = dense.shape
    keys = np.zeros(k, dtype=np.uint64)
    counts = np.zeros(k, dtype=np.int64)
    bad = False
    zero = np.uint64(0)
    for r in range(n):
        row = dense[r]
        s = salt[r]
        flag = 0
        for q in range(k):
            v = row[q]
            nz = np.uint64(v != 0)
            keys[q] += s & (zero - nz)  # a mask, not a multiply: the loop vectorises
            counts[q] += np.int64(nz)
            flag |= np.int64((v - v) != 0)
        bad |= flag != 0
    return keys, counts, bad


@njit(cache=True)
def gather_classes(src, rows, row_ptr, cols, col_ptr, buf):
    """Every class's block, one after another in ``buf``: class ``g`` is the C-order
    ``[row_ptr[g+1] - row_ptr[g], col_ptr[g+1] - col_ptr[g]]`` block
    ``src[rows[row_ptr[g]:...], cols[col_ptr[g]:...]]``. Returns the nonzeros gathered (see
    the module: a shortfall against the columns' counts means a key collision)."""
    nnz = 0
    o = 0
    for g in range(row_ptr.shape[0] - 1):
        nc = col_ptr[g + 1] - col_ptr[g]
        cg = cols[col_ptr[g]:col_ptr[g + 1]]
        for i in range(row_ptr[g], row_ptr[g + 1]):
            s = src[rows[i]]
            d = buf[o:o + nc]  # slices: the inner loop indexes from 0 (no wraparound checks)
            # an unsigned column index: no negative-index wraparound check per cell (chemistry
            # abic, the vv operand's 94,844 cells, min of 300: 92 -> 73 us; Zen 4 guest, 2026-12-03)
            for j in range(nc):
                v = s[np.uint64(cg[j])]
                d[j] = v
                nnz += np.int64(v != 0)
            o += nc
    return nnz


@njit(cache=True)
def scatter_classes(out, rows_x, x_ptr, rows_y, y_ptr, blocks, flip):
    """``out[rows_x[i], rows_y[j]] += block_g[i, j]`` for every class ``g``; the blocks lie one
    after another in ``blocks``, class ``g``'s as ``[mx, my]``, or ``[my, mx]`` where
    ``flip[g]`` (the GEMM ran with the sides swapped). Each block is added by
    ``densify.scatter_add_block`` (a contiguous add per run of consecutive output columns)."""
    o = 0
    for g in range(x_ptr.shape[0] - 1):
        rx = rows_x[x_ptr[g]:x_ptr[g + 1]]
        ry = rows_y[y_ptr[g]:y_ptr[g + 1]]
        mx, my = rx.shape[0], ry.shape[0]
        if flip[g]:
            scatter_add_block(out, rx, ry, blocks[o:o + mx * my].reshape(my, mx).T)
        else:
            scatter_add_block(out, rx, ry, blocks[o:o + mx * my].reshape(mx, my))
        o += mx * my


@njit(cache=True, inline="always")
def _popcount(bits, i):
    """Set bits of row ``i`` of a bitset array ``[n, words]`` (SWAR count per word)."""
    total = 0
    for w in range(bits.shape[1]):
        x = bits[i, w]
        x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
        x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
        x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        total += np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))
    return total


@njit(cache=True, inline="always")
def _class_seconds(k, mx, my, syrk, model, costs):
    """Modelled time of one class: its GEMM, gathers, scatter-add and the call around them
    (``costs``: seconds per gathered cell, per scattered cell, per class)."""
    if syrk:
        return _gemm_seconds(mx, mx, k, True, model) + costs[1] * mx * mx + costs[0] * mx * k + costs[2]
    return _gemm_seconds(mx, my, k, False, model) + costs[1] * mx * my + costs[0] * (mx + my) * k + costs[2]


@njit(cache=True)
def merge_classes(bits_x, bits_y, k, model, syrk, costs):
    """``(group, seconds)``: the merged group of every class (an index of its first member)
    and the modelled time of the merged classes; ``bits_x[n, wx]``, ``bits_y[n, wy]`` the row
    sets of the classes in ``x`` and ``y`` (uint64 bitsets), ``k[n]`` their column counts,
    ``model`` the fields of ``densify.MODEL_FIELDS``, ``costs`` seconds per gathered cell, per
    scattered cell and per class, ``syrk``: a self-product (``bits_y`` is ignored)."""
    n = bits_x.shape[0]
    bx = bits_x.copy()
    by = bits_y.copy()
    kk = k.copy()
    group = np.arange(n)
    alive = np.ones(n, dtype=np.bool_)
    cost = np.empty(n)
    for i in range(n):
        cost[i] = _class_seconds(kk[i], _popcount(bx, i), _popcount(by, i), syrk, model, costs)
    ux = np.empty((1, bx.shape[1]), dtype=np.uint64)
    uy = np.empty((1, by.shape[1]), dtype=np.uint64)
    delta = np.full((n, n), np.inf)

    def pair(i, j):
        for w in range(bx.shape[1]):
            ux[0, w] = bx[i, w] | bx[j, w]
        for w in range(by.shape[1]):
            uy[0, w] = by[i, w] | by[j, w]
        return _class_seconds(kk[i] + kk[j], _popcount(ux, 0), _popcount(uy, 0), syrk, model, costs) - cost[i] - cost[j]

    for i in range(n):
        for j in range(i + 1, n):
            delta[i, j] = pair(i, j)
    while True:
        best = 0.0
        bi = -1
        bj = -1
        for i in range(n):
            if alive[i]:
                for j in range(i + 1, n):
                    if alive[j] and delta[i, j] < best:
                        best = delta[i, j]
                        bi = i
                        bj = j
        if bi < 0:
            break
        for w in range(bx.shape[1]):
            bx[bi, w] |= bx[bj, w]
        for w in range(by.shape[1]):
            by[bi, w] |= by[bj, w]
        kk[bi] += kk[bj]
        alive[bj] = False
        for t in range(n):
            if group[t] == bj:
                group[t] = bi
        cost[bi] = _class_seconds(kk[bi], _popcount(bx, bi), _popcount(by, bi), syrk, model, costs)
        for t in range(n):
            if alive[t] and t != bi:
                d = pair(min(t, bi), max(t, bi))
                delta[min(t, bi), max(t, bi)] = d
    total = 0.0
    for i in range(n):
        if alive[i]:
            total += cost[i]
    return group, total
