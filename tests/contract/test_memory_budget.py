"""memory_limit= holds on a real process: peak RSS growth <= 1.1 x the limit, measured.

A subprocess generates a power-law graph of 300K rows (hub rows over a thousand entries),
compiles the kernels on a small product, then measures with Linux's resident-set high-water
mark (VmHWM, reset through /proc/self/clear_refs before each run):

1. the unbounded ``einsum("ij,jk->ik", A, A)``: its peak growth P;
2. the same product with ``memory_limit=P/8`` and ``out=`` streaming to disk: its growth,
   which must stay within 1.1 x the limit, with the unbounded result's nnz;
3. ``tiling="conservative"`` on that product, which must refuse up front and say why
   (its dense-sized tiles would number millions).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent('''
    import gc, json, os, sys, tempfile
    import numpy as np, scipy.sparse as sp
    import flexsparse as fs
    from flexsparse.tiling import TilingRefusedError

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    def reset():
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmRSS")

    n, nnz = 300_000, 800_000
    rng = np.random.default_rng(0)
    w = 1.0 / np.arange(1, n + 1) ** 0.55            # power law: hub rows of ~1,300 entries
    p = w / w.sum()
    a = sp.coo_matrix((rng.random(nnz) + 0.5, (rng.choice(n, nnz, p=p), rng.choice(n, nnz, p=p))),
                      shape=(n, n)).tocsr()
    a.sum_duplicates()
    A = fs.from_scipy(a)
    del a
    small = fs.from_scipy(sp.random(60, 60, density=0.1, format="csr", random_state=0))
    with tempfile.TemporaryDirectory() as d:   # compile every kernel outside the measurements
        fs.einsum("ij,jk->ik", small, small)
        fs.einsum("ij,jk->ik", small, small, memory_limit="8KiB", out=os.path.join(d, "w")).load()
    out = {"max_row": int(np.bincount(A.coords[0]).max())}
    base = reset()
    c = fs.einsum("ij,jk->ik", A, A)
    out["unbounded_growth"] = status("VmHWM") - base
    out["nnz"] = int(c.nnz)
    del c
    limit = out["unbounded_growth"] // 8
    with tempfile.TemporaryDirectory() as d:
        base = reset()
        lazy = fs.einsum("ij,jk->ik", A, A, memory_limit=limit, out=os.path.join(d, "c"))
        out["bounded_growth"] = status("VmHWM") - base
        out["bounded_nnz"] = int(lazy.nnz)
    out["limit"] = limit
    try:
        fs.einsum("ij,jk->ik", A, A, memory_limit=limit, tiling="conservative")
        out["conservative"] = "ran"
    except TilingRefusedError as exc:
        out["conservative"] = str(exc)
    print(json.dumps(out))
''')


def test_peak_rss_within_limit_on_a_300k_row_power_law_graph():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the resident high-water mark")
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads(run.stdout.strip().splitlines()[-1])
    assert res["max_row"] > 1000                       # hub rows thousands long
    assert res["unbounded_growth"] > 8 * 2**20         # the unbounded run really allocates
    assert res["bounded_nnz"] == res["nnz"]            # same result, streamed to disk
    assert res["bounded_growth"] <= 1.1 * res["limit"], res
    assert "declines" in res["conservative"] and "overbook" in res["conservative"], res
