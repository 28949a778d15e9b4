"""flexsparse.distributed against the in-process engine and dask.array + pydata/sparse (issue #11).

Workloads:
  * ``rmat``  -- R-MAT (a, b, c, d) = (0.57, 0.19, 0.19, 0.05) power-law graph ``A @ A``
    (about 50M multiply-adds at the default scale);
  * ``4d``    -- the 4-D power-law self-contraction ``ijkl,mjkl->im`` of bench_einsum.py;
  * ``big``   -- a product whose output (>= 4 GB in memory as COO) exceeds one worker's
    ``worker_memory``, streamed to ``out=`` (``--big``; minutes and GBs of disk: run it alone).

Targets (2-core machine): one worker <= 1.3x the in-process engine on one thread; two worker
processes >= 1.6x faster than one; peak RSS of each worker <= 1.1x its memory limit; the big
product completes. Side by side: ``dask.array.tensordot`` on pydata/sparse chunks of the same
inputs (time and peak worker memory; failures recorded as results).

Times are minima over ``--repeat`` warm runs; every cluster is fresh per configuration, worker
peak memory is the process high-water mark (``ru_maxrss``) read from each worker after the run.
Usage::

    python benchmarks/bench_distributed.py [--scale 15] [--repeat 3] [--worker-memory 3GB] [--big]
                                           [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import flexsparse as fs

sys.path.insert(0, str(Path(__file__).resolve().parent))


def rmat(scale: int, edge_factor: int = 8, seed: int = 0, probs=(0.57, 0.19, 0.19, 0.05)):
    """An R-MAT graph of ``2**scale`` vertices and ``edge_factor * 2**scale`` edge draws (duplicates
    summed), as a flexsparse COO with values in (0, 1]. Vectorised: one quadrant choice per bit."""
    rng = np.random.default_rng(seed)
    n_edges = edge_factor << scale
    rows = np.zeros(n_edges, dtype=np.int64)
    cols = np.zeros(n_edges, dtype=np.int64)
    cum = np.cumsum(probs)
    for bit in range(scale):
        q = np.searchsorted(cum, rng.random(n_edges), side="right")
        rows |= ((q >= 2).astype(np.int64)) << bit
        cols |= ((q % 2).astype(np.int64)) << bit
    perm = rng.permutation(1 << scale)          # break the locality of the recursive quadrants
    vals = 1.0 - rng.random(n_edges)
    return fs.COO(np.vstack([perm[rows], perm[cols]]), vals, (1 << scale, 1 << scale)).sum_duplicates()


def flops_of(a) -> int:
    csr = fs.to_scipy(a, "csr")
    return int(np.bincount(csr.indices, minlength=csr.shape[0]) @ np.diff(csr.indptr))


def _peak_rss() -> int:
    """This process's resident high-water mark (``VmHWM``: reset at exec, unlike ``ru_maxrss``,
    which a spawned worker inherits from the large benchmark process that started it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _min_time(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def in_process(spec, ops, threads, repeat):
    fs.einsum(spec, *ops, threads=threads)           # warm (compile)
    return _min_time(lambda: fs.einsum(spec, *ops, threads=threads), repeat)


def on_cluster(spec, ops, workers, worker_memory, repeat, out=None):
    """(best seconds, result, peak RSS of each worker, reports) on a fresh LocalCluster of processes."""
    from distributed import Client, LocalCluster

    from flexsparse import distributed as fd

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=worker_memory,
                      dashboard_address=":0", silence_logs=50) as cluster, Client(cluster) as c:
        c.run(lambda: fs.einsum("ij,jk->ik", fs.random((50, 50), 0.1, seed=0), fs.random((50, 50), 0.1, seed=1),
                                memory_limit="1MB"))        # compile the kernels in every worker
        kwargs = dict(client=c, progress=False, return_report=True)
        if out is not None:
            kwargs["out"] = out
            t0 = time.perf_counter()
            res, reports = fd.einsum(spec, *ops, **kwargs)
            best = time.perf_counter() - t0
        else:
            fd.einsum(spec, *ops, **kwargs)                  # warm
            best, (res, reports) = _min_time(lambda: fd.einsum(spec, *ops, **kwargs), repeat)
        peaks = sorted(c.run(_peak_rss).values())
    return best, res, peaks, reports


def dask_pydata(spec_axes, a, b, chunks, worker_memory, workers=2):
    """``da.tensordot`` of pydata/sparse chunks on a fresh cluster: (seconds, peaks, error or None)."""
    import dask.array as da
    import sparse
    from distributed import Client, LocalCluster

    pa = sparse.COO(a.coords, a.data, shape=a.shape)
    pb = sparse.COO(b.coords, b.data, shape=b.shape)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=worker_memory,
                      dashboard_address=":0", silence_logs=50) as cluster, Client(cluster) as c:
        da_a = da.from_array(pa, chunks=chunks[0], asarray=False)
        da_b = da.from_array(pb, chunks=chunks[1], asarray=False)
        t0 = time.perf_counter()
        err = None
        try:
            res = c.compute(da.tensordot(da_a, da_b, axes=spec_axes)).result(timeout=900)
            _ = res.nnz
        except Exception as exc:  # noqa: BLE001 - recorded as a result
            err = f"{type(exc).__name__}: {str(exc)[:200]}"
        secs = time.perf_counter() - t0
        try:
            peaks = sorted(c.run(_peak_rss).values())
        except Exception:  # noqa: BLE001
            peaks = []
    return secs, peaks, err


def _same(x, y) -> bool:
    """Equal results: the same entries (sparse, compared as canonical COO) or the same array."""
    if hasattr(x, "to_coo") and hasattr(y, "to_coo"):
        x, y = x.to_coo().sum_duplicates().eliminate_zeros(), y.to_coo().sum_duplicates().eliminate_zeros()
        return x.shape == y.shape and np.array_equal(x.coords, y.coords) and np.allclose(x.data, y.data, rtol=1e-9)
    return np.allclose(np.asarray(x), np.asarray(y), rtol=1e-9)


def row(name, **kw):
    print(f"{name:<44} " + "  ".join(f"{k}={v}" for k, v in kw.items()), flush=True)
    return {"name": name, **kw}


def run_workload(name, spec, ops, axes, chunks, args, results):
    from flexsparse._util import parse_bytes

    wm = parse_bytes(args.worker_memory)
    t_in1, ref = in_process(spec, ops, 1, args.repeat)
    t_in2, _ = in_process(spec, ops, 2, args.repeat)
    t1, r1, p1, rep1 = on_cluster(spec, ops, 1, wm, args.repeat)
    t2, r2, p2, rep2 = on_cluster(spec, ops, 2, wm, args.repeat)
    ok = _same(r2, ref)
    tiles = getattr(rep2[0], "tiles", None) if rep2 else None
    results.append(row(f"{name}: in-process 1 thread / 2 threads", seconds=f"{t_in1:.3f} / {t_in2:.3f}"))
    results.append(row(f"{name}: 1 worker / 2 workers", seconds=f"{t1:.3f} / {t2:.3f}",
                       one_worker_over_engine=f"{t1 / t_in1:.2f}", speedup_2w=f"{t1 / t2:.2f}",
                       tiles=tiles, equal=ok))
    if rep1 and hasattr(rep1[0], "received_bytes"):
        r = rep1[0]
        results.append(row(f"{name}: 1 worker: product / gathered / assembly",
                           seconds=f"{r.total_seconds:.3f}", received_mb=f"{r.received_bytes / 2**20:.0f}",
                           assembly=f"{r.assemble_seconds:.3f}", planning=f"{r.plan_seconds:.3f}"))
    results.append(row(f"{name}: worker peak RSS / limit", one_worker=f"{max(p1) / wm:.2f}",
                       two_workers=f"{max(p2) / wm:.2f}", peak_mb=f"{max(p1 + p2) / 2**20:.0f}"))
    if args.peers:
        secs, peaks, err = dask_pydata(axes, ops[0], ops[1], chunks, wm)
        results.append(row(f"{name}: dask.array + pydata tensordot (2 workers)",
                           seconds=f"{secs:.3f}", peak=f"{max(peaks) / wm:.2f}" if peaks else "n/a",
                           error=err or "none"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=15, help="R-MAT scale (2**scale vertices)")
    ap.add_argument("--edge-factor", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker-memory", default="3GB")
    ap.add_argument("--big", action="store_true", help="also run the oversized product streamed to out=")
    ap.add_argument("--big-scale", type=int, default=17)
    ap.add_argument("--big-edge-factor", type=int, default=13)
    ap.add_argument("--big-worker-memory", default="2GB")
    ap.add_argument("--no-peers", dest="peers", action="store_false")
    ap.add_argument("--only", choices=["rmat", "4d", "big"], default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  load {os.getloadavg()[0]:.1f}  cores {os.cpu_count()}")
    results = []
    if args.only in (None, "rmat"):
        a = rmat(args.scale, args.edge_factor)
        print(f"R-MAT scale {args.scale}: {a.shape[0]:,} vertices, nnz {a.nnz:,}, A @ A flops {flops_of(a):,}")
        n = a.shape[0]
        run_workload("rmat A@A", "ij,jk->ik", [a, a], 1, ((n // 4, n), (n, n // 4)), args, results)
    if args.only in (None, "4d"):
        x = fs.random((100, 80, 60, 40), 1e-3, seed=1, distribution="powerlaw")
        run_workload("4-D ijkl,mjkl->im", "ijkl,mjkl->im", [x, x], ([1, 2, 3], [1, 2, 3]),
                     ((25, 80, 60, 40), (25, 80, 60, 40)), args, results)
    if args.big or args.only == "big":
        run_big(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def run_big(args, results):
    """An output larger than a worker's memory, streamed to disk tile by tile."""
    from flexsparse._util import parse_bytes

    a = rmat(args.big_scale, args.big_edge_factor, seed=1)
    print(f"big: R-MAT scale {args.big_scale}, nnz {a.nnz:,}, A @ A flops {flops_of(a):,}", flush=True)
    wm = parse_bytes(args.big_worker_memory)
    tmp = Path(tempfile.mkdtemp(prefix="fs-big-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        t, res, peaks, reports = on_cluster("ij,jk->ik", [a, a], 2, wm, 1, out=tmp / "c")
        out_bytes = res.nnz * 12
        results.append(row("big A@A streamed to out=", seconds=f"{t:.1f}", nnz=f"{res.nnz:,}",
                           output_gb=f"{out_bytes / 1e9:.2f}", worker_limit_gb=f"{wm / 1e9:.2f}",
                           peak_over_limit=f"{max(peaks) / wm:.2f}",
                           tiles=getattr(reports[0], "tiles", None)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
