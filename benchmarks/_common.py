"""Shared pieces of the benchmark scripts: timers, matrix loaders, the power-law generator.

Timers (all return seconds, warm: callers run the function once before timing):

* :func:`median_time` -- median of ``repeat`` runs (the tables of BENCHMARKS.md);
* :func:`min_time` -- minimum of ``repeat`` runs (least disturbed by other load);
* :func:`timed` -- ``(median seconds, last result)``;
* :func:`best_pair` -- minimum of two functions run interleaved (ratios under shared load);
* :func:`interleaved_min` -- minimum of each of several functions run in interleaved rounds.

Memory: :func:`peak_rss_growth` -- how far a call raises the process's peak resident set
above what was resident before it (Linux ``/proc``; ``None`` elsewhere).

Loaders (each skips, with a printed message, what is not available, so every script runs on
a fresh clone): :func:`snap_matrices` (``../shared/data/*.mat``, the SuiteSparse copies of
SNAP graphs), :func:`pyamg_matrices` (the examples pyamg ships), :func:`pygsp_matrices` (the
graphs pygsp ships), and :func:`power_law_graph`, a generated graph drawn by
:func:`flexsparse.random` (the package's one power-law generator).
"""

from __future__ import annotations

import math
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np


def _find_data() -> Path:
    """``../shared/data`` beside the repository, also from a worktree one folder deeper."""
    root = Path(__file__).resolve().parents[1]
    for base in (root.parent, root.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return root.parent / "shared" / "data"


#: ``../shared/data`` next to the repository (absent on a fresh clone).
DATA = _find_data()


# ---------------------------------------------------------------------- timers
def _runs(fn: Callable[[], Any], repeat: int, clock: Callable[[], float] = time.perf_counter
          ) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(max(1, int(repeat))):
        t0 = clock()
        out = fn()
        times.append(clock() - t0)
    return times, out


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn``."""
    return statistics.median(_runs(fn, repeat)[0])


def min_time(fn: Callable[[], Any], repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Minimum time of ``repeat`` calls of ``fn`` on ``clock`` (wall time by default;
    ``time.process_time`` gives the CPU time of every thread of the process)."""
    return min(_runs(fn, repeat, clock)[0])


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """``(median wall time, result of the last call)`` of ``repeat`` calls."""
    times, out = _runs(fn, repeat)
    return statistics.median(times), out


def best_pair(fn: Callable[[], Any], other: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Minimum times of ``fn`` and ``other`` over ``repeat`` interleaved rounds (after a warm-up)."""
    fn()
    other()
    tf = to = math.inf
    for _ in range(max(1, int(repeat))):
        tf = min(tf, min_time(fn, 1))
        to = min(to, min_time(other, 1))
    return tf, to


def interleaved_min(fns: dict[str, Callable[[], Any]], repeat: int,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Minimum time on ``clock`` of each function over ``repeat`` rounds; every round runs
    each function once, so slow phases of a shared machine hit all of them alike, in an order
    drawn afresh each round (seeded), so no function always runs right after the same one. A
    call right after another library's pays for what that one leaves behind (caches, its
    threads): pygsp DavidSensorNet500, flexsparse einsum min of 60 back to back 0.578 ms,
    right after SciPy 0.632, after GraphBLAS or MKL 0.711 ms (2026-12-02); a rotation keeps
    the same neighbours and put einsum after MKL in every round."""
    best = dict.fromkeys(fns, math.inf)
    order = list(fns)
    rng = random.Random(0)
    for _ in range(max(1, int(repeat))):
        rng.shuffle(order)
        for name in order:
            best[name] = min(best[name], min_time(fns[name], 1, clock))
    return best


def peak_rss_growth(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """``(fn(), bytes)``: the peak resident set size during ``fn`` minus the resident set
    size before it (:func:`flexsparse._rss.peak_growth`); ``None`` where the peak cannot be
    reset."""
    from flexsparse._rss import peak_growth

    return peak_growth(fn)


def geomean(xs: Iterable[float]) -> float:
    """Geometric mean of the positive values (nan when there is none)."""
    xs = [x for x in xs if x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


# ---------------------------------------------------------------------- matrices
def load_mat(path: Path):
    """The ``Problem.A`` matrix of a SuiteSparse ``.mat`` file as a SciPy CSR array (float64)."""
    import scipy.io
    import scipy.sparse as sp

    return sp.csr_array(scipy.io.loadmat(path)["Problem"][0, 0]["A"]).astype(np.float64)


def snap_matrices(names: Iterable[str] = ("ca-GrQc", "ca-HepTh"), data: Path | None = None) -> dict:
    """``{name: csr_array}`` of the SNAP graphs found in ``data`` (default :data:`DATA`)."""
    data = DATA if data is None else Path(data)
    out = {}
    for name in names:
        path = data / f"{name}.mat"
        if path.exists():
            out[name] = load_mat(path)
        else:
            print(f"[skip] {name}: {path} not found")
    return out


def pyamg_matrices(names: Iterable[str] | None = None) -> dict:
    """``{"pyamg:<name>": csr_array}`` of the examples pyamg ships (all of them by default)."""
    import scipy.sparse as sp

    try:
        import pyamg.gallery as gallery
    except ImportError:
        print("[skip] pyamg not installed (pip install flexsparse[peers])")
        return {}
    if names is None:
        names = sorted(p.stem for p in (Path(gallery.__file__).parent / "example_data").glob("*.mat"))
    out = {}
    for name in names:
        try:
            out[f"pyamg:{name}"] = sp.csr_array(gallery.load_example(name)["A"])
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"[skip] pyamg {name}: {exc}")
    return out


def pygsp_matrices(names: Iterable[str] = ("Minnesota", "Bunny", "Airfoil", "Logo")) -> dict:
    """``{"pygsp:<name><size>": csr_array}`` of the graphs pygsp ships (weight matrices); a
    name ``"Graph:N"`` builds ``Graph(N=N)`` (e.g. ``"DavidSensorNet:500"``)."""
    import logging
    import warnings

    import scipy.sparse as sp

    try:
        logging.getLogger("pygsp").setLevel(logging.ERROR)
        from pygsp import graphs
    except ImportError:
        print("[skip] pygsp not installed (pip install flexsparse[peers])")
        return {}
    out = {}
    for spec in names:
        name, _, size = spec.partition(":")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = getattr(graphs, name)(N=int(size)) if size else getattr(graphs, name)()
            out[f"pygsp:{name}{size}"] = sp.csr_array(g.W)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"[skip] pygsp {spec}: {exc}")
    return out


def power_law_graph(n: int, nnz: int, alpha: float = 0.8, seed: int = 0, symmetric: bool = True,
                    values: str = "random"):
    """A SciPy CSR ``n x n`` power-law graph drawn by ``flexsparse.random(distribution="powerlaw")``.

    ``nnz`` distinct entries are drawn (then mirrored when ``symmetric``, so about ``2 * nnz``);
    row and column popularity follow ``rank ** -alpha``. ``values``: ``"random"`` (uniform in
    (0, 1]) or ``"ones"``.
    """
    import scipy.sparse as sp

    import flexsparse as fs

    g = fs.to_scipy(fs.random((n, n), nnz=nnz, seed=seed, distribution="powerlaw", alpha=alpha), "csr")
    if symmetric:
        g = (g + g.T).tocsr()
        g.sum_duplicates()
    if values == "ones":
        g.data[:] = 1.0
    else:
        g.data[:] = 1.0 - np.random.default_rng(seed + 1).random(g.nnz)
    return sp.csr_array(g)


# ---------------------------------------------------------------------- run context
def machine() -> str:
    """CPU model, core count and memory of this machine (Linux ``/proc``; best effort elsewhere)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}"


def load_average() -> str:
    """The 1/5/15-minute load averages (``uptime``), or ``"n/a"``."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


#: Environment variables that set thread counts, shown in the command line of :func:`run_context`.
_THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def command_line() -> str:
    """This process's command line, led by the thread-count variables set in its environment:
    call it before the script sets any of them itself."""
    env = [f"{v}={os.environ[v]}" for v in _THREAD_VARS if v in os.environ]
    return " ".join(env + [shlex.quote(a) for a in [Path(sys.executable).name] + sys.argv])


def run_context(start_load: str, command: str | None = None) -> str:
    """Markdown lines naming the date, machine, load (at start and now), command and versions:
    printed above every results table so it can be pasted into BENCHMARKS.md as it is."""
    import numba

    cmd = command if command is not None else command_line()
    versions = f"Python {sys.version.split()[0]}, NumPy {np.__version__}, numba {numba.__version__}"
    return (f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
            f"- machine: {machine()}; {versions}\n"
            f"- load average (1/5/15 min): {start_load} at start, {load_average()} at the end\n"
            f"- command: `{cmd}`")
