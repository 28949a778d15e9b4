"""Small shared helpers: dtype checks, index dtypes, byte-size parsing, atomic writes, the
GEMM orientation rule, the CPU's vendor and family, and the look-up of NumPy's bundled OpenBLAS.

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
    "cpu_model",
    "index_dtype_for",
    "matmul_narrow_first",
    "narrow_first",
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


#: :func:`matmul_narrow_first` keeps the order of a product with fewer output columns than
#: this, at least :data:`KEEP_ORDER_MIN_K` contracted and at most :data:`KEEP_ORDER_MAX_ROWS`
#: rows (measured; see there).
KEEP_ORDER_MAX_COLS = 24
KEEP_ORDER_MIN_K = 128
KEEP_ORDER_MAX_ROWS = 1024
#: CPUs (vendor, family) on which every product keeps its order: on a Zen 5 EPYC (AMD family
#: 26; NumPy's OpenBLAS 0.3.31 runs its "Haswell" kernels there) the narrow side as BLAS's
#: rows ran slower (``x @ y.T`` against ``(y @ x.T).T``, float64, 2 threads, min of 200 calls,
#: 2-vCPU AMD EPYC Zen 5 guest, 2026-12-02): 576x16x375 101 against 140 us, 330x68x108 55
#: against 72, 352x71x116 67 against 78, 2000x100x300 1194 against 1476, 576x96x375 563
#: against 581; 186x16x77 and 360x91x15 within 3%. The same kernels on round 21's Zen 4 (family
#: 25) ran most of these faster swapped (see :func:`matmul_narrow_first`): the CPU decides,
#: not the kernels.
KEEP_ORDER_CPUS = frozenset({("AuthenticAMD", 26)})


def matmul_narrow_first(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (2-D or stacked) with the narrower output side as BLAS's rows: for more rows
    than columns it computes ``(b^T @ a^T)^T`` and returns that transposed view, as NumPy's
    own ``einsum`` returns such views. OpenBLAS is 12-20% faster that way in all four
    transpose forms (float64, 2 threads, min of ~400 interleaved calls on the 2-vCPU Xeon of
    2026-12-02: 576x96x375 327 against 282 us, 2000x100x300 1008 against 801 us, and the
    mirror 96x576x375 282 against 350 us the other way round; one thread 573 against 504 us).
    A square product such as ``a @ a.T`` keeps its order, which BLAS runs as a SYRK.

    A very narrow output (under :data:`KEEP_ORDER_MAX_COLS` columns) over a long contracted
    side and a few hundred rows keeps its order: there the narrow side as BLAS's rows ran
    slower (``x @ y.T``, 2 threads, min of up to 600 interleaved calls, 2-vCPU AMD EPYC Zen 4
    guest, 2026-12-02; narrow first over kept order): rows 360 and 576, 8 or 16 columns,
    K 128-1000: 1.03-1.39x (576x16x375: 1.10x); but K 64-91: 0.78-1.04x, 2000 rows:
    0.64-1.02x, 24-32 columns: 0.90-0.96x, so those swap as before. On the CPUs of
    :data:`KEEP_ORDER_CPUS` every product keeps its order (measured there).
    """
    if narrow_first(a.shape[-2], b.shape[-1], a.shape[-1]):
        return np.matmul(b.swapaxes(-1, -2), a.swapaxes(-1, -2)).swapaxes(-1, -2)
    return np.matmul(a, b)


def narrow_first(rows: int, cols: int, k: int) -> bool:
    """Whether :func:`matmul_narrow_first` runs a ``[rows, k] @ [k, cols]`` product with the
    sides swapped: never on the CPUs of :data:`KEEP_ORDER_CPUS`."""
    if cpu_model() in KEEP_ORDER_CPUS:
        return False
    return rows > cols and not (cols < KEEP_ORDER_MAX_COLS and k >= KEEP_ORDER_MIN_K and rows <= KEEP_ORDER_MAX_ROWS)


_MACHINE: dict = {}


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


def cpu_model() -> tuple[str, int]:
    """``(vendor, family)`` of this CPU from ``/proc/cpuinfo`` (``("", -1)`` where it cannot
    be read); looked up once."""
    if "cpu" not in _MACHINE:
        vendor, family = "", -1
        with contextlib.suppress(OSError, ValueError):
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    key = key.strip()
                    if key == "vendor_id" and not vendor:
                        vendor = value.strip()
                    elif key == "cpu family" and family < 0:
                        family = int(value.strip())
                    if vendor and family >= 0:
                        break
        _MACHINE["cpu"] = (vendor, family)
    return _MACHINE["cpu"]


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
