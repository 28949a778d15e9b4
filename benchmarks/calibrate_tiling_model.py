"""Check the tile executor's cost model (``flexsparse.tiling.strategies``) against measured times.

``tiling="conservative"`` declines a product when the model puts it beyond
``_limits.CONSERVATIVE_MAX_SLOWDOWN`` times overbook's time. This script runs both strategies
(the refusal switched off) on generated power-law graphs ``A @ A`` -- the calibration set of
the model's constants -- and prints measured and modelled seconds side by side, so the
constants can be re-fitted on another machine.

Run: ``python benchmarks/calibrate_tiling_model.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

# (rows, stored entries, memory limit in bytes)
CASES = [(2000, 8000, 200_000), (5000, 20000, 400_000), (5000, 20000, 2_000_000),
         (10000, 40000, 1_000_000), (10000, 80000, 4_000_000), (20000, 80000, 8_000_000),
         (3000, 60000, 500_000)]


def graph(n: int, nnz: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n + 1) ** 0.5
    p = w / w.sum()
    m = sp.coo_matrix((np.ones(nnz), (rng.choice(n, nnz, p=p), rng.choice(n, nnz, p=p))), shape=(n, n)).tocsr()
    m.sum_duplicates()
    return m


def main() -> None:
    from flexsparse.tiling import strategies, tiled_spgemm
    from flexsparse.tiling.engine import as_operand
    from flexsparse.tiling.workingset import ByteModel

    strategies._check_conservative_time = lambda stats, plan: None   # measure, never refuse
    warm = sp.random(50, 50, density=0.1, format="csr", random_state=0)
    for s in ("overbook", "conservative"):
        tiled_spgemm(warm, warm, memory_limit="4KiB", tiling=s)
    print(f"{'n':>6}{'nnz':>8}{'limit':>10}{'ob s':>8}{'model':>8}{'cons s':>8}{'model':>8}"
          f"{'ratio':>7}{'model':>7}")
    for n, nnz, limit in CASES:
        a = graph(n, nnz)
        t0 = time.perf_counter()
        tiled_spgemm(a, a, memory_limit=limit, tiling="overbook")
        ob = time.perf_counter() - t0
        t0 = time.perf_counter()
        tiled_spgemm(a, a, memory_limit=limit, tiling="conservative")
        co = time.perf_counter() - t0
        op = as_operand(a, "a")
        stats = strategies.TileStatistics(op, op, ByteModel.for_output(np.float64, np.int32))
        plan = strategies.STRATEGIES["conservative"](stats, limit)
        m_co, m_ob = strategies.conservative_estimates(stats, plan)
        print(f"{n:>6}{a.nnz:>8}{limit:>10}{ob:>8.3f}{m_ob:>8.3f}{co:>8.3f}{m_co:>8.3f}"
              f"{co / ob:>7.1f}{m_co / m_ob:>7.1f}")


if __name__ == "__main__":
    main()
