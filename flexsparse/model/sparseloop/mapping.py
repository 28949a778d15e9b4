"""Timeloop mappings: per-level loop factors, permutations, spatial splits and bypass.

A mapping is a list of directives, each targeting a storage level:

* ``temporal`` / ``spatial``: ``factors`` (``"M=8 C=0"`` or ``"M8 C4"``; 0 means the full
  dimension) and ``permutation`` (dimension letters, innermost first); a spatial directive's
  ``split`` puts permutation positions ``< split`` on the X axis and the rest on Y.
* ``bypass`` / ``datatype``: ``keep`` and ``bypass`` lists of data-spaces (a level keeps every
  data-space it is not told to bypass; the outermost level keeps all).

The result is one loop nest, innermost loop first: for each storage level (innermost first) its
spatial fanout loops, then its temporal loops. Loops of bound 1 are dropped except one
placeholder per temporal level, so every level owns at least one loop (as in Timeloop).
Cost: linear in the number of directives and dimensions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from flexsparse.model.sparseloop.spec import Arch, Problem
from flexsparse.model.sparseloop.yamlio import SpecError, check_keys, where

__all__ = ["Loop", "Mapping", "parse_mapping", "mapping_from_factors", "spatial_usage"]

TIME, SPACE_X, SPACE_Y = 0, 1, 2
_DIRECTIVE_KEYS = {"target", "type", "factors", "permutation", "split", "keep", "bypass", "stream",
                   "no_link_transfer", "no_multicast_no_reduction", "no_temporal_reuse"}


@dataclass(frozen=True)
class Loop:
    """One loop: dimension index, bound, spacetime (0 time, 1 X, 2 Y) and owning storage level."""

    dim: int
    end: int
    spatial: int
    level: int


@dataclass
class Mapping:
    """Per storage level: temporal and spatial loops (innermost first) and the keep mask."""

    temporal: list[list[Loop]]
    spatial: list[list[Loop]]
    keep: list[list[bool]]          # [level][data-space]
    stream: list[list[bool]] = field(default_factory=list)   # bypassed data passing through the level
    nest: list[Loop] = field(default_factory=list)        # analysed nest, innermost first
    boundary: list[int] = field(default_factory=list)     # index in nest of each level's outermost loop

    def build(self) -> Mapping:
        """Assemble ``nest`` and ``boundary`` from the per-level loops."""
        self.nest, self.boundary = [], []
        for lv in range(len(self.temporal)):
            self.nest += [lp for lp in self.spatial[lv] if lp.end > 1]
            temporal = [lp for lp in self.temporal[lv] if lp.end > 1]
            if not temporal:
                last = self.temporal[lv][-1].dim if self.temporal[lv] else 0
                temporal = [Loop(last, 1, TIME, lv)]
            self.nest += temporal
            self.boundary.append(len(self.nest) - 1)
        return self

    def factors(self, lv: int, dim: int, spatial: bool = False) -> int:
        """Product of a level's temporal (or spatial) factors of ``dim``."""
        loops = self.spatial[lv] if spatial else self.temporal[lv]
        return math.prod(lp.end for lp in loops if lp.dim == dim)

    def describe(self, problem: Problem, arch: Arch) -> list[str]:
        """Loop-nest text, outermost level first (like ``timeloop-model.map.txt``)."""
        out = []
        for lv in range(len(self.temporal) - 1, -1, -1):
            kept = [problem.dataspaces[i].name for i, k in enumerate(self.keep[lv]) if k]
            out.append(f"{arch.storage[lv].name} [ {' '.join(kept)} ]")
            for lp in reversed(self.temporal[lv]):
                if lp.end > 1:
                    out.append(f"  for {problem.dims[lp.dim]} in [0:{lp.end})")
            for lp in reversed(self.spatial[lv]):
                if lp.end > 1:
                    axis = "X" if lp.spatial == 1 else "Y"
                    out.append(f"  for {problem.dims[lp.dim]} in [0:{lp.end}) (Spatial-{axis})")
        return out


def _parse_factors(text: Any, problem: Problem, loc: str) -> dict[int, int]:
    if isinstance(text, dict):
        items = [(str(k), v) for k, v in text.items()]
    else:
        s = str(text).split("#", 1)[0]
        items = re.findall(r"([A-Za-z_][A-Za-z_0-9]*?)\s*=?\s*(\d+)(?:,(\d+))?", s)
        bad = re.sub(r"([A-Za-z_][A-Za-z_0-9]*?)\s*=?\s*(\d+)(?:,\d+)?", "", s).strip()
        if bad:
            raise SpecError(f"{loc}: cannot parse factors {text!r} (near {bad!r})")
        for m in re.finditer(r"([A-Za-z_][A-Za-z_0-9]*?)\s*=?\s*(\d+),(\d+)", s):
            if m.group(2) != m.group(3):
                raise SpecError(f"{loc}: imperfect factor {m.group(0)!r} is not supported")
        items = [(a, b) for a, b, *_ in items]
    out = {}
    for name, val in items:
        d = problem.dim_index(name, loc)
        v = int(val)
        if v < 0:
            raise SpecError(f"{loc}: factor of {name} must be >= 0")
        out[d] = problem.bounds[d] if v == 0 else v
    return out


def _parse_permutation(text: Any, problem: Problem, loc: str) -> list[int]:
    s = "".join(str(text).split())
    if all(len(d) == 1 for d in problem.dims):
        perm = [problem.dim_index(ch, loc) for ch in s]
    else:
        perm = [problem.dim_index(tok, loc) for tok in re.findall("|".join(sorted(map(re.escape, problem.dims),
                                                                                      key=len, reverse=True)), s)]
    if len(set(perm)) != len(perm):
        raise SpecError(f"{loc}: permutation {text!r} repeats a dimension")
    return perm + [d for d in range(len(problem.dims)) if d not in perm]


def parse_mapping(node: Any, arch: Arch, problem: Problem) -> Mapping:
    """Mapping directives (list, or mapping with a ``mapping`` list) -> :class:`Mapping`."""
    directives = node.get("mapping", node) if isinstance(node, dict) else node
    if not isinstance(directives, list):
        raise SpecError(f"{where(node)}: a mapping is a list of directives")
    nlv, nds, ndim = len(arch.storage), len(problem.dataspaces), len(problem.dims)
    temporal: dict[int, tuple[dict, list]] = {}
    spatial: dict[int, tuple[dict, list, int]] = {}
    keep = [[True] * nds for _ in range(nlv)]
    stream = [[False] * nds for _ in range(nlv)]
    for d in directives:
        check_keys(d, _DIRECTIVE_KEYS, "a mapping directive", required=("target", "type"))
        loc = where(d, "target")
        lv = arch.level_index(str(d["target"]), loc)
        kind = str(d["type"])
        if kind in ("temporal", "spatial"):
            facs = _parse_factors(d.get("factors", ""), problem, where(d, "factors"))
            perm = _parse_permutation(d.get("permutation", ""), problem, where(d, "permutation"))
            if kind == "temporal":
                if lv in temporal:
                    raise SpecError(f"{loc}: second temporal directive for {arch.storage[lv].name}")
                temporal[lv] = (facs, perm)
            else:
                fx, fy = arch.fanout(lv)
                if fx * fy == 1 and any(v > 1 for v in facs.values()):
                    raise SpecError(f"{loc}: {arch.storage[lv].name} has no spatial fanout below it")
                split = int(d.get("split", ndim))
                spatial[lv] = (facs, perm, split)
        elif kind in ("bypass", "datatype"):
            for key, val in (("keep", True), ("bypass", False)):
                for name in d.get(key) or []:
                    keep[lv][problem.ds_index(str(name), where(d, key))] = val
            for name in d.get("stream") or []:
                stream[lv][problem.ds_index(str(name), where(d, "stream"))] = True
        elif kind == "skew":
            raise SpecError(f"{loc}: skew directives are not supported")
        else:
            raise SpecError(f"{where(d, 'type')}: unknown mapping directive type {kind!r}; "
                            "valid: temporal, spatial, bypass, datatype")
    for ds in range(nds):
        keep[nlv - 1][ds] = True
    m = Mapping([[] for _ in range(nlv)], [[] for _ in range(nlv)], keep, stream)
    for lv in range(nlv):
        facs, perm = temporal.get(lv, ({}, list(range(ndim))))
        m.temporal[lv] = [Loop(d, facs.get(d, 1), TIME, lv) for d in perm]
        if lv in spatial:
            facs, perm, split = spatial[lv]
            m.spatial[lv] = [Loop(d, facs.get(d, 1), SPACE_X if i < split else SPACE_Y, lv) for i, d in enumerate(perm)]
    _check(m, arch, problem, where(node))
    return m.build()


def mapping_from_factors(arch: Arch, problem: Problem, temporal: list[dict[int, int]], perms: list[list[int]],
                         spatial: list[tuple[dict[int, int], dict[int, int]]], keep: list[list[bool]]) -> Mapping:
    """A mapping built from per-level factor tables (used by the mapper)."""
    nlv, ndim = len(arch.storage), len(problem.dims)
    m = Mapping([[] for _ in range(nlv)], [[] for _ in range(nlv)], [list(k) for k in keep],
                [[False] * len(problem.dataspaces) for _ in range(nlv)])
    for lv in range(nlv):
        m.temporal[lv] = [Loop(d, temporal[lv].get(d, 1), TIME, lv) for d in perms[lv]]
        sx, sy = spatial[lv]
        m.spatial[lv] = [Loop(d, sx[d], SPACE_X, lv) for d in range(ndim) if sx.get(d, 1) > 1] + \
                        [Loop(d, sy[d], SPACE_Y, lv) for d in range(ndim) if sy.get(d, 1) > 1]
    for ds in range(len(problem.dataspaces)):
        m.keep[nlv - 1][ds] = True
    _check(m, arch, problem, "<mapper>")
    return m.build()


def _check(m: Mapping, arch: Arch, problem: Problem, loc: str) -> None:
    for d, bound in enumerate(problem.bounds):
        prod = math.prod(lp.end for lv in range(len(m.temporal)) for lp in m.temporal[lv] + m.spatial[lv]
                         if lp.dim == d)
        if prod != bound:
            raise SpecError(f"{loc}: the factors of dimension {problem.dims[d]} multiply to {prod}, "
                            f"but its bound is {bound}")


def spatial_usage(m: Mapping) -> list[tuple[int, int]]:
    """(X, Y) instances each level's spatial factors ask for (checked against the fanout after
    sparse analysis, since spatial skipping may condense them)."""
    return [(math.prod(lp.end for lp in m.spatial[lv] if lp.spatial == SPACE_X),
             math.prod(lp.end for lp in m.spatial[lv] if lp.spatial == SPACE_Y)) for lv in range(len(m.temporal))]
