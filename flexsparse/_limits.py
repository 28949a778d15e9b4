"""Every named threshold of flexsparse that a user sees or that more than one module uses.

Each constant says what it bounds and the measurement (or the arithmetic) that set it.
Constants private to one kernel (accumulator switches such as
``kernels.cpu.spgemm.DENSE_SMALL_COLS``, the tiler's flush fraction, the text parser's 2**53)
stay beside their kernel. Machine of the measurements: the project's standard 2-vCPU
(AMD EPYC) / 24 GiB VM, NumPy 2.4 with OpenBLAS, numba 0.68; command lines are given so they
can be re-run (``benchmarks/bench_limits.py`` reproduces the einsum thresholds).

Memory caps are policies rather than crossovers: they keep one call's temporaries a small
fraction of the 24 GiB machine that up to six processes share, and each says which fraction.

Overflow: :func:`fits_int64` is the one guard every module uses before forming a row-major
linear key (``key = c0 * s1 + c1 ...``) or any product of extents in int64.
"""

from __future__ import annotations

import math

__all__ = [
    "AUTO_DENSE_MAX_BYTES",
    "BLAS_MIN_DENSITY",
    "BLOCK_DENSE_CROSSOVER",
    "BLOCK_LINEAR_DIRECT_BYTES",
    "BLOCK_LINEAR_DIRECT_MAX_ROWS",
    "CLASS_FIXED_SECONDS",
    "CLASS_GATHER_CELL_SECONDS",
    "CLASS_MAX_CLASSES",
    "CLASS_MIN_PLAIN_SECONDS",
    "CLASS_STEP_SECONDS",
    "CONSERVATIVE_MAX_SLOWDOWN",
    "DEMO_DENSE_PEER_MAX_BYTES",
    "DEMO_RMAT_MAX_FLOPS",
    "DENSE_OPERAND_MAX_BYTES",
    "DENSE_OUTPUT_MIN_DENSITY",
    "DENSE_STEP_MAX_BYTES",
    "DENSIFY_FILL_MAX_BYTES",
    "DENSIFY_FILL_MIN_DENSITY",
    "DENSIFY_MIN_MEAN_RUN",
    "DENSIFY_RUN_PROBES",
    "DISTINCT_MARK_MAX",
    "DOT_CELLS_PER_NNZ",
    "DIRECT_BACK_FACTOR_KEPT",
    "DIRECT_BACK_FACTOR_MIN_SEEN",
    "DIRECT_BACK_FACTOR_RANGE",
    "DIRECT_BACK_FACTOR_STEP",
    "DIRECT_BACK_MIN_SECONDS",
    "DIRECT_BACK_PRODUCTS_KEPT",
    "DIRECT_BACK_MAX_FAULTS",
    "DIRECT_BACK_WORK_FACTOR",
    "DIRECT_GATHER_MAX_GROUPS",
    "DIRECT_KEPT_MAPPINGS",
    "DIRECT_MEET_SLACK",
    "DIRECT_POLL_LATE_SHARE",
    "DIRECT_POLL_SECONDS",
    "DIRECT_POLL_SLEEP_SHARE",
    "DISTRIBUTED_DEFAULT_TILE_BYTES",
    "EMBEDDED_DASK_CONFIG",
    "DISTRIBUTED_KEEP_PANEL_BYTES",
    "DISTRIBUTED_MIN_FLOPS",
    "DISTRIBUTED_MIN_TILE_BYTES",
    "DOT_DENSE_MAX_CELLS",
    "GATHER_INLINE_KEY_BYTES",
    "GATHER_POOL_BYTES",
    "GATHER_SHM_MIN_BYTES",
    "HSS_DENSE_CROSSOVER",
    "HUB_SPLIT_FACTOR",
    "HSS_LANES_DENSE_CROSSOVER",
    "INT64_LINEAR_MAX",
    "INT64_MAX",
    "LANES_BATCH_BLOCKS",
    "LANES_CHUNK_TILES",
    "LANES_IN_PLACE_BYTES",
    "LANES_L2_BLOCK_BYTES",
    "LINEAR_PARALLEL_MIN_MACS",
    "MAX_DISTRIBUTED_TILES",
    "MIN_TILE_FLOPS",
    "NONFINITE_DENSE_LOOPS",
    "NONFINITE_DENSE_MAX_BYTES",
    "NONFINITE_PARALLEL_MIN_VALUES",
    "ORIENT_CACHE_ENTRIES",
    "ORIENT_MIN_MACS",
    "ORIENT_TRIAL_CALLS",
    "OUTER_MAX_BYTES",
    "PARALLEL_MIN_MACS",
    "SPGEMM_NARROW_MIN_FLOPS_PER_ENTRY",
    "SPGEMM_PARALLEL_MIN_FLOPS",
    "SPGEMM_KEPT_BUFFER_BYTES",
    "SPGEMM_STEAL_MIN_BYTES",
    "SPGEMM_VALUE_MAX_BYTES",
    "SCATTER_MIN_MEAN_RUN",
    "SMALL_BYTES",
    "TILING_UNTRACKED_SHARE",
    "TILES_PER_THREAD",
    "TILE_MEMORY_FACTOR",
    "TODENSE_MAX_BYTES",
    "WORKER_BASELINE_BYTES",
    "WORKER_MEMORY_FRACTION",
    "ZERO_TAIL_FIXED_SECONDS",
    "ZERO_TAIL_GEMM_CALL_SECONDS",
    "ZERO_TAIL_GEMM_MAC_SECONDS",
    "ZERO_TAIL_GEMM_PACK_SECONDS",
    "ZERO_TAIL_LEVEL_MERGE",
    "ZERO_TAIL_PLAN_CACHE_ENTRIES",
    "ZERO_TAIL_SCATTER_CELL_SECONDS",
    "ZERO_TAIL_SYRK_MAC_SECONDS",
    "ZERO_TAIL_SYRK_PACK_SECONDS",
    "ZERO_TAIL_THREAD_EFF_SLOPE",
    "ZERO_TAIL_THREAD_GEMM_BASE_MACS",
    "ZERO_TAIL_THREAD_GEMM_CAP",
    "ZERO_TAIL_THREAD_SYRK_BASE_MACS",
    "ZERO_TAIL_THREAD_SYRK_CAP",
    "fits_int64",
]

_GiB = 2**30
_MiB = 2**20

# ---------------------------------------------------------------------- integer ranges
#: Largest int64 value: the coordinate range of every format (a mode may be this long).
INT64_MAX = 2**63 - 1
#: A row-major linear key is formed only when the product of its extents is below this:
#: one bit of headroom under 2**63 keeps ``key * extent + coord`` and the difference of two
#: keys inside int64 (arithmetic, not a measurement).
INT64_LINEAR_MAX = 2**62


def fits_int64(*extents: int) -> bool:
    """Whether ``prod(extents) < INT64_LINEAR_MAX`` (exact: Python ints never overflow).

    The one overflow guard: callers form int64 linear keys only when it holds, and otherwise
    fall back to per-mode sorts (``np.lexsort``) or Python-int arithmetic.

    >>> fits_int64(2**31, 2**30), fits_int64(2**31, 2**31), fits_int64()
    (True, False, True)
    """
    return math.prod(int(e) for e in extents) < INT64_LINEAR_MAX


# ---------------------------------------------------------------------- einsum engine choice
#: Both operands of a pairwise step at least this dense (and the step within
#: :data:`DENSE_STEP_MAX_BYTES`): densify and use BLAS. Measured 2026-11-29 with
#: ``python benchmarks/bench_limits.py --repeat 7`` (two 600x600 float64 COO, ``ij,jk->ik``,
#: numba and OpenBLAS on 1 thread, load average ~5): dense/gustavson time 4.3 at density 0.05,
#: 1.7 at 0.1, 0.43 at 0.2, 0.18 at 0.3 -- the crossover of a square product lies between 0.1
#: and 0.2. The value stays at 0.3: lowering it changes every planner path and wants non-square
#: and batched steps measured as well; at 0.3 BLAS is already 5x faster on the square case, so
#: no operand pair above it stays sparse.
BLAS_MIN_DENSITY = 0.3
#: A result estimated denser than this is assembled and stored dense (``format="auto"`` and
#: the ``dense_out`` of ``spmm`` steps). Measured with the same command (``spmm`` of a
#: 4000x4000 sparse A with a dense 4000x256, result density d): dense assembly takes 0.9x the
#: COO time at d = 0.05, 0.2-0.45x from 0.2 up; the COO result takes 16 B per entry against
#: 8 B per dense cell, i.e. 0.5x the dense bytes at d = 0.25 and 0.8x at 0.4. Dense is faster
#: at every density, so the threshold is a memory choice: up to a quarter full, a result
#: keeps at most half the dense footprint.
DENSE_OUTPUT_MIN_DENSITY = 0.25
#: Inner products (the ``dot`` engine) are considered only when the result has at most this
#: many cells per stored operand entry; above it Gustavson is the only candidate and no
#: statistics are gathered. A pre-filter, not a crossover: where it admits ``dot``, the cost
#: model of :mod:`flexsparse.contract.cost` still decides between ``dot`` and ``gustavson``; 4
#: bounds the dot engine's dense output to a few times the operands' entries (not measured
#: separately).
DOT_CELLS_PER_NNZ = 4
#: The ``dot`` engine writes a dense ``rows x cols`` array; it runs only when that has at most
#: this many cells: 2**26 cells x 8 B = 512 MiB of float64, 1/48 of the machine.
DOT_DENSE_MAX_CELLS = 2**26

#: A sparse x sparse step runs as outer products into per-thread dense results
#: (:mod:`flexsparse.kernels.cpu.outer`) when those results (values + a byte mask, all threads)
#: take at most this many bytes -- and, unless they are under 1 MiB, at most half the operands'
#: bytes, so the workspace never dominates the call's memory. Measured with
#: ``fs.einsum("abcd,ebcd->ae", X, X)`` on power-law float32 X of 500K entries, one thread,
#: outer vs Gustavson: (183, 24, 1140, 1717): 29 vs 67 ms (167 KB workspace); (800, ...): 37 vs
#: 74 ms (3.2 MB); (1600, ...): 56 vs 77 ms (12.8 MB); (n, 24, 77, 32) with 7 multiply-adds per
#: result cell: n = 1000, 68 vs 125 ms (5 MB); n = 2000, 170 vs 161 ms (20 MB) -- the crossover
#: lies near 16 MB for one thread, so 8 MiB holds two threads' results with margin.
OUTER_MAX_BYTES = 8 * _MiB

#: Values scanned for inf/nan (einsum's check of sparse operands before a product, the flops
#: count's check of small products) on all of the call's threads from this many on
#: (``kernels.cpu.scatter.has_nonfinite_values``). The scan is bound by memory traffic and a
#: parallel loop first wakes numba's sleeping threads: float64, min of 25 calls, 2 threads
#: against 1, one parallel region per call, 2026-12-01: read from memory 512K values 95 against
#: 100 us, 1M 156 against 240, 2M 311 against 483; in cache 1M 120 against 84 us, 2M 128
#: against 218. (Set at 4M while the scan paid two more parallel regions, ``np.zeros`` and
#: ``any``: 1M values 121 against 84 us.)
NONFINITE_PARALLEL_MIN_VALUES = 1 << 20

# ---------------------------------------------------------------------- densify (COO -> dense)
#: A canonical COO is densified run by run (``kernels.cpu.densify.sorted_coo_to_dense``: one
#: copy per run of consecutive cells) when its runs look at least DENSIFY_MIN_MEAN_RUN cells
#: long on DENSIFY_RUN_PROBES evenly spaced neighbour pairs; otherwise by a store per entry
#: (``kernels.cpu.scatter``). Each run costs ~40 ns (galloping probes, mispredicted branches,
#: short vector loops): on 216K cells, 75% full, one thread, 2026-11-30 00:08 UTC, load 3.3,
#: mean runs of 8 cells took 0.74 ms, 16 cells 0.44, 31 cells 0.24, 64 cells 0.14, 129 cells
#: 0.09, 261 cells 0.07, against 0.16-0.17 ms for the scatter; the chemistry integrals TEvv
#: (runs of 569): 0.06 against 0.17 ms (``NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python
#: benchmarks/bench_einsum.py --sections densify``; BENCHMARKS.md section 15).
DENSIFY_RUN_PROBES = 128
DENSIFY_MIN_MEAN_RUN = 64
#: ... and writes the zeros between runs itself (into ``np.empty``) from this density on, for
#: arrays up to DENSIFY_FILL_MAX_BYTES; otherwise ``np.zeros`` provides them. Same command:
#: 1.6 MiB 81% full 0.05 vs 0.07 ms, 8.8 MiB 80% full 1.00 vs 1.13 ms; at 47 MiB (above glibc's
#: largest mmap threshold, 32 MiB, every array is fresh pages the kernel zeroes on first touch)
#: writing the zeros again lost at 5% full (11.1 vs 8.3 ms) and drew at 30-80%.
DENSIFY_FILL_MIN_DENSITY = 0.25
DENSIFY_FILL_MAX_BYTES = 32 * 2**20
#: ``kernels.cpu.densify.scatter_add_block`` adds a block run by run (contiguous, vectorised
#: adds) when its runs of consecutive output columns are at least this long on average, else
#: cell by cell: the chemistry ``abQ,icQ->abic`` class blocks (71 columns in 22 runs, 16 in 16,
#: 14 in 6, 15 in 5; 36K cells) took 58-65 us run by run against 33-42 us cell by cell, and
#: 91 against 42-44 us as the transposed blocks of swapped GEMMs (one thread, min of 500,
#: 2-vCPU AMD EPYC Zen 3 guest, 2026-12-02).
SCATTER_MIN_MEAN_RUN = 8

# ---------------------------------------------------------------------- memory caps (policies)
#: The planner's dense cap: a ``dense`` step (densified operands plus the dense result) or a
#: dense intermediate may take at most this many bytes (1 GiB = 1/24 of the machine). Not to be
#: confused with ``memory_limit=``, which is always the tiling budget of sparse x sparse steps.
DENSE_STEP_MAX_BYTES = 1 * _GiB
#: ``format="auto"`` returns a dense final result only when it takes at most this many bytes
#: (2 GiB: a final result may be twice an intermediate, as the caller keeps only it).
AUTO_DENSE_MAX_BYTES = 2 * _GiB
#: A COO operand at least :data:`BLAS_MIN_DENSITY` dense is contracted by BLAS only when its
#: dense form takes at most this many bytes: two such operands plus a result of the same size
#: stay within :data:`DENSE_STEP_MAX_BYTES` (3 x 256 MiB + headroom).
DENSE_OPERAND_MAX_BYTES = 256 * _MiB
#: With inf/nan in an operand, NumPy's answer is reproduced bit for bit by running
#: ``numpy.einsum`` on the densified operands when they and the result take at most this many
#: bytes together (512 MiB, half of :data:`DENSE_STEP_MAX_BYTES`; with ``memory_limit=`` that
#: limit instead); larger calls take the exact by-terms evaluation of
#: :mod:`flexsparse.contract._nonfinite`.
NONFINITE_DENSE_MAX_BYTES = 512 * _MiB
#: ... and only when its loop nest has at most this many products: ``numpy.einsum``'s own loops
#: (no BLAS) ran a 512^3 float64 ``ij,jk->ik`` holding an inf (1.3e8 products) in 0.18 s, min of
#: 3, 2026-11-29, load average ~11 (``python -c "import numpy as np, time; a = np.random.rand(512,
#: 512); a[0, 0] = np.inf; t = time.perf_counter(); np.einsum('ij,jk->ik', a, a);
#: print(time.perf_counter() - t)"``), so the dense reference stays well under a second.
NONFINITE_DENSE_LOOPS = 2**27
#: ``memory_limit=`` charges bookkeeping allocations (operand conversions, tiling statistics,
#: non-finite corrections) against ``max(limit, SMALL_BYTES)``: below 1 MiB a process's
#: resident size moves by the interpreter's own allocations (importing NumPy alone maps tens
#: of MiB), so a tighter charge would refuse work for noise. Tile working sets always fit the
#: limit itself.
SMALL_BYTES = 1 * _MiB

#: A tiled product streamed to ``out=`` leaves ``limit / TILING_UNTRACKED_SHARE`` of its limit to what no
#: charge covers: the allocator's slack between phases (freed arrays it keeps for reuse),
#: Python objects, the runtime's own buffers. Measured 2026-11-30 on this project's VM:
#: ``tests/contract/test_memory_budget.py``'s 300K-row product grew 1.10-1.11x its limit in
#: processes whose JIT cache was cold (compiling first leaves a different heap), 0.97-0.98x with
#: it warm, everything charged being within the limit; leaving 1/16: 0.94-1.06x cold; 1/8:
#: 0.88-1.02x cold, 0.24x warm.
TILING_UNTRACKED_SHARE = 8
#: ``todense()``/``np.asarray`` refuse results above this many bytes unless ``max_bytes=`` is
#: raised (4 GiB = 1/6 of the machine: an accidental densification of a FROSTT tensor
#: raises ``DenseTooLargeError`` instead of swapping).
TODENSE_MAX_BYTES = 4 * _GiB
#: ``flexsparse demo`` runs its NumPy peer (which densifies operands and result) only for
#: workloads within this many bytes (512 MiB, as :data:`NONFINITE_DENSE_MAX_BYTES`).
DEMO_DENSE_PEER_MAX_BYTES = 512 * _MiB
#: ``flexsparse demo``'s R-MAT row multiplies every ``k``-th row of the graph by the whole graph,
#: ``k`` the smallest power of two that keeps the multiply-adds within this cap (2**24, 16.8M).
#: The full square of R-MAT scale 18, edge factor 8 (Graph500 a, b, c = 0.57, 0.19, 0.19) is
#: 868M multiply-adds and 496M result entries (~6 GB per result, SciPy 113 s on the shared
#: 2-core VM); under the cap each library's result is ~100 MB and one call well under a second
#: on a quiet machine, while the right operand keeps the graph's 2**18 rows and hub rows.
DEMO_RMAT_MAX_FLOPS = 1 << 24

# ---------------------------------------------------------------------- tiling
#: ``tiling="conservative"`` (dense-sized tiles) refuses up front when the executor's cost model
#: (:mod:`flexsparse.tiling.strategies`, fitted within 2x of measured times) puts it beyond this
#: multiple of ``tiling="overbook"``'s time: on a 300K-row power-law graph under 1/8 of the
#: unbounded peak it would run ~15 million tiles (about 2000 s against 2 s).
CONSERVATIVE_MAX_SLOWDOWN = 20

# ---------------------------------------------------------------------- statistics
#: ``operand_stats`` counts the distinct coordinates of a mode with a bool mark array (one byte
#: per coordinate of the mode) up to this extent -- 64 MiB at 2**26 -- and with ``np.unique``
#: (O(nnz log nnz), O(nnz) memory) beyond it (arithmetic: the mark array stays under 64 MiB).
DISTINCT_MARK_MAX = 2**26

# ---------------------------------------------------------------------- structured formats
#: Density (stored slots / M*K) above which ``BlockSparse`` products use a cached dense copy and
#: BLAS. Measured 2026-11-29 for the register-tiled block kernel (``W @ X``, 1024x4096 @
#: 4096x256, float32, one thread, CPU time against OpenBLAS sgemm on a busy 2-core machine):
#: speed-up at 30% / 50% / 70% density 2.23x / 1.27x / 0.72x for 32x32 blocks and 2.44x /
#: 1.28x / 0.94x for 8x8; the crossover lies between 0.5 and 0.7.
BLOCK_DENSE_CROSSOVER = 0.6
#: ``BlockSparse.linear`` (``X @ W.T``) runs the direct kernel on the transposed blocks when a
#: block row holds at least this many bytes of outputs (one 64-byte register) or ``X`` has
#: fewer than ``BLOCK_LINEAR_DIRECT_MAX_ROWS`` rows; otherwise ``W @ X.T`` between two
#: transposes. Measured 2026-11-29 (4096x4096 @10% of the blocks, float32, one thread, CPU
#: time, direct / transposes ms): 32x32 B=1 0.44/1.36, B=64 2.49/4.14, B=256 10.7/16.7;
#: 16x16 B=64 3.13/4.62, B=256 13.8/16.2; 8x8 (half a register) B=1 0.40/1.48, B=8 1.05/1.77,
#: B=64 6.89/4.25, B=256 29.2/16.8.
BLOCK_LINEAR_DIRECT_BYTES = 64
BLOCK_LINEAR_DIRECT_MAX_ROWS = 16
#: The same for ``HSS`` and ``NM`` where the gather kernels run (no AVX-512, or a pattern whose
#: kept slots span more columns than one register). Measured by ``benchmarks/bench_structured.py``
#: (4096x4096 @ 4096x256, 2 shared cores): speedup over dense 1.22-1.51x for 1:8 (0.125), 1.38x
#: for 4:7->1:4 (0.143), 0.9-1.45x for 4:6->1:4 (0.167), 1.16x for 4:5->1:4 (0.2), 0.70-1.17x for
#: 1:4 (0.25), <= 0.6x from 1/3 up; patterns from 1:4 (0.25) up go to BLAS under ``"auto"``.
HSS_DENSE_CROSSOVER = 0.22
#: The same for the lane-select kernels (``flexsparse.kernels.cpu.lanes``). Measured 2026-11-29
#: (``X @ W.T``, W 1024x4096, X 256x4096, float32, one thread, CPU time against OpenBLAS):
#: 3:4->2:4 (0.375) 1.66x, 2:4 (0.5) 1.28x, 5:8 (0.625) 1.05x, 3:4 (0.75) 0.85x, 6:8 0.90x.
HSS_LANES_DENSE_CROSSOVER = 0.6
#: Bytes of the packed weights (values + indices) of one tile pair that the lane-select
#: kernels keep in L2 (1 MiB per core here) while the activations stream past, and the
#: batch blocks (8 rows each) per pass. Measured 2026-11-29 (one thread, CPU time,
#: 4096x4096 weight @ 256 columns): all windows of a K=4096 row in one block (171-512 KiB
#: of weights per pair for 4:6->1:4 .. 2:4) beat 32-128-window blocks by 5-15%; 16 batch
#: blocks beat 8 and 32 by 3-13% (4:6->1:4 23.3 / 23.9 / 26.4 ms, 1:4 31.1 / 33.9 / 35.0 ms).
LANES_L2_BLOCK_BYTES = 512 * 1024
LANES_BATCH_BLOCKS = 16
#: Tiles (``L`` output rows each) per job of the lane-select ``linear`` kernel: the unit a
#: thread takes over from a late one (``partition.take_job``). Even, so 2-tile register
#: blocks pair up. Measured 2026-11-29 (one thread, CPU time, min of 7 interleaved, 4096x4096
#: 1:4 weight; ``W @ X`` N=256 and ``linear`` B=1/8/64/256): 2, 4, 8 and 128 tiles (the
#: last = one job per thread, the old static split) within 3% of each other in every case
#: (B=64: 8.08 / 8.14 / 8.06 / 8.20 ms), so the smallest unit: a late thread's lost time is
#: then at most one job (~60 us at B=64) once it runs.
LANES_CHUNK_TILES = 2
#: Activations ``X [B, K]`` of at least this many bytes are read in place by the lane-select
#: ``linear`` kernel (8 strided rows per register tile) instead of packed per window first.
#: Measured 2026-11-29 (one thread, CPU time; packed vs in place): 4096 rows (6-24 MiB,
#: MiniLM's 384x384, 1536x384, 384x1536 layers) 5.4/4.7, 17.0/16.0, 19.7/12.8 ms for
#: 4:6->1:4 and 6.9/6.3, 22.6/21.9, 21.7/17.4 ms for 1:4; a 4096x4096 weight with 64-256
#: rows (1-4 MiB): within +-1% for 4:6->1:4, 1:4 5-10% slower in place.
LANES_IN_PLACE_BYTES = 5 * 2**20
#: Structured products with fewer multiply-adds than this (stored values x batch rows) run
#: serially. Measured 2026-11-29 (4096x4096 1:4 weight, one activation row: 4.2M MACs, on
#: the shared 2-core machine at load 9-11): 1.5 ms on one thread, 50-85 ms on two -- each
#: wake-up of an OpenMP team under oversubscription waits for a scheduler slice -- while a
#: quiet machine gains at most 2x; below 2**23 MACs a serial run takes at most ~2 ms.
PARALLEL_MIN_MACS = 2**23
#: The block kernels' ``linear`` orientation (``X @ W.T`` and ``dY @ W``) runs serially below
#: this many multiply-adds (stored values x batch rows). A split helps only if the second
#: thread starts at once, and right after a torch op it may not: torch ships its own libgomp
#: (``torch/lib/libgomp.so.1``) beside numba's (``libgomp.so.1.0.0``), so torch's worker can
#: keep spinning on the second core (its runtime starts before ``kernels.cpu`` can ask for
#: passive waiting) while numba's worker, woken for the next region, waits for that core and
#: numba's master waits at the join. Measured 2026-11-29 (block 32x32 @10%
#: of 4096x4096, B=64: 107M MACs, two threads; start and end of each thread's share read with
#: the cycle counter, min / median of 9 at load 3-5): the second thread started 8.2 / 11.9 ms
#: after the call when a ``torch.nn.functional.linear`` ran just before, 0.05-0.1 ms after a
#: NumPy/OpenBLAS product or a 50 ms pause; each share took 1.2-1.4 ms either way. The quiet
#: two-thread benchmark (19:15, load 1.2) gave 7.34 ms at B=64 (one thread: 2.5 ms) and
#: 0.45 ms at B=8 (one thread: 0.27 ms, the plain wake-up cost). 2**27 MACs is ~3 ms on one
#: thread (~43 GMAC/s), where a split saves at most ~1.5 ms: B <= 64 of a 4096x4096 layer
#: with 10% of its blocks stays serial, B=256 (429M, 10 ms -> 5 ms on two threads) does not;
#: there a late thread's rows are taken over by the other (``linear_block_dense``), so the
#: call takes about max(one-thread time, start delay) instead of half plus the delay.
#: The lane-select ``linear`` keeps ``PARALLEL_MIN_MACS``: at a third of the block kernel's
#: rate per MAC its B=8 products take 2-3 ms on one thread and gained on two in the same
#: quiet run (1:4 1.54 ms against 2.15 ms on one thread).
LINEAR_PARALLEL_MIN_MACS = 2**27

# ---------------------------------------------------------------------- sparse x sparse
#: Matrix products (:mod:`flexsparse.kernels.cpu.spgemm`) with fewer multiply-adds than this
#: run on one thread whatever ``threads`` says: a rule of the product's size, never of the
#: machine's momentary load. Measured 2026-11-29 with ``benchmarks/bench_spgemm.py
#: --crossover`` (R-MAT 16/8 row samples, rule off, OMP_WAIT_POLICY=PASSIVE): the process CPU
#: time of the two-thread run over the one-thread run (the counting pass over the first
#: block, the partition and the wake-up are the added work) was 1.34-2.04x for 39K-248K
#: multiply-adds and 1.08-1.25x from 1M up, so an idle machine's two-thread wall time
#: (about half the CPU time) gains nothing up to ~2**18 and ~1.6-1.85x above 2**20 (wall
#: times at load 11-13 only showed descheduling). The same command at load 1.3 (15:53 UTC):
#: two threads over one 0.40x at 39K, 0.99x at 114K, 0.85-1.27x at 161K-472K, 1.36x at 1M,
#: 1.46-1.76x from 1.9M to 30M multiply-adds. An empty parallel region costs 7-10 us
#: (min/median of 2000, 2 threads); one thread does 2**18 multiply-adds in ~0.7 ms.
SPGEMM_PARALLEL_MIN_FLOPS = 2**18

#: The SpGEMM's value accumulator (values plus ``uint32`` stamps, 12 bytes a column at
#: float64) is only a candidate for ``variant="auto"`` while the workspaces of all threads
#: together, ``threads * min(n_cols, flops) * (itemsize + 4)``, fit in this many bytes;
#: beyond it the position map (4 bytes a column) serves alone. Measured 2026-11-30 on this
#: project's VM (32 MiB L3 shared with other guests; min of 4-5 interleaved rounds): 2^20
#: columns (24 MiB on two threads, 12 MiB on one), R-MAT 20 ef 16: value 386-419 ms one
#: thread and 338-430 ms two, position 213-218 and 147-172 ms, the timed choice 168-200 ms
#: on two threads; 2^19 columns (arrow, 12 MiB on two): value 219 / 134 ms, position
#: 151 / 97 ms; 2^18 columns (R-MAT 18 ef 8, 6 MiB on two): value 219-251 / 130-149 ms,
#: position 282-296 / 162-182 ms.
SPGEMM_VALUE_MAX_BYTES = 8 * 2**20

#: The SpGEMM narrows int64 column indices of its operands to int32 (when they fit) for a
#: product of at least this many multiply-adds per stored entry of the two operands; the
#: copy costs one pass over the indices. Measured 2026-11-30 on this project's VM (quiet,
#: min of 4 interleaved rounds, ``spgemm(a, b, sort=False)``): uniform 2^18 x 8 (4.2
#: multiply-adds an entry) int64 205.0 / 116.5 ms on one / two threads, int32 159.3 / 86.0
#: ms; R-MAT and the arrow matrix (hub rows of B in cache) within noise either way.
SPGEMM_NARROW_MIN_FLOPS_PER_ENTRY = 2

#: Two SpGEMM workers take each other's parts (:mod:`flexsparse.kernels.cpu._spgemm_steal`) only
#: for products whose operands and expected result (sampled rows) take at least this many
#: bytes: a stolen part is computed into a reserve past the output's room, whose 2 MiB pages
#: are resident whole once written (up to 4 of them, two arrays a thief). Measured 2026-11-30
#: (``benchmarks/bench_spgemm.py --rss``, fresh processes): pygsp Bunny, 3.8 MB in and 6.6 MB
#: out, grew 17.4-17.6 MB (1.68-1.70x) in the calls that stole a part and 12.9-13.3 MB
#: (1.25-1.28x) in those that did not.
SPGEMM_STEAL_MIN_BYTES = 40 * 2**20

#: Resident bytes of freed SpGEMM output buffers kept for the next product
#: (:mod:`flexsparse.kernels.cpu._pool`; ``flexsparse.free_buffers()`` unmaps them, 0 keeps
#: none): the written part of the suite's largest result (R-MAT 16 ef 8 rows/2, 33M entries:
#: 400 MB) fits. Measured 2026-11-30 on this project's VM (see the module docstring):
#: writing a 19-28M-entry result into fresh memory took 16-50 ms of system time a call, and
#: 137-311 ms in one call in four.
SPGEMM_KEPT_BUFFER_BYTES = 1 << 30

# ---------------------------------------------------------------------- distributed
#: Fraction of a dask worker's memory limit that flexsparse plans to use: dask pauses a worker
#: at 80% of its limit and its nanny restarts it at 95%, so planning for 70% leaves the
#: transient copies of a result being sent (and measurement noise) under the pause threshold.
WORKER_MEMORY_FRACTION = 0.7
#: Resident memory of an idle worker process after importing flexsparse and loading the SpGEMM
#: kernels from numba's cache (measured: 183 MiB RSS on the standard VM, dask 2026.8, numba 0.68,
#: by ``client.run`` of ``psutil.Process().memory_info().rss`` after one small product), rounded up.
WORKER_BASELINE_BYTES = 256 * _MiB
#: A tile's memory over its working-set model (:mod:`flexsparse.tiling.workingset`): the product's
#: buffers plus one copy of the result piece while it is serialised for sending (arithmetic; the
#: oversized R-MAT product of ``benchmarks/bench_distributed.py --only big`` peaked at 0.65x of its
#: 2 GB workers with it, BENCHMARKS.md section 9).
TILE_MEMORY_FACTOR = 2.0
#: Smallest tile budget handed to the strategies (below it, per-task overhead dominates).
DISTRIBUTED_MIN_TILE_BYTES = 4 * _MiB
#: Tile budget when the workers have no memory limit (dask ``memory_limit=0``).
DISTRIBUTED_DEFAULT_TILE_BYTES = 256 * _MiB
#: Tiles per worker thread the row ranges are cut into (beyond what memory needs), so that a
#: slow or lost worker delays at most a share of the product. Each tile is three tasks (product,
#: count, placing) of ~4-5 ms of the calling process's scheduler CPU: on 2 workers, R-MAT scale 15
#: ``A @ A``, 4 per thread (24 tasks) cost 0.14-0.20 s of client CPU per call, 2 per thread
#: (12 tasks) 0.085-0.093 s and 1 (6 tasks) 0.075-0.085 s (2026-11-29, load 7.7, CPU time of
#: the calling process over 6 calls); rows are cut by exact work, so 2 keeps the balance.
TILES_PER_THREAD = 2
#: Most output blocks of a plain CSR product that the workers compute straight into the shared-memory
#: result (:mod:`flexsparse.distributed._direct`: two blocks written toward each other meet without a
#: copy); a cluster of at most this many threads then takes one tile per thread instead of
#: :data:`TILES_PER_THREAD`. One worker, R-MAT scale 15 ``A @ A``: the copy into shared memory it
#: saves was 0.05-0.06 s of the worker's 0.21 s CPU (2026-11-29).
DIRECT_GATHER_MAX_GROUPS = 2
#: B panels of at most this many bytes stay on the workers after a distributed product (the last
#: product's, per client), for the next product with the same panel: hashing 3.2 MB took ~2 ms,
#: scattering it to the workers again 13-19 ms of the calling process (R-MAT scale 15, one worker,
#: load 5, 2026-11-29). Bounds the memory a client leaves on each worker between calls.
DISTRIBUTED_KEEP_PANEL_BYTES = 64 * _MiB
#: Result-file mappings a worker keeps for its next direct tiles (:func:`flexsparse.distributed._direct.mapping`):
#: a kept mapping already holds the pages in its page tables, a fresh one faults each 4 KiB page in
#: (290 MB: 0.145 s against 0.20 s for the product written into it, one thread, 2026-11-29); two cover
#: a result file alternating with another.
DIRECT_KEPT_MAPPINGS = 2
#: Work of the first of two directly computed blocks over the second's for equal multiply-adds: it
#: writes its rows down, so the kernel moves each row once more. R-MAT scale 15 ``A @ A`` cut in
#: two halves of equal work, one thread each: 0.078-0.093 s written down against 0.066-0.073 s
#: written up; with the chunked walk down of the 21:20 kernel 0.073-0.078 s against 0.057-0.062 s
#: (2026-11-29, ``thread_time``, best of 5, load 6-8). Since the walk down moves rows with
#: ``memmove`` (round 6), the factors the two blocks showed on 2 workers (CPU time per unit of
#: work, R-MAT scale 15, 17 calls, 2026-11-30): 0.93-1.55, median 1.02; a prior of 1.25 cut the
#: first calls' rows ~7 % short of balance (the first block 14,714 rows against ~15,700-16,500).
#: After main's one ``dense_workspaces`` for both kernels (round 9): with the cut fixed at 1.15,
#: the first block over the second took 0.96-1.05x the CPU (median 1.00) in 11 calls and
#: 0.98-1.20x (median 1.01) in 11 more, leaving out calls where one block ran ~35 ms slow with
#: no page fault (host noise, either block); at 1.02 the first block was the longer one.
#: After round 10's variant trial (a median of three stretches per accumulator, a new trial every
#: third of a worker's work), the same product measured 0.91-0.95 in 13 calls and 0.80-1.22 (median
#: 0.92) in 16 more, at cuts made with 1.15 and 0.95 (``/proc``-quiet VM, 2026-11-30, round 11).
DIRECT_BACK_WORK_FACTOR = 0.93
#: Bounds of a measured factor that joins :data:`DIRECT_BACK_WORK_FACTOR` for a product
#: run again on the same client (:func:`flexsparse.distributed._direct.back_factor`): walking
#: down measured 1.09-1.41x walking up over the same rows (BENCHMARKS.md section 14); a
#: measurement outside these bounds is noise (a block that waited for memory or a core).
DIRECT_BACK_FACTOR_RANGE = (0.8, 2.0)
#: Shortest block (thread CPU seconds) whose time is folded into the measured factor: below,
#: timer and cache noise is a large share of it.
DIRECT_BACK_MIN_SECONDS = 0.005
#: Page faults above which a direct block's CPU seconds are not folded into the measured factor
#: (:func:`flexsparse.distributed._direct.write_tile`): a block that maps pages it never wrote
#: before (a moved cut, a new result file) spends system time on them, up to 57 ms on top of its
#: ~60 ms of work (22,665 faults), which skewed the next cuts (R-MAT scale 15 ``A @ A`` on 2
#: workers: the second block's first row wandered 12,886-16,236, 2026-11-30). A block writing into
#: pages it mapped before took 240-1,400 faults (its workspaces).
DIRECT_BACK_MAX_FAULTS = 4096
#: Change of the median measured factor below which the next cut keeps the factor the last one
#: used (:func:`flexsparse.distributed._direct.back_factor`): 0.05 moves ~1.2 % of the work between
#: the blocks (~0.7 ms of a 60 ms block), whereas a moved cut makes a block write on pages its worker
#: never mapped: 18,000-22,000 page faults, 30-50 ms, in the call after the first measurement
#: (R-MAT scale 15 ``A @ A`` on 2 workers, ``bench_distributed.py``, 2026-11-30).
DIRECT_BACK_FACTOR_STEP = 0.05
#: Measured factors of one product a client keeps; the next cut takes their median.
DIRECT_BACK_FACTOR_KEPT = 5
#: Measured factors of a product before its cut follows their median (the prior
#: :data:`DIRECT_BACK_WORK_FACTOR` until then). One block's CPU time can triple in one call with
#: no page fault (host noise: 115.9 ms against 31-41 ms, R-MAT scale 15 on 2 workers,
#: 2026-11-30), and the first calls of a product skew the same way more often than not (first
#: block 51 / 56 ms against 39 / 42 for the second in two of its first three calls, 41 / 41 after):
#: with three factors that moved the cut off a balanced prior, and the move cost the next call
#: 14,891 page faults (96 ms against 47-57) and the calls after it 35 / 45 ms blocks (two workers
#: over one 1.53x in that run, 1.71-1.75x in the two before). A move costs a call 30-80 ms of page
#: faults and pays back a few ms a call, so it waits for the median of a full history.
DIRECT_BACK_FACTOR_MIN_SEEN = 5
#: Slots of a direct result file beyond its blocks' multiply-adds, as a fraction of them:
#: the two blocks meet at a slot the client keeps for the product while both blocks still fit on
#: their side of it (:func:`flexsparse.distributed._direct.meeting_slot`), so each worker writes the
#: same pages run after run when a new cut moves a few rows between the blocks (with the meeting
#: slot at the first block's multiply-adds, each move shifted both blocks' pages: 2-12 thousand
#: page faults, up to 37 ms of system time per block, R-MAT scale 15 on 2 workers, 2026-11-30).
#: Address space only: a tmpfs file allocates the pages written.
DIRECT_MEET_SLACK = 0.125
#: dask settings of the embedded ``LocalCluster`` (:func:`flexsparse.distributed.cluster.local_cluster`):
#: no statistical profiler in the workers, no work stealing (every tile is placed on its planned
#: worker), event-loop health ticks every second instead of 20 ms and resource samples every 2 s
#: instead of 0.5 s. On 2 cores both workers' kernels share the machine with these periodic
#: callbacks; with them, R-MAT scale 15 ``A @ A`` on 2 workers cost each worker's event-loop
#: thread 7-15 ms of CPU per call, without them 3.6-5.6 ms, and the kernels were descheduled
#: 21-32 times instead of 25-46 (``/proc`` schedstat over 6 calls, load ~3, 2026-11-30).
#: The active memory manager is off (its only policy drops replicas of keys no task waits for,
#: every 2 s; the B panels a worker keeps are its own single copies) and the memory monitors of
#: the workers and of their nannies (which run on the calling process's event loop, beside the
#: scheduler) sample every 0.5 s instead of 0.1 s: idle CPU of the calling process's event loop
#: 10 -> 7.5 ms a second and of each worker 5-7.5 -> 2.5 ms (2 workers, ``/proc`` thread CPU
#: over 4 s, 2026-11-30; per call within noise).
EMBEDDED_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.work-stealing": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.scheduler.active-memory-manager.start": False,
    "distributed.worker.memory.monitor-interval": "500ms",
}
#: Products (shape and entry counts) whose measured factors a client keeps.
DIRECT_BACK_PRODUCTS_KEPT = 8
#: Polling of direct blocks' end marks in the result file
#: (:func:`flexsparse.distributed._direct.await_marks`): the calling process sleeps through
#: ``DIRECT_POLL_SLEEP_SHARE`` of the longest block's CPU time in the product's last call, then looks every
#: ``DIRECT_POLL_SECONDS`` (a look costs ~5 us of a core the workers share: ~10-40 looks a call
#: of ~45 ms), and past ``DIRECT_POLL_LATE_SHARE`` of that time (a slow call) every sixteenth of
#: the time waited. The scheduler's report of the tasks' ends came 1.0-3.8 ms after the blocks
#: ended (R-MAT scale 15 ``A @ A`` on 2 workers, 2026-11-30).
DIRECT_POLL_SECONDS = 0.0002
DIRECT_POLL_SLEEP_SHARE = 0.8
DIRECT_POLL_LATE_SHARE = 1.5
#: A distributed output block whose estimated work exceeds this multiple of the mean block's (a
#: hub row: row cuts cannot split it) is cut into column sub-panels of about the mean work: with
#: LPT assignment, one block of ``f`` times the mean finishes at least ``f - 1`` mean blocks after
#: the others; 1.5 keeps that tail under half a block (arithmetic, no measurement).
HUB_SPLIT_FACTOR = 1.5
#: Multiply-adds below which one more tile is not worth a task (~1-2 ms of scheduler and
#: transfer overhead per task against ~5 ns per multiply-add).
MIN_TILE_FLOPS = 2_000_000
#: Most tiles one distributed product may have: the dask scheduler spends ~1 ms per task, so
#: 20,000 tasks already cost tens of seconds of scheduling (a ``conservative`` plan of a large
#: sparse product can ask for millions).
MAX_DISTRIBUTED_TILES = 20_000
#: Multiply-adds below which a distributed product runs in the calling process: one distributed
#: call costs a few scheduler round trips (scatter, submit, gather: ~10-20 ms on a quiet
#: 2-core VM, more under load), the time the in-process SpGEMM takes for about this many
#: multiply-adds (~100-150 M/s on one core, ``benchmarks/bench_distributed.py``). PLACEHOLDER
DISTRIBUTED_MIN_FLOPS = 2_000_000
#: Predicted result bytes from which a distributed product's result is gathered in two phases
#: through shared memory (:mod:`flexsparse.distributed._gather`); below, the pieces come back over
#: the network in one round trip. PLACEHOLDER
GATHER_SHM_MIN_BYTES = 4 * _MiB
#: Bytes of shared-memory result files kept for reuse after their results are freed
#: (:mod:`flexsparse.distributed._gather`): the workers then write into existing 4 KiB tmpfs pages,
#: 290 MB in 0.06 s of CPU against 0.13-0.16 s into fresh ones (``pwrite``, standard VM,
#: 2026-11-29); 1 GiB holds a few results of the benchmark's R-MAT size.
GATHER_POOL_BYTES = 1 * _GiB
#: Key-space tables up to this size travel inline with every placing task; larger ones are
#: scattered once to every worker.
GATHER_INLINE_KEY_BYTES = 256 * 1024

# ---------------------------------------------------------------------- class product
#: ``contract._classes``: contracted columns grouped by the rows holding their nonzeros. More
#: classes than this and the operands are not block-structured: the product goes on as
#: before. The plan is O(n^2) in the classes (chemistry vv: 14 classes merged into 4-6 in
#: 0.6-2 ms, remembered per key set); an operand with scattered zeros has about one class per
#: column and stops at the sort.
CLASS_MAX_CLASSES = 64
#: Gathering a class's rows and columns into a GEMM operand, per cell: 0.49-0.55 ns (chemistry
#: vv classes 258x56 in 7.1 us, 352x116 in 22.6 us, one thread, 2-vCPU AMD EPYC Zen 4 guest,
#: 2026-12-02 09:00 UTC).
CLASS_GATHER_CELL_SECONDS = 0.5e-9
#: The Python around one class: its GEMM call on views of the gathered buffers, 2.6 us (the
#: gathers and scatter-adds of all classes are one compiled call each; 2-vCPU AMD EPYC Zen 5
#: guest, 2026-12-02). The chemistry plans are the same for 3 and 8 us (8 us: the per-class
#: calls of round 21, 6-9 us a class on a Zen 4 guest).
CLASS_STEP_SECONDS = 3e-6
#: The classes are taken only when modelled faster than the plain GEMM by this (the plan
#: lookup: its key is the column keys' bytes, 4 us on the Zen 5 guest, 5-8 us on the Zen 4).
CLASS_FIXED_SECONDS = 20e-6
#: Products whose plain GEMM (SYRK for a self-product) is modelled below this keep the
#: zero-tail path: the densify and the key pass cost more than the classes save there
#: (chemistry ``iaQ,jbQ->iajb``, a ~80-110 us SYRK of 96x375: 137-140 us by the classes
#: against 113 us on the Zen 4 guest; 96 against 87 us by the zero-tail path, NumPy 81 us, on
#: the Zen 5 guest with the fused key pass, min of 400 interleaved calls). Above it:
#: ``abQ,cdQ->abcd`` (~1.7 ms: 1406-1790 against 1757-2256 us, NumPy 1655-2148 us, Zen 4) and
#: ``abQ,icQ->abic`` (plain GEMM modelled at 469 us: 344 us by the classes against 377 us by
#: the zero-tail path, NumPy 397 us, Zen 5).
CLASS_MIN_PLAIN_SECONDS = 400e-6

# ---------------------------------------------------------------------- GEMM orientation
#: ``_orient``: the length of each run of a trial: calls of one orientation, then as many of
#: the other, before the one with the lower minimum is kept. Four, so a trial spends at most
#: four calls on the slower side: where the sides differ by 10-38% (the chemistry class GEMMs
#: on the Xeon, Zen 4 and Zen 5 guests) that is well above the spread of a minimum of four
#: calls, whose first call pays the switch of orientation (Zen 4, 576x16x375 kept after swapped
#: calls: 213, 145, 132, 121 us against 118 warm); on the 2-vCPU AMD EPYC Zen 3 guest
#: (2026-12-02) the sides differ by 3-10% and two runs chose differently for the near ties,
#: which then cost at most that difference.
ORIENT_TRIAL_CALLS = 4
#: ``_orient``: the call count of a shape at which its trial is first repeated (then at each
#: doubling). On the Zen 4 guest (2026-12-03) the first trial in a process chose the swapped
#: side for the chemistry GEMM 576x16x375 (minimum 153 against 157 us, both cold, alternating
#: calls), whose warm times are 99-122 kept against 119-135 us swapped; a repeated trial
#: corrects that, at one run of the slower side per doubling.
ORIENT_RECHECK_FIRST = 16
#: Products below this many multiply-adds are not timed (the rule of ``_orient`` decides):
#: under ~5 us a call, where the timer and the look-up are a visible share and the two
#: orientations were within 3-7% (186x16x77, 258x14x56 on the Zen 5 guest).
ORIENT_MIN_MACS = 100_000
#: Shape keys whose orientation ``_orient`` remembers (oldest dropped first).
ORIENT_CACHE_ENTRIES = 256

# ---------------------------------------------------------------------- zero-tail GEMM
#: ``contract._zero_tail``: the time model that decides whether rows with zero tails along
#: the contracted index are split into a main GEMM and tail steps. One GEMM ``[m, k] @ [k, n]``
#: costs ZERO_TAIL_GEMM_CALL_SECONDS + ZERO_TAIL_GEMM_MAC_SECONDS * m n k +
#: ZERO_TAIL_GEMM_PACK_SECONDS * (m + n) k (packing: narrow products run below the FMA peak).
#: Fit to float64 NumPy ``A @ B.T`` on one thread (OPENBLAS_NUM_THREADS=1, min of 300,
#: 2026-11-30 05:35 UTC, load 1.1): 576x96x193 421 us (model 420), 456x31x91 63 us (62),
#: 360x15x91 31 us (31), 576x8x91 32 us (34), 576x96x20 52 us (48), 576x96x375 843 us (866).
ZERO_TAIL_GEMM_MAC_SECONDS = 38e-12
ZERO_TAIL_GEMM_PACK_SECONDS = 0.3e-9
ZERO_TAIL_GEMM_CALL_SECONDS = 2e-6
#: An operand times itself (``X @ X.T``) is a SYRK in BLAS, as for NumPy: ``m^2 k / 2``
#: multiply-adds at ZERO_TAIL_SYRK_MAC_SECONDS each plus ZERO_TAIL_SYRK_PACK_SECONDS * m k. Fit
#: to float64 ``a @ a.T`` on one thread (OPENBLAS_NUM_THREADS=1, min of 60, 2026-11-30 08:47 UTC,
#: load 1.6): 96x375 104 us (model 98), 96x193 56 (50), 360x91 286 (262), 456x91 449 (411),
#: 576x193 1454 (1369), 576x375 2612 (2661).
ZERO_TAIL_SYRK_MAC_SECONDS = 40e-12
ZERO_TAIL_SYRK_PACK_SECONDS = 0.8e-9
#: On ``t`` BLAS threads a step's time (less the call) is divided by ``1 + (t - 1) eff`` with
#: ``eff = min(CAP, SLOPE * log2(macs / BASE_MACS))`` (0 below BASE_MACS). Two-thread speed-ups
#: measured with the fits above (08:47 UTC, quiet wrapper): GEMM 96x96x193 1.63 (model 1.57),
#: 96x96x375 1.70 (1.76), 128x128x375 1.79 (1.85), 576x576x91 1.88 (1.85); SYRK 96x193 and
#: 96x375 1.00 (1.00), 128x375 1.12 (1.00), 200x375 1.23 (1.18), 360x91 1.44 (1.11), 456x91
#: 1.37 (1.25), 576x91 1.45 (1.38), 576x193 1.59 (1.60), 576x375 1.72 (1.70). The SYRK base is
#: set so that the large steps match (the mid-sized ones vary run to run): a self-product that
#: splits on one thread (serial scatter, tails that barely thread) need not on two. Chemistry
#: ``abQ,cdQ->abcd`` on two threads, forced plans in one process (08:58 and 09:13 UTC): plain
#: SYRK 1763 / 2336 us, split [193, 375) 1806 / 2546 us; the model now picks the plain SYRK.
ZERO_TAIL_THREAD_EFF_SLOPE = 0.2
ZERO_TAIL_THREAD_GEMM_BASE_MACS = 0.25e6
ZERO_TAIL_THREAD_GEMM_CAP = 0.85
ZERO_TAIL_THREAD_SYRK_BASE_MACS = 4e6
ZERO_TAIL_THREAD_SYRK_CAP = 0.7
#: Each tail step's product is scatter-added into the output at this cost per cell: 0.65-0.78
#: ns warm (456x31, 360x15 and 456x456 blocks, one thread, 05:58 UTC), rounded up for an
#: output that the GEMMs have pushed out of L1.
ZERO_TAIL_SCATTER_CELL_SECONDS = 1e-9
#: What the split path costs beyond the plain one regardless of the savings: the plan
#: (4-8 us on the chemistry integrals), two more buffers and the Python around the steps;
#: the split is taken only when the model saves more than this.
ZERO_TAIL_FIXED_SECONDS = 15e-6
#: Support lengths within this fraction of a longer one share its level (one step fewer
#: for a few extra zeros multiplied).
ZERO_TAIL_LEVEL_MERGE = 1 / 16
#: Zero-tail plans remembered per exact support lengths (``contract._zero_tail.plan_steps``);
#: each holds a few int64 arrays of the operands' row counts (chemistry: ~15 KB).
ZERO_TAIL_PLAN_CACHE_ENTRIES = 64
