"""Measurements behind the density thresholds of :mod:`flexsparse._limits`.

* ``blas``: sparse x sparse ``ij,jk->ik`` on two n x n COO of equal density d, run by the
  row-wise SpGEMM engine (``method="gustavson"``) and by densify + BLAS (``method="dense"``),
  both through the einsum executor's pair step; prints the time ratio per density. The
  crossover sets ``BLAS_MIN_DENSITY``.
* ``output``: sparse x dense ``ij,jk->ik`` (the ``spmm`` step) whose result has density d
  (a fraction d of A's rows hold entries), assembled as COO and as a dense array (the step's
  ``dense_out`` flag, which the planner sets from ``DENSE_OUTPUT_MIN_DENSITY``); prints both
  times and the bytes of each result.

Usage: ``python benchmarks/bench_limits.py [--n 600] [--repeat 5]``. Times are the minimum of
``--repeat`` warm runs, single-threaded (numba and OpenBLAS both set to 1 thread).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import min_time  # noqa: E402

import flexsparse as fs  # noqa: E402
from flexsparse.contract.execute import _pair, _pair_sparse_dense  # noqa: E402


def blas(n: int, repeat: int) -> None:
    print(f"sparse x sparse ij,jk->ik, two {n}x{n} float64 COO, min of {repeat} (1 thread)")
    print(f"{'density':>8} {'gustavson ms':>13} {'dense ms':>9} {'dense/gustavson':>16}")
    sizes = {"i": n, "j": n, "k": n}
    for d in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5):
        a = fs.random((n, n), d, seed=1)
        b = fs.random((n, n), d, seed=2)
        g = min_time(lambda: _pair(a, "ij", b, "jk", "ik", sizes, "gustavson", 1, False, None, None), repeat)
        t = min_time(lambda: _pair(a, "ij", b, "jk", "ik", sizes, "dense", 1, True, None, None), repeat)
        print(f"{d:>8.2f} {g * 1e3:>13.2f} {t * 1e3:>9.2f} {t / g:>16.2f}")


def output(n: int, f: int, repeat: int) -> None:
    print(f"\nspmm ij,jk->ik: A {n}x{n} (a fraction d of its rows hold 8 entries) x dense {n}x{f}; "
          f"result of density d assembled as COO or dense, min of {repeat} (1 thread)")
    print(f"{'out density':>11} {'coo ms':>8} {'dense ms':>9} {'dense/coo':>10} {'coo MB':>7} {'dense MB':>9}")
    rng = np.random.default_rng(0)
    sizes = {"i": n, "j": n, "k": f}
    d = rng.standard_normal((n, f))
    for dens in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6):
        rows = np.sort(rng.choice(n, int(dens * n), replace=False))
        r = np.repeat(rows, 8)
        c = rng.integers(0, n, r.size)
        a = fs.COO(np.vstack([r, c]), rng.standard_normal(r.size), (n, n)).sum_duplicates()
        tc = min_time(lambda: _pair_sparse_dense(a, "ij", d, "jk", "ik", sizes, 1, False), repeat)
        td = min_time(lambda: _pair_sparse_dense(a, "ij", d, "jk", "ik", sizes, 1, True), repeat)
        coo = _pair_sparse_dense(a, "ij", d, "jk", "ik", sizes, 1, False)[0]
        print(f"{dens:>11.2f} {tc * 1e3:>8.2f} {td * 1e3:>9.2f} {td / tc:>10.2f} "
              f"{coo.nbytes / 1e6:>7.1f} {n * f * 8 / 1e6:>9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    blas(args.n, args.repeat)
    output(4000, 256, args.repeat)


if __name__ == "__main__":
    main()
