"""Small shared helpers: dtype checks, index dtypes, byte-size parsing, atomic writes and the
look-up of NumPy's bundled OpenBLAS.

Every module that validates input or writes files goes through these, so errors read
the same everywhere and no file is ever half written under its final name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_write",
    "check_numeric_dtype",
    "compute_dtype",
    "index_dtype_for",
    "nonfinite_by_sum",
    "openblas_function",
    "parse_bytes",
    "result_dtype",
]

_NUMERIC_KINDS = "biufc"
_INT32, _INT64 = np.dtype(np.int32), np.dtype(np.int64)
_INT32_MAX = int(np.iinfo(np.int32).max)  # module constants: np.iinfo costs ~1 us a call


def check_numeric_dtype(dtype: np.dtype | type, what: str = "array") -> np.dtype:
    """Return ``np.dtype(dtype)`` or raise ``TypeError`` if it is not numeric.

    Booleans, integers, floats and complex numbers are numeric; strings, objects,
    datetimes are not.

    >>> check_numeric_dtype(np.float32)
    dtype('float32')
    >>> check_numeric_dtype(np.dtype("U3"), "operand 0")
    Traceback (most recent call last):
    ...
    TypeError: operand 0 has non-numeric dtype <U3; expected bool, integer, float or complex
    """
    dt = np.dtype(dtype)
    if dt.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{what} has non-numeric dtype {dt}; expected bool, integer, float or complex")
    return dt


def result_dtype(*dtypes: np.dtype) -> np.dtype:
    """NumPy's promotion of the operands' dtypes (what ``np.einsum`` would return).

    Operands are arrays by then: ``np.einsum`` turns a Python scalar into an array first
    (``np.asarray``: a Python float is float64), so NEP 50's weak-scalar rule never narrows
    the result. Under NumPy 2 this is ``np.result_type`` of the dtypes: int32 with int32 stays
    int32, uint8 with int8 gives int16, int64 with uint64 gives float64.

    >>> result_dtype(np.dtype(np.float32), np.asarray(1.0).dtype)
    dtype('float64')
    >>> result_dtype(np.dtype(np.int32), np.dtype(np.int32)), result_dtype(np.dtype(np.uint8), np.dtype(np.int8))
    (dtype('int32'), dtype('int16'))
    """
    return np.result_type(*dtypes) if dtypes else np.dtype(np.float64)


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype einsum's arithmetic runs in for a result of ``dtype`` (cast back at the end).

    * float16 accumulates in float32, as NumPy's einsum does (its half loops sum in float);
    * bool counts in int64: a sum of products of booleans is True iff the count of true
      products is nonzero, so counting then testing ``!= 0`` is NumPy's OR of ANDs, and a
      boolean operand mixed into a wider result is never OR-ed by a step that sums it;
    * every other dtype is its own (integers wrap at their own width, as NumPy's do).

    >>> compute_dtype(np.dtype(np.float16)), compute_dtype(np.dtype(bool)), compute_dtype(np.dtype(np.int8))
    (dtype('float32'), dtype('int64'), dtype('int8'))
    """
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype == np.bool_:
        return np.dtype(np.int64)
    return dtype


def nonfinite_by_sum(values: np.ndarray) -> bool:
    """Whether float/complex ``values`` of a dtype no compiled scan takes hold an inf or nan:
    summed in float64/complex128, any inf or nan makes the sum non-finite (a finite sum that
    overflows reads as non-finite too, which only sends einsum to its exact non-finite path)."""
    wide = np.complex128 if values.dtype.kind == "c" else np.float64
    with np.errstate(over="ignore", invalid="ignore"):
        return not bool(np.isfinite(values.sum(dtype=wide)))


def openblas_function(names: tuple[str, ...], restype) -> object | None:
    """The first of ``names`` that NumPy's bundled OpenBLAS (in ``numpy.libs``) exports, as a
    ctypes function of no arguments returning ``restype``; ``None`` where there is none."""
    try:
        import glob

        libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in sorted(glob.glob(os.path.join(libs, "*openblas*.so*"))):
            lib = ctypes.CDLL(path)
            for name in names:
                fn = getattr(lib, name, None)
                if fn is not None:
                    fn.restype = restype
                    fn.argtypes = []
                    return fn
    except OSError:
        pass
    return None


def index_dtype_for(shape: tuple[int, ...] | int) -> np.dtype:
    """Smallest of int32/int64 that holds every coordinate of ``shape``.

    Coordinates are stored per mode, never as one linearised key, so only the largest
    single extent matters (FROSTT Flickr's 28M-long mode still fits int32).

    >>> index_dtype_for((320_000, 28_000_000, 1_600_000, 731))
    dtype('int32')
    >>> index_dtype_for((2**40,))
    dtype('int64')
    """
    extents = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    largest = max((int(s) for s in extents), default=0)
    return _INT32 if largest <= _INT32_MAX else _INT64


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_bytes(size: int | str) -> int:
    """Parse a byte count: an int, or a string such as ``"512MB"``, ``"2GiB"``, ``"100k"``.

    >>> parse_bytes("512MB")
    512000000
    >>> parse_bytes("1.5GiB")
    1610612736
    >>> parse_bytes("lots")
    Traceback (most recent call last):
    ...
    ValueError: malformed size 'lots': expected a number with an optional unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)
    """
    if isinstance(size, bool):
        raise TypeError("size must be an int or a string such as '512MB', not bool")
    if isinstance(size, (int, np.integer)):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        return int(size)
    if not isinstance(size, str):
        raise TypeError(f"size must be an int or a string such as '512MB', not {type(size).__name__}")
    m = _SIZE_RE.match(size)
    if not m:
        raise ValueError(
            f"malformed size {size!r}: expected a number with an optional unit "
            "(B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    unit = m.group(2).lower().rstrip("b")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return value


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_anonymous(directory: Path) -> tuple[int, bool]:
    """A writable file in ``directory`` with no name yet (Linux ``O_TMPFILE``): killed at any
    point, the process leaves nothing behind. Returns ``(fd, anonymous)``; ``anonymous`` is
    False where the file system cannot do it (the fd is then -1)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return -1, False
    try:
        return os.open(directory, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666), True
    except OSError:  # EOPNOTSUPP, EISDIR, EINVAL: a file system without O_TMPFILE
        return -1, False


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; it becomes ``path`` only on success.

    An exception (KeyboardInterrupt included) leaves ``path`` untouched, either the old file
    or nothing, never a truncated one, and removes the temporary file. Where Linux allows
    (``O_TMPFILE``) the temporary has no name until the very end, so even a killed process
    leaves nothing; elsewhere it is a hidden ``.<name>.*.partial`` file. A new file gets the
    permissions the umask allows (``0o666 & ~umask``, as ``open()`` gives); an existing
    file keeps its own.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_write(os.path.join(d, "x.txt"), "w") as f:
    ...     _ = f.write("hello")
    >>> open(os.path.join(d, "x.txt")).read()
    'hello'
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"cannot write {path}: directory {directory} is not writable")
    try:
        perm = os.stat(path).st_mode & 0o7777
    except OSError:
        perm = 0o666 & ~_umask()
    fd, anonymous = _open_anonymous(directory)
    tmp = None
    if not anonymous:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), perm)
            os.fsync(f.fileno())
            if anonymous:  # give the finished file a (hidden) name, then move it into place
                tmp = os.path.join(directory, f".{path.name}.{os.getpid()}.{id(f):x}.partial")
                proc = os.open("/proc/self/fd", os.O_RDONLY)
                try:  # linkat(AT_SYMLINK_FOLLOW) of the fd's magic link names the open file
                    os.link(str(f.fileno()), tmp, src_dir_fd=proc, follow_symlinks=True)
                finally:
                    os.close(proc)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
