"""GEMM orientation by measurement: ``a @ b`` or ``(b^T @ a^T)^T``, whichever BLAS runs faster.

A product ``[m, k] @ [k, n]`` can be handed to BLAS either way round: the result is the same
(the swapped one comes back as a transposed view, as NumPy's own ``einsum`` returns such
views), but the time is not, and which side is faster depends on the CPU and the shape, not
on the BLAS kernels alone. Measured with NumPy's bundled OpenBLAS 0.3.31 (float64, 2 threads,
``x @ y.T`` against ``(y @ x.T).T``, min of 200-600 interleaved calls, 2026-12-02):

* a 2-vCPU Xeon: swapped faster in all four transpose forms (576x96x375 327 against 282 us,
  2000x100x300 1008 against 801 us);
* a Zen 4 EPYC guest: swapped faster for most shapes, kept faster for very narrow outputs
  over a long contracted side (576x16x375: 1.10x kept);
* a Zen 5 EPYC guest, the same "Haswell" kernels: kept faster for nearly all (576x16x375 101
  against 140 us, 2000x100x300 1194 against 1476);
* a Zen 3 EPYC guest, by shape (into preallocated buffers, min of 200, three rounds):
  352x71x116 kept faster (swapped 1.03-1.08x), 186x16x77 swapped faster (0.89-0.90x),
  576x96x375 swapped (0.96-1.00x), 258x14x56 a tie (0.93-1.04x).

So each shape is *timed*, in runs of consecutive calls: the first
:data:`~flexsparse._limits.ORIENT_TRIAL_CALLS` calls run the rule's side below, the next as
many the other side, each call's wall time is kept, and from then on the side with the lower
minimum runs. Runs, not alternation, because a side is slow for its first calls after the
other side ran (Zen 4, 576x16x375 kept after swapped calls: 213-596 us, then 145, 132, 121
against 118 warm), so alternating calls measure the switch. The trial is repeated at the
:data:`~flexsparse._limits.ORIENT_RECHECK_FIRST`-th call of a shape and at each doubling of
its call count: a run of the chosen side, then a run of the other, and the lower minimum
decides again. A trial in a disturbed moment (the first calls of a process run cold, and on
a noisy guest a run can land in a slow stretch) is thus corrected, at a cost of one run of
the slower side per doubling. Every trial call is a real product, so the trial costs only the
slower side's extra time on those calls. Shapes below
:data:`~flexsparse._limits.ORIENT_MIN_MACS` multiply-adds (timer noise and the look-up would
outweigh the difference) and square outputs (``a @ a.T`` is a SYRK either way) use the rule
alone: swap when the output has more rows than columns, except a very narrow output
(< :data:`KEEP_ORDER_MAX_COLS` columns) over a long contracted side
(>= :data:`KEEP_ORDER_MIN_K`) and at most :data:`KEEP_ORDER_MAX_ROWS` rows (Zen 4: those ran
1.03-1.39x slower swapped).

Choices are remembered per (shapes, strides, dtype, BLAS threads), at most
:data:`~flexsparse._limits.ORIENT_CACHE_ENTRIES`, oldest dropped first. Cost: one dict look-up
and a call count per product once decided; two ``perf_counter`` reads per trial call.
"""

from __future__ import annotations

import time

import numpy as np

from flexsparse import _limits

__all__ = ["KEEP_ORDER_MAX_COLS", "KEEP_ORDER_MAX_ROWS", "KEEP_ORDER_MIN_K", "matmul_oriented", "rule_swaps"]

KEEP_ORDER_MAX_COLS = 24
KEEP_ORDER_MIN_K = 128
KEEP_ORDER_MAX_ROWS = 1024

#: Per shape key: ``[the side that runs (0 kept, 1 swapped; the rule's until the first
#: trial ends), best kept s, best swapped s, calls, call count of the next trial]``. Mutated in
#: place; a lost update under threads only costs a sample.
_CHOICES: dict = {}
#: The clock of the trial (a test replaces it).
_clock = time.perf_counter


def rule_swaps(rows: int, cols: int, k: int) -> bool:
    """The orientation before any measurement: swapped for more output rows than columns,
    except a very narrow output over a long contracted side (see the module)."""
    return rows > cols and not (cols < KEEP_ORDER_MAX_COLS and k >= KEEP_ORDER_MIN_K and rows <= KEEP_ORDER_MAX_ROWS)


_DECIDED = ((0,), (1,))


def _entry(a: np.ndarray, b: np.ndarray, threads: int) -> list | tuple:
    rows, k, cols = a.shape[-2], a.shape[-1], b.shape[-1]
    if rows == cols or a.size * cols < _limits.ORIENT_MIN_MACS:  # a.size * cols: the multiply-adds
        return _DECIDED[rule_swaps(rows, cols, k)]
    key = (a.shape, b.shape, a.strides, b.strides, a.dtype.char, b.dtype.char, threads)
    entry = _CHOICES.get(key)
    if entry is None:  # the rule is consulted once per shape, not on every decided call
        while len(_CHOICES) >= _limits.ORIENT_CACHE_ENTRIES:
            _CHOICES.pop(next(iter(_CHOICES)))
        entry = _CHOICES[key] = [int(rule_swaps(rows, cols, k)), np.inf, np.inf, 0, 0]
    return entry


def matmul_oriented(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, threads: int = 0
                    ) -> tuple[np.ndarray, bool]:
    """``(a @ b, swapped)`` for 2-D or stacked float/complex ``a [.., m, k]``, ``b [.., k, n]``,
    run the way round this machine runs faster (see the module); ``swapped``: computed as
    ``(b^T @ a^T)^T``, so the result is a transposed view. ``out``: a flat C-contiguous
    buffer of exactly the result's size to write into (as ``[.., n, m]`` when swapped).
    ``threads``: the BLAS thread count in effect (part of the key; the caller knows it)."""
    entry = _entry(a, b, threads)
    swap = bool(entry[0])
    if len(entry) == 1:  # the rule alone
        timed = False
    else:
        calls = entry[3]
        entry[3] = calls + 1
        run = _limits.ORIENT_TRIAL_CALLS
        step = calls - entry[4]  # within a trial: a run of the side that runs, then one of the other
        timed = 0 <= step < 2 * run
        if timed:
            swap ^= step >= run
            t0 = _clock()
    if swap:
        at, bt = b.swapaxes(-1, -2), a.swapaxes(-1, -2)
        res = np.matmul(at, bt, out=None if out is None else out.reshape(at.shape[:-1] + bt.shape[-1:]))
        res = res.swapaxes(-1, -2)
    else:
        res = np.matmul(a, b, out=None if out is None else out.reshape(a.shape[:-1] + b.shape[-1:]))
    if timed:
        seconds = _clock() - t0
        slot = 2 if swap else 1
        if seconds < entry[slot]:
            entry[slot] = seconds
        if step == 2 * run - 1:  # the trial's last call: decide, and set the next trial
            entry[0] = int(entry[2] < entry[1])
            entry[4] = max(_limits.ORIENT_RECHECK_FIRST, 2 * entry[4])
    return res, swap
