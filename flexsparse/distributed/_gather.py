"""The gathered result of a distributed product, written by the workers into its final buffers.

A product's output blocks (*pieces*, see :mod:`._tasks`) are computed on the workers (a plain
CSR product of at most two row blocks is computed straight into the file instead, :mod:`._direct`). The
calling process must not copy, sort or decode the ``nnz`` entries itself -- that serial
O(nnz) work is what bounds the speed-up of a cluster -- so the result is gathered in two
phases (driven by :class:`~flexsparse.distributed.runner.ProductRunner`):

1. each block's piece stays on its worker; a small task reports its entry count (per row
   when the rows of a block are split over column panels);
2. the calling process computes every block's destination (a prefix sum over the counts),
   allocates the result once as a file in shared memory (:func:`create`; ``/dev/shm``)
   and every worker writes its blocks straight into it (:func:`place`) in the final layout:

   * ``"csr"`` -- ``indptr int64[n_rows + 1]``, ``indices [nnz]`` (int32 when the columns fit),
     ``data [nnz]``: the matricised product;
   * ``"coo"`` -- ``coords [ndim, nnz]`` decoded from the compact row and column ids
     (:class:`~flexsparse.contract._keys.KeySpace`, batch modes once) and ``data [nnz]``: the
     einsum result itself, canonical when every piece has sorted columns (ids grow with
     their keys' lexicographic order, and blocks are placed in row-major order).

   The calling process maps the file: O(1) work of its own. A worker that cannot open the file (another host,
   another ``/dev/shm``, no permission) returns its piece instead -- compact CSR, int32
   column ids where they fit -- and the calling process places it with the same
   :func:`place`; so does a product whose result is too small to be worth the second phase.

File layout (:class:`Target`): the arrays back to back, each aligned to :data:`ALIGN` bytes;
``nbytes`` in total. Files are named ``flexsparse-<pid>-<random>`` so that files left by a
process that died are removed by the next :func:`create` (:func:`reap`).

Reuse: when the last array over a result's mapping is freed, its file is kept (up to
:data:`~flexsparse._limits.GATHER_POOL_BYTES` in all, oldest dropped first) and the next
:func:`create` resizes and reuses it, so the workers write into pages that already exist. A
tmpfs page is 4 KiB (no huge pages for shared memory on the benchmark VM) and each new one
costs an allocation: writing a 290 MB result into fresh pages took 0.13-0.16 s of CPU, into
existing ones 0.06 s (``pwrite``, standard VM); unmapping a result whose pages are freed with
it took another ~0.1 s. Kept files are removed at exit (and by :func:`reap` after a crash).

Cost: O(nnz) bytes written once, by the workers in parallel; O(n_rows) on the caller for
blocks split over column panels (their row pointers); O(nnz) on the caller only for pieces
that come back over the network.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import threading
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ALIGN", "ArraySink", "FileSink", "Target", "arrays", "create", "drain", "map_target", "place",
           "pooled", "positions", "reap"]

#: Directory of the shared-memory files (a tmpfs on Linux).
SHM_DIR = "/dev/shm"
PREFIX = "flexsparse-"
#: Alignment of every array in a target buffer (a cache line).
ALIGN = 64


def _align(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


@dataclass(frozen=True)
class Target:
    """The final buffers of one product (picklable; sent with every placing task).

    Attributes:
        path: the shared-memory file the workers write into, or ``None`` (pieces come back).
        layout: ``"csr"`` or ``"coo"`` (see the module docstring).
        n_rows: rows of the matricised product (``indptr`` has ``n_rows + 1``).
        nnz: entries of the result.
        ndim: modes of the COO result (``coords`` rows).
        index_dtype: dtype of ``indices`` (csr) or ``coords`` (coo).
        value_dtype: dtype of ``data``.
    """

    path: str | None
    layout: str
    n_rows: int
    nnz: int
    ndim: int
    index_dtype: str
    value_dtype: str

    def specs(self) -> list[tuple[str, tuple[int, ...], np.dtype, int]]:
        """``(name, shape, dtype, byte offset)`` of every array, in file order."""
        idt, vdt = np.dtype(self.index_dtype), np.dtype(self.value_dtype)
        if self.layout == "csr":
            items = [("indptr", (self.n_rows + 1,), np.dtype(np.int64)), ("indices", (self.nnz,), idt),
                     ("data", (self.nnz,), vdt)]
        else:
            items = [("coords", (self.ndim, self.nnz), idt), ("data", (self.nnz,), vdt)]
        out, off = [], 0
        for name, shape, dt in items:
            out.append((name, shape, dt, off))
            off = _align(off + int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
        return out

    @property
    def nbytes(self) -> int:
        name, shape, dt, off = self.specs()[-1]
        return max(1, off + int(np.prod(shape, dtype=np.int64)) * dt.itemsize)


def arrays(buffer: Any, target: Target) -> dict[str, np.ndarray]:
    """NumPy views of ``target``'s arrays over ``buffer`` (an mmap or bytearray of ``nbytes``)."""
    out = {}
    for name, shape, dt, off in target.specs():
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(buffer, dtype=dt, count=count, offset=off).reshape(shape)
    return out


# ----------------------------------------------------------------------------- shared memory
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap() -> None:
    """Remove shared-memory files left by flexsparse processes that no longer exist."""
    with contextlib.suppress(OSError):
        for name in os.listdir(SHM_DIR):
            if not name.startswith(PREFIX):
                continue
            pid = name[len(PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))


def shm_free() -> int:
    """Free bytes of the shared-memory directory (0 when there is none)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return int(st.f_bavail) * int(st.f_frsize)


# files of freed results, kept for reuse: path -> size, oldest first
_pool: dict[str, int] = {}
_pool_lock = threading.Lock()
_pool_exit_hook = False


def pooled() -> dict[str, int]:
    """The kept files (path -> bytes), oldest first."""
    with _pool_lock:
        return dict(_pool)


def _take(nbytes: int) -> str | None:
    """A kept file to reuse for ``nbytes``: the smallest that holds it, else the largest; of
    equal sizes the last kept, which the workers most likely still map (:func:`._direct.mapping`
    keeps the last two: taking the oldest of three files of one size missed them every time)."""
    with _pool_lock:
        if not _pool:
            return None
        fits = [p for p, n in reversed(_pool.items()) if n >= nbytes]
        path = min(fits, key=_pool.__getitem__) if fits else max(reversed(_pool), key=_pool.__getitem__)
        del _pool[path]
        return path


def _recycle(path: str, nbytes: int) -> None:
    """Keep the file of a result whose last array was freed (finalizer of its mapping)."""
    from flexsparse import _limits

    global _pool_exit_hook
    if not os.path.exists(path):   # released (a failed product) or removed meanwhile
        return
    drop = []
    with _pool_lock:
        if not _pool_exit_hook:
            atexit.register(drain)
            _pool_exit_hook = True
        _pool[path] = int(nbytes)
        total = sum(_pool.values())
        for p in list(_pool):          # oldest first, until the kept bytes fit the limit
            if total <= _limits.GATHER_POOL_BYTES:
                break
            total -= _pool.pop(p)
            drop.append(p)
    for p in drop:
        release(p)


def drain() -> None:
    """Remove every kept file (at exit; or to give their memory back now)."""
    with _pool_lock:
        paths = list(_pool)
        _pool.clear()
    for p in paths:
        release(p)


def create(nbytes: int) -> str | None:
    """A shared-memory file of ``nbytes`` (pages are allocated when written; a kept file is
    reused when there is one), or ``None`` when there is no shared-memory directory or less
    than twice ``nbytes`` free in it."""
    kept = sum(pooled().values())
    if shm_free() + kept < 2 * nbytes:
        return None
    reap()
    path = _take(nbytes)
    fd = None
    if path is not None:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            fd = None
    if fd is None:
        path = os.path.join(SHM_DIR, f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except OSError:
            return None
    try:
        os.ftruncate(fd, max(1, int(nbytes)))
    except OSError:
        os.close(fd)
        release(path)
        return None
    os.close(fd)
    return path


def release(path: str | None) -> None:
    """Remove the file (the memory stays while a mapping of it lives)."""
    if path is not None:
        with _pool_lock:
            _pool.pop(path, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def map_target(target: Target, keep: bool = False) -> mmap.mmap:
    """A writable shared mapping of ``target.path`` (raises ``OSError`` when it cannot be opened).

    ``keep``: when the mapping is freed (the result's last array), its file is kept for reuse
    (:func:`create`) instead of being left for the caller to :func:`release`.
    """
    fd = os.open(target.path, os.O_RDWR)
    try:
        if os.fstat(fd).st_size != target.nbytes:
            raise OSError(f"{target.path} is not the buffer of this product")
        mm = mmap.mmap(fd, target.nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    if keep:
        weakref.finalize(mm, _recycle, target.path, target.nbytes)
    return mm


# ----------------------------------------------------------------------------- placing
def positions(indptr: np.ndarray, row_starts: np.ndarray) -> np.ndarray:
    """Destination of every entry of a block whose row ``r`` starts at ``row_starts[r]``."""
    counts = np.diff(indptr)
    return np.repeat(row_starts - indptr[:-1], counts) + np.arange(int(indptr[-1]), dtype=np.int64)


def _key_coords(ks: Any, ids: np.ndarray, dtype: np.dtype) -> list[np.ndarray]:
    """Per-mode coordinates of ``ids`` under key space ``ks`` (a one-mode direct key: the ids)."""
    if ks.table is None and len(ks.sizes) == 1:
        return [ids]
    return [c.astype(dtype, copy=False) for c in ks.decode(ids)]


class ArraySink:
    """Writes into NumPy arrays (:func:`arrays` of a heap buffer or of a mapping)."""

    def __init__(self, out: dict[str, np.ndarray]) -> None:
        self.out = out

    def put(self, name: str, row: int | None, where: Any, values: np.ndarray) -> None:
        dest = self.out[name]
        (dest if row is None else dest[row])[where] = values


class FileSink:
    """Writes contiguous ranges into the target's file with ``pwrite``: tmpfs then allocates
    each page as it is filled, without zeroing it first or taking a page fault per 4 KiB as
    a write through a mapping does (measured: 385 MB in 0.16 s against 0.29 s, standard VM)."""

    def __init__(self, fd: int, target: Target) -> None:
        self.fd = fd
        self.specs = {name: (shape, dt, off) for name, shape, dt, off in target.specs()}

    def put(self, name: str, row: int | None, where: Any, values: np.ndarray) -> None:
        shape, dt, off = self.specs[name]
        first = (0 if row is None else row * shape[-1]) + where.start
        buf = memoryview(np.ascontiguousarray(values, dtype=dt)).cast("B")
        pos = off + first * dt.itemsize
        while len(buf):
            done = os.pwrite(self.fd, buf[:_PWRITE_CHUNK], pos)
            buf, pos = buf[done:], pos + done


#: Bytes per ``pwrite`` call (below Linux's 2 GiB cap per call).
_PWRITE_CHUNK = 1 << 28


def place(sink: Any, target: Target, piece: Any, dst: Any, keys: Any = None) -> None:
    """Write ``piece`` through ``sink`` (:class:`ArraySink`, or :class:`FileSink` for an int ``dst``).

    ``dst``: an int -- the block's entries go to ``[dst, dst + nnz)`` in order (its rows are
    whole rows of the result, so the CSR layout also gets its row pointers) -- or an
    ``int64[rows]`` array of where each of its rows starts (a block of one column panel;
    the caller writes the row pointers). ``keys``: ``(row KeySpace, column KeySpace,
    batch modes)`` for the COO layout.
    """
    (r0, r1, _, _, _), indptr, indices, data = piece
    n = int(indices.shape[0])
    where: Any = slice(int(dst), int(dst) + n) if np.isscalar(dst) else positions(indptr, np.asarray(dst))
    sink.put("data", None, where, data)
    if target.layout == "csr":
        sink.put("indices", None, where, indices)
        if np.isscalar(dst):
            sink.put("indptr", None, slice(r0 + 1, r1 + 1), indptr[1:] + int(dst))
        return
    row_ks, col_ks, n_batch = keys
    idt = np.dtype(target.index_dtype)
    counts = np.diff(indptr)
    rows = _key_coords(row_ks, np.arange(r0, r1, dtype=idt), idt)
    for m, c in enumerate(rows):
        sink.put("coords", m, where, np.repeat(c, counts))
    cols = _key_coords(col_ks, indices, idt)[n_batch:]
    for j, c in enumerate(cols):
        sink.put("coords", len(rows) + j, where, c)
