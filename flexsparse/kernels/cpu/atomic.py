"""Atomic operations on one element of an int64 array, inside numba kernels.

Threads of a ``prange`` loop that hand work to each other need an operation no other thread
can interleave with: numba has none, so these intrinsics emit LLVM's ``cmpxchg`` and atomic
``load`` (sequentially consistent; on x86 a ``lock cmpxchg`` and a plain load):

* ``atomic_load(a, i)`` -- ``a[i]``, read whole and never cached in a register across calls;
* ``atomic_cas(a, i, expected, new)`` -- if ``a[i] == expected`` store ``new``; return the
  value found (the exchange happened when it equals ``expected``).

``a`` is a C-contiguous ``int64`` array; no bounds check (like numba's own indexing). Each
function is also plain Python on NumPy arrays, for ``NUMBA_DISABLE_JIT=1`` runs (one thread,
so nothing can interleave). Cost: a few nanoseconds uncontended.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["atomic_cas", "atomic_load"]


def atomic_load(a, i):
    return a[i]


def atomic_cas(a, i, expected, new):
    old = a[i]
    if old == expected:
        a[i] = new
    return old


def _ptr(context, builder, arytype, ary, i, ityp):
    arr = context.make_array(arytype)(context, builder, ary)
    return builder.gep(arr.data, [context.cast(builder, i, ityp, types.intp)])


@intrinsic
def _load(typingctx, a, i):
    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load_atomic(ptr, "seq_cst", 8)
    return types.int64(a, i), codegen


@intrinsic
def _cas(typingctx, a, i, expected, new):
    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        i64 = ir.IntType(64)
        exp = context.cast(builder, args[2], sig.args[2], types.int64)
        val = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(ptr, exp, val, "seq_cst", "seq_cst")
        old = builder.extract_value(res, 0)
        return old if old.type == i64 else builder.sext(old, i64)
    return types.int64(a, i, expected, new), codegen


def _int64_array(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.int64 and a.layout == "C"


@overload(atomic_load)
def _ov_load(a, i):
    if _int64_array(a):
        return lambda a, i: _load(a, i)


@overload(atomic_cas)
def _ov_cas(a, i, expected, new):
    if _int64_array(a):
        return lambda a, i, expected, new: _cas(a, i, expected, new)

