"""Large operands as shards: a directory of files forming one tensor, each with its coordinate range.

Layout of a shard directory (written by :func:`write_shards`, read by :class:`Shards`)::

    shards.json   {"format": "flexsparse-shards", "version": 1, "shape": [...], "dtype": "<f8",
                   "nnz": N, "shards": [{"file": "shard-00000.npz", "lo": [...], "hi": [...],
                   "nnz": n}, ...]}
    shard-NNNNN.npz   the entries with lo <= coords < hi, stored with coordinates relative to
                      ``lo`` and shape ``hi - lo`` (``flexsparse.save``'s format)

Every file is written atomically and ``shards.json`` last, so a directory without it is an
interrupted write and is refused.

The shard path of :func:`flexsparse.distributed.einsum` (:func:`shard_einsum`): einsum is
linear in each operand, so with ``X = sum_s X_s`` (the shards, zero outside their range)
``einsum(spec, ..., X, ...) = sum_s einsum(spec, ..., X_s, ...)``. One task per shard reads
only its own file (or receives its own dask chunk), runs :func:`flexsparse.einsum` with the
other operands (scattered once to every worker), and the partial results are added by a
binary tree of tasks. Shards split along an output index give disjoint partial results (the
additions are then concatenations); along a contracted index, true partial sums -- in both
cases one task never holds more than one shard of the sharded operand, unlike dask.array's
``tensordot``, which concatenates a whole contracted axis into one task.

Cost: per shard, the in-process einsum of that shard; O(nnz log nnz) per tree level.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Shard", "Shards", "resolve_operands", "shard_einsum", "write_shards"]

FORMAT = "flexsparse-shards"
MANIFEST = "shards.json"


@dataclass(frozen=True)
class Shard:
    """One shard: where its entries come from and the box ``[lo, hi)`` they lie in."""

    source: Any            # a file path (str) or a dask future of the chunk
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    nnz: int | None = None

    def describe(self) -> str:
        where = self.source if isinstance(self.source, str) else "dask chunk"
        box = ", ".join(f"{a}:{b}" for a, b in zip(self.lo, self.hi))
        return f"shard [{box}] ({where})"


class Shards:
    """A tensor stored as shard files (see the module docstring).

    Raises:
        ValueError: ``path`` holds no complete ``shards.json`` or one of another format.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.path} is not a complete shard directory: no readable {MANIFEST} "
                             f"({type(exc).__name__})") from None
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{self.path / MANIFEST}: format is {manifest.get('format')!r}, not {FORMAT!r}")
        self.shape: tuple[int, ...] = tuple(int(s) for s in manifest["shape"])
        self.dtype = np.dtype(manifest["dtype"])
        self.nnz = int(manifest["nnz"])
        self.shards = tuple(Shard(str(self.path / s["file"]), tuple(s["lo"]), tuple(s["hi"]), int(s["nnz"]))
                            for s in manifest["shards"])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<Shards shape={self.shape} nnz={self.nnz} shards={len(self.shards)} path={str(self.path)!r}>"

    def read(self, i: int) -> Any:
        """Shard ``i`` as a COO of the whole tensor's shape (zero outside its box)."""
        return read_shard(self.shards[i], self.shape)

    def load(self) -> Any:
        """The whole tensor as a canonical COO."""
        from flexsparse.formats.coo import COO

        parts = [self.read(i) for i in range(len(self.shards))]
        if not parts:
            return COO.empty(self.shape, self.dtype)
        coords = np.concatenate([p.coords for p in parts], axis=1)
        data = np.concatenate([p.data for p in parts])
        return COO(coords, data, self.shape).sum_duplicates()


def _globalize(local: Any, lo: tuple[int, ...], shape: tuple[int, ...]) -> Any:
    """A shard's COO (coordinates relative to ``lo``) in the coordinates of the whole tensor."""
    from flexsparse._util import index_dtype_for
    from flexsparse.distributed.chunks import as_flexsparse_chunk
    from flexsparse.formats.coo import COO

    local = as_flexsparse_chunk(local)
    if isinstance(local, np.ndarray):
        local = COO.from_numpy(local)
    if local.ndim != len(shape):
        raise ValueError(f"a shard has {local.ndim} modes but the tensor has {len(shape)}")
    coords = local.coords.astype(index_dtype_for(shape))
    for m, off in enumerate(lo):
        if off:
            coords[m] += off
    return COO(coords, local.data, shape, canonical=local.canonical)


def read_shard(shard: Shard, shape: tuple[int, ...], value: Any = None) -> Any:
    """The entries of ``shard`` (read from its file, or ``value`` for a dask chunk) as a global COO."""
    if value is None:
        from flexsparse.formats.io import load

        value = load(shard.source)
        if tuple(value.shape) != tuple(h - lo for lo, h in zip(shard.lo, shard.hi)):
            raise ValueError(f"{shard.source}: shape {value.shape} does not match its box "
                             f"{[f'{a}:{b}' for a, b in zip(shard.lo, shard.hi)]}")
    return _globalize(value, shard.lo, shape)


def write_shards(tensor: Any, path: str | os.PathLike, n_shards: int | None = None, axis: int = 0,
                 shard_nnz: int = 4_000_000) -> Shards:
    """Write ``tensor`` as shards along ``axis`` (about equal nnz each); return the reader.

    Args:
        tensor: any input :func:`flexsparse.as_coo` accepts.
        path: the directory (created).
        n_shards: number of shards (default: ``ceil(nnz / shard_nnz)``).
        axis: the mode whose coordinate ranges the shards split.
    """
    from flexsparse._util import atomic_write
    from flexsparse.distributed.tiles import balanced_bounds
    from flexsparse.formats.convert import as_coo
    from flexsparse.formats.io import save

    t = as_coo(tensor).sum_duplicates()
    if not -t.ndim <= axis < t.ndim:
        raise ValueError(f"axis {axis} is out of range for a tensor with {t.ndim} modes")
    axis %= t.ndim
    n = n_shards if n_shards is not None else max(1, math.ceil(t.nnz / max(1, shard_nnz)))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_shards must be a positive int, got {n_shards!r}")
    counts = np.bincount(t.coords[axis], minlength=t.shape[axis]) if t.nnz else np.zeros(t.shape[axis])
    bounds = balanced_bounds(counts + 1e-9, n)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    entries = []
    for j in range(len(bounds) - 1):
        lo = [0] * t.ndim
        hi = list(t.shape)
        lo[axis], hi[axis] = int(bounds[j]), int(bounds[j + 1])
        key = tuple(slice(a, b) for a, b in zip(lo, hi))
        name = f"shard-{j:05d}.npz"
        part = t[key]
        save(out / name, part)
        entries.append({"file": name, "lo": lo, "hi": hi, "nnz": int(part.nnz)})
    manifest = {"format": FORMAT, "version": 1, "shape": list(t.shape), "dtype": t.dtype.str,
                "nnz": int(t.nnz), "axis": axis, "shards": entries}
    with atomic_write(out / MANIFEST, "w") as fh:
        fh.write(json.dumps(manifest, indent=1))
    return Shards(out)


# ---------------------------------------------------------------------- einsum over shards
def resolve_operands(operands: tuple, client: Any) -> tuple[list[Any], int | None]:
    """Operands ready for einsum and the position of the sharded one (``None``: none is sharded).

    The first :class:`Shards` operand, else the dask array with the most chunks, is sharded;
    every other dask array is computed into one in-memory tensor.
    """
    from flexsparse.distributed.chunks import as_flexsparse_chunk, dask_shards, is_dask_array

    ops = list(operands)
    sharded = next((i for i, x in enumerate(ops) if isinstance(x, Shards)), None)
    dask_pos = [i for i, x in enumerate(ops) if is_dask_array(x)]
    if sharded is None and dask_pos:
        sharded = max(dask_pos, key=lambda i: ops[i].npartitions)
    for i, x in enumerate(ops):
        if i == sharded:
            if is_dask_array(x):
                ops[i] = _DaskSharded(x.shape, x.dtype, [Shard(f, lo, tuple(a + e for a, e in zip(lo, ext)))
                                                        for f, lo, ext in dask_shards(x, client)])
        elif isinstance(x, Shards):
            ops[i] = x.load()
        elif is_dask_array(x):
            from flexsparse.distributed.chunks import register_dask

            register_dask()
            ops[i] = as_flexsparse_chunk(client.compute(x).result())
    return ops, sharded


@dataclass(frozen=True)
class _DaskSharded:
    shape: tuple[int, ...]
    dtype: Any
    shards: list


def _shard_task(spec: str, shard: Shard, value: Any, shape: tuple[int, ...], pos: int,
                others: list, what: str) -> Any:
    from flexsparse.contract.execute import einsum
    from flexsparse.distributed._tasks import TileError

    try:
        x = read_shard(shard, shape, value)
        ops = list(others)
        ops.insert(pos, x)
        res = einsum(spec, *ops, format="coo", threads=1)
        return res
    except Exception as exc:  # noqa: BLE001 - re-raised naming the shard
        raise TileError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _add(x: Any, y: Any) -> Any:
    return (x + y).sum_duplicates() if hasattr(x + y, "sum_duplicates") else x + y


def shard_einsum(client: Any, spec: str, ops: list, pos: int, *, format: str = "auto",
                 optimize: Any = "auto", out: Any = None, progress: bool = False,
                 reports: list | None = None) -> Any:
    """``einsum(spec, *ops)`` with ``ops[pos]`` sharded: one task per shard, a tree of additions."""
    from flexsparse.contract.execute import _finish  # the engine's one output-format rule
    from flexsparse.contract.parser import parse_einsum

    sharded = ops[pos]
    others = [x for i, x in enumerate(ops) if i != pos]
    shapes = [tuple(x.shape) for x in ops]
    parsed = parse_einsum(spec, shapes)
    dtype = np.result_type(*[x.dtype for x in ops])
    scattered = [client.scatter(x, broadcast=True, hash=False) for x in others]
    level = []
    for j, shard in enumerate(sharded.shards):
        value = shard.source if not isinstance(shard.source, str) else None
        what = f"tile {j}: {shard.describe()}"
        level.append(client.submit(_shard_task, spec, shard, value, tuple(sharded.shape), pos,
                                   scattered, what, pure=False))
    total = len(level)
    futures = list(level)
    try:
        if progress:
            from distributed import progress as dask_progress

            dask_progress(level, notebook=False)
        while len(level) > 1:
            nxt = [client.submit(_add, level[i], level[i + 1], pure=False) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            futures.extend(nxt)
            level = nxt
        res = level[0].result() if level else None
    except BaseException:
        client.cancel(futures + scattered)
        raise
    if res is None:
        from flexsparse.formats.coo import COO

        res = COO.empty(tuple(parsed_shape(parsed)), dtype)
    res = _finish(res, format, dtype)
    if reports is not None:
        reports.append({"shards": total, "tasks": len(futures)})
    if out is not None:
        from flexsparse.contract._bounded import save_result

        return save_result(res, Path(out))
    return res


def parsed_shape(parsed: Any) -> tuple[int, ...]:
    return tuple(parsed.sizes[c] for c in parsed.output)
