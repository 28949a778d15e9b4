"""Dense loop-nest analysis against a brute-force simulation of the loop nest.

The oracle walks the iterations of the loops, builds the child tiles as explicit point sets,
applies Timeloop's delta rule (set difference while the tile keeps moving by the same vector,
whole tile after a change of direction) and groups the spatial children whose deltas are equal
sets (multicast). The model computes the same counts in closed form; they must agree exactly.

Timeloop visits iteration 0 and one representative iteration (weighted ``n - 1``) of each loop.
Without sliding windows this equals visiting every iteration, and the oracle does the latter;
with sliding windows a wrap-around can land exactly where the previous tile was, which only a
full walk sees, so there the oracle walks the same representative iterations as Timeloop.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexsparse.model.sparseloop.mapping import TIME, Loop, Mapping
from flexsparse.model.sparseloop.nest import analyze
from flexsparse.model.sparseloop.spec import parse_arch, parse_problem

ARCH = {"version": 0.3, "subtree": [{"name": "sys", "local": [
    {"name": "DRAM", "class": "DRAM", "attributes": {"width": 16, "datawidth": 16}},
    {"name": "GLB", "class": "SRAM", "attributes": {"depth": 1 << 16, "width": 16, "datawidth": 16}}],
    "subtree": [{"name": "PE[0..3]", "local": [
        {"name": "spad", "class": "regfile", "attributes": {"depth": 1 << 12, "width": 16, "datawidth": 16,
                                                            "meshX": 2}},
        {"name": "mac[0..1]", "class": "intmac", "attributes": {"datawidth": 16, "meshX": 4}}]}]}]}

GEMM = {"shape": {"name": "gemm", "dimensions": ["M", "N", "K"],
                  "data-spaces": [{"name": "A", "projection": [[["M"]], [["K"]]]},
                                  {"name": "B", "projection": [[["K"]], [["N"]]]},
                                  {"name": "Z", "projection": [[["M"]], [["N"]]], "read-write": True}]},
        "instance": {"M": 4, "N": 6, "K": 4}}

CONV = {"shape": {"name": "conv1d", "dimensions": ["M", "C", "P", "R"],
                  "coefficients": [{"name": "S", "default": 1}],
                  "data-spaces": [{"name": "W", "projection": [[["M"]], [["C"]], [["R"]]]},
                                  {"name": "I", "projection": [[["C"]], [["R"], ["P", "S"]]]},
                                  {"name": "O", "projection": [[["M"]], [["P"]]], "read-write": True}]},
        "instance": {"M": 4, "C": 2, "P": 6, "R": 3, "S": 2}}


def _primes(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def _random_mapping(arch, problem, rng: random.Random) -> Mapping:
    nlv, ndim = len(arch.storage), len(problem.dims)
    slots = [(lv, "T") for lv in range(nlv)]
    for lv in range(nlv):
        fx, fy = arch.fanout(lv)
        if fx > 1:
            slots.append((lv, "X"))
        if fy > 1:
            slots.append((lv, "Y"))
    while True:
        assign = {s: [1] * ndim for s in slots}
        for d, b in enumerate(problem.bounds):
            for p in _primes(b):
                assign[rng.choice(slots)][d] *= p
        ok = all(math.prod(assign[(lv, k)]) <= (arch.fanout(lv)[0] if k == "X" else arch.fanout(lv)[1])
                 for (lv, k) in slots if k != "T")
        if ok:
            break
    m = Mapping([[] for _ in range(nlv)], [[] for _ in range(nlv)], [[True] * len(problem.dataspaces)] * nlv,
                [[False] * len(problem.dataspaces)] * nlv)
    for lv in range(nlv):
        perm = list(range(ndim))
        rng.shuffle(perm)
        m.temporal[lv] = [Loop(d, assign[(lv, "T")][d], TIME, lv) for d in perm]
        sp = []
        for k, code in (("X", 1), ("Y", 2)):
            if (lv, k) in assign:
                sp += [Loop(d, assign[(lv, k)][d], code, lv) for d in rng.sample(range(ndim), ndim)]
        m.spatial[lv] = sp
    return m.build()


def _points(ds, lo, ext):
    """Point set of the projection of the op-space box [lo, lo + ext)."""
    ranges = []
    for rank in ds.ranks:
        a = sum(c * lo[d] for c, d in rank)
        b = sum(c * (lo[d] + ext[d] - 1) for c, d in rank)
        ranges.append(range(a, b + 1))
    return set(itertools.product(*ranges))


def _oracle_stats(problem, m: Mapping, pv: int, lv: int, sampled: bool = False) -> dict[int, float]:
    """{multicast: accesses} at level lv for data-space pv, per instance, by brute force.

    ``sampled``: visit iterations 0 and 1 of each loop, 1 weighted ``n - 1`` (Timeloop's walk)."""
    ds = problem.dataspaces[pv]
    nest, bnd = m.nest, m.boundary
    ndim = len(problem.dims)
    stride, seen = [], [1] * ndim
    for lp in nest:
        stride.append(seen[lp.dim])
        seen[lp.dim] *= lp.end
    child_top = bnd[lv - 1] if lv > 0 else -1
    child_ext = [1] * ndim
    for lp in nest[: child_top + 1]:
        child_ext[lp.dim] *= lp.end
    lo = bnd[lv - 1] + 1 if lv > 0 else 0
    fan = [i for i in range(lo, bnd[lv] + 1) if nest[i].spatial != TIME]
    if lv == 0:
        temporal = [i for i in range(len(nest)) if nest[i].spatial == TIME]
    else:
        temporal = [i for i in range(child_top + 1, len(nest)) if nest[i].spatial == TIME]
    order = temporal[::-1]                      # outermost first
    stats: dict[int, int] = {}
    kids = list(itertools.product(*[range(nest[i].end) for i in fan]))
    state = {k: (None, None) for k in kids}     # previous point set and translation per child
    ranges = [range(min(2, nest[i].end)) if sampled else range(nest[i].end) for i in order]
    for idx in itertools.product(*ranges):
        weight = math.prod(nest[i].end - 1 for i, v in zip(order, idx) if v) if sampled else 1
        deltas = {}
        for kid in kids:
            pos = [0] * ndim
            for i, v in zip(order, idx):
                pos[nest[i].dim] += v * stride[i]
            for i, v in zip(fan, kid):
                pos[nest[i].dim] += v * stride[i]
            if lv == 0:
                deltas[kid] = frozenset(_points(ds, pos, [1] * ndim))
                continue
            cur = _points(ds, pos, child_ext)
            cur_min = tuple(sum(c * pos[d] for c, d in rank) for rank in ds.ranks)
            prev, trans = state[kid]
            if prev is None:
                delta, new = cur, (None, None)
            else:
                t = tuple(a - b for a, b in zip(cur_min, prev[1]))
                if trans is None or t == trans:
                    delta, new = cur - prev[0], (t if trans is None else trans)
                else:
                    delta, new = cur, None
                new = (None, new)
            state[kid] = ((cur, cur_min), new[1])
            deltas[kid] = frozenset(delta)
        groups: dict[frozenset, int] = {}
        for d in deltas.values():
            if d:
                groups[d] = groups.get(d, 0) + 1
        for d, mult in groups.items():
            stats[mult] = stats.get(mult, 0) + len(d) * weight
    return stats


@pytest.mark.parametrize("shape", [GEMM, CONV], ids=["gemm", "conv1d-stride2"])
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_accesses_and_tiles_match_brute_force(shape, seed):
    arch, problem = parse_arch(ARCH), parse_problem(shape)
    m = _random_mapping(arch, problem, random.Random(seed))
    res = analyze(problem, arch, m)
    for pv, ds in enumerate(problem.dataspaces):
        for lv in range(len(arch.storage)):
            ext = [1] * len(problem.dims)
            for lp in m.nest[: m.boundary[lv] + 1]:
                ext[lp.dim] *= lp.end
            assert res.tiles[pv][lv].size == len(_points(ds, [0] * len(ext), ext))
            want = {k: v for k, v in _oracle_stats(problem, m, pv, lv, sampled=shape is CONV).items() if v}
            got = {k: v for k, v in res.tiles[pv][lv].raw_stats.items() if v}
            assert got == pytest.approx(want), (ds.name, arch.storage[lv].name, m.describe(problem, arch))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_traffic_is_conserved_between_levels(seed):
    """Without bypass: what a level sends (reads x multicast) is what its children receive (fills)."""
    arch, problem = parse_arch(ARCH), parse_problem(GEMM)
    m = _random_mapping(arch, problem, random.Random(seed))
    res = analyze(problem, arch, m)
    for pv, ds in enumerate(problem.dataspaces):
        if ds.read_write:
            continue
        for lv in range(1, len(arch.storage)):
            parent, child = res.tiles[pv][lv], res.tiles[pv][lv - 1]
            sent = parent.weighted * parent.replication
            received = child.fills * child.replication
            assert sent == pytest.approx(received)
        assert res.tiles[pv][-1].fills == 0          # the outermost level is never filled


def test_read_write_first_read_elided():
    arch, problem = parse_arch(ARCH), parse_problem(GEMM)
    m = _random_mapping(arch, problem, random.Random(3))
    res = analyze(problem, arch, m)
    z = problem.dataspaces.index(next(d for d in problem.dataspaces if d.read_write))
    for t in res.tiles[z]:
        assert t.reads == t.updates - t.partition_size
        assert t.temporal_reductions == t.reads
