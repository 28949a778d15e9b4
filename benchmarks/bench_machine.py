"""What this machine gives two threads on the SpGEMM's memory pattern: random updates.

The Gustavson SpGEMM's dense accumulators turn every multiply-add into an update of a random
slot of a per-thread table of ``n_cols`` slots (:mod:`flexsparse.kernels.cpu._spgemm_rows`).
How well two threads scale on that pattern is a property of the machine's shared caches and
memory, not of the kernel, and it bounds the kernel's two-thread speed-up on the same tables.
This script measures it with nothing else in the loop:

* ``threads``: each of 1 or 2 numba threads owns a zeroed table of ``2**bits`` slots of
  ``slot_bytes`` bytes (4: a ``uint32`` position tag; 8: a ``uint64`` tag or a float64 sum;
  12: a float64 sum plus a ``uint32`` stamp, two arrays) and applies the same stream of
  ``--updates`` random slot indices to it, ``--passes`` times; the rounds alternate 1 and 2
  threads and the minimum is kept. "scaling" is (updates of both threads / 2-thread time)
  over (updates / 1-thread time): 2.0 is perfect.
* ``--processes``: the same one-thread loop in two independent processes started together
  (nothing shared in software), against one process alone.

The stream table measures the other half of a product's traffic, its output: one and two
threads writing a 400 MiB buffer (fresh pages, as an output buffer gets them, and pages
written before) and copying one. No kernel whose time is mostly such a stream can scale
by more than this on two threads.

Run it right before a two-thread benchmark to see the state of a shared host: the tables of
the largest products (2**20 columns) fit the caches of two threads on one day and not on the
next. Cost: O(updates * passes) per run.

    python benchmarks/bench_machine.py
    python benchmarks/bench_machine.py --bits 18,20 --slot-bytes 4,8 --processes
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numba
import numpy as np
from _common import load_average, machine
from numba import njit, prange


@njit(parallel=True, cache=True)
def _updates(n_threads, idx, n_slots, passes, slot_bytes):
    for _w in prange(n_threads):
        t4 = np.zeros(n_slots if slot_bytes == 4 else 0, dtype=np.uint32)
        t8 = np.zeros(n_slots if slot_bytes >= 8 else 0, dtype=np.float64)
        s4 = np.zeros(n_slots if slot_bytes == 12 else 0, dtype=np.uint32)
        for r in range(passes):
            for j in range(idx.shape[0]):
                c = idx[j]
                if slot_bytes == 4:
                    t4[c] += np.uint32(1)
                elif slot_bytes == 8:
                    t8[c] += 1.0
                else:
                    t8[c] += 1.0
                    s4[c] = np.uint32(r)


@njit(parallel=True, cache=True)
def _stream(n_threads, out, reads):
    """Each thread writes its contiguous share of ``out`` and, with ``reads``, reads the same
    share of ``reads`` (``out[i] = reads[i] + 1``): the SpGEMM's output stream."""
    n = out.shape[0]
    for w in prange(n_threads):
        lo = n * w // n_threads
        hi = n * (w + 1) // n_threads
        if reads.shape[0]:
            for i in range(lo, hi):
                out[i] = reads[i] + 1.0
        else:
            for i in range(lo, hi):
                out[i] = i


def stream_table(mib: int, rounds: int) -> None:
    """Bandwidth of a streaming write (fresh pages, as an output buffer gets them, or pages
    written before) and of a streaming copy, one thread against two."""
    n = mib * 2**20 // 8
    src = np.ones(n)
    kept = np.zeros(n)
    none = np.empty(0)
    print(f"\n| stream of {mib} MiB | 1 thread GB/s | 2 threads GB/s | scaling |")
    print("|---|---|---|---|")
    for name in ("write, fresh pages", "write, pages kept", "copy, pages kept"):
        best = {1: np.inf, 2: np.inf}
        for r in range(rounds + 1):
            for t in (1, 2):
                numba.set_num_threads(t)
                out = np.empty(n) if name.endswith("fresh pages") else kept
                t0 = time.perf_counter()
                _stream(t, out, src if name.startswith("copy") else none)
                dt = time.perf_counter() - t0
                del out
                if r:
                    best[t] = min(best[t], dt)
        gb = mib * 2**20 * (2 if name.startswith("copy") else 1) / 1e9
        print(f"| {name} | {gb / best[1]:.1f} | {gb / best[2]:.1f} | **{best[1] / best[2]:.2f}** |", flush=True)


def _time(n_threads: int, idx: np.ndarray, bits: int, passes: int, slot_bytes: int) -> float:
    numba.set_num_threads(n_threads)
    t = time.perf_counter()
    _updates(n_threads, idx, 1 << bits, passes, slot_bytes)
    return time.perf_counter() - t


def threads_table(bits_list: list[int], slot_bytes_list: list[int], updates: int, passes: int,
                  rounds: int) -> None:
    print("| slots | bytes a slot | table per thread | 1 thread ms | 2 threads ms | scaling |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for bits in bits_list:
        idx = rng.integers(0, 1 << bits, updates).astype(np.int64)
        for sb in slot_bytes_list:
            best = {1: np.inf, 2: np.inf}
            for n in (1, 2):
                _time(n, idx, bits, 1, sb)  # compile and fault the pages of this shape once
            for _ in range(rounds):
                for n in (1, 2):
                    best[n] = min(best[n], _time(n, idx, bits, passes, sb))
            mib = (1 << bits) * sb / 2**20
            print(f"| 2^{bits} | {sb} | {mib:.1f} MiB | {best[1] * 1e3:.1f} | {best[2] * 1e3:.1f} | "
                  f"**{2 * best[1] / best[2]:.2f}** |", flush=True)


def processes_table(bits_list: list[int], slot_bytes_list: list[int], updates: int, passes: int,
                    rounds: int) -> None:
    print("\n| slots | bytes a slot | 1 process alone ms | 2 processes together ms (each) | slowdown |")
    print("|---|---|---|---|---|")
    for bits in bits_list:
        for sb in slot_bytes_list:
            args = [sys.executable, __file__, "--child", str(bits), str(sb), str(updates), str(passes),
                    str(rounds)]
            alone = float(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
            procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(2)]
            both = [float(p.communicate()[0]) for p in procs]
            print(f"| 2^{bits} | {sb} | {alone * 1e3:.1f} | {both[0] * 1e3:.1f} / {both[1] * 1e3:.1f} | "
                  f"**{max(both) / alone:.2f}x** |", flush=True)


def _child(bits: int, sb: int, updates: int, passes: int, rounds: int) -> None:
    idx = np.random.default_rng(0).integers(0, 1 << bits, updates).astype(np.int64)
    _time(1, idx, bits, 1, sb)
    print(min(_time(1, idx, bits, passes, sb) for _ in range(rounds)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", default="16,18,20,22", help="comma-separated log2 table sizes")
    ap.add_argument("--slot-bytes", default="4,8,12", help="comma-separated bytes a slot (4, 8, 12)")
    ap.add_argument("--updates", type=int, default=4_000_000)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", action="store_true", help="also two independent processes")
    ap.add_argument("--stream-mib", type=int, default=400,
                    help="also stream writes and copies of this many MiB (0: off)")
    ap.add_argument("--child", nargs=5, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    bits = [int(b) for b in args.bits.split(",")]
    sbs = [int(s) for s in args.slot_bytes.split(",")]
    bad = [s for s in sbs if s not in (4, 8, 12)]
    if bad or any(not 10 <= b <= 26 for b in bits):
        ap.error(f"--slot-bytes takes 4, 8 or 12 (got {bad}); --bits 10..26")
    start = load_average()
    print(f"# random updates, {args.updates:,} x {args.passes} per thread, min of {args.rounds} rounds")
    print(f"# {machine()}; load at start {start}\n")
    threads_table(bits, sbs, args.updates, args.passes, args.rounds)
    if args.stream_mib:
        stream_table(args.stream_mib, args.rounds)
    if args.processes:
        processes_table(bits, sbs, args.updates, args.passes, args.rounds)
    print(f"\n# load at end {load_average()}")


if __name__ == "__main__":
    main()
