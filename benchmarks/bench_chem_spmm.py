"""Chemistry ``abQ,icQ->abic`` from COO input: CSR x dense SpMM against densify + BLAS.

A canonical COO sorted by ``(a, b, Q)`` is a CSR of the ``(ab) x Q`` matrix once the
row pointer is built (O(nnz) count + prefix sum), so ``abQ,icQ->abic`` can run as
``A_csr[ab, Q] @ dense(B)[Q, ic]`` with only the small operand densified.  This script
times, interleaved with ``numpy.einsum(optimize=True)`` on the dense arrays:

* ``todense``: today's densify of the big operand (``COO.todense``);
* ``densify_numba``: a one-pass numba scatter into ``np.zeros`` (lower bound of a densify);
* ``densify_warm``: the same scatter into an already-touched buffer (no page faults);
* ``blas``: ``dense(A)[ab, Q] @ dense(B)[Q, ic]`` (what the planner runs after densify);
* ``indptr``: the CSR row pointer from the two leading coordinates;
* ``spmm_lib``: :func:`flexsparse.kernels.cpu.spmm.spmm_csr_dense` (one entry per inner loop);
* ``spmm_x4``: a 4-entry-unrolled variant (one load/store of the output row per 4 entries).

Result (2026-11-29, shared 2-core box, load ~6, 1 thread): numpy 835 us, todense 214 us,
numba densify 200 us, BLAS 845 us, indptr 131 us, spmm_lib 2890 us, spmm_x4 1420 us.
The SpMM streams 0.76x the multiply-adds but at ~0.09 ns each against BLAS's ~0.04 ns,
so it loses to densify + BLAS at the chemistry densities (53-76 %).  Unrolling by 8
gave the same 1426 us (the output row is not the bound); blocking Q into L1-sized slabs of
``B^T`` (32 rows x 96 doubles, per-row cursors) gave 1245 us against BLAS 905 us in the
same run, so streaming B rows per stored entry stays ~1.4x behind BLAS's register tiling
even with 24 % fewer multiply-adds.  SpMM beats dense
BLAS only below ~45 % density, where the planner already keeps operands sparse.

Usage::

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_chem_spmm.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import load_average
from numba import njit

import flexsparse as fs
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spmm import spmm_csr_dense


@njit(cache=True, boundscheck=False)
def _indptr(c0, c1, s1, m):
    ip = np.zeros(m + 1, np.int64)
    for p in range(c0.shape[0]):
        ip[c0[p] * s1 + c1[p] + 1] += 1
    for i in range(m):
        ip[i + 1] += ip[i]
    return ip


@njit(cache=True, fastmath=True, boundscheck=False)
def _spmm_x4(ip, idx, dat, b, out):
    n = b.shape[1]
    for i in range(ip.shape[0] - 1):
        p, e = ip[i], ip[i + 1]
        while p + 4 <= e:
            a0, a1, a2, a3 = dat[p], dat[p + 1], dat[p + 2], dat[p + 3]
            b0, b1, b2, b3 = b[idx[p]], b[idx[p + 1]], b[idx[p + 2]], b[idx[p + 3]]
            for j in range(n):
                out[i, j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j]
            p += 4
        while p < e:
            a0, b0 = dat[p], b[idx[p]]
            for j in range(n):
                out[i, j] += a0 * b0[j]
            p += 1


@njit(cache=True, boundscheck=False)
def _densify(c0, c1, c2, dat, s1, s2, out):
    for p in range(c0.shape[0]):
        out[(c0[p] * s1 + c1[p]) * s2 + c2[p]] = dat[p]


def _best(fns: dict, rounds: int) -> dict:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    if not (args.data / "TEvv.tns").exists():
        print(f"(chemistry tensors not found under {args.data}: skipping)")
        return
    ov = fs.load(args.data / "TEov.tns", index_base=0, header=True)
    vv = fs.load(args.data / "TEvv.tns", index_base=0, header=True)
    a, b, q = vv.shape
    vvd, ovd = vv.todense(), ov.todense()
    c = [np.ascontiguousarray(x) for x in vv.coords]
    bt = np.ascontiguousarray(ovd.reshape(-1, q).T)                   # [Q, ic]
    ip = _indptr(c[0], c[1], b, a * b)
    csr = CSR._trusted(ip, c[2].astype(np.int64), vv.data, (a * b, q), True)
    ref = np.einsum("abQ,icQ->abic", vvd, ovd, optimize=True)
    warm = np.zeros(a * b * q)

    def dens():
        out = np.zeros(a * b * q)
        _densify(c[0], c[1], c[2], vv.data, b, q, out)
        return out

    def x4():
        out = np.zeros((a * b, bt.shape[1]))
        _spmm_x4(ip, c[2], vv.data, bt, out)
        return out

    assert np.allclose(x4().reshape(ref.shape), ref)
    assert np.allclose(spmm_csr_dense(csr, bt, threads=1).reshape(ref.shape), ref)
    assert np.array_equal(dens().reshape(vv.shape), vvd)
    fns = {"numpy": lambda: np.einsum("abQ,icQ->abic", vvd, ovd, optimize=True),
           "todense": vv.todense, "densify_numba": dens,
           "densify_warm": lambda: _densify(c[0], c[1], c[2], vv.data, b, q, warm),
           "blas": lambda: vvd.reshape(a * b, q) @ bt,
           "indptr": lambda: _indptr(c[0], c[1], b, a * b),
           "spmm_lib": lambda: spmm_csr_dense(csr, bt), "spmm_x4": x4}
    best = _best(fns, args.rounds)
    print(f"abQ,icQ->abic {vv.shape} x {ov.shape}, density {vv.nnz / vvd.size:.2f}; load {load_average()}")
    for k, t in best.items():
        print(f"  {k:14s} {t * 1e6:9.1f} us  {t / best['numpy']:5.2f}x numpy")


if __name__ == "__main__":
    main()
