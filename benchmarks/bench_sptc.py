"""High-order sparse tensor contraction: flexsparse vs Sparta (PPoPP'21) and pydata ``tensordot``.

Suite (Sparta's own): self-contractions X x X of FROSTT-shaped power-law tensors
(``flexsparse.random(shape, nnz=..., distribution="powerlaw", seed=0)``, float32, as Sparta
computes in float32 with 32-bit indices) over the modes of Sparta's scripts:
Chicago {0},{0,1},{1,2,3}; NIPS {2},{2,3},{0,1,3}; Uber {0,2},{1,2,3}; Vast {0},{1,3},{1,2,4}.

Each case uses the largest tensor of 1M, 500K, 250K, ... nonzeros whose product needs at most
``--max-flops`` multiply-adds (default 5e7). Contractions over a single mode of these tensors
have nnz(out) close to their multiply-add count (2.6e9 for Chicago {0} at 1M nonzeros): at
1M nonzeros they need tens of GB in every engine, more than this benchmark's machine has.
Raise ``--max-flops`` on a larger machine.

Sparta is built from source (CMake, gcc, OpenMP; apt ``libopenblas-dev libnuma-dev``) into a
cache folder with ``--build``: from ``--sparta-src`` / ``$SPARTA_SRC`` when given, else by a
``git clone`` of github.com/PASAUCMerced/sparta. The cached copy of its ``benchmark/ttt.c``
gains one line that prints nnz and two checksums of the result, so results can be compared;
nothing else changes. ``ttt`` runs with ``EXPERIMENT_MODES=3`` (hash-table Y + hash-table
accumulator, its best CPU mode); its ``[Total time]`` (input processing, index search,
accumulation, writeback, output sorting) is the figure compared, and every stage is printed.
pydata ``sparse.tensordot`` runs in a subprocess with a time limit.

Usage::

    python benchmarks/bench_sptc.py --build            # build Sparta once, then run the suite
    python benchmarks/bench_sptc.py [--threads 2] [--repeat 3] [--cases chicago0,uber02] [--memory] [--json f]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from _common import command_line, load_average, run_context

SHAPES = {"chicago": (6186, 24, 77, 32), "nips": (2482, 2862, 14036, 17),
          "uber": (183, 24, 1140, 1717), "vast": (165427, 11374, 2, 100, 89)}
CASES = [("chicago", (0,)), ("chicago", (0, 1)), ("chicago", (1, 2, 3)),
         ("nips", (2,)), ("nips", (2, 3)), ("nips", (0, 1, 3)),
         ("uber", (0, 2)), ("uber", (1, 2, 3)),
         ("vast", (0,)), ("vast", (1, 3)), ("vast", (1, 2, 4))]
NNZ_MAX = 1_000_000
SPARTA_URL = "https://github.com/PASAUCMerced/sparta"
STAGES = ("Input Processing", "Index Search", "Accumulation", "Writeback", "Output Sorting", "Total time")

# Printed by the cached ttt after the product: nnz, sum of values, and a sum weighted by a
# hash of each entry's coordinates (catches misplaced entries that a plain sum cannot).
_CHECKSUM_C = (
    '{ double s_ = 0, w_ = 0; for (sptNnzIndex t_ = 0; t_ < Z.nnz; ++t_) { '
    'unsigned long long h_ = 0; for (sptIndex m_ = 0; m_ < Z.nmodes; ++m_) '
    'h_ = h_ * 1000003ULL + Z.inds[m_].data[t_]; s_ += Z.values.data[t_]; '
    'w_ += (double)(h_ % 1009ULL) / 1009.0 * Z.values.data[t_]; } '
    'printf("[Checksum] nnz=%llu sum=%.17g wsum=%.17g\\n", (unsigned long long)Z.nnz, s_, w_); }\n')
_ANCHOR = "sptSparseTensorStatus(&Z, stdout);"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flexsparse" / "sparta"


def checksum(coords: np.ndarray, vals: np.ndarray) -> tuple[int, float, float]:
    """The same nnz / sum / weighted sum as the patched ttt prints (uint64 wrap-around hash)."""
    h = np.zeros(coords.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for row in coords:
            h = h * np.uint64(1000003) + row.astype(np.uint64)
    w = (h % np.uint64(1009)).astype(np.float64) / 1009.0
    v = vals.astype(np.float64)
    return int(coords.shape[1]), float(v.sum()), float((w * v).sum())


# ---------------------------------------------------------------------- Sparta build / run
def build_sparta(cache: Path, src: Path | None) -> Path:
    """Copy (or clone) Sparta into ``cache/src``, add the checksum line, build ``ttt``."""
    work = cache / "src"
    if work.exists():
        shutil.rmtree(work)
    cache.mkdir(parents=True, exist_ok=True)
    if src is not None:
        if not (src / "CMakeLists.txt").exists():
            raise SystemExit(f"--sparta-src {src} holds no CMakeLists.txt: not a Sparta checkout")
        shutil.copytree(src, work, ignore=shutil.ignore_patterns(".git", "build"))
    else:
        print(f"cloning {SPARTA_URL} ...")
        r = subprocess.run(["git", "clone", "--depth", "1", SPARTA_URL, str(work)], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"cannot clone Sparta ({r.stderr.strip().splitlines()[-1:]}); "
                             "pass --sparta-src or set SPARTA_SRC to a local copy")
    ttt = work / "benchmark" / "ttt.c"
    text = ttt.read_text()
    if _ANCHOR not in text.split("sptSparseTensorMulTensor(&Z", 1)[-1]:
        raise SystemExit(f"{ttt}: cannot find '{_ANCHOR}' after the product; unknown Sparta version")
    head, tail = text.split("sptSparseTensorMulTensor(&Z", 1)
    tail = tail.replace(_ANCHOR, _ANCHOR + "\n    " + _CHECKSUM_C, 1)
    ttt.write_text(head + "sptSparseTensorMulTensor(&Z" + tail)
    build = cache / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    for cmd in (["cmake", str(work), "-DCMAKE_BUILD_TYPE=Release"], ["make", f"-j{os.cpu_count() or 2}", "ttt"]):
        print("$", " ".join(cmd))
        r = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"Sparta build failed at '{' '.join(cmd)}':\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n"
                             "(it needs cmake, gcc with OpenMP and apt packages libopenblas-dev libnuma-dev)")
    exe = build / "benchmark" / "ttt"
    print(f"built {exe}")
    return exe


def write_tns(path: Path, X) -> None:
    """Sparta's text format: mode count, dims, then 1-based coordinates and the value per line."""
    if path.exists():
        return
    cols = [X.coords[m].astype(np.int64) + 1 for m in range(X.ndim)]
    tmp = path.with_suffix(".part")
    with open(tmp, "w") as f:
        f.write(f"{X.ndim}\n{' '.join(map(str, X.shape))}\n")
        fmt = " ".join(["%d"] * X.ndim) + " %.9g"
        np.savetxt(f, np.column_stack(cols + [X.data.astype(np.float64)]), fmt=fmt)
    tmp.replace(path)


def run_sparta(exe: Path, tns: Path, modes: tuple[int, ...], threads: int, timeout: float) -> dict:
    modes_s = [str(m) for m in modes]
    cmd = [str(exe), "-X", str(tns), "-Y", str(tns), "-m", str(len(modes)), "-x", *modes_s, "-y", *modes_s,
           "-t", str(threads)]
    env = dict(os.environ, EXPERIMENT_MODES="3", OMP_NUM_THREADS=str(threads))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out at {timeout:.0f}s"}
    if r.returncode:
        return {"error": f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"}
    out = {}
    for st in STAGES:
        m = re.search(rf"\[{st}\]:\s*([0-9.eE+-]+)\s*s", r.stdout)
        out[st] = float(m.group(1)) if m else float("nan")
    m = re.search(r"\[Checksum\] nnz=(\d+) sum=(\S+) wsum=(\S+)", r.stdout)
    out["check"] = (int(m.group(1)), float(m.group(2)), float(m.group(3))) if m else None
    return out


# ---------------------------------------------------------------------- peers
def run_pydata(npz: Path, modes: tuple[int, ...], repeat: int, timeout: float) -> tuple[float | None, str]:
    code = textwrap.dedent(f"""
        import time, numpy as np, sparse
        f = np.load({str(npz)!r})
        S = sparse.COO(f["coords"], f["data"], shape=tuple(f["shape"]))
        w = sparse.random((6, 6, 6), density=0.5, random_state=0)
        sparse.tensordot(w, w, axes=([0], [0]), return_type=sparse.COO)  # compile pydata's kernels
        ts = []
        for _ in range({repeat}):
            t0 = time.perf_counter()
            sparse.tensordot(S, S, axes=({list(modes)}, {list(modes)}), return_type=sparse.COO)
            ts.append(time.perf_counter() - t0)
        print(min(ts))
    """)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"> {timeout:.0f}s"
    if r.returncode:
        return None, "failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:120]
    return float(r.stdout.strip().splitlines()[-1]), ""


_RSS_CODE = """
import sys, numpy as np
sys.path.insert(0, {bench_dir!r})
import flexsparse as fs
from bench_sptc import SHAPES, spec_for
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
X = fs.random(SHAPES[{name!r}], nnz={nnz}, seed=0, distribution="powerlaw", dtype=np.float32)
spec = spec_for(X.ndim, {modes!r})
w = fs.random(tuple(min(s, 6) for s in X.shape), 0.3, seed=1, dtype=np.float32)
fs.einsum(spec, w, w, format="coo", threads={threads})  # load the compiled kernels
open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM) to the current RSS
base = status("VmRSS:")
Z = fs.einsum(spec, X, X, format="coo", threads={threads})
print(status("VmHWM:") - base, X.coords.nbytes + X.data.nbytes, Z.coords.nbytes + Z.data.nbytes)
"""


def rss_growth(name: str, nnz: int, modes: tuple[int, ...], threads: int) -> tuple[int, int, int] | None:
    """``(peak RSS growth, input bytes, output bytes)`` of one product in a fresh process (Linux)."""
    code = _RSS_CODE.format(bench_dir=str(Path(__file__).resolve().parent), name=name, nnz=nnz, modes=modes,
                            threads=threads)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        return None
    growth, inputs, output = (int(x) for x in r.stdout.split()[-3:])
    return growth, inputs, output


def spec_for(ndim: int, modes: tuple[int, ...]) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    a, b = letters[:ndim], list(letters[ndim:2 * ndim])
    for m in modes:
        b[m] = a[m]
    b = "".join(b)
    return f"{a},{b}->" + "".join(c for c in a if c not in b) + "".join(c for c in b if c not in a)


def flops_of(X, modes) -> int:
    key = np.zeros(X.nnz, np.int64)
    for m in modes:
        key = key * X.shape[m] + X.coords[m]
    _, cnt = np.unique(key, return_counts=True)
    return int(np.sum(cnt.astype(np.int64) ** 2))


def pick_tensor(name, modes, max_flops, fs):
    nnz = NNZ_MAX
    while True:
        X = fs.random(SHAPES[name], nnz=nnz, seed=0, distribution="powerlaw", dtype=np.float32)
        fl = flops_of(X, modes)
        if fl <= max_flops or nnz < 1000:
            return X, fl
        nnz //= 2


def geomean(xs):
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="store_true", help="build Sparta into the cache folder first")
    ap.add_argument("--sparta-src", type=Path, default=os.environ.get("SPARTA_SRC"),
                    help="local Sparta source tree (default $SPARTA_SRC, else git clone)")
    ap.add_argument("--cache", type=Path, default=default_cache(), help="build and .tns cache folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="warm runs of flexsparse / pydata (min taken)")
    ap.add_argument("--sparta-repeat", type=int, default=2, help="ttt runs (min of [Total time])")
    ap.add_argument("--max-flops", type=float, default=5e7)
    ap.add_argument("--cases", default="", help="comma-separated subset, e.g. chicago0,nips013")
    ap.add_argument("--pydata-timeout", type=float, default=300.0)
    ap.add_argument("--sparta-timeout", type=float, default=900.0)
    ap.add_argument("--no-pydata", action="store_true")
    ap.add_argument("--no-sparta", action="store_true", help="skip Sparta even when built")
    ap.add_argument("--memory", action="store_true",
                    help="also measure flexsparse's peak RSS growth per product (fresh process, Linux)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    start_load, command = load_average(), command_line()

    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import numba

    import flexsparse as fs

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    exe = args.cache / "build" / "benchmark" / "ttt"
    if args.build:
        exe = build_sparta(args.cache, args.sparta_src)
    if args.no_sparta:
        exe = None
    elif not exe.exists():
        print(f"(Sparta not built at {exe}: run with --build [--sparta-src DIR]; Sparta columns skipped)")
        exe = None
    tns_dir = args.cache / "tns"
    tns_dir.mkdir(parents=True, exist_ok=True)
    wanted = {c for c in args.cases.split(",") if c}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, modes in CASES:
            label = f"{name}{''.join(map(str, modes))}"
            if wanted and label not in wanted:
                continue
            X, fl = pick_tensor(name, modes, args.max_flops, fs)
            spec = spec_for(X.ndim, modes)
            fs.einsum(spec, X, X, format="coo", threads=args.threads)  # compile / warm
            ts = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                Z = fs.einsum(spec, X, X, format="coo", threads=args.threads)
                ts.append(time.perf_counter() - t0)
            t_fs = min(ts)
            ours = checksum(np.asarray(Z.coords), np.asarray(Z.data, dtype=np.float32))
            row = dict(case=f"{name.capitalize()} {{{','.join(map(str, modes))}}}", shape=X.shape, nnz=X.nnz,
                       flops=fl, nnz_out=Z.nnz, canonical=bool(Z.canonical), flexsparse=t_fs)
            del Z
            if exe is not None:
                tns = tns_dir / f"{name}_{X.nnz}_seed0.tns"
                write_tns(tns, X)
                runs = [run_sparta(exe, tns, modes, args.threads, args.sparta_timeout)
                        for _ in range(args.sparta_repeat)]
                good = [r for r in runs if "error" not in r]
                if good:
                    best = min(good, key=lambda r: r["Total time"])
                    row["sparta"] = best["Total time"]
                    row["sparta_stages"] = {k: best[k] for k in STAGES}
                    ref = best["check"]
                    row["agree"] = bool(ref is not None and ref[0] == ours[0]
                                        and math.isclose(ref[1], ours[1], rel_tol=1e-4)
                                        and math.isclose(ref[2], ours[2], rel_tol=1e-4))
                    row["sparta_check"], row["check"] = ref, ours
                else:
                    row["sparta_error"] = runs[0]["error"]
            if args.memory:
                got = rss_growth(name, X.nnz, modes, args.threads)
                if got is not None:
                    row["rss_growth"], row["input_bytes"], row["output_bytes"] = got
            if not args.no_pydata:
                npz = Path(tmp) / f"{label}.npz"
                np.savez(npz, coords=X.coords, data=X.data, shape=np.array(X.shape))
                t_pd, note = run_pydata(npz, modes, max(1, args.repeat - 1), args.pydata_timeout)
                row["pydata"], row["pydata_note"] = t_pd, note
            rows.append(row)
            sp, pd = row.get("sparta"), row.get("pydata")
            sp_s = "-" if sp is None else f"{sp * 1e3:.1f}ms"
            pd_s = row.get("pydata_note") or "-" if pd is None else f"{pd * 1e3:.1f}ms"
            print(f"{row['case']:16s} nnz={X.nnz:>8d} flops={fl:.2e} out={row['nnz_out']:>10d} "
                  f"fs={t_fs * 1e3:9.1f}ms sparta={sp_s} pydata={pd_s} agree={row.get('agree')}", flush=True)
    print_table(rows, args.threads, start_load, command)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


def print_table(rows, threads, start_load, command=None):
    print(f"\n{run_context(start_load, command)}\n- {threads} thread(s) (flexsparse threads={threads}, "
          f"Sparta -t {threads} OMP_NUM_THREADS={threads}), float32, min of warm runs; Sparta = its [Total time] "
          "(EXPERIMENT_MODES=3)\n")
    print("| case | nnz(X) | flops | nnz(out) | flexsparse ms | Sparta ms | pydata ms | fs/Sparta | fs/pydata "
          "| agree |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sp, pd, t = r.get("sparta"), r.get("pydata"), r["flexsparse"]
        sp_s = "-" if sp is None else f"{sp * 1e3:.1f}"
        pd_s = (r.get("pydata_note") or "-") if pd is None else f"{pd * 1e3:.1f}"
        rs_s = "-" if sp is None else f"{t / sp:.3f}"
        rp_s = "-" if pd is None else f"{t / pd:.3f}"
        agree = {True: "yes", False: "NO", None: "-"}[r.get("agree")]
        print(f"| {r['case']} | {r['nnz']:,} | {r['flops']:.2e} | {r['nnz_out']:,} | {t * 1e3:.1f} | "
              f"{sp_s} | {pd_s} | {rs_s} | {rp_s} | {agree} |")
    rs = [r["flexsparse"] / r["sparta"] for r in rows if r.get("sparta")]
    rp = [r["flexsparse"] / r["pydata"] for r in rows if r.get("pydata")]
    if rs:
        print(f"\ngeomean flexsparse/Sparta: {geomean(rs):.3f} (max {max(rs):.3f})")
    if rp:
        print(f"geomean flexsparse/pydata tensordot: {geomean(rp):.3f} (max {max(rp):.3f}, "
              f"{len(rp)} of {len(rows)} cases finished in pydata)")
    mem = [r for r in rows if "rss_growth" in r]
    if mem:
        print("\nflexsparse peak RSS growth of each product (fresh process; X counted once):")
        print("| case | growth MB | inputs MB | output MB | growth / (inputs + output) |")
        print("|---|---|---|---|---|")
        for r in mem:
            ratio = r["rss_growth"] / (r["input_bytes"] + r["output_bytes"])
            print(f"| {r['case']} | {r['rss_growth'] / 1e6:.1f} | {r['input_bytes'] / 1e6:.1f} | "
                  f"{r['output_bytes'] / 1e6:.1f} | {ratio:.2f} |")
    stage = [r for r in rows if r.get("sparta_stages")]
    if stage:
        print("\nSparta stages (s):")
        print("| case | " + " | ".join(STAGES) + " |")
        print("|---|" + "---|" * len(STAGES))
        for r in stage:
            print(f"| {r['case']} | " + " | ".join(f"{r['sparta_stages'][k]:.4f}" for k in STAGES) + " |")


if __name__ == "__main__":
    main()
