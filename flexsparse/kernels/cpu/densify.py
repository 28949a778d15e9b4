"""Densify sparse buffers: a CSR matrix (the dense result of a sparse product), and a sorted
COO whose entries come in long runs of consecutive cells (dense-ish tensors such as the
chemistry integrals).

Algorithms:

* :func:`csr_to_dense`: one pass over the stored entries, ``out[i, indices[p]] += data[p]``
  for the rows ``i`` of ``indptr`` (duplicates add up, any column order). ``out`` comes zeroed
  from ``np.zeros`` (lazily zero pages), so the cost is O(nnz + touched pages) instead of the
  O(n_rows * n_cols) write of a dense fill, with no ``int64[nnz]`` row-index temporary.
* :func:`sorted_coo_to_dense`: for coordinates strictly increasing in row-major order (a
  canonical COO), entries ``t..e-1`` fill consecutive cells exactly when
  ``lin(e-1) - lin(t) == e-1-t`` (strictly increasing integers squeezed between two bounds
  leave no gap). Each run's end is found by probes of that test: the previous run's length
  first (two linear indices when it repeats), else galloping (O(log run) linear indices per
  run instead of one per entry), and the run is one vectorised copy; the gaps
  between runs are zero-filled in the same sweep when ``fill`` (so ``out`` can come from
  ``np.empty``: every cell is written once, in order). The inf/nan flag is an integer OR of
  ``v - v != 0``, which vectorises with the copy (a floating-point ``bad += v * 0`` chain
  kept the copy at the latency of one add per entry: 160 us against 58 us on the 165K
  chemistry integrals). On short runs the galloping branch mispredicts on every entry, so
  the caller first asks :func:`long_runs`, which probes evenly spaced neighbour pairs.

* Zero-tail split (for ``contract._zero_tail``): :func:`support_sorted` walks the runs of a
  sorted COO as above, recording them and each row's support length (last stored cell + 1)
  along the trailing contracted modes; :func:`split_sorted` copies the recorded runs into a
  ``main[R, c]`` and a level-grouped ``tail[Rt, Kt]`` with the zeros written in the sweep;
  :func:`support_entries` adds any COO into a dense ``[R, K]`` and finds the support in the
  same pass, run by run where its entries come in long runs of consecutive cells in any
  order (:func:`entry_runs`: a vectorised pass of break flags, then a scan of them), else
  entry by entry; :func:`zero_tail_plan` picks the GEMM steps (counting sort into levels,
  dynamic programme over a GEMM time model); :func:`scatter_add_block` adds a step's product
  into the output.

Formats: CSR buffers (``indptr`` int64, ``indices`` int32/int64, any numeric ``data``) and a
C-contiguous ``out[n_rows, n_cols]`` of the data's dtype; COO ``coords [ndim, nnz]`` of any
integer dtype (in bounds), ``data [nnz]`` of a numba dtype, ``strides [ndim]`` int64 in
elements, ``out`` the flat C-order array.

Cost: CSR O(nnz + touched pages); sorted COO O(runs * log(nnz / runs) * ndim) index work plus
O(nnz) copied values plus O(size) zeros (``fill``) or the lazily zeroed pages of ``np.zeros``;
the split copy the same plus O(rows) row switches; the plan O(K + rows + levels^2).

>>> import numpy as np
>>> out = np.zeros((2, 3))
>>> csr_to_dense(np.array([0, 2, 3]), np.array([2, 2, 0], dtype=np.int32), np.array([1.0, 2.0, 4.0]), out)
>>> out.tolist()
[[0.0, 0.0, 3.0], [4.0, 0.0, 0.0]]
>>> flat = np.empty(6)
>>> coords = np.array([[0, 0, 1, 1], [1, 2, 0, 1]])
>>> bool(sorted_coo_to_dense(coords, np.array([1.0, 2.0, 3.0, 4.0]), np.array([3, 1]), flat, True))
False
>>> flat.tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 0.0]
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flexsparse._limits import SCATTER_MIN_MEAN_RUN

__all__ = ["MODEL_FIELDS", "csr_to_dense", "entry_runs", "gather_tail", "long_runs", "scatter_add_block",
           "sorted_coo_to_dense", "split_sorted", "support_entries", "support_sorted", "zero_tail_plan"]


@njit(cache=True)
def csr_to_dense(indptr, indices, data, out):
    """Add every stored entry of the CSR buffers into ``out`` (``[n_rows, n_cols]``, zeroed)."""
    for i in range(indptr.shape[0] - 1):
        row = out[i]
        for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            row[np.uint64(indices[p])] += data[p]


@njit(cache=True, inline="always")
def _lin(coords, strides, t):
    """Row-major linear index of entry ``t`` (unsigned: coordinates are in bounds)."""
    lin = np.uint64(0)
    for m in range(coords.shape[0]):
        lin += np.uint64(coords[m, t]) * np.uint64(strides[m])
    return lin


@njit(cache=True, inline="always")
def _run_end(coords, strides, t, l0, n, guess):
    """``(e, l)``: entries ``t..e-1`` fill consecutive cells from ``l0``, and ``l`` the linear
    index of entry ``e``, the next run's first cell (0 when ``e == n``). Strictly increasing
    linear indices squeezed between two bounds leave no gap, so one probe tests a whole stretch.

    First the ``guess`` (the previous run's length: runs of dense-ish tensors repeat theirs,
    95% of the chemistry integrals' 290 runs) is tried with two probes, its last entry and the
    one after; then galloping probes (probe ``e + step - 1``, double the step on success,
    restart at 1 on failure; a failure at the next entry ends the run). A right guess costs
    2 cold index reads instead of ~2 log2(run)."""
    one = np.uint64(1)
    e = t + one
    if guess > one and t + guess <= n:
        j = t + guess - one
        if _lin(coords, strides, j) - l0 == guess - one:
            e = j + one
            if e == n:
                return e, np.uint64(0)
            lj = _lin(coords, strides, e)
            if lj - l0 != guess:
                return e, lj
            e += one
    step = one
    while e < n:
        j = min(e + step, n) - one
        lj = _lin(coords, strides, j)
        if lj - l0 == j - t:
            e = j + one
            step += step
        elif j == e:
            return e, lj
        else:
            step = one
    return e, np.uint64(0)


@njit(cache=True)
def long_runs(coords, strides, probes, min_run):
    """Whether the runs of consecutive cells look at least ``min_run`` long on average:
    of ``probes`` evenly spaced neighbour pairs ``(t, t+1)``, at most ``probes // min_run``
    may break (a pair breaks with probability ~1/L for mean run length L; with 128 probes
    and ``min_run`` 64, runs of mean length 16 pass ~1% of the time, runs of 569 almost always)."""
    n = coords.shape[1]
    if n < 2:
        return False
    allowed = probes // min_run
    breaks = 0
    stride = max(1, (n - 1) // probes)
    for t in range(0, n - 1, stride):
        if _lin(coords, strides, t + 1) != _lin(coords, strides, t) + np.uint64(1):
            breaks += 1
            if breaks > allowed:
                return False
    return True


@njit(cache=True)
def sorted_coo_to_dense(coords, data, strides, out, fill, salt=None, keys=None, counts=None, sup=None):
    """Copy the runs of a row-major sorted, duplicate-free COO into the flat ``out``; zero
    the gaps when ``fill`` (``out`` may then be uninitialised), else ``out`` must be zeroed.
    Returns whether a stored value is inf or nan.

    With ``salt`` (uint64 ``[n]``), ``keys`` (uint64 ``[k]``, zeroed), ``counts`` (int64
    ``[k]``, zeroed) and ``sup`` (int64 ``[n]``, zeroed), it also takes ``colclass.column_keys``
    of the ``[n, k]`` view and each row's support length (last stored cell + 1, as
    :func:`support_sorted`) in the same pass: each run is cut at row ends, and each piece adds its row's salt to its
    columns' keys while the values are in registers (the separate key pass re-reads the dense
    array: chemistry vv, 24x24x375, densify 39 us plus keys 33 us against 48 us fused, one
    thread, 2-vCPU AMD EPYC Zen 5 guest, 2026-12-02). Without them (``None``: compiled out)
    each run is one copy."""
    n = np.uint64(data.shape[0])
    size = np.uint64(out.shape[0])
    zero = np.zeros(1, dtype=out.dtype)[0]
    bad = False
    pos = np.uint64(0)  # cells below pos are written
    t = np.uint64(0)
    l0 = _lin(coords, strides, t) if n else size
    guess = np.uint64(0)
    while t < n:
        if fill:
            for c in range(pos, l0):
                out[c] = zero
        e, nxt = _run_end(coords, strides, t, l0, n, guess)
        length = e - t
        guess = length
        if keys is None:
            for i in range(length):
                v = data[t + i]
                out[l0 + i] = v
                bad |= (v - v) != 0
        else:
            bad |= _copy_keyed(data, t, out, l0, length, salt, keys, counts, sup)
        pos = l0 + length
        t = e
        l0 = nxt
    if fill:
        for c in range(pos, size):
            out[c] = zero
    return bad


@njit(cache=True, inline="always")
def _copy_keyed(data, t, out, l0, length, salt, keys, counts, sup):
    """One run of :func:`sorted_coo_to_dense` with the column keys: piece by piece, one row
    of ``keys.shape[0]`` cells each. Returns whether a value is inf or nan."""
    kk = np.uint64(keys.shape[0])
    z64 = np.uint64(0)
    flag = 0
    a = np.uint64(0)
    while a < length:
        cell = l0 + a
        r = cell // kk
        q0 = cell - r * kk
        m = min(length - a, kk - q0)
        s = salt[r]
        for i in range(m):
            v = data[t + a + i]
            out[cell + i] = v
            nz = np.uint64(v != 0)
            keys[q0 + i] += s & (z64 - nz)  # a mask, not a multiply: the loop vectorises
            counts[q0 + i] += np.int64(nz)
            flag |= np.int64((v - v) != 0)
        sup[r] = q0 + m  # pieces come in cell order: a row's last piece sets its support
        a += m
    return flag != 0


# ---------------------------------------------------------------------- zero-tail split densify
# A matricised operand ``[R, K]`` (rows: its free indices; K: the trailing contracted indices)
# whose rows store prefixes of K ("zero tails") is densified into two buffers: ``main[R, c]``
# (every row, the first ``c`` cells) and ``tail[Rt, Kt]`` (the rows whose support passes ``c``,
# cells ``c .. c+Kt-1``, in the order of ``pos``: ``pos[r]`` is row r's tail row or -1).


@njit(cache=True)
def support_sorted(coords, strides, k, n_rows, max_runs=-1):
    """Support length (last stored cell + 1) of every row of ``[n_rows, k]`` for a row-major
    sorted, duplicate-free COO, and its runs of consecutive cells: ``(sup, runs)`` with
    ``runs[i] = (first entry, first cell, length)`` (int64 ``[n_runs, 3]``).

    Runs are found by the galloping probes of :func:`_run_end` (O(runs log run)
    index reads, no value read); a run ending in row r sets ``sup[r]`` to its end, the rows
    it crosses get ``k``. :func:`split_sorted` copies the recorded runs without probing
    again (the probes cost ~22 us of a 64 us split on 165K entries in ~1,000 runs).

    ``max_runs >= 0`` stops the walk at its ``max_runs + 1``-th run and returns no runs
    (``runs`` of length 0 for a non-empty COO): runs that short are faster scattered, and the
    budget replaces :func:`long_runs`' sampled probes by the exact count."""
    n = np.uint64(coords.shape[1])
    kk = np.uint64(k)
    one = np.uint64(1)
    sup = np.zeros(n_rows, dtype=np.int64)
    runs = np.empty((n_rows + 16, 3), dtype=np.int64)
    nr = 0
    t = np.uint64(0)
    l0 = _lin(coords, strides, t) if n else np.uint64(0)
    guess = np.uint64(0)
    while t < n:
        e, nxt = _run_end(coords, strides, t, l0, n, guess)
        guess = e - t
        if nr == max_runs:
            return sup, runs[:0]
        if nr == runs.shape[0]:
            grown = np.empty((2 * nr, 3), dtype=np.int64)
            grown[:nr] = runs
            runs = grown
        runs[nr, 0] = np.int64(t)
        runs[nr, 1] = np.int64(l0)
        runs[nr, 2] = np.int64(e - t)
        nr += 1
        last = l0 + (e - t) - one
        r0 = l0 // kk
        r1 = last // kk
        for r in range(r0, r1):
            sup[r] = k
        sup[r1] = np.int64(last - r1 * kk) + 1
        t = e
        l0 = nxt
    return sup, runs[:nr]


@njit(cache=True, inline="always")
def _entry_cell(hi, lo, ss, q, kk, t):
    return (np.uint64(hi[t]) * ss + np.uint64(lo[t])) * kk + np.uint64(q[t])


@njit(cache=True)
def entry_runs(hi, lo, s, q, k, max_runs):
    """Starts of the runs of entries that fill consecutive cells of ``[R, k]`` (entry ``t``
    continues a run when its cell is the previous entry's plus one), with ``nnz`` appended;
    empty when there are no entries, more than ``max_runs`` runs, or when most of 16 evenly
    spaced neighbour pairs break (short runs, not worth the walk).

    One pass stores a break flag per entry, the previous cell carried in a register (that
    loop vectorises: 6.4 us on 19K entries, where counting per block of 32 entries with both
    neighbours' cells recomputed took 16.4 us, 2-vCPU Xeon, 2026-12-02); a scan of the flags
    eight at a time then records the starts. Entries need not be sorted, and a cell may
    repeat (in another run)."""
    n = q.shape[0]
    ss = np.uint64(s)
    kk = np.uint64(k)
    one = np.uint64(1)
    if n == 0 or max_runs < 1:
        return np.empty(0, dtype=np.int64)
    if n > 32:
        probe_breaks = 0
        for i in range(1, 17):
            t = np.uint64(n) * np.uint64(i) // np.uint64(17)
            probe_breaks += _entry_cell(hi, lo, ss, q, kk, t) != _entry_cell(hi, lo, ss, q, kk, t - one) + one
        if probe_breaks > 8:
            return np.empty(0, dtype=np.int64)
    flags = np.zeros((n + 7) // 8 * 8, dtype=np.uint8)
    flags[0] = 1
    prev = _entry_cell(hi, lo, ss, q, kk, 0)
    for t in range(1, n):
        cur = _entry_cell(hi, lo, ss, q, kk, t)
        flags[t] = cur != prev + one
        prev = cur
    words = flags.view(np.uint64)
    starts = np.empty(max_runs + 1, dtype=np.int64)
    nr = 0
    for w in range(words.shape[0]):
        if words[w]:
            for t in range(8 * w, 8 * w + 8):
                if flags[t]:
                    if nr == max_runs:
                        return starts[:0]
                    starts[nr] = t
                    nr += 1
    starts[nr] = n
    return starts[:nr + 1]


@njit(cache=True)
def support_entries(hi, lo, s, q, data, out, max_runs=-1):
    """Scatter any COO into the zeroed ``out[R, K]`` (duplicates accumulate) and return
    ``(support lengths of its rows, whether a stored value is inf or nan)``: entries ``t`` of
    row ``hi[t] * s + lo[t]`` and contracted offset ``q[t]`` (the caller forms these from the
    modes; 3-mode tensors pass their coordinate rows as they are).

    Entries in at most ``max_runs`` runs of consecutive cells (:func:`entry_runs`; a COO
    stored in sorted pieces, as the chemistry integral files are) are added run by run: one
    vectorised add per run and the support from its first and last entries (10 against 16
    us on 19K entries in 90 runs). Otherwise one store per entry: the longest cell of the
    current row is kept in a register and stored when the row changes; unsigned indices, one
    multiply per entry (a loop over the modes of a 2-D ``coords`` took 3.5 ns per entry
    against 0.8 for the support alone here)."""
    n_rows = out.shape[0]
    k = np.uint64(out.shape[1])
    flat = out.reshape(-1)
    sup = np.zeros(n_rows, dtype=np.int64)
    ss = np.uint64(s)
    one = np.uint64(1)
    starts = entry_runs(hi, lo, s, q, out.shape[1], max_runs) if max_runs >= 0 else np.empty(0, dtype=np.int64)
    if starts.shape[0]:
        flag = False
        for i in range(starts.shape[0] - 1):
            t0 = np.uint64(starts[i])
            t1 = np.uint64(starts[i + 1])
            r0 = np.uint64(hi[t0]) * ss + np.uint64(lo[t0])
            r1 = np.uint64(hi[t1 - one]) * ss + np.uint64(lo[t1 - one])
            base = r0 * k + np.uint64(q[t0])
            for j in range(t1 - t0):
                v = data[t0 + j]
                flat[base + j] += v
                flag |= (v - v) != 0
            for r in range(r0, r1):
                sup[r] = np.int64(k)
            end = np.int64(q[t1 - one]) + 1
            if end > sup[r1]:
                sup[r1] = end
        return sup, flag
    cur = np.uint64(0)
    best = np.uint64(0)
    bad = np.zeros(1, dtype=data.dtype)[0]
    for t in range(np.uint64(q.shape[0])):
        r = np.uint64(hi[t]) * ss + np.uint64(lo[t])
        qq = np.uint64(q[t])
        v = data[t]
        flat[r * k + qq] += v
        bad += v * 0
        if r != cur:
            if np.int64(best) > sup[cur]:
                sup[cur] = np.int64(best)
            cur = r
            best = np.uint64(0)
        best = max(best, qq + one)
    if q.shape[0] and np.int64(best) > sup[cur]:
        sup[cur] = np.int64(best)
    return sup, bad != 0


@njit(cache=True)
def gather_tail(dense, rows, c, tail):
    """``tail[i] = dense[rows[i], c : c + tail.shape[1]]``."""
    kt = tail.shape[1]
    for i in range(rows.shape[0]):
        src = dense[rows[i]]
        dst = tail[i]
        for j in range(kt):
            dst[j] = src[c + j]


@njit(cache=True)
def split_sorted(runs, data, k, pos, main, tail):
    """Copy the runs of a row-major sorted, duplicate-free COO (``runs`` from
    :func:`support_sorted`) into ``main[R, c]`` and ``tail[Rt, Kt]`` (both C-contiguous,
    uninitialised: every cell is written once, zeros included), run by run and row by row;
    returns whether a stored value is inf or nan. Rows with ``pos[r] < 0`` must store
    nothing at or past ``c``."""
    kk = np.uint64(k)
    c = np.uint64(main.shape[1])
    kt = np.uint64(tail.shape[1])
    mflat = main.reshape(-1)
    msize = np.uint64(mflat.shape[0])
    zero = np.zeros(1, dtype=main.dtype)[0]
    bad = False
    mpos = np.uint64(0)  # main cells below mpos are written
    cur = -1  # the row being written, and its next unwritten tail cell
    tq = np.uint64(0)
    for ri in range(runs.shape[0]):
        # entries src.. fill cells lin..; cut the run at row ends and at column c
        src = np.uint64(runs[ri, 0])
        lin = np.uint64(runs[ri, 1])
        left = np.uint64(runs[ri, 2])
        while left > 0:
            r = lin // kk
            q = lin - r * kk
            seg = min(left, kk - q)
            if np.int64(r) != cur:
                if cur >= 0 and pos[cur] >= 0:
                    trow = tail[pos[cur]]
                    for x in range(tq, kt):
                        trow[x] = zero
                cur = np.int64(r)
                tq = np.uint64(0)
            if q < c:  # the main part: fill the gap, copy
                m0 = r * c + q
                for x in range(mpos, m0):
                    mflat[x] = zero
                nm = min(seg, c - q)
                for i in range(nm):
                    v = data[src + i]
                    mflat[m0 + i] = v
                    bad |= (v - v) != 0
                mpos = m0 + nm
            if q + seg > c:  # the tail part
                trow = tail[pos[r]]
                a = max(q, c)
                for x in range(tq, a - c):
                    trow[x] = zero
                for i in range(a - q, seg):
                    v = data[src + i]
                    trow[q + i - c] = v
                    bad |= (v - v) != 0
                tq = q + seg - c
            src += seg
            lin += seg
            left -= seg
    if cur >= 0 and pos[cur] >= 0:
        trow = tail[pos[cur]]
        for x in range(tq, kt):
            trow[x] = zero
    for x in range(mpos, msize):
        mflat[x] = zero
    return bad


@njit(cache=True)
def scatter_add_block(out, rows, cols, block):
    """``out[rows[i], cols[j]] += block[i, j]`` (``block`` any layout).

    ``cols`` is cut once into runs of consecutive output columns and each row is added run
    by run: a run is a contiguous add, which vectorises where a per-cell indexed add does not
    (tail rows come in runs: the rows of one level often share their leading indices). Runs
    shorter than ``_limits.SCATTER_MIN_MEAN_RUN`` on average are added cell by cell instead: the
    loop over runs costs more than it saves there (the chemistry ``abQ,icQ->abic`` class
    blocks, 71 columns in 22 runs, 16 in 16, 14 in 6, 15 in 5: 33-42 against 58-65 us for all
    36K cells, one thread, 2-vCPU AMD EPYC Zen 3 guest, 2026-12-02).
    """
    nc = cols.shape[0]
    starts = np.empty(nc + 1, dtype=np.int64)  # run r: block columns starts[r]:starts[r + 1]
    nr = 0
    for j in range(nc):
        if j == 0 or cols[j] != cols[j - 1] + 1:
            starts[nr] = j
            nr += 1
    starts[nr] = nc
    if nr * SCATTER_MIN_MEAN_RUN > nc:
        for i in range(block.shape[0]):
            orow = out[rows[i]]
            brow = block[i]
            for j in range(nc):
                orow[np.uint64(cols[j])] += brow[j]
        return
    for i in range(block.shape[0]):
        orow = out[rows[i]]
        brow = block[i]
        for r in range(nr):  # unsigned offsets: no negative-index wraparound check per cell
            j0 = np.uint64(starts[r])
            c0 = np.uint64(cols[j0])
            for j in range(np.uint64(starts[r + 1]) - j0):
                orow[c0 + j] += brow[j0 + j]


#: Fields of the time model array that :func:`zero_tail_plan` takes (``_limits.ZERO_TAIL_*``).
MODEL_FIELDS = ("mac", "pack", "call", "cell", "fixed", "threads", "syrk_mac", "syrk_pack", "slope", "gemm_base",
                "gemm_cap", "syrk_base", "syrk_cap")


@njit(cache=True, inline="always")
def _gemm_seconds(m, n, k, syrk, model):
    """Modelled time of an ``[m, k] @ [k, n]`` GEMM, or with ``syrk`` of ``A @ A.T`` (``n == m``;
    BLAS computes one triangle), on ``model[5]`` BLAS threads (fields: :data:`MODEL_FIELDS`).

    One thread: ``call + mac m n k + pack (m + n) k`` (GEMM), ``call + syrk_mac m^2 k / 2 +
    syrk_pack m k`` (SYRK). More threads divide the non-call part by ``1 + (threads - 1) eff``,
    ``eff = min(cap, slope log2(macs / base))`` (0 below ``base`` multiply-adds): small
    products, and SYRKs most, barely thread."""
    if m == 0 or n == 0 or k == 0:
        return 0.0
    if syrk:
        macs = 0.5 * m * m * k
        t = model[6] * macs + model[7] * m * k
        base = model[11]
        cap = model[12]
    else:
        macs = 1.0 * m * n * k
        t = model[0] * macs + model[1] * (m + n) * k
        base = model[9]
        cap = model[10]
    eff = min(cap, model[8] * np.log2(macs / base)) if macs > base else 0.0
    return model[2] + t / (1.0 + (model[5] - 1.0) * eff)


@njit(cache=True)
def zero_tail_plan(sup_x, sup_y, k, merge, model, syrk):
    """Cuts of the zero-tail product of ``X[R, k] @ Y[C, k]^T`` whose rows have support
    lengths ``sup_x``/``sup_y``, chosen by the GEMM time model ``model`` (float64, fields
    :data:`MODEL_FIELDS`; :func:`_gemm_seconds`). With ``syrk``, ``Y`` is ``X`` and every step,
    the plain product included, is a SYRK.

    Levels: a counting sort of the support lengths; lengths within ``merge`` (a fraction) of
    a larger one join its level (a row is treated as long as its level). With levels
    ``g_1 < ... < g_m``, one GEMM takes every row over ``[0, c)`` (c a level; the result is
    the output itself), and tail steps ``[g_i, g_j)`` take only the rows whose level passes
    ``g_i`` (scatter-added into the output); a dynamic programme over the levels picks ``c``
    and the steps minimising ``GEMMs + cell * scattered cells + fixed`` against one plain GEMM over ``k``.

    Returns ``(cuts, nx, ny, pos_x, rows_x, pos_y, rows_y)``: ``cuts[0] = c < cuts[1] < ...``
    the step bounds (``cuts`` of length 0: the plain GEMM wins), ``nx[s]``/``ny[s]`` the rows of
    step s (prefixes of the tail orders), ``pos[r]`` row r's tail row (-1: none) and ``rows``
    the tail order (levels descending, rows ascending within a level).
    """
    cx = np.zeros(k + 1, dtype=np.int64)
    cy = np.zeros(k + 1, dtype=np.int64)
    for r in range(sup_x.shape[0]):
        cx[sup_x[r]] += 1
    for r in range(sup_y.shape[0]):
        cy[sup_y[r]] += 1
    # merge levels from the top: a length joins the level above while within merge of it
    top = np.zeros(k + 1, dtype=np.int64)
    lev = np.empty(k + 1, dtype=np.int64)  # levels, descending
    m = 0
    cur = -1
    for ln in range(k, 0, -1):
        if cx[ln] + cy[ln] == 0:
            continue
        if cur < 0 or cur - ln > merge * cur:
            cur = ln
            lev[m] = ln
            m += 1
        top[ln] = cur
    empty = np.zeros(0, dtype=np.int64)
    if m == 0:
        return empty, empty, empty, empty, empty, empty, empty
    g = lev[:m][::-1].copy()  # ascending
    gx = np.zeros(m, dtype=np.int64)
    gy = np.zeros(m, dtype=np.int64)
    j = 0
    for ln in range(1, k + 1):
        if top[ln] == 0:
            continue
        while g[j] != top[ln]:
            j += 1
        gx[j] += cx[ln]
        gy[j] += cy[ln]
    above_x = np.zeros(m + 1, dtype=np.int64)  # rows whose level is > g[i]: above[i + 1]
    above_y = np.zeros(m + 1, dtype=np.int64)
    for i in range(m - 1, -1, -1):
        above_x[i] = above_x[i + 1] + gx[i]
        above_y[i] = above_y[i + 1] + gy[i]
    n_rows = sup_x.shape[0]
    n_cols = sup_y.shape[0]
    best = np.zeros(m, dtype=np.float64)
    nxt = np.full(m, m, dtype=np.int64)
    for i in range(m - 2, -1, -1):
        bx = above_x[i + 1]
        by = above_y[i + 1]
        best[i] = np.inf
        for jj in range(i + 1, m):
            t = _gemm_seconds(bx, by, g[jj] - g[i], syrk, model) + model[3] * bx * by + best[jj]
            if t < best[i]:
                best[i] = t
                nxt[i] = jj
    plain = _gemm_seconds(n_rows, n_cols, k, syrk, model)
    choice = -1
    chosen = plain
    for i in range(m):
        t = _gemm_seconds(n_rows, n_cols, g[i], syrk, model) + best[i] + model[4]
        if t < chosen:
            chosen = t
            choice = i
    if choice < 0:
        return empty, empty, empty, empty, empty, empty, empty
    ns = 1
    i = choice
    while nxt[i] < m:
        i = nxt[i]
        ns += 1
    cuts = np.empty(ns, dtype=np.int64)
    nx = np.empty(ns, dtype=np.int64)
    ny = np.empty(ns, dtype=np.int64)
    i = choice
    for s in range(ns):
        cuts[s] = g[i]
        nx[s] = above_x[i + 1]
        ny[s] = above_y[i + 1]
        i = nxt[i]
    c = cuts[0]
    pos_x, rows_x = _tail_order(sup_x, top, g, c)
    if syrk:
        return cuts, nx, ny, pos_x, rows_x, pos_x, rows_x
    pos_y, rows_y = _tail_order(sup_y, top, g, c)
    return cuts, nx, ny, pos_x, rows_x, pos_y, rows_y


@njit(cache=True)
def _tail_order(sup, top, g, c):
    """``(pos, rows)``: the rows whose level passes ``c`` by level descending (a counting
    sort over the levels ``g``), rows ascending within a level."""
    m = g.shape[0]
    count = np.zeros(m + 1, dtype=np.int64)
    gi = np.full(sup.shape[0], -1, dtype=np.int64)
    for r in range(sup.shape[0]):
        lv = top[sup[r]]
        if lv > c:
            j = np.searchsorted(g, lv)
            gi[r] = m - 1 - j  # descending
            count[m - 1 - j + 1] += 1
    for j in range(m):
        count[j + 1] += count[j]
    rows = np.empty(count[m], dtype=np.int64)
    pos = np.full(sup.shape[0], -1, dtype=np.int64)
    for r in range(sup.shape[0]):
        if gi[r] >= 0:
            p = count[gi[r]]
            count[gi[r]] += 1
            pos[r] = p
            rows[p] = r
    return pos, rows
