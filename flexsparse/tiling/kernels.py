"""Windowed, capacity-bounded Gustavson SpGEMM kernels used by the tiled executor.

One kernel family: row-wise (Gustavson) ``C = A @ B`` restricted to a *window*
(a range of output rows ``[r0, r1)``, a range of contracted ids ``[k0, k1)`` and a
range of output columns ``[c0, c1)``), reading the operands' raw CSR buffers in place
(no operand copies).

* :func:`spgemm_csr_csr_symbolic` counts, for a list of rows, the output nonzeros of
  every row in each of ``n_panels`` equal-width column panels (the exact statistics
  the ``prescient`` and ``overbook`` tilers ask for). O(flops of those rows) time,
  O(n_cols) workspace (one int64 stamp per column).
* :func:`spgemm_csr_csr_bounded` is the Tailors numeric kernel: it computes the rows
  of one tile in order into a preallocated output buffer and *stops* at the first row
  whose working set (see :mod:`flexsparse.tiling.workingset`) would exceed the byte
  budget; the caller bumps the remaining rows into a later pass. O(flops) time plus, per
  output row, a walk of its touched column span when the row fills 1/8 of it, else a
  sort of its columns (insertion up to 32 entries, the engine's radix sort beyond);
  O(column window + k window) workspace (int64 stamps and the dense accumulator) plus
  radix scratch of twice the longest sorted row. The accumulation is the engine's
  branch-free value accumulator: R-MAT scale 15 ``A @ A`` (24M entries) in 0.38 s on one
  thread against 0.76 s with a test per entry and a sort per row, and 0.35 s for the
  engine's sorted product (:mod:`flexsparse.kernels.cpu.spgemm`), 2026-11-29.

* :func:`spgemm_csr_csr_flops` / :func:`spgemm_csr_csr_touched` /
  :func:`csr_row_window_counts`: the cheap per-row and per-tile statistics (multiplies per
  row and panel; distinct B rows a row tile touches; entries per row and column window),
  O(nnzA) time without O(nnz) temporaries (the tiler charges its statistics to the limit).

Entries are structural (a product that sums to zero is kept as an explicit zero),
matching the engine in :mod:`flexsparse.kernels.cpu.spgemm`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flexsparse.kernels.cpu.rowsort import sort_row_pairs

_U1 = np.uint64(1)

__all__ = ["csr_row_window_counts", "spgemm_csr_csr_bounded", "spgemm_csr_csr_flops",
           "spgemm_csr_csr_flops_total", "spgemm_csr_csr_symbolic", "spgemm_csr_csr_touched"]


@njit(cache=True, nogil=True)
def spgemm_csr_csr_symbolic(a_indptr, a_indices, b_indptr, b_indices, rows, n_cols, n_panels,
                            k_width, mark, out_counts):
    """Count output nonzeros per (listed row, contracted-id window, column panel).

    Args:
        a_indptr, a_indices: CSR of ``A`` (``[m+1]``, ``[nnzA]``).
        b_indptr, b_indices: CSR of ``B`` (``[k+1]``, ``[nnzB]``).
        rows: ``int64[r]`` row ids of ``A`` to count (any order, repeats allowed).
        n_cols: columns of ``B``; panels have width ``ceil(n_cols / n_panels)``.
        n_panels: number of column panels (>= 1).
        k_width: width of the contracted-id windows (window of id ``k`` is ``k // k_width``).
        mark: ``int64[n_cols]`` workspace, every entry ``< 0`` on entry (left dirty).
        out_counts: ``int64[r, n_windows, n_panels]``, overwritten: the nonzeros of the
            partial product of each row restricted to one id window and one column panel.
    """
    width = (n_cols + n_panels - 1) // n_panels if n_panels > 0 else 1
    n_win = out_counts.shape[1]
    for t in range(rows.shape[0]):
        for w in range(n_win):
            for q in range(n_panels):
                out_counts[t, w, q] = 0
        i = rows[t]
        for p in range(a_indptr[i], a_indptr[i + 1]):
            k = a_indices[p]
            w = k // k_width
            tag = t * n_win + w   # one stamp per (row, window): each window is its own product
            for s in range(b_indptr[k], b_indptr[k + 1]):
                j = b_indices[s]
                if mark[j] != tag:
                    mark[j] = tag
                    out_counts[t, w, j // width] += 1


@njit(cache=True, nogil=True)
def spgemm_csr_csr_bounded(a_indptr, a_indices, a_data, b_indptr, b_indices, b_data,
                           r0, r1, k0, k1, c0, c1, budget, fixed_bytes, elem_bytes, ptr_bytes,
                           stamp0, seen, mark, spa, out_indptr, out_indices, out_data, totals):
    """Compute rows ``[r0, r1)`` of ``A[:, k0:k1] @ B[k0:k1, c0:c1]`` until the budget is full.

    Args:
        a_*, b_*: CSR buffers of ``A`` and ``B`` (read only).
        r0, r1, k0, k1, c0, c1: the tile's window.
        budget: byte limit of the tile's working set.
        fixed_bytes: the row-independent part of the working set (accumulator
            workspace + the three leading row pointers), already charged.
        elem_bytes: bytes of one stored entry (value + column index).
        ptr_bytes: bytes of one row pointer.
        stamp0: first stamp to use; stamps must exceed every value in ``seen``/``mark``.
        seen: ``int64[k1-k0]`` first-touch stamps of B rows (values < stamp0 = unseen).
        mark: ``int64[>= c1-c0]`` accumulator occupancy stamps (values < stamp0 = free).
        spa: ``[>= c1-c0]`` dense accumulator (result dtype), zero on entry (left zero).
        out_indptr: ``int64[r1-r0+1]``; ``out_indices``/``out_data``: output buffers,
            capacity ``len(out_indices)`` entries.
        totals: ``int64[6]`` overwritten with (rows done, nnz out, nnz of A read,
            nnz of B rows touched, B rows touched, working-set bytes of the done part).

    The accumulation is the engine's branch-free value accumulator
    (:func:`flexsparse.kernels.cpu._spgemm_rows.fill_row_acc`): every product is added to
    ``spa``, and the column is appended to the row's list in ``out_indices`` whether or not it
    is new, the list growing only when it is -- a B row whose entries might not all fit the
    remaining capacity takes a checked loop instead. With a test and a store per new column
    this ran 3.6x slower than the engine on an R-MAT graph (unpredictable branches).

    Returns:
        The next unused stamp.
    """
    cap = out_indices.shape[0]
    cw = c1 - c0
    ucw = np.uint64(cw)
    ws = fixed_bytes
    pos = 0
    a_nnz = 0
    b_nnz = 0
    b_rows = 0
    out_indptr[0] = 0
    done = 0
    stamp = stamp0
    tile_stamp = stamp0  # B rows first touched in this tile carry a stamp >= tile_stamp
    skeys = np.empty(0, dtype=out_indices.dtype)   # radix-sort scratch, grown with the longest row
    svals = np.empty(0, dtype=out_data.dtype)
    counts = np.empty(257, dtype=np.int64)
    for i in range(r0, r1):
        stamp += 1
        row_a = 0
        new_b = 0
        new_b_rows = 0
        t = 0               # the row's columns so far, listed at out_indices[pos:pos + t]
        overflow = False
        for p in range(a_indptr[i], a_indptr[i + 1]):
            k = a_indices[p]
            if k < k0 or k >= k1:
                continue
            row_a += 1
            kk = k - k0
            first = seen[kk] < tile_stamp
            if first:
                seen[kk] = stamp
                new_b_rows += 1
            av = a_data[p]
            q0 = b_indptr[k]
            q1 = b_indptr[k + 1]
            in_window = 0
            if pos + t + (q1 - q0) <= cap:   # room for every entry: no capacity test per entry
                # unsigned indices: one compare tests the window, and numba adds no
                # negative-index wraparound to the accesses
                base = np.uint64(pos)
                ut = np.uint64(t)
                n_in = np.uint64(0)
                for s in range(np.uint64(q0), np.uint64(q1)):
                    jj = np.uint64(b_indices[s] - c0)
                    if jj >= ucw:
                        continue
                    n_in += _U1
                    spa[jj] += av * b_data[s]
                    new = mark[jj] != stamp
                    mark[jj] = stamp
                    out_indices[base + ut] = jj   # kept only when new (the count then moves past it)
                    ut += np.uint64(new)
                t = np.int64(ut)
                in_window = np.int64(n_in)
            else:
                for s in range(q0, q1):
                    jj = b_indices[s] - c0
                    if jj < 0 or jj >= cw:
                        continue
                    in_window += 1
                    if mark[jj] != stamp:
                        if pos + t >= cap:
                            overflow = True
                            break
                        mark[jj] = stamp
                        out_indices[pos + t] = jj
                        t += 1
                    spa[jj] += av * b_data[s]
            if first:
                new_b += in_window
            if overflow:
                break
        row_bytes = (2 * ptr_bytes + (row_a + new_b + t) * elem_bytes
                     + new_b_rows * ptr_bytes)
        if overflow or ws + row_bytes > budget:
            # bump this row and the rest: clear its accumulator, forget the B rows it touched first
            for u in range(pos, pos + t):
                spa[out_indices[u]] = 0
            for p in range(a_indptr[i], a_indptr[i + 1]):
                k = a_indices[p]
                if k >= k0 and k < k1 and seen[k - k0] == stamp:
                    seen[k - k0] = tile_stamp - 1
            break
        lo = cw
        hi = -1
        for u in range(pos, pos + t):
            jj = out_indices[u]
            lo = min(lo, jj)
            hi = max(hi, jj)
        if t > 0 and hi - lo < 8 * t:
            # dense enough: walk the touched span of the accumulator in column order without a
            # branch -- every slot is written, the position moves past the marked ones only
            # (the slots between lo and hi never write past the row's last entry)
            q = np.uint64(pos)
            for jj in range(np.uint64(lo), np.uint64(hi) + _U1):
                out_indices[q] = np.int64(jj) + c0
                out_data[q] = spa[jj]
                spa[jj] = 0
                q += np.uint64(mark[jj] == stamp)
        elif t <= 32:   # insertion sort in the loop: a call per short row costs more than it
            for u in range(pos + 1, pos + t):
                key = out_indices[u]
                v = u - 1
                while v >= pos and out_indices[v] > key:
                    out_indices[v + 1] = out_indices[v]
                    v -= 1
                out_indices[v + 1] = key
            for u in range(pos, pos + t):
                jj = out_indices[u]
                out_data[u] = spa[jj]
                spa[jj] = 0
                out_indices[u] = jj + c0
        else:   # the engine's LSD radix sort of (column, value) pairs
            for u in range(pos, pos + t):
                jj = out_indices[u]
                out_data[u] = spa[jj]
                spa[jj] = 0
            if skeys.shape[0] < t:
                skeys = np.empty(2 * t, dtype=out_indices.dtype)
                svals = np.empty(2 * t, dtype=out_data.dtype)
            sort_row_pairs(out_indices, out_data, pos, pos + t, skeys, svals, counts)
            for u in range(pos, pos + t):
                out_indices[u] += c0
        pos += t
        ws += row_bytes
        a_nnz += row_a
        b_nnz += new_b
        b_rows += new_b_rows
        done += 1
        out_indptr[done] = pos
    totals[0] = done
    totals[1] = pos
    totals[2] = a_nnz
    totals[3] = b_nnz
    totals[4] = b_rows
    totals[5] = ws
    return stamp + 1


@njit(cache=True, nogil=True)
def spgemm_csr_csr_flops(a_indptr, a_indices, nnz_b_panels, out):
    """Multiplies of every row of ``A @ B`` per column panel: ``out[i, q] = sum_k nnzB[k, q]``.

    Args:
        a_indptr, a_indices: CSR of ``A``.
        nnz_b_panels: ``int64[k, n_panels]`` entries of each B row in each panel.
        out: ``int64[m, n_panels]``, overwritten. O(nnzA * n_panels) time, no workspace.
    """
    n_p = out.shape[1]
    for i in range(a_indptr.shape[0] - 1):
        for q in range(n_p):
            out[i, q] = 0
        for p in range(a_indptr[i], a_indptr[i + 1]):
            k = a_indices[p]
            for q in range(n_p):
                out[i, q] += nnz_b_panels[k, q]


@njit(cache=True, nogil=True)
def spgemm_csr_csr_touched(a_indptr, a_indices, row_size, k_width, nnz_b_panels, stamp,
                           out_u, out_nb):
    """Distinct B rows touched by every row tile of ``A``, per id window and column panel.

    Args:
        a_indptr, a_indices: CSR of ``A``.
        row_size: rows per tile (tile ``t`` = rows ``[t*row_size, (t+1)*row_size)``).
        k_width: id window width (window of ``k`` is ``k // k_width``).
        nnz_b_panels: ``int64[k, n_panels]``.
        stamp: ``int64[k]`` workspace, all ``< 0`` on entry.
        out_u: ``int64[T, n_windows]`` (zeroed by the caller): distinct touched B rows.
        out_nb: ``int64[T, n_windows, n_panels]`` (zeroed): their entries per panel.

    O(nnzA + distinct touches * n_panels) time, O(k) workspace.
    """
    m = a_indptr.shape[0] - 1
    n_p = out_nb.shape[2]
    for i in range(m):
        t = i // row_size
        for p in range(a_indptr[i], a_indptr[i + 1]):
            k = a_indices[p]
            if stamp[k] != t:
                stamp[k] = t
                w = k // k_width
                out_u[t, w] += 1
                for q in range(n_p):
                    out_nb[t, w, q] += nnz_b_panels[k, q]


@njit(cache=True, nogil=True)
def csr_row_window_counts(indptr, indices, width, out):
    """Entries of every CSR row inside every column window: ``out[i, w]`` counts the entries
    of row ``i`` with ``indices // width == w``.

    Args:
        indptr, indices: the CSR structure.
        width: window width (>= 1).
        out: ``int64[n_rows, n_windows]``, overwritten. O(nnz + n_rows * n_windows) time,
            no workspace.
    """
    n_w = out.shape[1]
    for i in range(indptr.shape[0] - 1):
        for w in range(n_w):
            out[i, w] = 0
        for p in range(indptr[i], indptr[i + 1]):
            out[i, indices[p] // width] += 1


@njit(cache=True, nogil=True)
def spgemm_csr_csr_flops_total(a_indices, b_indptr):
    """Multiplies of the whole product ``A @ B``: ``sum_p nnzB(row a_indices[p])``, O(nnzA), no workspace."""
    total = 0
    for p in range(a_indices.shape[0]):
        k = a_indices[p]
        total += b_indptr[k + 1] - b_indptr[k]
    return total
