"""Kept SpGEMM output buffers: a freed result's mapping serves the next product, never a live one."""

from __future__ import annotations

import gc
import resource

import numpy as np
import pytest
import scipy.sparse as sp

import flexsparse as fs
import flexsparse.kernels.cpu._pool as pool
import flexsparse.kernels.cpu._spgemm_output as out
from flexsparse import _limits
from flexsparse.formats.csr import CSR
from flexsparse.kernels.cpu.spgemm import spgemm


@pytest.fixture(autouse=True)
def _empty_pool():
    pool.free_buffers()
    yield
    pool.free_buffers()


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_freed_buffer_is_reused_without_page_faults():
    n = 4 * 2**20                                   # 32 MiB of float64
    a = pool.take(n, np.float64)
    a[:] = 1.0                                      # every page mapped once
    first = _address(a)
    del a
    gc.collect()
    assert pool.kept_bytes() >= n * 8
    b = pool.take(n // 2, np.int32)                 # smaller: the kept mapping fits
    assert _address(b) == first and pool.kept_bytes() == 0
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b[:] = 7
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    assert faults < 64, faults                      # written pages were mapped already
    assert b.dtype == np.int32 and b.shape == (n // 2,) and int(b[-1]) == 7


def test_what_is_kept_is_counted_by_its_resident_pages():
    a = pool.take(64 * 2**20, np.uint8)             # 64 MiB of room, 1 MiB written
    a[: 2**20] = 1
    del a
    gc.collect()
    assert 2**20 <= pool.kept_bytes() <= 4 * 2**20 + 2 * 2**21   # whole huge pages at most


def test_a_view_keeps_its_mapping_out_of_the_pool():
    a = pool.take(2**20, np.float64)
    a[:] = 1.0
    view = a[10:20]
    view[:] = 3.0
    del a
    gc.collect()
    assert pool.kept_bytes() == 0                   # the view still uses it
    c = pool.take(2**20, np.float64)                # so a new mapping is made
    c[:] = 0.0
    assert (view == 3.0).all()
    del view
    gc.collect()
    assert pool.kept_bytes() >= 2**20 * 8


def test_the_limit_bounds_what_is_kept(monkeypatch):
    monkeypatch.setattr(_limits, "SPGEMM_KEPT_BUFFER_BYTES", 3 * 2**20)
    bufs = [pool.take(2**20 // 8, np.float64) for _ in range(5)]   # 1 MiB each, written
    for b in bufs:
        b[:] = 1.0
    del bufs, b
    gc.collect()
    kept = pool.kept_bytes()
    assert 0 < kept <= 3 * 2**20
    assert fs.free_buffers() == kept and pool.kept_bytes() == 0
    monkeypatch.setattr(_limits, "SPGEMM_KEPT_BUFFER_BYTES", 0)   # keep nothing
    d = pool.take(2**20, np.float64)
    d[:] = 1.0
    del d
    gc.collect()
    assert pool.kept_bytes() == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_products_on_kept_buffers_are_exact_and_independent(monkeypatch, threads):
    """Every product's output takes the pool's path; results alive at once never share
    memory, and a product computed on a freed result's buffers equals SciPy's."""
    monkeypatch.setattr(out, "SMALL_PAGES_MAX_BYTES", 0)
    rng = np.random.default_rng(3)
    mats = [sp.random_array((400, 400), density=d, rng=rng, format="csr") for d in (0.02, 0.05, 0.01)]
    live = []
    for rounds in range(3):
        for m in mats:
            a = CSR.from_scipy(m)
            c = spgemm(a, a, sort=True, threads=threads)
            ref = (m @ m).toarray()
            np.testing.assert_allclose(c.toarray(), ref, rtol=1e-12, atol=1e-12)
            if rounds == 1:
                live.append((c, ref))       # kept alive while later products run
        gc.collect()
    for c, ref in live:
        np.testing.assert_allclose(c.toarray(), ref, rtol=1e-12, atol=1e-12)
    spans = sorted((_address(c.data), _address(c.data) + c.data.nbytes) for c, _ in live if c.nnz)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))   # no two share memory


def test_nothing_is_kept_from_a_block_that_keeps_none():
    with pool.keeping(False):
        a = pool.take(2**20, np.float64)
    a[:] = 1.0
    del a
    gc.collect()
    assert pool.kept_bytes() == 0
    b = pool.take(2**20, np.float64)                # outside the block: kept again
    b[:] = 1.0
    del b
    gc.collect()
    assert pool.kept_bytes() >= 2**20 * 8


def test_small_page_mappings_serve_only_their_kind_and_size():
    a = pool.take(2**17, np.float64, huge=False)    # 1 MiB of 4 KiB pages
    a[:] = 1.0
    first = _address(a)
    del a
    gc.collect()
    assert pool.kept_bytes() >= 2**20
    big = pool.take(2**17, np.float64)              # a huge-page request makes its own mapping
    tiny, kept = pool.take_kept(2**15, np.float64, huge=False)   # a quarter: too small to hold it
    assert _address(big) != first and _address(tiny) != first and not kept
    half, kept = pool.take_kept(2**16, np.float64, huge=False)   # half its length: served
    assert _address(half) == first and kept


def test_a_mid_sized_product_reuses_its_freed_output_without_faults():
    """Outputs between ``KEPT_SMALL_MIN_BYTES`` and ``SMALL_PAGES_MAX_BYTES`` lie on kept
    4 KiB-page mappings: the next product of the same size writes into pages already mapped."""
    m = sp.random_array((3000, 3000), density=0.004, rng=np.random.default_rng(5), format="csr")
    a = CSR.from_scipy(m)
    flops = int(np.diff(m.indptr)[m.indices].sum())
    assert out.KEPT_SMALL_MIN_BYTES <= flops * 12 <= out.SMALL_PAGES_MAX_BYTES
    c = spgemm(a, a, sort=True, threads=1)
    first = _address(c.data)
    del c
    gc.collect()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c = spgemm(a, a, sort=True, threads=1)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    assert _address(c.data) == first and faults < 32, faults   # the kept mapping, its pages mapped
    np.testing.assert_allclose(c.toarray(), (m @ m).toarray(), rtol=1e-12, atol=1e-12)
    with pool.keeping(False):                       # a block that keeps none: malloc's buffers
        d = spgemm(a, a, sort=True, threads=1)
    assert pool.kept_bytes() == 0 and _address(d.data) != first
    np.testing.assert_array_equal(d.toarray(), c.toarray())
