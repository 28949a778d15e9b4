"""Hypothesis strategies and oracles shared by the fuzz tests (NumPy is the oracle).

* :func:`einsum_problems`: a random einsum over 1-4 operands of small extents (0-4, size-1
  broadcasting on named and ellipsis dimensions, repeated indices, implicit or explicit
  output), every dtype NumPy promotes, optional inf/nan, each operand as a NumPy array, a
  Python scalar, a COO (possibly with duplicate coordinates), a CSF, a SciPy or a pydata
  array, and optional ``memory_limit``/``tiling``/``optimize``/``format``.
* :func:`check_against`: the result's dtype and values against an oracle (tolerance scaled by
  the sum of absolute products, inf/nan compared exactly, complex parts separately).
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64, np.complex64, np.complex128]
KINDS = ["numpy", "scalar", "coo", "coo-dup", "csf", "scipy", "pydata"]
LIMITS = [None, None, None, 500, 4096, "1MB"]


def fuzz_settings() -> settings:
    """The active fuzz profile (``HYPOTHESIS_PROFILE``, default ``fuzz-fast``)."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "fuzz-fast")
    return settings(settings.get_profile(name if name.startswith("fuzz-") else "fuzz-fast"))


@st.composite
def einsum_specs(draw):
    """``(subscripts, shapes)`` of a valid einsum."""
    letters = "abcde"[: draw(st.integers(1, 5))]
    sizes = {c: draw(st.sampled_from([0, 1, 1, 2, 3, 4])) for c in letters}
    n_ell = draw(st.integers(0, 2))
    ell_sizes = [draw(st.integers(1, 3)) for _ in range(n_ell)]
    terms, shapes, any_ell = [], [], False
    for _ in range(draw(st.integers(1, 4))):
        term = "".join(draw(st.lists(st.sampled_from(letters), max_size=3)))
        shape = []
        for m, c in enumerate(term):
            first = term.index(c)
            shape.append(shape[first] if first < m else (1 if draw(st.integers(0, 6)) == 0 else sizes[c]))
        if n_ell and draw(st.booleans()):
            k = draw(st.integers(0, n_ell))
            dims = [1 if draw(st.integers(0, 4)) == 0 else s for s in ell_sizes[n_ell - k:]]
            pos = draw(st.integers(0, len(term)))
            term, shape, any_ell = term[:pos] + "..." + term[pos:], shape[:pos] + dims + shape[pos:], True
        terms.append(term)
        shapes.append(tuple(shape))
    spec = ",".join(terms)
    if draw(st.booleans()):
        used = sorted(set("".join(terms).replace(".", "")))
        out = "".join(draw(st.permutations(used))[: draw(st.integers(0, len(used)))])
        if any_ell:
            pos = draw(st.integers(0, len(out)))
            out = out[:pos] + "..." + out[pos:]
        spec += "->" + out
    return spec, shapes


def make_values(seed: int, shape, dtype, density: float, nonfinite: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    keep = rng.random(n) < density
    if dt.kind == "b":
        vals = np.ones(n, dtype=bool)
    elif dt.kind in "iu":
        vals = rng.integers(1, 40, size=n).astype(dt)
        if dt.kind == "i":
            vals = (vals * rng.choice([-1, 1], size=n)).astype(dt)
    else:
        vals = rng.standard_normal(n) + (1j * rng.standard_normal(n) if dt.kind == "c" else 0)
        vals = vals.astype(dt)
        if nonfinite:
            special = [np.inf, -np.inf, np.nan]
            if dt.kind == "c":
                special += [complex(np.inf, 1), complex(1, -np.inf), complex(np.nan, 0)]
            hit = rng.random(n) < 0.25
            vals[hit] = np.array(special, dtype=dt)[rng.integers(0, len(special), int(hit.sum()))]
    return np.where(keep, vals, np.zeros(1, dt)).reshape(shape)


def as_kind(arr: np.ndarray, kind: str):
    """``arr`` as one of :data:`KINDS` (falls back to NumPy where the kind cannot hold it)."""
    import flexsparse as fs

    if kind == "scalar":
        return arr.item() if arr.ndim == 0 and arr.dtype.kind in "bifc" and arr.dtype.itemsize == 8 else arr
    if kind == "coo":
        return fs.COO.from_numpy(arr)
    if kind == "coo-dup":  # every entry stored twice, halves summing to the value
        c = fs.COO.from_numpy(arr)
        if c.nnz == 0 or arr.dtype.kind in "iu" and arr.dtype.itemsize == 1:
            return c
        if arr.dtype.kind == "b":
            return fs.COO(np.hstack([c.coords, c.coords]), np.concatenate([c.data, c.data]), c.shape)
        if arr.dtype.kind in "iu":
            half = (c.data // 2).astype(arr.dtype)
            return fs.COO(np.hstack([c.coords, c.coords]), np.concatenate([half, c.data - half]), c.shape)
        if np.isfinite(c.data).all():
            half = (c.data / 2).astype(arr.dtype)
            return fs.COO(np.hstack([c.coords, c.coords]), np.concatenate([half, c.data - half]), c.shape)
        return c
    if kind == "csf" and arr.ndim:
        return fs.CSF.from_coo(fs.COO.from_numpy(arr))
    if kind == "scipy" and arr.ndim == 2 and arr.dtype != np.float16:
        import scipy.sparse as sp

        return sp.csr_array(arr)
    if kind == "pydata" and arr.ndim:
        import sparse

        return sparse.COO.from_numpy(arr)
    return arr


@st.composite
def einsum_problems(draw, nonfinite: bool | None = None):
    """``(spec, dense operands, operands, kwargs)``."""
    spec, shapes = draw(einsum_specs())
    bad = draw(st.booleans()) if nonfinite is None else nonfinite
    dense, ops = [], []
    for shape in shapes:
        dtype = draw(st.sampled_from(DTYPES))
        arr = make_values(draw(st.integers(0, 2**31)), shape, dtype, draw(st.sampled_from([0.0, 0.3, 1.0])), bad)
        op = as_kind(arr, draw(st.sampled_from(KINDS)))
        dense.append(densify(op))  # what the operand means (duplicates summed as todense() sums them)
        ops.append(op)
    kwargs = {}
    limit = draw(st.sampled_from(LIMITS))
    if limit is not None:
        kwargs.update(memory_limit=limit, tiling=draw(st.sampled_from(["overbook", "prescient", "conservative"])))
    if draw(st.booleans()):
        kwargs["optimize"] = draw(st.sampled_from(["greedy", "optimal", "left", True, False]))
    if draw(st.booleans()):
        kwargs["format"] = draw(st.sampled_from(["auto", "coo", "csf", "dense"]))
    return spec, dense, ops, kwargs


def densify(x) -> np.ndarray:
    if hasattr(x, "todense"):
        return np.asarray(x.todense())
    if hasattr(x, "toarray"):
        return x.toarray()
    return np.asarray(x)


def check_against(got, want: np.ndarray, scale: np.ndarray) -> None:
    """``got`` equals ``want`` in dtype and shape; values exactly (integers, inf/nan positions)
    or within a tolerance of the dtype's precision times ``scale`` (the sum of |products|)."""
    g, w = densify(got), np.asarray(want)
    assert g.dtype == w.dtype, f"dtype {g.dtype}, NumPy gives {w.dtype}"
    assert g.shape == w.shape, f"shape {g.shape}, NumPy gives {w.shape}"
    if w.dtype.kind in "biu":
        np.testing.assert_array_equal(g, w)
        return
    eps = {2: 4e-3, 4: 2e-6, 8: 1e-12}[np.finfo(w.dtype).bits // 8]
    parts = (np.real, np.imag) if w.dtype.kind == "c" else (np.asarray,)
    for part in parts:
        gp, wp = part(g).astype(np.float64), part(w).astype(np.float64)
        np.testing.assert_array_equal(np.isnan(gp), np.isnan(wp), err_msg="nan positions differ")
        fin = np.isfinite(wp)
        np.testing.assert_array_equal(gp[~fin], wp[~fin], err_msg="inf values differ")
        scale = np.nan_to_num(np.asarray(scale, dtype=np.float64), nan=0.0, posinf=0.0)  # inf/nan cells
        tol = 8 * eps * (scale + 1.0)
        assert np.all(np.abs(gp[fin] - wp[fin]) <= np.broadcast_to(tol, wp.shape)[fin]), (gp, wp)
