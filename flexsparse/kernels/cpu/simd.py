"""Explicit SIMD vectors inside numba kernels: an LLVM vector type and a few operations.

LLVM's auto-vectoriser turns a simple loop over a contiguous axis into vector code, but it
will not keep a *tile* of accumulators in registers across an outer loop with indirect
loads (the shape of every structured-sparse micro-kernel). These functions give a kernel
explicit vector values, so a register tile is plain local variables:

* ``vload(a, off, nbytes)`` -- ``a.flat[off : off + L]`` as one vector, ``L = nbytes //
  a.itemsize`` lanes (``nbytes`` must be a compile-time constant, e.g. ``64`` = one
  AVX-512 register, ``256`` = four); ``vload_n(a, off, nbytes, count)`` loads only the
  first ``count`` lanes (masked; the others are 0) for ragged edges;
* ``vstore(a, off, v)`` / ``vstore_n(a, off, v, count)`` -- the reverse;
* ``vzeros(a, nbytes)``, ``vsplat(x, nbytes)`` -- zero / broadcast vectors;
* ``vadd(a, b)``; ``vfma(acc, a, b)`` -- ``acc + a * b`` (``llvm.fmuladd``: one FMA instruction per
  register); ``vsum(v)`` -- horizontal sum (shuffle tree);
* ``vperm(x, idx)`` -- lane select ``x[idx]`` within one 64-byte register (AVX-512
  ``vpermps``/``vpermpd``; ``idx`` is an int32 vector for float32, int64 for float64,
  loaded with ``vload``). Only valid when :func:`has_avx512` is true.
* ``move(a, dst, src, count)`` -- ``a.flat[dst : dst + count] = a.flat[src : src + count]``
  with overlap allowed (``llvm.memmove``: the C library's copy, 0.21-0.28 ns per entry of an
  in-cache 8K-entry block, against 1.1-1.7 ns for the element loop numba compiles, which
  it does not vectorise because source and destination alias);
* ``stream(a, dst, src, count)`` -- the same copy for ranges that do not overlap, its 64-byte
  lines stored past the caches (non-temporal stores, then a store fence): a block computed
  in cache and copied out to memory costs the line's write alone, not a read for ownership
  first, and does not evict the caller's working set (the SpGEMM worker walking down, 3-D
  Poisson on one thread: the copies 13.4M -> 6.0M cycles for 5.2M entries).

``a`` is a C-contiguous array addressed by a flat element offset (no bounds checks, like
numba's own indexing). Each function is also an ordinary Python function on NumPy arrays
(vectors are 1-D arrays), so kernels written with them run, slowly, under
``NUMBA_DISABLE_JIT=1``; in compiled code the ``@overload`` below replaces it by the
intrinsic. Cost: each operation is one or a few instructions per 64-byte register.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

__all__ = ["Vec", "has_avx512", "move", "stream", "vadd", "vfma", "vload", "vload_n", "vperm", "vsplat", "vstore",
           "vstore_n", "vsum", "vzeros"]


@functools.lru_cache(maxsize=1)
def has_avx512() -> bool:
    """Whether the host CPU (the one numba compiles for) has AVX-512F (``vperm`` needs it)."""
    from llvmlite import binding

    return "+avx512f" in binding.get_host_cpu_features().flatten().split(",")


# ------------------------------------------------------------------ Python fallbacks
def _flat(a):
    return a.reshape(-1)


def vload(a, off, nbytes):
    return _flat(a)[off:off + nbytes // a.itemsize].copy()


def vload_n(a, off, nbytes, count):
    lanes = nbytes // a.itemsize
    v = np.zeros(lanes, dtype=a.dtype)
    n = max(0, min(lanes, count))
    v[:n] = _flat(a)[off:off + n]
    return v


def vstore(a, off, v):
    _flat(a)[off:off + v.shape[0]] = v


def vstore_n(a, off, v, count):
    n = max(0, min(v.shape[0], count))
    _flat(a)[off:off + n] = v[:n]


def vzeros(a, nbytes):
    return np.zeros(nbytes // a.itemsize, dtype=a.dtype)


def vsplat(x, nbytes):
    x = np.asarray(x)
    return np.full(nbytes // x.itemsize, x, dtype=x.dtype)


def vfma(acc, a, b):
    return acc + a * b


def vadd(a, b):
    return a + b


def vsum(v):
    return v.dtype.type(v.sum())


def vperm(x, idx):
    return x[idx]


def move(a, dst, src, count):
    f = _flat(a)
    if count > 0:
        f[dst:dst + count] = f[src:src + count].copy()


def stream(a, dst, src, count):
    move(a, dst, src, count)  # the Python form: where the stores go does not matter here


# ------------------------------------------------------------------------ numba type
class Vec(types.Type):
    """``lanes`` values of ``dtype`` held as one LLVM vector (registers, not memory)."""

    def __init__(self, dtype, lanes: int):
        self.dtype = dtype
        self.lanes = int(lanes)
        super().__init__(name=f"Vec({dtype}x{self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, fe_type.lanes))


def _lanes(dtype, nbytes) -> int | None:
    """Lanes for a literal byte count, or ``None`` (numba then retries with literals)."""
    if not isinstance(nbytes, types.IntegerLiteral):
        return None
    size = dtype.bitwidth // 8
    n = nbytes.literal_value // size
    if n < 1 or n * size != nbytes.literal_value:
        raise ValueError(f"nbytes={nbytes.literal_value} is not a multiple of {size}")
    return n


def _vec_ptr(context, builder, arytype, ary, off, vtype):
    arr = context.make_array(arytype)(context, builder, ary)
    ptr = builder.gep(arr.data, [off])
    return builder.bitcast(ptr, context.get_value_type(vtype).as_pointer())


def _lane_mask(builder, lanes: int, count):
    """``<lanes x i1>``: lane ``i`` is on iff ``i < count``."""
    ivec = ir.VectorType(ir.IntType(64), lanes)
    iota = ir.Constant(ivec, list(range(lanes)))
    cnt = builder.sext(count, ir.IntType(64)) if count.type.width < 64 else count
    splat = builder.insert_element(ir.Constant(ivec, ir.Undefined), cnt, ir.Constant(ir.IntType(32), 0))
    splat = builder.shuffle_vector(splat, ir.Constant(ivec, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
    return builder.icmp_signed("<", iota, splat)


def _intrinsic_name(base: str, vt: Vec) -> str:
    elem = {8: "i8", 16: "i16", 32: "i32", 64: "i64"}
    if isinstance(vt.dtype, types.Float):
        suffix = "f32" if vt.dtype.bitwidth == 32 else "f64"
    else:
        suffix = elem[vt.dtype.bitwidth]
    return f"{base}.v{vt.lanes}{suffix}"


@intrinsic
def _vload(typingctx, a, off, nbytes):
    n = _lanes(a.dtype, nbytes)
    if n is None:
        return None
    vt = Vec(a.dtype, n)

    def codegen(context, builder, sig, args):
        # element alignment only: tiles start anywhere in the array
        return builder.load(_vec_ptr(context, builder, sig.args[0], args[0], args[1], vt),
                            align=a.dtype.bitwidth // 8)
    return vt(a, off, nbytes), codegen


@intrinsic
def _vload_n(typingctx, a, off, nbytes, count):
    n = _lanes(a.dtype, nbytes)
    if n is None:
        return None
    vt = Vec(a.dtype, n)

    def codegen(context, builder, sig, args):
        ltype = context.get_value_type(vt)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
        mask = _lane_mask(builder, n, args[3])
        fnty = ir.FunctionType(ltype, [ltype.as_pointer(), ir.IntType(32), mask.type, ltype])
        name = _intrinsic_name("llvm.masked.load", vt) + ".p0" + _intrinsic_name("v", vt)[1:]
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        align = ir.Constant(ir.IntType(32), a.dtype.bitwidth // 8)
        return builder.call(fn, [ptr, align, mask, ir.Constant(ltype, None)])
    return vt(a, off, nbytes, count), codegen


@intrinsic
def _vstore(typingctx, a, off, v):
    def codegen(context, builder, sig, args):
        builder.store(args[2], _vec_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[2]),
                      align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(a, off, v), codegen


@intrinsic
def _vstore_n(typingctx, a, off, v, count):
    def codegen(context, builder, sig, args):
        vt = sig.args[2]
        ltype = context.get_value_type(vt)
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
        mask = _lane_mask(builder, vt.lanes, args[3])
        fnty = ir.FunctionType(ir.VoidType(), [ltype, ltype.as_pointer(), ir.IntType(32), mask.type])
        name = _intrinsic_name("llvm.masked.store", vt) + ".p0" + _intrinsic_name("v", vt)[1:]
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        builder.call(fn, [args[2], ptr, ir.Constant(ir.IntType(32), a.dtype.bitwidth // 8), mask])
        return context.get_dummy_value()
    return types.none(a, off, v, count), codegen


@intrinsic
def _vzeros(typingctx, a, nbytes):
    n = _lanes(a.dtype, nbytes)
    if n is None:
        return None
    vt = Vec(a.dtype, n)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(a, nbytes), codegen


@intrinsic
def _vsplat(typingctx, x, nbytes):
    n = _lanes(x, nbytes)
    if n is None:
        return None
    vt = Vec(x, n)

    def codegen(context, builder, sig, args):
        ltype = context.get_value_type(vt)
        v = builder.insert_element(ir.Constant(ltype, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, ir.Constant(ltype, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))
    return vt(x, nbytes), codegen


@intrinsic
def _vfma(typingctx, acc, a, b):
    if not (isinstance(acc, Vec) and acc == a == b and isinstance(acc.dtype, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        ltype = context.get_value_type(sig.args[0])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ltype, [ltype] * 3),
                                            _intrinsic_name("llvm.fmuladd", sig.args[0]))
        return builder.call(fn, [args[1], args[2], args[0]])
    return acc(acc, a, b), codegen


@intrinsic
def _vadd(typingctx, a, b):
    if not (isinstance(a, Vec) and a == b and isinstance(a.dtype, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def _vsum(typingctx, v):
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        x, n = args[0], sig.args[0].lanes
        while n > 1:  # add the upper half onto the lower half
            half = n // 2
            lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half))))
            hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                          list(range(half, 2 * half))))
            s = builder.fadd(lo, hi)
            if n % 2:  # odd lane count: fold the last lane into lane 0
                zero = ir.Constant(ir.IntType(32), 0)
                last = builder.extract_element(x, ir.Constant(ir.IntType(32), n - 1))
                s = builder.insert_element(s, builder.fadd(builder.extract_element(s, zero), last), zero)
            x, n = s, half
        return builder.extract_element(x, ir.Constant(ir.IntType(32), 0))
    return v.dtype(v), codegen


_PERM = {(32, 16): ("llvm.x86.avx512.permvar.sf.512", 32), (64, 8): ("llvm.x86.avx512.permvar.df.512", 64)}


@intrinsic
def _vperm(typingctx, x, idx):
    key = (getattr(getattr(x, "dtype", None), "bitwidth", 0), getattr(x, "lanes", 0))
    if not (isinstance(x, Vec) and isinstance(idx, Vec) and key in _PERM
            and isinstance(idx.dtype, types.Integer) and idx.lanes == x.lanes
            and idx.dtype.bitwidth == key[0]):
        return None
    name, width = _PERM[key]

    def codegen(context, builder, sig, args):
        ft = context.get_value_type(sig.args[0])
        it = context.get_value_type(sig.args[1])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ft, [ft, it]), name)
        return builder.call(fn, [args[0], args[1]])
    return x(x, idx), codegen


# ---------------------------------------------------- compiled versions of the above
@overload(vload, prefer_literal=True)
def _ov_vload(a, off, nbytes):
    if isinstance(nbytes, types.IntegerLiteral):
        return lambda a, off, nbytes: _vload(a, off, nbytes)


@overload(vload_n, prefer_literal=True)
def _ov_vload_n(a, off, nbytes, count):
    if isinstance(nbytes, types.IntegerLiteral):
        return lambda a, off, nbytes, count: _vload_n(a, off, nbytes, count)


@overload(vstore)
def _ov_vstore(a, off, v):
    if isinstance(v, Vec):
        return lambda a, off, v: _vstore(a, off, v)


@overload(vstore_n)
def _ov_vstore_n(a, off, v, count):
    if isinstance(v, Vec):
        return lambda a, off, v, count: _vstore_n(a, off, v, count)


@overload(vzeros, prefer_literal=True)
def _ov_vzeros(a, nbytes):
    if isinstance(nbytes, types.IntegerLiteral):
        return lambda a, nbytes: _vzeros(a, nbytes)


@overload(vsplat, prefer_literal=True)
def _ov_vsplat(x, nbytes):
    if isinstance(nbytes, types.IntegerLiteral):
        return lambda x, nbytes: _vsplat(x, nbytes)


@overload(vfma)
def _ov_vfma(acc, a, b):
    if isinstance(acc, Vec):
        return lambda acc, a, b: _vfma(acc, a, b)


@overload(vadd)
def _ov_vadd(a, b):
    if isinstance(a, Vec):
        return lambda a, b: _vadd(a, b)


@overload(vsum)
def _ov_vsum(v):
    if isinstance(v, Vec):
        return lambda v: _vsum(v)


@overload(vperm)
def _ov_vperm(x, idx):
    if isinstance(x, Vec):
        return lambda x, idx: _vperm(x, idx)


@intrinsic
def _move(typingctx, a, dst, src, count):
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        item = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        intp = context.get_value_type(types.intp)
        dst_v, src_v, n = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:]))
        with builder.if_then(builder.icmp_signed(">", n, ir.Constant(intp, 0))):
            cgutils.raw_memmove(builder, builder.gep(arr.data, [dst_v]), builder.gep(arr.data, [src_v]), n, item)
        return context.get_dummy_value()
    return types.none(a, dst, src, count), codegen


@overload(move)
def _ov_move(a, dst, src, count):
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a, dst, src, count: _move(a, dst, src, count)


@functools.lru_cache(maxsize=1)
def _x86() -> bool:
    """Whether numba compiles for x86 (``sfence`` orders its non-temporal stores)."""
    from llvmlite import binding

    return binding.get_default_triple().split("-")[0] in ("x86_64", "i386", "i686")


@intrinsic
def _stream(typingctx, a, dst, src, count):
    """Bytes up to the destination's first 64-byte boundary and after its last one by
    ``memcpy``, the lines between as unaligned 64-byte loads and aligned non-temporal stores,
    then a store fence (the stores are weakly ordered: later readers on other threads must
    see them)."""
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        item = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        i64 = ir.IntType(64)
        i8p = ir.IntType(8).as_pointer()
        line = ir.Constant(i64, 64)
        dst_v, src_v, n = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:]))
        with builder.if_then(builder.icmp_signed(">", n, ir.Constant(i64, 0))):
            d = builder.bitcast(builder.gep(arr.data, [dst_v]), i8p)
            s = builder.bitcast(builder.gep(arr.data, [src_v]), i8p)
            nbytes = builder.mul(n, ir.Constant(i64, item))
            head = builder.and_(builder.sub(ir.Constant(i64, 0), builder.ptrtoint(d, i64)), ir.Constant(i64, 63))
            head = builder.select(builder.icmp_unsigned("<", nbytes, head), nbytes, head)
            cgutils.raw_memcpy(builder, d, s, head, 1)
            lines = builder.udiv(builder.sub(nbytes, head), line)
            vt = ir.VectorType(i64, 8)
            nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
            with cgutils.for_range(builder, lines) as loop:
                off = builder.add(head, builder.mul(loop.index, line))
                v = builder.load(builder.bitcast(builder.gep(s, [off]), vt.as_pointer()), align=1)
                store = builder.store(v, builder.bitcast(builder.gep(d, [off]), vt.as_pointer()), align=64)
                store.set_metadata("nontemporal", nontemporal)
            done = builder.add(head, builder.mul(lines, line))
            cgutils.raw_memcpy(builder, builder.gep(d, [done]), builder.gep(s, [done]), builder.sub(nbytes, done), 1)
            if _x86():
                fence = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                       "llvm.x86.sse.sfence")
                builder.call(fence, [])
            else:
                builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.none(a, dst, src, count), codegen


@overload(stream)
def _ov_stream(a, dst, src, count):
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a, dst, src, count: _stream(a, dst, src, count)
