"""Serial twins of ``parallel=True`` numba kernels, each with its own on-disk cache entry.

Products too small to pay for waking the thread team run a serial copy of their threaded
kernel (``prange`` compiles as ``range``). numba names a cache file after the function's
module, ``__qualname__`` and first source line, and its index key holds the signature and
the target machine but not the ``parallel`` flag. A twin made as
``njit(cache=True)(kernel.py_func)`` therefore shares the kernel's cache entry: whichever
of the two compiles first is what every later process loads for both. Measured 2026-11-29:
after a small block product had compiled the twin first, the threaded block kernel ran on
one thread in every later process (per-thread CPU time: the second thread did no work), and
the two-thread speed-ups of the block kernels equalled their one-thread ones.
:func:`serial_twin` copies the Python function under ``<qualname>_serial``, so the twin is
cached apart. Cost: one function object; compiled code as before.
"""

from __future__ import annotations

import types
from typing import Any

from numba import njit

__all__ = ["serial_twin"]


def serial_twin(kernel: Any, **flags: Any) -> Any:
    """``njit(cache=True, **flags)`` of a copy of ``kernel``'s Python function named
    ``<qualname>_serial``; ``kernel`` itself when numba's JIT is disabled (it is then the
    plain Python function and already serial)."""
    py = getattr(kernel, "py_func", None)
    if py is None:
        return kernel
    fn = types.FunctionType(py.__code__, py.__globals__, py.__name__ + "_serial", py.__defaults__,
                            py.__closure__)
    fn.__qualname__ = py.__qualname__ + "_serial"
    fn.__module__ = py.__module__
    fn.__doc__ = py.__doc__
    fn.__kwdefaults__ = py.__kwdefaults__
    return njit(cache=True, **flags)(fn)
