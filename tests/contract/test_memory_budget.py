"""memory_limit= holds on a real process: peak RSS growth <= 1.1 x the limit, measured.

A subprocess generates a power-law graph of 300K rows (hub rows over a thousand entries),
compiles the kernels on a smaller graph of the same kind, then measures with Linux's resident-set high-water
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
    import json, os, tempfile
    import numpy as np, scipy.sparse as sp
    import flexsparse as fs
    from flexsparse._rss import peak_bytes, reset_peak, resident_bytes
    from flexsparse.tiling import TilingRefusedError

    def reset():
        reset_peak()
        return resident_bytes()

    def power_law(n, nnz):
        # one popularity order for rows and columns, so hub rows are hub columns (as in a graph;
        # fs.random draws each mode's order independently, which makes A @ A far smaller)
        rng = np.random.default_rng(0)
        w = 1.0 / np.arange(1, n + 1) ** 0.55            # power law: hub rows of ~1,300 entries
        p = w / w.sum()
        a = sp.coo_matrix((rng.random(nnz) + 0.5, (rng.choice(n, nnz, p=p), rng.choice(n, nnz, p=p))),
                          shape=(n, n)).tocsr()
        a.sum_duplicates()
        return fs.from_scipy(a)

    A = power_law(300_000, 800_000)
    # Compile every kernel outside the measurements (a cold JIT cache would otherwise compile
    # inside a measured run and add its memory to it): the unbounded product on A itself, the
    # tiled one on a graph of the same kind large enough for many tiles.
    fs.einsum("ij,jk->ik", A, A)
    small = power_law(30_000, 80_000)
    with tempfile.TemporaryDirectory() as d:
        fs.einsum("ij,jk->ik", small, small, memory_limit="2MiB", out=os.path.join(d, "w")).load()
    out = {"max_row": int(np.bincount(A.coords[0]).max())}
    # the warm-up's freed output would otherwise serve the measured product (kept buffers,
    # flexsparse.free_buffers): the unbounded growth is that of a product in fresh memory
    fs.free_buffers()
    base = reset()
    c = fs.einsum("ij,jk->ik", A, A)
    out["unbounded_growth"] = peak_bytes() - base
    out["nnz"] = int(c.nnz)
    del c
    limit = out["unbounded_growth"] // 8
    with tempfile.TemporaryDirectory() as d:
        base = reset()
        lazy = fs.einsum("ij,jk->ik", A, A, memory_limit=limit, out=os.path.join(d, "c"))
        out["bounded_growth"] = peak_bytes() - base
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
