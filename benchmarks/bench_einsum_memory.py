"""Peak resident growth of ``einsum(..., memory_limit=L, out=dir)`` against its limit.

For a generated power-law graph ``A`` (rows, entries and exponent as given), each run happens
in a fresh subprocess that compiles the kernels on a small product first, then measures with
Linux's resident high-water mark (VmHWM, reset through /proc/self/clear_refs):

* ``unbounded``: ``einsum("ij,jk->ik", A, A)``; its growth P sets ``L = P * fraction``;
* each strategy with ``memory_limit=L`` and ``out=`` a temporary directory (the result
  streams to disk): its growth and the ratio growth / L (the target is <= 1.1).

Run: ``python benchmarks/bench_einsum_memory.py [--rows 300000 --nnz 1200000 --exponent 0.5
--fraction 0.125]``. Needs Linux (/proc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent('''
    import json, os, sys, tempfile, time
    import numpy as np, scipy.sparse as sp
    import flexsparse as fs
    from flexsparse._rss import peak_bytes, reset_peak, resident_bytes

    cfg = json.loads(sys.argv[1])

    def reset():
        reset_peak()
        return resident_bytes()

    # one popularity order for rows and columns, so hub rows are hub columns (as in a graph;
    # fs.random draws each mode's order independently, which makes A @ A far smaller)
    n, nnz = cfg["rows"], cfg["nnz"]
    rng = np.random.default_rng(0)
    w = 1.0 / np.arange(1, n + 1) ** cfg["exponent"]
    p = w / w.sum()
    a = sp.coo_matrix((rng.random(nnz) + 0.5, (rng.choice(n, nnz, p=p), rng.choice(n, nnz, p=p))),
                      shape=(n, n)).tocsr()
    a.sum_duplicates()
    A = fs.from_scipy(a)
    del a
    small = fs.from_scipy(sp.random(60, 60, density=0.1, format="csr", random_state=0))
    with tempfile.TemporaryDirectory() as d:
        fs.einsum("ij,jk->ik", small, small)
        for s in ("overbook", "prescient"):
            fs.einsum("ij,jk->ik", small, small, memory_limit="8KiB", tiling=s, out=os.path.join(d, s)).load()
    base = reset()
    t0 = time.perf_counter()
    out = {"A_nnz": int(A.nnz), "max_row": int(np.bincount(A.coords[0]).max())}
    if cfg["strategy"] == "unbounded":
        c = fs.einsum("ij,jk->ik", A, A)
        out.update(growth=peak_bytes() - base, seconds=time.perf_counter() - t0, nnz=int(c.nnz))
    else:
        with tempfile.TemporaryDirectory() as d:
            try:
                h = fs.einsum("ij,jk->ik", A, A, memory_limit=cfg["limit"], tiling=cfg["strategy"],
                              out=os.path.join(d, "c"))
                out.update(growth=peak_bytes() - base, seconds=time.perf_counter() - t0, nnz=int(h.nnz))
            except fs.tiling.TilingRefusedError as exc:
                out.update(growth=peak_bytes() - base, seconds=time.perf_counter() - t0, declined=str(exc))
    print(json.dumps(out))
''')


def run(cfg: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--nnz", type=int, default=1_200_000)
    ap.add_argument("--exponent", type=float, default=0.5)
    ap.add_argument("--fraction", type=float, default=0.125)
    args = ap.parse_args()
    base = {"rows": args.rows, "nnz": args.nnz, "exponent": args.exponent}
    un = run({**base, "strategy": "unbounded"})
    limit = int(un["growth"] * args.fraction)
    print(f"A: {args.rows:,} rows, {un['A_nnz']:,} entries (longest row {un['max_row']:,}); "
          f"A @ A: {un['nnz']:,} entries")
    print(f"unbounded: growth {un['growth'] / 2**20:.1f} MiB in {un['seconds']:.2f} s -> "
          f"limit {limit / 2**20:.1f} MiB ({args.fraction:g} of it)")
    for strategy in ("overbook", "prescient", "conservative"):
        r = run({**base, "strategy": strategy, "limit": limit})
        if "declined" in r:
            print(f"{strategy:<13} declined up front in {r['seconds']:.2f} s: {r['declined']}")
            continue
        print(f"{strategy:<13} growth {r['growth'] / 2**20:8.1f} MiB = {r['growth'] / limit:.2f} x limit, "
              f"{r['seconds']:.2f} s, nnz {'==' if r['nnz'] == un['nnz'] else '!='} unbounded")


if __name__ == "__main__":
    main()
