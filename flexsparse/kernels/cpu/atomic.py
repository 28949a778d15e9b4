"""Atomic exchange of one array element inside numba kernels (threads of one ``prange``
claiming shared work items).

* ``exchange(a, i, v)`` -- store ``v`` into ``a[i]`` and return the value it held, as one
  atomic step (LLVM ``atomicrmw xchg``, sequentially consistent: on x86 one ``xchg``
  instruction, ~20 cycles uncontended). Two threads exchanging ``1`` into a zeroed slot
  see ``0`` exactly once between them, which is how the SpGEMM workers claim parts
  (:mod:`.spgemm`).

``a`` is a C-contiguous array of a 32- or 64-bit integer type addressed by a flat element
offset (no bounds check, like numba's own indexing). Like :mod:`.simd`, the function is
also an ordinary Python function on NumPy arrays (not atomic there: it serves kernels run
under ``NUMBA_DISABLE_JIT=1``, whose ``prange`` is a serial loop); in compiled code the
``@overload`` below replaces it by the intrinsic.

Cost: one atomic instruction; the cache line of ``a[i]`` moves between the cores.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic, overload

__all__ = ["exchange"]


def exchange(a, i, v):
    flat = a.reshape(-1)
    old = flat[i]
    flat[i] = v
    return old


@intrinsic
def _exchange(typingctx, a, i, v):
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        value = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        return builder.atomic_rmw("xchg", builder.gep(arr.data, [index]), value, "seq_cst")
    return a.dtype(a, i, v), codegen


@overload(exchange)
def _ov_exchange(a, i, v):
    if isinstance(a, types.Array) and a.layout == "C" and isinstance(a.dtype, types.Integer) \
            and a.dtype.bitwidth in (32, 64) and isinstance(i, types.Integer) and isinstance(v, types.Integer):
        return lambda a, i, v: _exchange(a, i, v)
    return None
