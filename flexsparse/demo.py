"""``flexsparse demo``: real contractions on shipped or generated data, next to every peer.

Workloads (each checked against a dense NumPy oracle when that fits in memory, else, for the
matrix products, against SciPy's product):

* SpGEMM ``ij,jk->ik`` on real matrices that small PyPI packages ship (pyamg's finite-element
  examples, pygsp's Minnesota road graph) when installed, else a generated power-law graph;
* SpGEMM on a generated R-MAT (Graph500) graph of ``2**18`` rows, edge factor 8 (``2**12`` in
  ``--quick`` mode): every ``k``-th row times the whole graph, ``k`` the smallest power of two
  that keeps the product within :data:`flexsparse._limits.DEMO_RMAT_MAX_FLOPS` multiply-adds
  (the full square would be ~6 GB per result);
* FROSTT-style self-contractions ``X x X`` of a generated power-law 4-D tensor over 1 and 3 modes;
* a FLAASH-style tensor contraction layer: sparse activations ``(batch, 7, 7, 512)`` at 2%
  density contracted with a dense weight core;
* a quantum-chemistry contraction ``abQ,ijQ->abij`` on dense-ish (53-76%) generated tensors
  shaped like the published vv/oo integrals.

No workload is dropped for its result: every one runs, whoever wins it.

Peers, each timed when installed: NumPy (``einsum(optimize=True)`` on dense copies), SciPy
(``A @ A``), python-graphblas (SuiteSparse:GraphBLAS ``mxm``) and sparse_dot_mkl (MKL) for
the matrix products, pydata/sparse ``tensordot`` (its ``einsum`` takes minutes on these
sizes). flexsparse, GraphBLAS and MKL run on the same thread count (numba's, 2 on the
project's VM; :mod:`flexsparse._peers` loads and threads the peers); SciPy and pydata have
no thread option and run on one, NumPy on its BLAS's default.

Timing, the same for every column: each callable runs once to warm up (flexsparse's first
call, which compiles or loads the numba cache, is reported apart), then rounds call every
column once each, in a fresh (seeded) order per round, and a cell shows the minimum over
the rounds: ``repeat`` rounds, or more until the row's rounds took :data:`ROW_MIN_SECONDS`
(full runs only), so that fast rows get many chances to run undisturbed. Converting the
inputs into each library's own format (SciPy CSR, GraphBLAS matrices, pydata COO, dense
NumPy arrays, flexsparse COO) happens once, before timing, for every library; each library
returns its own result type, and producing it is timed. The fastest cell of each row is
marked (bold, ``*``), and the last columns give flexsparse's time over the best peer's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexsparse import _limits

__all__ = ["Workload", "workloads", "run_demo", "time_call", "time_interleaved", "best_marks",
           "render_table"]

#: Column name of flexsparse in the timing tables.
FLEXSPARSE = "flexsparse"
#: A full run keeps interleaving timing rounds of a row until they have taken this long
#: (up to 1000 rounds); the rows of sub-millisecond products then get hundreds of rounds.
ROW_MIN_SECONDS = 1.0
#: Column order of the peers in the table (others follow, sorted).
PEER_ORDER = ("NumPy", "SciPy", "GraphBLAS", "MKL", "pydata")
#: Marker appended to the fastest cell of a row (also styled bold green).
BEST_MARK = " *"


@dataclass
class Workload:
    """One demo contraction: a spec, its operands and the peers that can run it.

    ``matrix`` holds the SciPy CSR operand of a self-product ``A @ A`` (or ``matrix @ rhs``
    when ``rhs`` is given): the SpGEMM peers run on it.
    """

    name: str
    spec: str
    operands: list[Any]
    source: str
    peers: dict[str, Callable[[], Any]] = field(default_factory=dict)
    check_dense: bool = True
    matrix: Any = None
    rhs: Any = None


def time_call(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Minimum wall time of ``repeat`` calls (seconds) and the last result."""
    best, out = math.inf, None
    for _ in range(max(1, int(repeat))):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def time_interleaved(fns: dict[str, Callable[[], Any]], repeat: int, min_seconds: float = 0.0,
                     max_rounds: int = 1000) -> dict[str, float]:
    """Minimum wall time (seconds) of each function over interleaved rounds.

    Each round calls every function once, in a fresh order (a seeded shuffle, so runs are
    repeatable): no function always runs right after the same neighbour, whose idle threads
    or evicted caches it would otherwise always inherit. At least ``repeat`` rounds run, and
    more (up to ``max_rounds``) until the rounds have taken ``min_seconds``: a row of
    sub-millisecond calls gets hundreds of chances to run undisturbed on a busy machine,
    a row of slow calls just ``repeat``. Callers warm the functions up first. Results are
    dropped as soon as they are returned.
    """
    names = list(fns)
    best = dict.fromkeys(names, math.inf)
    rng = np.random.default_rng(0)
    t_start = time.perf_counter()
    rounds = 0
    while rounds < max(1, int(repeat)) or (time.perf_counter() - t_start < min_seconds and rounds < max_rounds):
        rounds += 1
        for i in rng.permutation(len(names)):
            name = names[i]
            t0 = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def best_marks(times: dict[str, float | None]) -> dict[str, Any]:
    """The fastest column of one row and flexsparse's time over the best peer's.

    ``times`` maps column names (``"flexsparse"`` and the peers) to seconds, ``None`` for a
    peer that did not run. Returns ``{"best": [names at the minimum time], "best_peer": name
    or None, "ratio": flexsparse / best peer time or None}``.
    """
    ran = {k: v for k, v in times.items() if v is not None and math.isfinite(v)}
    if not ran:
        return {"best": [], "best_peer": None, "ratio": None}
    t_min = min(ran.values())
    peers = {k: v for k, v in ran.items() if k != FLEXSPARSE}
    best_peer = min(peers, key=peers.__getitem__) if peers else None
    ratio = None
    if best_peer is not None and FLEXSPARSE in ran and peers[best_peer] > 0:
        ratio = ran[FLEXSPARSE] / peers[best_peer]
    return {"best": [k for k, v in ran.items() if v == t_min], "best_peer": best_peer, "ratio": ratio}


def _row_stride(a, b, max_flops: int) -> tuple[int, int]:
    """Smallest power of two ``k`` with ``flops(a[::k] @ b) <= max_flops``, and those flops."""
    row_len_b = np.diff(b.indptr)
    cum = np.concatenate(([0], np.cumsum(row_len_b[a.indices], dtype=np.int64)))
    row_flops = cum[a.indptr[1:]] - cum[a.indptr[:-1]]
    k = 1
    while row_flops[::k].sum() > max_flops and k < a.shape[0]:
        k *= 2
    return k, int(row_flops[::k].sum())


def _rmat_workload(quick: bool, seed: int) -> Workload:
    import scipy.sparse as sp

    import flexsparse as fs

    scale, ef = (12, 8) if quick else (18, 8)
    g = fs.to_scipy(fs.rmat(scale, ef, seed=seed), "csr")
    k, flops = _row_stride(g, g, _limits.DEMO_RMAT_MAX_FLOPS)
    lhs = sp.csr_array(g[::k]) if k > 1 else g
    rows = f"every {k}th row @ A" if k > 1 else "A @ A"
    label = f"SpGEMM R-MAT 2^{scale} ef{ef}, {rows} ({flops / 1e6:.1f}M madds)"
    if quick:
        label += " [quick: full run 2^18]"
    ops = [fs.from_scipy(lhs), fs.from_scipy(g)]
    return Workload(label, "ij,jk->ik", ops, "generated R-MAT (Graph500 a,b,c=.57,.19,.19)",
                    check_dense=False, matrix=lhs, rhs=g)


def _real_matrices(quick: bool) -> list[tuple[str, Any, str]]:
    """Real sparse matrices shipped inside installed PyPI packages (pyamg, pygsp)."""
    import scipy.sparse as sp

    found = []
    try:
        import warnings

        import pyamg.gallery

        warnings.filterwarnings("ignore", category=FutureWarning, module="scipy.sparse")
        names = ["airfoil"] if quick else ["airfoil", "knot", "recirc_flow"]
        for name in names:
            try:
                A = sp.csr_array(pyamg.gallery.load_example(name)["A"])
            except Exception:  # noqa: BLE001 - a missing example is not fatal for the demo
                continue
            found.append((f"pyamg {name}", A, "pyamg (shipped FE matrix)"))
    except ImportError:
        pass
    if not quick:
        try:
            import logging

            from pygsp import graphs

            logging.getLogger("pygsp").setLevel(logging.ERROR)
            G = graphs.Minnesota()
            found.append(("pygsp Minnesota", sp.csr_array(G.W), "pygsp (shipped road graph)"))
        except Exception:  # noqa: BLE001 - pygsp missing or its data unreadable
            pass
    return found


def workloads(quick: bool = False, seed: int = 0) -> list[Workload]:
    """Build the demo workloads (data generated with a fixed seed)."""
    import flexsparse as fs

    out: list[Workload] = []
    mats = _real_matrices(quick)
    if not mats:
        g = fs.random((3000, 3000), 2e-3, seed=seed, distribution="powerlaw")
        mats = [("power-law graph", fs.to_scipy(g, format="csr"), "generated")]
    for name, A, src in mats:
        A = A.astype(np.float64)
        coo = fs.from_scipy(A)
        out.append(Workload(f"SpGEMM {name} {A.shape[0]}x{A.shape[1]}", "ij,jk->ik", [coo, coo], src, matrix=A))
    out.append(_rmat_workload(quick, seed))
    shape = (120, 90, 60, 40) if quick else (300, 200, 150, 60)
    X = fs.random(shape, 1e-4 if not quick else 1e-3, seed=seed, distribution="powerlaw")
    dims = "x".join(map(str, shape))
    out.append(Workload(f"FROSTT-like {dims} X x X, modes 1,2,3", "ijkl,mjkl->im", [X, X],
                        "generated power-law 4-D"))
    out.append(Workload(f"FROSTT-like {dims} X x X, modes 2,3", "ijkl,mnkl->ijmn", [X, X],
                        "generated power-law 4-D"))
    batch = 16 if quick else 64
    act = fs.random((batch, 7, 7, 512), 0.02, seed=seed + 1)
    rng = np.random.default_rng(seed)
    core = rng.standard_normal((7, 7, 512, 64))
    out.append(Workload(f"FLAASH TCL ({batch},7,7,512) 2% x (7,7,512,64)", "bxyc,xyco->bo", [act, core],
                        "generated"))
    nv, no, nq = (12, 4, 100) if quick else (24, 4, 375)
    vv = fs.random((nv, nv, nq), 0.76, seed=seed + 2).todense()
    oo = fs.random((no, no, nq), 0.53, seed=seed + 3).todense()
    out.append(Workload(f"chemistry abQ,ijQ->abij ({nv},{nv},{nq})x({no},{no},{nq})", "abQ,ijQ->abij", [vv, oo],
                        "generated, shaped like TEvv/TEoo (76%/53% dense)"))
    return out


#: The NumPy peer (and the correctness check) densifies operands and output; skip it above this.
_DENSE_PEER_BYTES = _limits.DEMO_DENSE_PEER_MAX_BYTES


def _dense_bytes(wl: Workload) -> int:
    sizes = {}
    for term, op in zip(wl.spec.split("->")[0].split(","), wl.operands):
        sizes.update(zip(term, op.shape))
    out = math.prod(sizes[c] for c in wl.spec.split("->")[1])
    return 8 * max([out] + [math.prod(op.shape) for op in wl.operands])


def _add_peers(wl: Workload, peer_info: dict[str, Any]) -> None:
    """Attach every available peer's callable, its inputs already in the peer's own format."""
    from flexsparse import _peers

    if wl.check_dense and _dense_bytes(wl) <= _DENSE_PEER_BYTES:
        dense_ops = [op.todense() if hasattr(op, "todense") and not isinstance(op, np.ndarray) else op
                     for op in wl.operands]
        wl.peers.setdefault("NumPy", lambda: np.einsum(wl.spec, *dense_ops, optimize=True))
    if wl.matrix is not None:
        rhs = wl.matrix if wl.rhs is None else wl.rhs
        for name, fn in _peers.spgemm_peers(wl.matrix, rhs, peer_info).items():
            wl.peers.setdefault(name, fn)
    try:
        import sparse  # pydata/sparse

        lhs, rhs = wl.spec.split("->")[0].split(",")
        ops = [sparse.COO(op.coords, op.data, shape=op.shape) if hasattr(op, "coords") else op
               for op in wl.operands]
        common = [c for c in lhs if c in rhs]
        axes = ([lhs.index(c) for c in common], [rhs.index(c) for c in common])
        if all(c in wl.spec.split("->")[1] for c in lhs + rhs if c not in common):
            wl.peers.setdefault("pydata", lambda: sparse.tensordot(ops[0], ops[1], axes=axes))
    except ImportError:
        pass


def _as_dense(res: Any) -> np.ndarray:
    return res.todense() if hasattr(res, "todense") else np.asarray(res)


def _agrees_with_scipy(res: Any, ref: Any) -> bool:
    """flexsparse's product against SciPy's, entry by entry (relative to the row magnitudes)."""
    import scipy.sparse as sp

    import flexsparse as fs

    got = sp.csr_array(fs.to_scipy(res) if not isinstance(res, np.ndarray) else res)
    diff = abs(got - sp.csr_array(ref))
    scale = max(float(abs(sp.csr_array(ref)).max()) if ref.nnz else 0.0, 1.0)
    return bool(diff.nnz == 0 or diff.max() <= 1e-9 * scale)


def _measure(wl: Workload, repeat: int, threads: int, min_seconds: float = 0.0) -> dict[str, Any]:
    import flexsparse as fs

    def run_fs():
        return fs.einsum(wl.spec, *wl.operands, threads=threads)

    tc = time.perf_counter()
    res = run_fs()  # compile / load the numba cache
    first_s = time.perf_counter() - tc
    row: dict[str, Any] = {"workload": wl.name, "spec": wl.spec, "source": wl.source,
                           "nnz": [int(op.nnz) if hasattr(op, "nnz") else int(np.count_nonzero(op))
                                   for op in wl.operands],
                           "shape": [tuple(op.shape) for op in wl.operands],
                           "first_call_s": first_s, "checked": None}
    warm = {FLEXSPARSE}  # the first call warmed flexsparse up
    for peer in ("NumPy", "SciPy"):  # the oracle's warm-up call also gives the reference
        if peer in wl.peers and row["checked"] is None:
            ref = wl.peers[peer]()
            warm.add(peer)
            if peer == "NumPy":
                ok = bool(np.allclose(_as_dense(res), ref, rtol=1e-9, atol=1e-9))
            else:
                ok = _agrees_with_scipy(res, ref)
            row["checked"], row["correct"] = peer, ok
            del ref
    del res
    fns = {FLEXSPARSE: run_fs, **wl.peers}
    for name, fn in fns.items():  # warm every other column (caches, thread teams, lazy imports)
        if name not in warm:
            fn()
    times = time_interleaved(fns, repeat, min_seconds)
    row["flexsparse_s"] = times.pop(FLEXSPARSE)
    row["peers"] = times
    return row


def _cell(t: float | None, best: bool) -> Any:
    from rich.text import Text

    if t is None:
        return Text("-")
    text = f"{t * 1e3:.2f} ms" + (BEST_MARK if best else "")
    return Text(text, style="bold green" if best else "")


def render_table(rows: list[dict[str, Any]], threads: int, repeat: int, peer_info: dict[str, Any] | None = None):
    """The rich table of ``rows`` (as :func:`run_demo` returns them), fastest cell marked."""
    from rich.table import Table
    from rich.text import Text

    present = {p for r in rows for p in r["peers"]}
    peer_names = [p for p in PEER_ORDER if p in present] + sorted(present - set(PEER_ORDER))
    title = (f"flexsparse demo: min of >= {repeat} interleaved warm runs per cell; * = fastest in the row; "
             f"flexsparse, GraphBLAS, MKL on {threads} threads; SciPy, pydata (sparse.tensordot) 1 thread; "
             "NumPy its BLAS default")
    table = Table(title=title, caption=_caption(peer_info))
    table.add_column("workload", min_width=44)
    for col in ["nnz", FLEXSPARSE, *peer_names, "fs / best peer", "checked"]:
        table.add_column(col, justify="right")
    for r in rows:
        marks = best_marks({FLEXSPARSE: r["flexsparse_s"], **r["peers"]})
        r["best"], r["best_peer"], r["ratio_to_best_peer"] = marks["best"], marks["best_peer"], marks["ratio"]
        cells: list[Any] = [r["workload"], " / ".join(f"{n:,}" for n in r["nnz"]),
                            _cell(r["flexsparse_s"], FLEXSPARSE in marks["best"])]
        cells += [_cell(r["peers"].get(p), p in marks["best"]) for p in peer_names]
        if marks["ratio"] is None:
            cells.append(Text("-"))
        else:
            cells.append(Text(f"{marks['ratio']:.2f}x ({marks['best_peer']})",
                              style="green" if marks["ratio"] <= 1.0 else "red"))
        checked = r.get("checked")
        cells.append("-" if checked is None else (f"= {checked}" if r.get("correct") else f"NO ({checked})"))
        table.add_row(*cells)
    return table


def _caption(peer_info: dict[str, Any] | None) -> str:
    text = ("Inputs are converted into each library's own format before timing (for all); "
            "each returns its own result type, timed.")
    if peer_info:
        text += " Peers: " + "; ".join(f"{v.name}: {v.detail}" for v in peer_info.values()) + "."
    return text


def run_demo(quick: bool = False, repeat: int = 5, threads: int | None = None) -> list[dict[str, Any]]:
    """Run every workload, print a table, return the rows (for tests and scripts).

    ``threads``: flexsparse's threads and the threaded peers' (default: numba's thread count).
    Each row holds ``flexsparse_s``, ``peers`` ({name: seconds}), ``best`` (fastest columns),
    ``best_peer``, ``ratio_to_best_peer`` and, when checked, ``checked``/``correct``.
    """
    import numba
    from rich.console import Console
    from rich.progress import Progress

    from flexsparse import _peers

    _peers.passive_openmp()  # before numba's OpenMP threads start (numba.get_num_threads does)
    threads = numba.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    peer_info = _peers.setup_peers(threads)
    console = Console(width=max(Console().width, 200))
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    wls = workloads(quick=quick)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("contracting", total=len(wls))
        for wl in wls:
            progress.update(task, description=wl.name)
            _add_peers(wl, peer_info)
            rows.append(_measure(wl, repeat, threads, 0.0 if quick else ROW_MIN_SECONDS))
            wl.peers.clear()  # drop the peers' converted inputs before the next workload
            progress.advance(task)
    console.print(render_table(rows, threads, repeat, peer_info))
    console.print("first calls (JIT compile or cache load included): "
                  + ", ".join(f"{r['first_call_s']:.2f}s" for r in rows)
                  + f"; total {time.perf_counter() - t0:.1f}s")
    if any(r.get("correct") is False for r in rows):
        raise SystemExit("flexsparse disagreed with its reference on a demo workload")
    return rows
