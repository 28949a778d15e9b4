"""The ``flexsparse`` command line (typer): demo, einsum, info, model, tile-bench.

Every command imports its machinery lazily, so ``flexsparse --help`` starts instantly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="flexsparse: fast sparse tensors, structured sparsity and a model of sparse accelerators.")


def _load(path: Path, index_base: Optional[int], header: Optional[bool]):
    """``flexsparse.load`` with the ``.tns`` options passed only to ``.tns`` files."""
    import flexsparse as fs

    if path.suffix == ".tns":
        return fs.load(path, index_base=index_base, header=header)
    return fs.load(path)


@app.command()
def demo(quick: bool = typer.Option(False, help="Smaller workloads (seconds, not minutes)."),
         repeat: int = typer.Option(5, min=1, help="Interleaved timing rounds per workload (minimum is shown)."),
         threads: Optional[int] = typer.Option(None, min=1, help="Threads of flexsparse, GraphBLAS and MKL "
                                               "(default: numba's thread count)."),
         ) -> None:
    """Run real contractions on shipped/generated data and compare with every installed peer."""
    from flexsparse.demo import run_demo

    run_demo(quick=quick, repeat=repeat, threads=threads)


@app.command("einsum")
def einsum_cmd(
    spec: str = typer.Argument(..., help="Einsum subscripts, e.g. 'ij,jk->ik'."),
    inputs: list[Path] = typer.Argument(..., help="Operand files (.tns, .mtx, .npz), one per operand."),
    output: Path = typer.Option(..., "-o", "--output", help="Result file (.tns, .mtx, .npz) or store "
                                "directory; with --memory-limit a .npz/directory is written tile by tile."),
    index_base: Optional[int] = typer.Option(None, help="Index base of .tns inputs (0 or 1)."),
    header: Optional[bool] = typer.Option(None, help="Whether .tns inputs start with a shape line."),
    memory_limit: Optional[str] = typer.Option(None, help="Bound the working set, e.g. '512MB'."),
    tiling: str = typer.Option("overbook", help="Tiling strategy with --memory-limit."),
    report: bool = typer.Option(False, help="Print the tiling report."),
    threads: Optional[int] = typer.Option(None, min=1, help="Worker threads (at least 1)."),
    show_path: bool = typer.Option(False, "--path", help="Print the contraction path and its estimates."),
    workers: Optional[int] = typer.Option(None, min=1, help="Run on a local dask cluster of this many worker "
                                          "processes (--memory-limit: each worker's memory)."),
    scheduler: Optional[str] = typer.Option(None, help="Run on the dask cluster at this address (tcp://host:8786)."),
) -> None:
    """Contract tensors stored in files and write the result (atomically)."""
    import time

    import flexsparse as fs
    from flexsparse.formats.io import _format_of

    _format_of(output, None)  # an unwritable output format fails before any work
    tensors = [_load(p, index_base, header) for p in inputs]
    if show_path:
        typer.echo(fs.einsum_path(spec, *tensors)[1])
    t0 = time.perf_counter()
    kwargs = dict(format="coo", threads=threads)
    on_cluster = workers is not None or scheduler is not None
    stream = (memory_limit is not None or on_cluster) and output.suffix in ("", ".npz")
    if on_cluster:  # the tiles run on dask workers; a .npz/directory result is written tile by tile
        from flexsparse import distributed

        result, reports = distributed.einsum(
            spec, *tensors, workers=workers, address=scheduler, format="coo", tiling=tiling,
            worker_memory=memory_limit if scheduler is None else None, progress=report,
            out=output if stream else None, return_report=True)
    elif memory_limit is not None:
        kwargs.update(memory_limit=memory_limit, tiling=tiling, progress=report, return_report=True)
        if stream:  # bounded memory end to end: the result goes to the store tile by tile
            kwargs.update(out=output)
        result, reports = fs.einsum(spec, *tensors, **kwargs)
    else:
        result, reports = fs.einsum(spec, *tensors, **kwargs), []
    dt = time.perf_counter() - t0
    if not stream:
        fs.save(output, result)
    typer.echo(f"{spec}: {result!r} in {dt * 1e3:.1f} ms -> {output}")
    if report:
        for r in reports:
            typer.echo(str(r))


@app.command()
def info(path: Path = typer.Argument(..., help="A tensor file (.tns, .mtx, .npz) or a store directory."),
         index_base: Optional[int] = typer.Option(None, help="Index base of a .tns file."),
         header: Optional[bool] = typer.Option(None, help="Whether a .tns file has a shape line.")) -> None:
    """Show shape, nnz, density, bytes and per-mode statistics of a tensor file.

    A flexsparse store (``.npz`` or directory; what ``save`` and ``einsum(out=...)`` write) is
    described from its manifest, and its per-mode statistics are gathered tile by tile.
    """
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from flexsparse.formats.store import StoredTensor, is_store

    console = Console()
    table = Table("mode", "extent", "non-empty slices", "max slice nnz", "mean slice nnz")
    if path.suffix in ("", ".npz") and path.exists() and is_store(path):
        s = StoredTensor(path)
        m = s.manifest
        console.print(f"[bold]{path}[/bold]: flexsparse store v{m['version']} "
                      f"({'zip file' if path.suffix == '.npz' else 'directory'}), encoding {s.encoding}, "
                      f"{s.n_tiles} tile(s), {m['stored']:,} stored entries"
                      f"{' (partial sums: repeated coordinates add up)' if m['partial_sums'] else ''}")
        console.print(f"shape={s.shape}  dtype={s.dtype}  nnz={s.nnz:,}  "
                      f"density={s.nnz / max(1, int(np.prod(s.shape, dtype=float))):.3g}")
        counts: list[dict[int, int]] = [dict() for _ in s.shape]
        for coords, _ in s.tiles():  # one tile in memory at a time
            for mode in range(s.ndim):
                ids, c = np.unique(coords[mode], return_counts=True)
                d = counts[mode]
                for i, k in zip(ids.tolist(), c.tolist()):
                    d[i] = d.get(i, 0) + k
        for mode, extent in enumerate(s.shape):
            c = np.fromiter(counts[mode].values(), dtype=np.int64) if counts[mode] else np.zeros(1, np.int64)
            table.add_row(str(mode), f"{extent:,}", f"{len(counts[mode]):,}", f"{int(c.max()):,}",
                          f"{c.mean():.1f}")
        console.print(table)
        return
    t = _load(path, index_base, header)
    console.print(f"[bold]{path}[/bold]: {t!r}")
    console.print(f"nbytes={t.nbytes:,}  dtype={t.dtype}  canonical={t.canonical}")
    for m, extent in enumerate(t.shape):
        _, counts_m = np.unique(t.coords[m], return_counts=True) if t.nnz else (None, np.zeros(1))
        table.add_row(str(m), f"{extent:,}", f"{len(counts_m) if t.nnz else 0:,}", f"{int(counts_m.max()):,}",
                      f"{counts_m.mean():.1f}")
    console.print(table)


@app.command()
def convert(src: Path = typer.Argument(..., help="Input tensor file (.tns, .mtx, .npz)."),
            dst: Path = typer.Argument(..., help="Output file; its extension picks the format."),
            index_base: Optional[int] = typer.Option(None, help="Index base of a .tns input (0 or 1)."),
            header: Optional[bool] = typer.Option(None, help="Whether a .tns input has a shape line.")) -> None:
    """Convert a tensor file to another format (written atomically)."""
    import flexsparse as fs

    t = _load(src, index_base, header)
    fs.save(dst, t)
    typer.echo(f"{src} -> {dst}: {t!r}")


def _register_subapps() -> None:
    """Attach the sub-apps of the model and tiling parts (their modules keep imports lazy)."""
    from flexsparse.model.cli import app as model_app
    from flexsparse.tiling.cli import tile_bench

    app.add_typer(model_app, name="model", help="Analytical model of sparse accelerators.")
    app.command("tile-bench")(tile_bench)


_register_subapps()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error is one line ``error: ...`` on stderr, never a
    traceback. Bad input (a usage error, a malformed file, an invalid spec or option) exits
    with status 2; an interrupt with 130; a failure of flexsparse itself with 1."""
    try:
        app(args=argv, prog_name="flexsparse", standalone_mode=False)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("error: interrupted", err=True)
        raise SystemExit(130) from None
    except Exception as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            raise SystemExit(0) from None
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            # a usage error (unknown option, bad value, missing argument): short, with a pointer
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            raise SystemExit(2) from None
        if isinstance(exc, (ValueError, TypeError, OSError, MemoryError)):
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise SystemExit(2) from None
        # a failure of flexsparse itself: still one line, naming the exception's type
        typer.echo(f"error: internal error ({type(exc).__name__}): {_one_line(exc)}", err=True)
        raise SystemExit(1) from None
