"""flexsparse.distributed against the in-process engine and dask.array + pydata/sparse (issue #11).

Workloads:
  * ``rmat``  -- R-MAT (a, b, c, d) = (0.57, 0.19, 0.19, 0.05) power-law graph ``A @ A``
    (about 50M multiply-adds at the default scale);
  * ``4d``    -- the 4-D power-law self-contraction ``ijkl,mjkl->im`` of bench_einsum.py;
  * ``big``   -- a product whose output (>= 4 GB in memory as COO) exceeds one worker's
    ``worker_memory``, streamed to ``out=`` (``--big``; minutes and GBs of disk: run it alone);
  * ``processes`` -- no dask: two one-thread processes computing the two halves of the R-MAT
    ``A @ A`` (the direct blocks' kernel) at once against each alone, with B (and the self-product's
    A) in each process's private memory and memory-mapped from one shared file (one physical copy
    in the shared L3): thread CPU time per call, page faults and preemptions (``--only processes``).

Targets (2-core machine): one worker <= 1.3x the in-process engine on one thread; two worker
processes >= 1.6x faster than one; peak RSS of each worker <= 1.1x its memory limit; the big
product completes. Side by side: ``dask.array.tensordot`` on pydata/sparse chunks of the same
inputs (time and peak worker memory; failures recorded as results).

Times are minima over ``--repeat`` warm runs of a call given a running cluster (``client=``):
fresh embedded clusters of 1 and 2 workers (the library's own, with its dask settings), timed in
rounds of one call each of the in-process engine (1 and 2 threads) and both clusters, so that a
shared machine's drift hits every configuration alike; one call that starts its own embedded
cluster is timed separately (start-up). CPU seconds of the calling process (client and scheduler) and of
the workers are taken around the best run: the serial part of a call, robust under load, and
the Amdahl bound of two workers ``(S + P) / (S + P / 2)`` from one worker's figures; the best
run's phases (each task's duration from dask's task stream, and the call's time outside its
longest task). Worker
peak memory is each worker's resident high-water mark (``VmHWM``) after the runs. The last
lines are a markdown table of every target with its ratio. Usage::

    python benchmarks/bench_distributed.py [--scale 15] [--repeat 3] [--worker-memory 3GB] [--big]
                                           [--no-peers] [--no-startup] [--json out.json]
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


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, every thread included."""
    t = os.times()
    return t.user + t.system


def _cpu_faults() -> tuple[float, int]:
    """CPU seconds of this process and its minor page faults so far (a worker's faults show a
    direct block writing into pages it had not mapped before: a new or re-cut result file)."""
    return _cpu_seconds(), int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


#: Pause before each timed call of the interleaved rounds: an OpenBLAS or OpenMP team busy-waits
#: ~0.1 s after its last call (26-27 ms of CPU in the 50 ms after a NumPy GEMM, perf, 2026-11-29).
_SETTLE_SECONDS = 0.25


class _Best:
    """The best of several timed calls of one configuration: wall seconds, the result and report
    of the warm-up call (kept for the equality check: results of timed calls are freed, so every
    call writes into a result file the workers already map), CPU seconds of the calling process
    and of the workers, and phases. CPU time counts work done, whatever else runs on the
    machine, so it shows where the work went even under load. ``phases`` (with ``client``): the
    best run's tasks as ``(worker, start, stop)`` seconds from the call's start (dask's task
    stream) and the call's wall seconds."""

    def __init__(self, fn, worker_cpu=None, client=None, warm=True):
        self.fn, self.worker_cpu, self.client = fn, worker_cpu, client
        self.seconds, self.cpu, self.wcpu, self.phases, self.reports = float("inf"), 0.0, 0.0, None, None
        self.walls: list[float] = []     # every timed call's wall seconds, in order
        self.faults: list[int] = []      # every timed call's minor page faults of the workers (most of one)
        self.blocks: list[str] = []      # every timed call's direct blocks' durations (ms, by group)
        self.result = fn() if warm else None       # warm (compile, kept panels and mappings)

    def run(self, keep=False):
        """One timed call; ``keep``: its result replaces the warm-up's."""
        from contextlib import nullcontext

        stream = nullcontext()
        if self.client is not None:
            from distributed import get_task_stream

            stream = get_task_stream(self.client)
        w0 = self.worker_cpu() if self.worker_cpu else {}
        with stream as ts:
            wall0, c0, t0 = time.time(), _cpu_seconds(), time.perf_counter()
            res = self.fn()
            t, c = time.perf_counter() - t0, _cpu_seconds() - c0
        w1 = self.worker_cpu() if self.worker_cpu else {}
        w = float(sum(w1[k][0] - w0[k][0] for k in w1 if k in w0))
        self.walls.append(t)
        # each direct block's thread CPU ms, in row order (the first is written down; -1: it faulted
        # pages in for the first time): from the report, since the caller releases a direct
        # block's task when its end mark appears, before dask's task stream records its end
        blocks = _block_seconds(res)
        if blocks:
            self.blocks.append("/".join(f"{1e3 * x:.0f}" for x in blocks))
        self.faults.append(max((w1[k][1] - w0[k][1] for k in w1 if k in w0), default=0))
        if keep:
            self.result = res
        if t < self.seconds:
            self.seconds, self.cpu, self.wcpu = t, c, w
            self.reports = res[1] if isinstance(res, tuple) else None    # a distributed call's reports
            if blocks:
                self.phases = ([(None, 0.0, x) for x in blocks], t)
            elif ts is not None:
                self.phases = ([(d["worker"], ss["start"] - wall0, ss["stop"] - wall0) for d in ts.data
                                for ss in d["startstops"] if ss["action"] == "compute"], t)
        # freed here, outside the timed window (a 290 MB shared-memory result takes ~0.1 s to unmap)
        del res


def _block_seconds(res) -> tuple:
    """The direct blocks' thread CPU seconds of a distributed call's ``(result, reports)``."""
    reports = res[1] if isinstance(res, tuple) else None
    return next((r.block_seconds for r in reports or () if getattr(r, "block_seconds", ())), ())


def _min_time(fn, repeat, worker_cpu=None, client=None):
    """``(best wall seconds, result, CPU seconds of the calling process, CPU seconds of the workers,
    phases)`` of ``repeat`` calls (:class:`_Best`; the result is the last call's)."""
    best = _Best(fn, worker_cpu, client, warm=False)
    for i in range(repeat):
        best.run(keep=i == repeat - 1)
    return best.seconds, best.result, best.cpu, best.wcpu, best.phases


def phase_row(phases) -> dict:
    """Where a distributed call's wall time went, in ms: each task's duration on its worker (a
    direct block's thread CPU time) and the call's time outside its longest task (planning,
    dispatch, a later start of one block, the result coming back). Durations only: dask shifts
    each worker's stamps by its estimated clock offset, which put a task's end after the call's
    return by ~10 ms on the 2-core VM."""
    tasks, total = phases
    if not tasks:
        return {}
    durations = sorted((e - s for _, s, e in tasks), reverse=True)
    return {"tasks": "/".join(f"{1e3 * d:.1f}" for d in durations), "total": f"{1e3 * total:.1f}",
            "outside_longest_task": f"{1e3 * (total - durations[0]):.1f}"}


def on_cluster(spec, ops, workers, worker_memory, repeat, out=None):
    """``{seconds, result, peaks, reports, client_cpu, worker_cpu}`` of the best of ``repeat`` warm
    calls on a fresh embedded cluster (:func:`flexsparse.distributed.cluster.local_cluster`: worker
    processes, the library's dask settings) passed in with ``client=`` (what a user running many
    calls on one cluster sees; the scheduler runs in this process, so its CPU time counts as the
    client's). ``peaks``: each worker's resident high-water mark."""
    from distributed import Client

    from flexsparse import distributed as fd
    from flexsparse.distributed.cluster import local_cluster

    # the cluster the library embeds when it is given none (its dask settings included)
    with local_cluster(workers, worker_memory, processes=True, silence_logs=50) as cluster, Client(cluster) as c:
        c.run(lambda: fs.einsum("ij,jk->ik", fs.random((50, 50), 0.1, seed=0), fs.random((50, 50), 0.1, seed=1),
                                memory_limit="1MB"))        # compile the kernels in every worker

        def worker_cpu():
            return c.run(_cpu_faults)

        kwargs = dict(client=c, progress=False, return_report=True)
        if out is not None:
            kwargs["out"] = out
            repeat = 1
        else:
            fd.einsum(spec, *ops, **kwargs)                  # warm
        best, (res, reports), cpu, wcpu, phases = _min_time(lambda: fd.einsum(spec, *ops, **kwargs), repeat,
                                                            worker_cpu, c)
        peaks = sorted(c.run(_peak_rss).values())
    return {"seconds": best, "result": res, "peaks": peaks, "reports": reports, "client_cpu": cpu,
            "worker_cpu": wcpu, "phases": phases}


def interleaved(spec, ops, worker_memory, repeat):
    """The in-process engine on 1 and 2 threads and warm calls on fresh embedded clusters of 1 and
    2 worker processes (:func:`flexsparse.distributed.cluster.local_cluster`, passed in with
    ``client=``), timed in rounds of one call of each: a shared machine's drift then hits every
    configuration alike, and the ratios are taken within the same minutes. Each call waits
    :data:`_SETTLE_SECONDS` first, so that no call pays for the threads of the one before still
    spinning. Both clusters run throughout (the idle one's scheduler ticks are in this process's
    CPU time).

    ``{name: _Best}`` for names ``in1``, ``in2``, ``w1``, ``w2`` and each cluster's worker peaks
    (``{w1: [...], w2: [...]}``: resident high-water marks)."""
    from contextlib import ExitStack

    from distributed import Client

    from flexsparse import distributed as fd
    from flexsparse.distributed.cluster import local_cluster

    runs, clients = {}, {}
    with ExitStack() as stack:
        for th in (1, 2):
            fs.einsum(spec, *ops, threads=th)                    # compile
            runs[f"in{th}"] = _Best(lambda th=th: fs.einsum(spec, *ops, threads=th))
        for w in (1, 2):
            cluster = stack.enter_context(local_cluster(w, worker_memory, processes=True, silence_logs=50))
            c = clients[f"w{w}"] = stack.enter_context(Client(cluster))
            c.run(lambda: fs.einsum("ij,jk->ik", fs.random((50, 50), 0.1, seed=0),
                                    fs.random((50, 50), 0.1, seed=1), memory_limit="1MB"))   # compile
            kwargs = dict(client=c, progress=False, return_report=True)
            runs[f"w{w}"] = _Best(lambda kw=kwargs: fd.einsum(spec, *ops, **kw),
                                  lambda c=c: c.run(_cpu_faults), c)
        # once more each, freed, in the order of the rounds: the kept results hold their files, and
        # the clusters share this process's pool of freed ones, so without this pass the first
        # timed call of one cluster wrote into a file its workers never mapped (71,633 page
        # faults on one worker, 0.55 s)
        for best in runs.values():
            best.fn()
        for _ in range(repeat):
            for best in runs.values():
                # idle threads of the previous call (the in-process engine's OpenMP team, OpenBLAS)
                # spin-wait for a while after it: let them settle so that no call pays for the last
                time.sleep(_SETTLE_SECONDS)
                best.run()
        peaks = {name: sorted(c.run(_peak_rss).values()) for name, c in clients.items()}
        # the factors the two direct blocks showed (first over second, CPU per unit of work) and
        # the one the last cut used (flexsparse.distributed._direct.back_factor)
        c2 = clients["w2"]
        runs["w2"].factors = ([round(f, 3) for fs_ in getattr(c2, "_flexsparse_back_factor", {}).values()
                               for f in fs_],
                              [round(f, 3) for f in getattr(c2, "_flexsparse_back_used", {}).values()])
    return runs, peaks


def embedded_startup(spec, ops, workers, worker_memory):
    """Seconds of one call that starts (and stops) its own embedded cluster, against the same call
    on a running cluster: the difference is the start-up a one-off call pays."""
    from flexsparse import distributed as fd

    t0 = time.perf_counter()
    fd.einsum(spec, *ops, workers=workers, worker_memory=worker_memory, progress=False)
    return time.perf_counter() - t0


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


def run_workload(name, spec, ops, axes, chunks, args, results, table):
    from flexsparse._util import parse_bytes

    wm = parse_bytes(args.worker_memory)
    runs, peaks = interleaved(spec, ops, wm, args.repeat)
    t_in1, ref, cpu_in1 = runs["in1"].seconds, runs["in1"].result, runs["in1"].cpu
    t_in2 = runs["in2"].seconds
    one, two = ({"seconds": b.seconds, "result": b.result[0], "reports": b.reports, "client_cpu": b.cpu,
                 "worker_cpu": b.wcpu, "phases": b.phases, "peaks": peaks[k]} for k, b in
                (("w1", runs["w1"]), ("w2", runs["w2"])))
    t1, t2 = one["seconds"], two["seconds"]
    ok = _same(two["result"], ref) and _same(one["result"], ref)
    rep = [r for r in one["reports"] if getattr(r, "strategy", "local") != "local"]
    tiles = getattr(two["reports"][0], "tiles", None) if two["reports"] else None
    results.append(row(f"{name}: in-process 1 thread / 2 threads", seconds=f"{t_in1:.3f} / {t_in2:.3f}",
                       cpu_1thread=f"{cpu_in1:.3f}"))
    results.append(row(f"{name}: 1 worker / 2 workers", seconds=f"{t1:.3f} / {t2:.3f}",
                       one_worker_over_engine=f"{t1 / t_in1:.2f}", speedup_2w=f"{t1 / t2:.2f}",
                       tiles=tiles, equal=ok, gather=getattr(two["reports"][0], "gather", None)
                       if two["reports"] else None))
    # where the work went: CPU seconds of the calling process (client + scheduler) and of the workers
    s1, p1 = one["client_cpu"], one["worker_cpu"]
    s2, p2 = two["client_cpu"], two["worker_cpu"]
    amdahl = (s1 + p1) / (s1 + p1 / 2) if s1 + p1 > 0 else float("nan")
    results.append(row(f"{name}: CPU s client / workers", one_worker=f"{s1:.3f} / {p1:.3f}",
                       two_workers=f"{s2:.3f} / {p2:.3f}", amdahl_bound_2w=f"{amdahl:.2f}"))
    for label, key in (("1 worker", "w1"), ("2 workers", "w2")):
        walls, faults = runs[key].walls, runs[key].faults
        results.append(row(f"{name}: {label}: every call", ms="/".join(f"{1e3 * x:.0f}" for x in walls),
                           median_ms=f"{1e3 * float(np.median(walls)):.1f}",
                           worker_faults="/".join(str(f) for f in faults),
                           blocks_ms=" ".join(runs[key].blocks)))
    if getattr(runs["w2"], "factors", None):
        kept, used = runs["w2"].factors
        results.append(row(f"{name}: 2 workers: first block's factor", kept=kept, used=used))
    for label, run in (("1 worker", one), ("2 workers", two)):
        if run["phases"] and run["phases"][0]:
            results.append(row(f"{name}: {label}: phases ms", **phase_row(run["phases"])))
    if rep:
        r = rep[0]
        results.append(row(f"{name}: 1 worker: product / planning / gathering",
                           seconds=f"{r.total_seconds:.3f} / {r.plan_seconds:.3f} / {r.assemble_seconds:.3f}",
                           received_mb=f"{r.received_bytes / 2**20:.1f}",
                           shared_mb=f"{getattr(r, 'shared_bytes', 0) / 2**20:.1f}"))
    pk1, pk2 = max(one["peaks"]) / wm, max(two["peaks"]) / wm
    results.append(row(f"{name}: worker peak RSS / limit", one_worker=f"{pk1:.2f}",
                       two_workers=f"{pk2:.2f}", peak_mb=f"{max(one['peaks'] + two['peaks']) / 2**20:.0f}"))
    cpu_ratio = (s1 + p1) / cpu_in1 if cpu_in1 > 0 else float("nan")
    table.append((f"{name}: 1 worker / in-process engine (1 thread)", "<= 1.3x", f"{t1 / t_in1:.2f}x",
                  t1 / t_in1 <= 1.3, f"{t1:.3f} s / {t_in1:.3f} s; CPU client {s1:.2f} s + worker {p1:.2f} s "
                  f"against {cpu_in1:.2f} s in process ({cpu_ratio:.2f}x)"))
    if rep:
        table.append((f"{name}: 2 workers speed-up over 1", ">= 1.6x", f"{t1 / t2:.2f}x", t1 / t2 >= 1.6,
                      f"{t1:.3f} s / {t2:.3f} s; CPU client {s1:.2f} s + workers {p1:.2f} s "
                      f"(Amdahl bound {amdahl:.2f}x)"))
    else:   # below local_flops: the call ran wholly in the calling process, no worker took part
        table.append((f"{name}: 2 workers speed-up over 1", ">= 1.6x", "n/a", None,
                      f"ran in process (below local_flops): {t1:.4f} s / {t2:.4f} s"))
    table.append((f"{name}: worker peak RSS / limit", "<= 1.1", f"{max(pk1, pk2):.2f}", max(pk1, pk2) <= 1.1,
                  f"limit {wm / 2**30:.1f} GiB"))
    table.append((f"{name}: result equals the in-process engine's", "equal", str(ok), ok, ""))
    if args.startup:
        t_emb = embedded_startup(spec, ops, 2, wm)
        results.append(row(f"{name}: one call with an embedded 2-worker cluster", seconds=f"{t_emb:.2f}",
                           startup=f"{t_emb - t2:.2f}"))
    if args.peers:
        secs, peaks, err = dask_pydata(axes, ops[0], ops[1], chunks, wm)
        results.append(row(f"{name}: dask.array + pydata tensordot (2 workers)",
                           seconds=f"{secs:.3f}", peak=f"{max(peaks) / wm:.2f}" if peaks else "n/a",
                           error=err or "none"))
        table.append((f"{name}: dask.array + pydata (2 workers) / flexsparse (2 workers)", "side by side",
                      f"{secs / t2:.1f}x" if not err else "failed", True,
                      f"{secs:.2f} s, peak {max(peaks) / wm:.2f} of limit" if peaks else (err or "")))


def print_table(table):
    """Every target as one markdown row: measured ratio and whether it holds."""
    print("\n| target | goal | measured | holds | detail |\n|---|---|---|---|---|")
    for name, goal, got, holds, detail in table:
        verdict = "n/a" if holds is None else "yes" if holds else "NO"
        print(f"| {name} | {goal} | {got} | {verdict} | {detail} |")


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
    ap.add_argument("--no-startup", dest="startup", action="store_false",
                    help="skip timing one call that starts its own embedded cluster")
    ap.add_argument("--only", choices=["rmat", "4d", "big", "processes"], default=None)
    ap.add_argument("--calls", type=int, default=5, help="processes: calls per setting and round")
    ap.add_argument("--rounds", type=int, default=4, help="processes: interleaved rounds")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  load {os.getloadavg()[0]:.1f}  cores {os.cpu_count()}")
    if args.only == "processes":
        run_processes(args)
        return
    results, table = [], []
    if args.only in (None, "rmat"):
        a = fs.rmat(args.scale, args.edge_factor, seed=0)
        print(f"R-MAT scale {args.scale}: {a.shape[0]:,} vertices, nnz {a.nnz:,}, A @ A flops {flops_of(a):,}")
        n = a.shape[0]
        run_workload("rmat A@A", "ij,jk->ik", [a, a], 1, ((n // 4, n), (n, n // 4)), args, results, table)
    if args.only in (None, "4d"):
        x = fs.random((100, 80, 60, 40), 1e-3, seed=1, distribution="powerlaw")
        run_workload("4-D ijkl,mjkl->im", "ijkl,mjkl->im", [x, x], ([1, 2, 3], [1, 2, 3]),
                     ((25, 80, 60, 40), (25, 80, 60, 40)), args, results, table)
    if args.big or args.only == "big":
        run_big(args, results, table)
    print(f"# load at the end {os.getloadavg()[0]:.1f}")
    print_table(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def run_big(args, results, table):
    """An output larger than a worker's memory, streamed to disk tile by tile."""
    from flexsparse._util import parse_bytes

    a = fs.rmat(args.big_scale, args.big_edge_factor, seed=1)
    print(f"big: R-MAT scale {args.big_scale}, nnz {a.nnz:,}, A @ A flops {flops_of(a):,}", flush=True)
    wm = parse_bytes(args.big_worker_memory)
    tmp = Path(tempfile.mkdtemp(prefix="fs-big-", dir=os.environ.get("TMPDIR", "/tmp")))
    try:
        r = on_cluster("ij,jk->ik", [a, a], 2, wm, 1, out=tmp / "c")
        res, peaks, reports = r["result"], r["peaks"], r["reports"]
        out_bytes = res.nnz * 12
        results.append(row("big A@A streamed to out=", seconds=f"{r['seconds']:.1f}", nnz=f"{res.nnz:,}",
                           output_gb=f"{out_bytes / 1e9:.2f}", worker_limit_gb=f"{wm / 1e9:.2f}",
                           peak_over_limit=f"{max(peaks) / wm:.2f}",
                           cpu_client_workers=f"{r['client_cpu']:.1f} / {r['worker_cpu']:.1f}",
                           tiles=getattr(reports[0], "tiles", None)))
        table.append(("big A@A (output > worker memory) streamed to out=", "completes, peak <= 1.1",
                      f"{max(peaks) / wm:.2f}", max(peaks) / wm <= 1.1,
                      f"{r['seconds']:.1f} s, {out_bytes / 1e9:.2f} GB out, limit {wm / 1e9:.1f} GB"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _half_worker(half, shared, folder, cut, flops, n, todo, done, barrier):
    """One process of :func:`run_processes`: rows ``cut[half]`` of ``A @ A`` (A = B read from
    ``folder``: memory-mapped when ``shared``, else copied into private memory) on one thread into a
    private output, once per call asked for on ``todo``; per call (thread CPU s, minor faults,
    involuntary context switches) go to ``done``."""
    from flexsparse.distributed._direct import spgemm_into
    from flexsparse.formats.csr import CSR

    arrays = []
    for name, dt in (("indptr", np.int64), ("indices", np.int32), ("data", np.float64)):
        mm = np.memmap(os.path.join(folder, name), dtype=dt, mode="r+")   # r+: the kernel's compiled types
        arrays.append(mm if shared else np.array(mm))
    b = CSR._trusted(*arrays, (n, n), True)
    r0, r1 = cut[half]
    lo, hi = int(b.indptr[r0]), int(b.indptr[r1])
    a = CSR._trusted(np.ascontiguousarray(b.indptr[r0:r1 + 1] - lo), b.indices[lo:hi], b.data[lo:hi],
                     (r1 - r0, n), True)
    room = flops[half] + 16
    indptr, indices, data = np.zeros(r1 - r0 + 1, np.int64), np.zeros(room, np.int32), np.zeros(room)
    spgemm_into(a, b, indptr, indices, data, 0, False, room, False)     # compiled, output faulted in
    while (job := todo.get()) is not None:
        together, calls = job
        got = []
        for _ in range(calls):
            if together:
                barrier.wait()
            else:
                time.sleep(0.05)
            r0_ = resource.getrusage(resource.RUSAGE_THREAD)
            t0 = time.thread_time()
            spgemm_into(a, b, indptr, indices, data, 0, False, room, False, prefault=lambda lo, hi: None)
            t1 = time.thread_time()
            r1_ = resource.getrusage(resource.RUSAGE_THREAD)
            got.append((t1 - t0, r1_.ru_minflt - r0_.ru_minflt, r1_.ru_nivcsw - r0_.ru_nivcsw))
        done.put((half, got))


def run_processes(args):
    """Two one-thread processes on the halves of the R-MAT ``A @ A`` (cut at half its
    multiply-adds), at once and each alone, B private to each process or mapped from one file in
    /dev/shm; settings interleaved in rounds. Prints each setting's thread CPU per call (min and
    median), faults and preemptions per call, and the together / alone ratio of the medians."""
    import multiprocessing as mp
    import statistics

    from flexsparse.kernels.cpu.spgemm import count_flops, dense_workspaces

    a = fs.rmat(args.scale, args.edge_factor, seed=0).to_csr()
    rows, total = count_flops(a, a, threads=1)
    csum = np.concatenate([[0], np.cumsum(rows)])
    n = a.shape[0]
    mid = int(np.searchsorted(csum, total / 2))
    cut, flops = [(0, mid), (mid, n)], [int(csum[mid]), int(total - csum[mid])]
    _, tag, marker, acc, _ = dense_workspaces(1, n, flops[0], 0, np.dtype(np.float64))
    ws = tag.nbytes + marker.nbytes + acc.nbytes
    print(f"R-MAT scale {args.scale}: A @ A {total:,} multiply-adds, halves {flops}; B {a.nbytes / 2**20:.1f} MiB "
          f"(a self-product: A's rows are B's); one thread's dense workspaces {ws / 2**10:.0f} KiB")
    folder = tempfile.mkdtemp(prefix="fs-processes-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ctx = mp.get_context("spawn")
    sets, old = {}, os.environ.get("NUMBA_NUM_THREADS")
    os.environ["NUMBA_NUM_THREADS"] = "1"
    try:
        for name in ("indptr", "indices", "data"):
            getattr(a, name).tofile(os.path.join(folder, name))
        for shared in (False, True):
            barrier, todo, done = ctx.Barrier(2), [ctx.Queue(), ctx.Queue()], ctx.Queue()
            procs = [ctx.Process(target=_half_worker, args=(h, shared, folder, cut, flops, n, todo[h], done, barrier))
                     for h in (0, 1)]
            for p in procs:
                p.start()
            sets[shared] = (procs, todo, done, barrier)
        res: dict = {}
        for r in range(args.rounds):
            for shared in ((False, True) if r % 2 == 0 else (True, False)):
                _, todo, done, _ = sets[shared]
                for h in (0, 1):
                    todo[h].put((False, args.calls))
                    res.setdefault((shared, "alone", h), []).extend(done.get()[1])
                for h in (0, 1):
                    todo[h].put((True, args.calls))
                for _ in (0, 1):
                    h, got = done.get()
                    res.setdefault((shared, "together", h), []).extend(got)
    finally:
        for procs, todo, _, _ in sets.values():
            for q in todo:
                q.put(None)
            for p in procs:
                p.join(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
        if old is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = old
    print("| B | setting | half | CPU ms min / median | minor faults / call | preempted / call |")
    print("|---|---|---|---|---|---|")
    for key in sorted(res):
        cpu = [x[0] * 1e3 for x in res[key]]
        print(f"| {'shared' if key[0] else 'private'} | {key[1]} | {key[2]} | {min(cpu):.1f} / "
              f"{statistics.median(cpu):.1f} | {statistics.mean(x[1] for x in res[key]):.0f} | "
              f"{statistics.mean(x[2] for x in res[key]):.1f} |")
    for shared in (False, True):
        ratios = [statistics.median(x[0] for x in res[(shared, "together", h)])
                  / statistics.median(x[0] for x in res[(shared, "alone", h)]) for h in (0, 1)]
        print(f"B {'shared' if shared else 'private'}: together / alone (median CPU) "
              + " / ".join(f"{x:.3f}" for x in ratios))


if __name__ == "__main__":
    main()
