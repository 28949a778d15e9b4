"""Triton launch helpers shared by the kernel modules: JIT versus interpreter, dtypes.

How Triton picks the interpreter: ``triton.jit`` reads ``TRITON_INTERPRET`` when it
decorates a function, and Triton's own library functions (``tl.zeros``, ``tl.sum``...) are
decorated when ``triton`` is first imported. So interpreted runs (CPU tensors, CI without a
GPU) need ``TRITON_INTERPRET=1`` in the environment BEFORE ``triton`` is imported; setting
it later leaves the library compiled for the GPU and kernels fail. ``interpreter_ready()``
checks this so wrappers can raise a clear error instead of Triton's cryptic one.

Kernel bodies are kept as undecorated functions and wrapped by ``kernel_for`` on first use
(cached), so importing a kernel module decides nothing and compiles nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["require_triton", "kernel_for", "interpreter_ready", "use_interpreter", "acc_dtype", "next_pow2"]


def require_triton() -> Any:
    """Import and return the ``triton`` module, or raise an ImportError naming the extra."""
    try:
        import triton
    except ImportError as exc:  # the message tells the user what to do
        raise ImportError(
            "flexsparse's GPU kernels need Triton: pip install flexsparse[gpu]") from exc
    return triton


def interpreter_ready() -> bool:
    """True when Triton was imported with ``TRITON_INTERPRET=1`` (its library is interpreted)."""
    triton = require_triton()
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(triton.language.standard.zeros, InterpretedFunction)


def use_interpreter(device_type: str) -> bool:
    """Whether kernels for tensors on ``device_type`` run in Triton's interpreter.

    Raises:
        RuntimeError: CPU tensors, but Triton was imported without ``TRITON_INTERPRET=1``.
    """
    ready = interpreter_ready()
    if device_type != "cuda" and not ready:
        raise RuntimeError(
            f"Triton kernels got {device_type} tensors: they run on CUDA devices, or on the CPU "
            "only in Triton's interpreter, which needs TRITON_INTERPRET=1 set before triton is imported")
    return ready


@cache
def kernel_for(fn: Callable) -> Any:
    """The launchable Triton kernel for the plain function ``fn`` (decorated once, cached).

    ``triton.jit`` returns an interpreted function when ``TRITON_INTERPRET=1``.
    """
    return require_triton().jit(fn)


def acc_dtype(torch_dtype: Any) -> Any:
    """Accumulator dtype for a kernel: float64 for float64 operands, float32 otherwise."""
    import torch
    tl = require_triton().language
    return tl.float64 if torch_dtype == torch.float64 else tl.float32


def next_pow2(n: int, floor: int = 1) -> int:
    """Smallest power of two >= max(n, floor) (``tl.arange`` extents must be powers of two).

    >>> next_pow2(3), next_pow2(16), next_pow2(5, floor=16)
    (4, 16, 16)
    """
    n = max(int(n), int(floor), 1)
    return 1 << (n - 1).bit_length()
