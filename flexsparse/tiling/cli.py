"""``flexsparse tile-bench``: run one bounded-memory ``A @ A`` and print its tiling report.

The command function :func:`tile_bench` is plain typer-annotated Python; the main CLI
registers it (``app.command("tile-bench")(tile_bench)``). The matrix is a SuiteSparse
``.mat`` file (``Problem.A``), a SciPy ``.npz`` file, or a generated power-law graph
(``--matrix powerlaw``, O(n + nnz)). Cost: one tiled SpGEMM (see
:mod:`flexsparse.tiling.executor`) plus, with ``--check``, one untiled product.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

__all__ = ["load_matrix", "tile_bench"]


def load_matrix(spec: str, n: int = 2000, nnz: int = 10000, seed: int = 0):
    """A square SciPy CSR matrix from a ``.mat``/``.npz`` path or ``"powerlaw"``."""
    import scipy.sparse as sp
    if spec == "powerlaw":
        rng = np.random.default_rng(seed)
        w = 1.0 / np.arange(1, n + 1) ** 0.8
        p = w / w.sum()
        i, j = rng.choice(n, nnz, p=p), rng.choice(n, nnz, p=p)
        m = sp.coo_matrix((rng.random(nnz) + 0.5, (i, j)), shape=(n, n)).tocsr()
        m.sum_duplicates()
        return m
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"matrix {spec!r} is neither 'powerlaw' nor an existing file")
    if path.suffix == ".mat":
        import scipy.io
        return scipy.io.loadmat(path)["Problem"][0, 0]["A"].tocsr().astype(np.float64)
    if path.suffix == ".npz":
        return sp.load_npz(path).tocsr()
    raise ValueError(f"matrix file {spec!r} must be a .mat (SuiteSparse) or .npz (SciPy) file")


def tile_bench(
    matrix: str = typer.Option("powerlaw", help="'powerlaw' or a .mat/.npz file; computes A @ A"),
    limit: str = typer.Option("1MiB", help="memory limit, e.g. 512KiB, 64MB"),
    tiling: str = typer.Option("overbook", help="conservative | prescient | overbook"),
    overbook: float = typer.Option(0.10, help="target fraction of overflowing tiles"),
    out: Optional[str] = typer.Option(None, help="write the product here (.npz or directory)"),
    seed: int = typer.Option(0, help="sampling / generator seed"),
    n: int = typer.Option(2000, help="rows of the generated power-law matrix"),
    nnz: int = typer.Option(10000, help="nonzeros of the generated power-law matrix"),
    check: bool = typer.Option(False, help="compare with the untiled product"),
    progress: bool = typer.Option(False, help="show a progress bar"),
) -> None:
    """Tile ``A @ A`` under a memory limit and print the tiling report."""
    from flexsparse.tiling.executor import tiled_spgemm
    a = load_matrix(matrix, n=n, nnz=nnz, seed=seed)
    result, report = tiled_spgemm(a, a, memory_limit=limit, tiling=tiling, overbook=overbook,
                                  out=out, seed=seed, progress=progress)
    typer.echo(f"A: {a.shape[0]}x{a.shape[1]}, nnz {a.nnz}; C nnz {result.nnz}")
    typer.echo(str(report))
    if check:
        c = result.load() if out is not None else result
        ref = (a @ a).tocsr()
        diff = abs(c - ref).max() if ref.nnz else 0.0
        ok = c.nnz >= ref.nnz and diff <= 1e-9 * max(1.0, abs(ref).max() if ref.nnz else 1.0)
        typer.echo(f"check against the untiled product: {'OK' if ok else 'MISMATCH'} "
                   f"(max abs difference {diff:.3g})")
        if not ok:
            raise typer.Exit(code=1)
