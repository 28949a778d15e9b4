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
