"""Output buffers of the Gustavson SpGEMM: the heap's huge-page advice is cleared before
small buffers are allocated from it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp

import flexsparse.kernels.cpu._spgemm_output as out
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spgemm import spgemm

_MADV_HUGEPAGE = 14


def _heap_flags() -> list[str]:
    flags, in_heap = [], False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                in_heap = line.rstrip().endswith("[heap]")
            elif head[0] == "VmFlags:" and in_heap:
                flags.append(" ".join(head[1:]))
    return flags


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VMA flags are read from Linux /proc")
def test_heap_huge_page_advice_is_cleared():
    found = out._heap_start_and_sbrk()
    if found is None or out._madvise() is None:
        pytest.skip("no heap range or madvise here")
    start, sbrk = found
    top = sbrk(0)
    page = out._PAGE
    lo = ((top - 4 * page) & ~(page - 1))
    if lo < start or out._madvise()(lo, 2 * page, _MADV_HUGEPAGE) != 0:
        pytest.skip("transparent huge pages cannot be advised here")
    assert any(" hg" in f for f in _heap_flags())  # a range advised for huge pages, as NumPy leaves them
    assert out._heap_small_pages()
    assert not any(" hg" in f for f in _heap_flags())


def test_products_through_small_buffers_stay_exact():
    rng = np.random.default_rng(0)
    for n in (300, 900):
        a = sp.random_array((n, n), density=8 / n, rng=rng, format="csr")
        c = spgemm(CSR.from_scipy(a), CSR.from_scipy(a), sort=True)
        np.testing.assert_allclose(c.toarray(), (a @ a).toarray())



def _resident_kib(lo: int, hi: int) -> tuple[int, set[str]]:
    """(resident KiB, VmFlags) of the mappings overlapping ``[lo, hi)``."""
    rss, flags, inside = 0, set(), False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                a, b = (int(x, 16) for x in head[0].split("-"))
                inside = a < hi and lo < b
            elif inside and head[0] == "Rss:":
                rss += int(head[1])
            elif inside and head[0] == "VmFlags:":
                flags.update(head[1:])
    return rss, flags


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mappings are read from Linux /proc")
@pytest.mark.parametrize("dtype", [np.int32, np.float64, np.complex128])
def test_small_pages_empty_is_resident_as_written(dtype):
    n = 16 * 2**20 // np.dtype(dtype).itemsize         # 16 MiB: NumPy would advise huge pages
    buf = out.small_pages_empty(n, dtype)
    assert buf.shape == (n,) and buf.dtype == dtype and buf.flags.writeable
    for at in (0, n // 3, n // 2, n - 1):                # four written pages, not 2 MiB ones
        buf[at] = 1
    rss, flags = _resident_kib(buf.ctypes.data, buf.ctypes.data + buf.nbytes)
    assert rss <= 64, rss
    assert "hg" not in flags, flags
    assert buf[n // 2] == 1
    assert out.small_pages_empty(0, dtype).shape == (0,)
