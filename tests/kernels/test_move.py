"""``simd.move`` (an in-array block copy with overlap allowed) and ``simd.stream`` (the same
for disjoint ranges, stored past the caches), compiled and Python forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from flexsparse.kernels.cpu.simd import move, stream


@njit(cache=False)
def _move_compiled(a, dst, src, count):
    move(a, dst, src, count)


def _expected(a, dst, src, count):
    out = a.copy()
    if count > 0:
        out[dst:dst + count] = a[src:src + count]
    return out


def _assert_copies(compiled, python, a, dst, src, count):
    """The compiled copy and its Python form (NUMBA_DISABLE_JIT runs) both match slice assignment."""
    want = _expected(a, dst, src, count)
    for fn in (compiled, python):
        got = a.copy()
        fn(got, dst, src, count)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64, np.complex128, np.bool_])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_move_matches_slice_assignment(dtype, data):
    n = data.draw(st.integers(0, 300))
    count = data.draw(st.integers(0, n))
    src = data.draw(st.integers(0, n - count))
    dst = data.draw(st.integers(0, n - count))
    _assert_copies(_move_compiled, move, (np.arange(n) * 7 % 11).astype(dtype), dst, src, count)


def test_move_overlapping_both_ways():
    a = np.arange(10, dtype=np.int64)
    _move_compiled(a, 3, 0, 6)  # destination above an overlapping source
    np.testing.assert_array_equal(a, [0, 1, 2, 0, 1, 2, 3, 4, 5, 9])
    a = np.arange(10, dtype=np.int64)
    _move_compiled(a, 0, 3, 6)  # destination below
    np.testing.assert_array_equal(a, [3, 4, 5, 6, 7, 8, 6, 7, 8, 9])
    a = np.arange(4, dtype=np.float64)
    _move_compiled(a, 1, 0, 0)  # nothing to copy
    np.testing.assert_array_equal(a, np.arange(4.0))


@njit(cache=False)
def _stream_compiled(a, dst, src, count):
    stream(a, dst, src, count)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64, np.complex128, np.bool_])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_stream_matches_slice_assignment(dtype, data):
    # disjoint ranges of any length and offset: heads and tails around 64-byte lines
    n = data.draw(st.integers(0, 600))
    count = data.draw(st.integers(0, n // 2))
    src = data.draw(st.integers(0, n - count))
    free = [d for d in range(n - count + 1) if d + count <= src or d >= src + count]
    dst = data.draw(st.sampled_from(free)) if free else src
    if dst == src and count:
        count = 0
    _assert_copies(_stream_compiled, stream, (np.arange(n) * 7 % 11).astype(dtype), dst, src, count)


def test_stream_long_block_misaligned():
    a = np.arange(10_000, dtype=np.float64)
    want = a.copy()
    want[5_003:9_003] = a[1:4_001]
    _stream_compiled(a, 5_003, 1, 4_000)  # many whole lines between a head and a tail
    np.testing.assert_array_equal(a, want)
