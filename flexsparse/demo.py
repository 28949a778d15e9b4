"""``flexsparse demo``: real contractions on shipped or generated data, next to every peer.

Workloads (each checked against a dense NumPy oracle when that fits in memory):

* SpGEMM ``ij,jk->ik`` on real matrices that small PyPI packages ship (pyamg's finite-element
  examples, pygsp's Minnesota road graph) when installed, else a generated power-law graph;
* FROSTT-style self-contractions ``X x X`` of a generated power-law 4-D tensor over 1 and 3 modes;
* a FLAASH-style tensor contraction layer: sparse activations ``(batch, 7, 7, 512)`` at 2%
  density contracted with a dense weight core;
* a quantum-chemistry contraction ``abQ,ijQ->abij`` on dense-ish (53-76%) generated tensors
  shaped like the published vv/oo integrals.

Peers timed side by side when installed: NumPy (``einsum(optimize=True)`` on dense copies),
SciPy (``A @ A``, 2-D only), pydata/sparse (``tensordot``; its ``einsum`` takes minutes on
these sizes). Times are warm medians; flexsparse's one-off JIT/cache load is shown apart.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexsparse import _limits

__all__ = ["Workload", "workloads", "run_demo", "time_call"]


@dataclass
class Workload:
    """One demo contraction: a spec, its operands and the peers that can run it."""

    name: str
    spec: str
    operands: list[Any]
    source: str
    peers: dict[str, Callable[[], Any]] = field(default_factory=dict)
    check_dense: bool = True


def time_call(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls (seconds) and the last result."""
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


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
        wl = Workload(f"SpGEMM {name} {A.shape[0]}x{A.shape[1]}", "ij,jk->ik", [coo, coo], src)
        wl.peers["SciPy"] = lambda A=A: A @ A
        out.append(wl)
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


def _add_peers(wl: Workload) -> None:
    dense_ops = None
    if wl.check_dense and _dense_bytes(wl) <= _DENSE_PEER_BYTES:
        dense_ops = [op.todense() if hasattr(op, "todense") and not isinstance(op, np.ndarray) else op
                     for op in wl.operands]
        wl.peers.setdefault("NumPy", lambda: np.einsum(wl.spec, *dense_ops, optimize=True))
    try:
        import sparse  # pydata/sparse

        lhs, rhs = wl.spec.split("->")[0].split(",")
        ops = [sparse.COO(op.coords, op.data, shape=op.shape) if hasattr(op, "coords") else op
               for op in wl.operands]
        common = [c for c in lhs if c in rhs]
        axes = ([lhs.index(c) for c in common], [rhs.index(c) for c in common])
        if all(c in wl.spec.split("->")[1] for c in lhs + rhs if c not in common):
            wl.peers.setdefault("pydata tensordot", lambda: sparse.tensordot(ops[0], ops[1], axes=axes))
    except ImportError:
        pass


def run_demo(quick: bool = False, repeat: int = 3) -> list[dict[str, Any]]:
    """Run every workload, print a table, return the rows (for tests and scripts)."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    import flexsparse as fs

    console = Console(width=max(Console().width, 160))
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    wls = workloads(quick=quick)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("contracting", total=len(wls))
        for wl in wls:
            progress.update(task, description=wl.name)
            _add_peers(wl)
            tc = time.perf_counter()
            first = fs.einsum(wl.spec, *wl.operands)  # compile / load the numba cache
            first_s = time.perf_counter() - tc
            t_fs, res = time_call(lambda wl=wl: fs.einsum(wl.spec, *wl.operands), repeat)
            row: dict[str, Any] = {"workload": wl.name, "spec": wl.spec, "source": wl.source,
                                   "nnz": [int(op.nnz) if hasattr(op, "nnz") else int(np.count_nonzero(op))
                                           for op in wl.operands],
                                   "shape": [tuple(op.shape) for op in wl.operands],
                                   "flexsparse_s": t_fs, "first_call_s": first_s, "peers": {}}
            for peer, fn in wl.peers.items():
                t_p, ref = time_call(fn, repeat)
                row["peers"][peer] = t_p
                if peer == "NumPy":
                    got = res.todense() if hasattr(res, "todense") else np.asarray(res)
                    row["correct"] = bool(np.allclose(got, ref, rtol=1e-9, atol=1e-9))
            del first
            rows.append(row)
            progress.advance(task)
    peer_names = sorted({p for r in rows for p in r["peers"]})
    table = Table(title="flexsparse demo (warm median times; x = peer time / flexsparse time)")
    table.add_column("workload", min_width=34)
    for col in ["nnz", "flexsparse", *peer_names, "= NumPy"]:
        table.add_column(col, justify="right")
    for r in rows:
        cells = [r["workload"], " / ".join(f"{n:,}" for n in r["nnz"]), f"{r['flexsparse_s'] * 1e3:.2f} ms"]
        for p in peer_names:
            t = r["peers"].get(p)
            cells.append("-" if t is None else f"{t * 1e3:.2f} ms ({t / r['flexsparse_s']:.1f}x)")
        cells.append({True: "yes", False: "NO", None: "-"}[r.get("correct")])
        table.add_row(*cells)
    console.print(table)
    console.print("first calls (JIT compile or cache load included): "
                  + ", ".join(f"{r['first_call_s']:.2f}s" for r in rows)
                  + f"; total {time.perf_counter() - t0:.1f}s")
    if any(r.get("correct") is False for r in rows):
        raise SystemExit("flexsparse disagreed with NumPy on a demo workload")
    return rows
