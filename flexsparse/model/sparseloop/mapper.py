"""A small mapper for inputs without a mapping: random sampling, then greedy refinement.

Mapspace: every dimension's prime factors are distributed over *slots* (each storage level's
temporal loops, and the X and Y axes of each level that has a spatial fanout), each level gets a
loop permutation, and each level keeps every data-space unless the constraints bypass it.
Constraints (``mapspace_constraints`` / ``architecture_constraints``, Timeloop syntax): per target
level and type, ``factors`` with ``D=n`` (fixed) or ``D<=n`` (bounded), a ``permutation`` whose
letters are the innermost loops in that order, and ``keep``/``bypass`` lists.

Validity: spatial factors fit the fanout (X and Y); each level's kept dense tiles fit its size.
Search: ``trials`` random valid mappings are evaluated with the full model; the best one is then
improved greedily by moving one prime factor between slots or swapping two loops of a level
while the objective (``edp``, ``energy`` or ``cycles``) improves. Cost: ``trials + steps`` full
evaluations (milliseconds each).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Optional

from flexsparse.model.sparseloop.mapping import TIME, Loop, Mapping
from flexsparse.model.sparseloop.yamlio import SpecError, check_keys, where

__all__ = ["SearchResult", "search"]

OBJECTIVES = ("edp", "energy", "cycles")


@dataclass
class SearchResult:
    """Best mapping found and how many candidates were looked at."""

    mapping: Mapping
    objective: float
    tried: int
    evaluated: int


def _primes(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


@dataclass
class _Constraints:
    fixed: dict[tuple[int, str, int], int]       # (level, kind T/S, dim) -> exact factor
    bound: dict[tuple[int, str, int], int]       # (level, kind, dim) -> max factor
    perm: dict[int, list[int]]                   # level -> innermost dims in order
    keep: list[list[bool]]
    keep_fixed: set[tuple[int, int]]             # (level, data-space) pairs the constraints decide


def _parse_constraints(spec) -> _Constraints:
    arch, problem = spec.arch, spec.problem
    nlv, nds = len(arch.storage), len(problem.dataspaces)
    c = _Constraints({}, {}, {}, [[True] * nds for _ in range(nlv)], {(nlv - 1, ds) for ds in range(nds)})
    for key in ("architecture_constraints", "mapspace_constraints", "constraints"):
        node = spec.raw.get(key)
        if node is None:
            continue
        targets = node.get("targets", []) if isinstance(node, dict) else node
        for t in targets:
            check_keys(t, {"target", "type", "factors", "permutation", "keep", "bypass", "split", "stream",
                           "min_parallelism", "default_max_factor", "default_min_factor", "no_link_transfer",
                           "no_multicast_no_reduction", "no_temporal_reuse"}, "a mapping constraint",
                       required=("target", "type"))
            lv = arch.level_index(str(t["target"]), where(t, "target"))
            kind = str(t["type"])
            if kind in ("bypass", "datatype"):
                for k, v in (("keep", True), ("bypass", False)):
                    for name in t.get(k) or []:
                        ds = problem.ds_index(str(name), where(t, k))
                        c.keep[lv][ds] = v
                        c.keep_fixed.add((lv, ds))
                continue
            if kind not in ("temporal", "spatial"):
                raise SpecError(f"{where(t, 'type')}: unknown constraint type {kind!r}")
            k = "T" if kind == "temporal" else "S"
            for name, op, val in _factor_terms(str(t.get("factors", "")), where(t, "factors")):
                d = problem.dim_index(name, where(t, "factors"))
                v = problem.bounds[d] if int(val) == 0 else int(val)
                (c.fixed if op == "=" else c.bound)[(lv, k, d)] = v
            if "permutation" in t and kind == "temporal":
                c.perm[lv] = [problem.dim_index(ch, where(t, "permutation")) for ch in str(t["permutation"])
                              if not ch.isspace()]
    for ds in range(nds):
        c.keep[nlv - 1][ds] = True
    for lv, level in enumerate(arch.storage):
        if level.size == 0:
            for ds in range(nds):
                c.keep[lv][ds] = False
                c.keep_fixed.add((lv, ds))
    return c


def _random_keep(spec, rng: random.Random, cons: _Constraints) -> list[list[bool]]:
    keep = [list(k) for k in cons.keep]
    for lv in range(len(keep)):
        for ds in range(len(keep[lv])):
            if (lv, ds) not in cons.keep_fixed:
                keep[lv][ds] = rng.random() < 0.5
    return keep


def _factor_terms(text: str, loc: str) -> list[tuple[str, str, str]]:
    import re
    terms = re.findall(r"([A-Za-z_]+)\s*(<=|=)\s*(\d+)", text.split("#", 1)[0])
    rest = re.sub(r"([A-Za-z_]+)\s*(<=|=)\s*(\d+)", "", text.split("#", 1)[0]).strip()
    if rest:
        raise SpecError(f"{loc}: cannot parse constraint factors {text!r} (near {rest!r})")
    return terms


def _slots(spec) -> list[tuple[int, str]]:
    out = []
    for lv in range(len(spec.arch.storage)):
        fx, fy = spec.arch.fanout(lv)
        if fx > 1:
            out.append((lv, "X"))
        if fy > 1:
            out.append((lv, "Y"))
        out.append((lv, "T"))
    return out


def _build(spec, assign: dict[tuple[int, str], list[int]], perms: list[list[int]], keep) -> Mapping:
    problem, nlv, ndim = spec.problem, len(spec.arch.storage), len(spec.problem.dims)
    m = Mapping([[] for _ in range(nlv)], [[] for _ in range(nlv)], [list(k) for k in keep],
                [[False] * len(problem.dataspaces) for _ in range(nlv)])
    for lv in range(nlv):
        t = assign.get((lv, "T"), [1] * ndim)
        m.temporal[lv] = [Loop(d, t[d], TIME, lv) for d in perms[lv]]
        sx, sy = assign.get((lv, "X"), [1] * ndim), assign.get((lv, "Y"), [1] * ndim)
        m.spatial[lv] = [Loop(d, sx[d], 1, lv) for d in range(ndim) if sx[d] > 1] + \
                        [Loop(d, sy[d], 2, lv) for d in range(ndim) if sy[d] > 1]
    return m.build()


def _valid(spec, assign, cons: _Constraints, keep) -> bool:
    arch, problem = spec.arch, spec.problem
    ndim = len(problem.dims)
    for (lv, k), f in assign.items():
        if k in "XY":
            fx, fy = arch.fanout(lv)
            if math.prod(f) > (fx if k == "X" else fy):
                return False
    for (lv, k, d), v in cons.fixed.items():
        got = assign[(lv, "T")][d] if k == "T" else assign.get((lv, "X"), [1] * ndim)[d] * \
            assign.get((lv, "Y"), [1] * ndim)[d]
        if got != v:
            return False
    for (lv, k, d), v in cons.bound.items():
        got = assign[(lv, "T")][d] if k == "T" else assign.get((lv, "X"), [1] * ndim)[d] * \
            assign.get((lv, "Y"), [1] * ndim)[d]
        if got > v:
            return False
    ext = [1] * ndim
    for lv, level in enumerate(arch.storage):
        for k in ("X", "Y", "T"):
            for d, f in enumerate(assign.get((lv, k), [1] * ndim)):
                ext[d] *= f
        if level.size is not None:
            words = sum(ds.size(ext) for i, ds in enumerate(problem.dataspaces) if keep[lv][i])
            if words > level.size / level.multiple_buffering:
                return False
    return True


def _random_assign(spec, slots, rng: random.Random, cons: _Constraints) -> dict[tuple[int, str], list[int]]:
    ndim = len(spec.problem.dims)
    assign = {s: [1] * ndim for s in slots}
    for d, bound in enumerate(spec.problem.bounds):
        left = bound
        for (lv, k, dd), v in cons.fixed.items():
            if dd == d and k == "T" and left % v == 0:
                assign[(lv, "T")][d] = v
                left //= v
        fixed_slots = {(lv, "T") for (lv, k, dd) in cons.fixed if dd == d and k == "T"}
        free = [s for s in slots if s not in fixed_slots]
        for p in _primes(left):
            s = rng.choice(free)
            assign[s][d] *= p
    return assign


def _perms(spec, rng: random.Random, cons: _Constraints) -> list[list[int]]:
    ndim = len(spec.problem.dims)
    out = []
    for lv in range(len(spec.arch.storage)):
        head = cons.perm.get(lv, [])
        rest = [d for d in range(ndim) if d not in head]
        rng.shuffle(rest)
        out.append(head + rest)
    return out


def _score(ev, objective: str) -> float:
    if objective == "energy":
        return ev.energy_pj
    if objective == "cycles":
        return float(ev.cycles)
    return ev.energy_pj * ev.cycles


def search(spec, trials: int = 200, steps: int = 200, seed: int = 0, objective: str = "edp") -> SearchResult:
    """Best mapping for ``spec`` found by random sampling plus greedy refinement."""
    from flexsparse.model.sparseloop.engine import evaluate
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown mapper objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if trials < 1:
        raise ValueError("mapper trials must be >= 1")
    rng = random.Random(seed)
    cons = _parse_constraints(spec)
    slots = _slots(spec)
    best: Optional[tuple[float, Any, Any, Mapping]] = None
    tried = evaluated = 0

    def attempt(assign, perms, keep):
        nonlocal best, evaluated
        if not _valid(spec, assign, cons, keep):
            return None
        m = _build(spec, assign, perms, keep)
        try:
            ev = evaluate(spec, m)
        except SpecError:
            return None
        evaluated += 1
        sc = _score(ev, objective)
        if best is None or sc < best[0]:
            best = (sc, {k: list(v) for k, v in assign.items()}, [list(p) for p in perms], m,
                    [list(k) for k in keep])
        return sc

    for _ in range(trials * 20):
        if evaluated >= trials:
            break
        tried += 1
        attempt(_random_assign(spec, slots, rng, cons), _perms(spec, rng, cons), _random_keep(spec, rng, cons))
    if best is None:
        raise SpecError("mapper: no valid mapping found (check the constraints, fanouts and buffer sizes)")
    for _ in range(steps):
        tried += 1
        sc0, assign, perms, _m, keep = best
        cand = {k: list(v) for k, v in assign.items()}
        cperm = [list(p) for p in perms]
        ckeep = [list(k) for k in keep]
        r = rng.random()
        free = [(lv, ds) for lv in range(len(ckeep)) for ds in range(len(ckeep[lv])) if (lv, ds) not in cons.keep_fixed]
        if r < 0.15 and free:
            lv, ds = rng.choice(free)
            ckeep[lv][ds] = not ckeep[lv][ds]
        elif r < 0.75:
            d = rng.randrange(len(spec.problem.dims))
            src = [s for s in slots if cand[s][d] > 1]
            if not src:
                continue
            a = rng.choice(src)
            p = rng.choice(_primes(cand[a][d]))
            b = rng.choice([s for s in slots if s != a])
            cand[a][d] //= p
            cand[b][d] *= p
        else:
            lv = rng.randrange(len(spec.arch.storage))
            fixed = len(cons.perm.get(lv, []))
            if len(cperm[lv]) - fixed < 2:
                continue
            i, j = rng.sample(range(fixed, len(cperm[lv])), 2)
            cperm[lv][i], cperm[lv][j] = cperm[lv][j], cperm[lv][i]
        attempt(cand, cperm, ckeep)
    return SearchResult(best[3], best[0], tried, evaluated)
