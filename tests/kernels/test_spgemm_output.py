"""Output buffers of the Gustavson SpGEMM: fresh mappings for small buffers, the heap fallback."""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import flexsparse.kernels.cpu._spgemm_output as out
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spgemm import spgemm


def _resident_pages(arr: np.ndarray) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lo = arr.ctypes.data & ~4095
    hi = (arr.ctypes.data + arr.nbytes + 4095) & ~4095
    vec = np.zeros((hi - lo) // 4096, dtype=np.uint8)
    if libc.mincore(ctypes.c_void_p(lo), hi - lo, vec.ctypes.data) != 0:
        pytest.skip("mincore unavailable")
    return int((vec & 1).sum())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page residency is read with Linux mincore")
def test_small_buffers_hold_no_page_until_written():
    idx, data = out.output_buffers(1 << 20, np.dtype(np.int32), np.dtype(np.float64), [])
    assert idx.shape == data.shape == (1 << 20,)
    assert _resident_pages(idx) == 0 and _resident_pages(data) == 0
    data[5000:5010] = 1.0  # one page
    assert _resident_pages(data) <= 2 and _resident_pages(idx) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page residency is read with Linux mincore")
def test_populated_ranges_are_resident_and_nothing_else():
    n = 1 << 18
    idx, data = out.output_buffers(n, np.dtype(np.int64), np.dtype(np.float64), [(0, 4096), (n - 1024, n)])
    # 4096 + 1024 entries of 8 bytes: 10 whole pages per buffer (a partial page is not populated)
    assert 8 <= _resident_pages(data) <= 11 and 8 <= _resident_pages(idx) <= 11


def test_no_mapping_left_falls_back_to_the_heap(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refuse)
    idx, data = out.output_buffers(1000, np.dtype(np.int32), np.dtype(np.float32), [(0, 1000)])
    assert idx.dtype == np.int32 and data.dtype == np.float32 and idx.flags.writeable
    a = sp.random_array((400, 300), density=0.05, rng=0, format="csr")
    b = sp.random_array((300, 500), density=0.05, rng=1, format="csr")
    c = spgemm(CSR.from_scipy(a), CSR.from_scipy(b), sort=True)
    np.testing.assert_allclose(c.toarray(), (a @ b).toarray())
