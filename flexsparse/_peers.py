"""Peer libraries timed next to flexsparse: locate, load and set the threads of each.

Used by ``flexsparse demo`` and the benchmark scripts, so every comparison loads the peers
the same way. Nothing here runs at import; a peer that is not installed (or does not load)
is reported as unavailable with the reason, never raised.

* **MKL** (``sparse_dot_mkl`` over the ``mkl`` wheel): ``sparse_dot_mkl`` finds Intel's
  runtime through ``$MKL_RT``. The ``mkl`` wheel installs ``libmkl_rt.so.N`` into
  ``<prefix>/lib``, which is not on the loader path of a virtual environment, so
  :func:`mkl_runtime` points ``MKL_RT`` at it (only when ``MKL_RT`` is unset) before
  ``sparse_dot_mkl`` is first imported. Threads: ``mkl_set_num_threads``.
* **GraphBLAS** (``python-graphblas`` over SuiteSparse:GraphBLAS): threads through
  ``graphblas.ss.config["nthreads"]``.
* **OpenMP wait policy**: MKL's Intel OpenMP keeps its idle threads spinning for 200 ms after
  each call, and GNU OpenMP spins too; in interleaved timing rounds those spinning threads
  would take the cores from the next library timed. :func:`passive_openmp` sets
  ``OMP_WAIT_POLICY=PASSIVE`` (only when unset); callers run it before any OpenMP runtime
  (numba's included) starts, and :func:`setup_peers` runs it before loading the peers.

:func:`spgemm_peers` returns ready-to-time ``C = A @ B`` callables; each converts the SciPy
CSR inputs into its library's own format once, outside the callable (so conversion is never
inside a timed region), and each returns the library's own result object.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PeerInfo", "mkl_runtime", "passive_openmp", "setup_peers", "spgemm_peers", "SPGEMM_PEERS"]

#: Display names of the SpGEMM peers, in table order (SciPy is always available).
SPGEMM_PEERS = ("SciPy", "GraphBLAS", "MKL")


@dataclass(frozen=True)
class PeerInfo:
    """Whether one peer loaded: ``detail`` is its version and threads, or why it did not load."""

    name: str
    available: bool
    detail: str


def mkl_runtime(prefix: str | None = None) -> str | None:
    """Path of the ``libmkl_rt.so*`` that the ``mkl`` wheel installed under ``prefix/lib``.

    ``prefix`` defaults to ``sys.prefix`` (the virtual environment). Sets ``$MKL_RT`` to it
    when ``MKL_RT`` is unset; returns ``$MKL_RT`` (set before, or now), or ``None`` when no
    runtime was found.
    """
    if os.environ.get("MKL_RT"):
        return os.environ["MKL_RT"]
    root = sys.prefix if prefix is None else prefix
    libs = sorted(glob.glob(os.path.join(root, "lib", "libmkl_rt.so*")))
    if not libs:
        return None
    os.environ["MKL_RT"] = libs[0]
    return libs[0]


def _setup_mkl(threads: int) -> PeerInfo:
    mkl_runtime()
    try:
        import sparse_dot_mkl

        sparse_dot_mkl.mkl_set_num_threads(threads)
        n = sparse_dot_mkl.mkl_get_max_threads()
        return PeerInfo("MKL", True, f"sparse_dot_mkl {sparse_dot_mkl.__version__}, {n} threads")
    except Exception as exc:  # noqa: BLE001 - ImportError, or MKL's runtime failing to load
        return PeerInfo("MKL", False, f"not loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")


def _setup_graphblas(threads: int) -> PeerInfo:
    try:
        import graphblas as gb

        gb.ss.config["nthreads"] = threads
        return PeerInfo("GraphBLAS", True, f"python-graphblas {gb.__version__}, {gb.ss.config['nthreads']} threads")
    except Exception as exc:  # noqa: BLE001 - ImportError, or SuiteSparse failing to initialise
        return PeerInfo("GraphBLAS", False, f"not loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")


def passive_openmp() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless set: call it before any OpenMP runtime starts its
    threads (numba's ``omp`` layer starts them at its first parallel call or thread query)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def setup_peers(threads: int) -> dict[str, PeerInfo]:
    """Load GraphBLAS and MKL (when installed) on ``threads`` threads: ``{name: PeerInfo}``.

    SciPy's ``A @ B`` is always available and single-threaded (it has no thread option).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    passive_openmp()
    import scipy

    return {"SciPy": PeerInfo("SciPy", True, f"scipy {scipy.__version__}, 1 thread"),
            "GraphBLAS": _setup_graphblas(threads), "MKL": _setup_mkl(threads)}


def spgemm_peers(a: Any, b: Any, peers: dict[str, PeerInfo]) -> dict[str, Callable[[], Any]]:
    """``{name: fn}`` computing ``a @ b`` (SciPy CSR arrays) in each available peer of ``peers``.

    Inputs are converted into each library's format here, once; the callables only multiply.
    """
    fns: dict[str, Callable[[], Any]] = {"SciPy": lambda: a @ b}
    if peers.get("GraphBLAS") is not None and peers["GraphBLAS"].available:
        import graphblas as gb

        ga = gb.io.from_scipy_sparse(a)
        gbb = ga if b is a else gb.io.from_scipy_sparse(b)
        fns["GraphBLAS"] = lambda: ga.mxm(gbb).new()
    if peers.get("MKL") is not None and peers["MKL"].available:
        from sparse_dot_mkl import dot_product_mkl

        fns["MKL"] = lambda: dot_product_mkl(a, b)
    return fns
