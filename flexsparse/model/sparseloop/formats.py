"""Sparse-optimization input and the representation-format (metadata) analysis.

Input (``sparse_optimizations.targets``): per storage level a ``representation-format`` (per
data-space a list of ranks, outermost first, each ``UOP``/``UB``/``CP``/``B``/``RLE`` with
optional metadata/payload word bits and ``flattened-rankIDs``; ``rank-application-order``), an
``action-optimization`` list (``gating``/``skipping``/``skipping-spatial``/``position-skipping``
of a target conditioned on other data-spaces) and, at the compute level,
``compute-optimization`` (``gating``/``skipping``).

Representation analysis (per kept (data-space, level)):

* The loops of the level (and of bypassed levels under it) that touch the data-space are
  assigned to the format's ranks, outer-to-inner or inner-to-outer, each rank absorbing the
  loops its flattening rule allows; without tile partitioning, a compressed level whose child
  holds a non-trivial tile first repeats the child's ranks ("pre-tiling").
* A rank's fiber shape is the projected size of its loops; the number of fibers is the product
  of the fiber shapes above it, discounted by the probability that a fiber is empty.
* Per rank, metadata/payload units follow the format: UOP ``fibers * (shape + 1)`` payloads;
  UB ``fibers * shape`` of each; B ``fibers * shape`` metadata and nonempty-coordinate
  payloads; CP ``ceil(shape * p_nonempty)`` coordinates; RLE ``shape * p_nonempty`` runs.
  The lowest populated rank's payloads are the data themselves and are not counted.
* Expected occupancies average these over the density model's occupancy distribution of the
  tile (conditioning every sub-tile on the tile's occupancy); metadata accesses scale them by
  the dense reads/fills/updates per tile.

Cost: per kept (data-space, level), one vectorised pass over the tile's possible occupancies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from scipy.special import gammaln

from flexsparse.model.sparseloop.mapping import TIME, Loop, Mapping
from flexsparse.model.sparseloop.spec import Arch, Problem
from flexsparse.model.sparseloop.yamlio import SpecError, check_keys, where

__all__ = ["ActionOpt", "RankFormat", "RepInfo", "SparseOpts", "define_formats", "expected_occupancy",
           "parse_sparse", "prob_empty"]

_FORMATS = {"UOP": False, "UB": False, "CP": True, "B": True, "RLE": True}
_RANK_KEYS = {"format", "metadata-word-bits", "payload-word-bits", "flattened-rankIDs", "flattened_rankIDs"}
# Timeloop reads only "flattened-rankIDs"; the underscore spelling found in some published inputs is
# accepted for compatibility and ignored, exactly as Timeloop ignores it (a warning says so).
IGNORED_RANK_KEYS = ("flattened_rankIDs",)
_ACTION_TYPES = {"gating": "gate", "skipping": "skip", "skipping-spatial": "spatial_skip",
                 "position-skipping": "position_skip"}


@dataclass
class RankFormat:
    """One rank of a representation format."""

    name: str
    md_bits: int
    pl_bits: int
    flatten: list[list[int]]      # flattening rules (dimension indices); empty: none

    @property
    def compressed(self) -> bool:
        """Whether the rank stores only nonempty coordinates."""
        return _FORMATS[self.name]

    def rule_with(self, dim: int) -> Optional[list[int]]:
        """The flattening rule that contains ``dim`` (None if none)."""
        return next((r for r in self.flatten if dim in r), None)

    def units(self, fibers: np.ndarray, shape: int, p_empty_cur: np.ndarray,
              p_empty_next: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(metadata units, payload units) of this rank."""
        nf = fibers * (1 - p_empty_cur)
        if self.name == "UOP":
            return np.zeros_like(nf), nf * (shape + 1)
        if self.name == "UB":
            return fibers * shape * np.ones_like(nf), fibers * shape * np.ones_like(nf)
        nnz = shape * (1 - p_empty_next)
        if self.name == "B":
            return nf * shape, nf * np.ceil(nnz - 1e-9)
        if self.name == "CP":
            md = np.ceil(nnz - 1e-9) * nf
            return md, md
        md = nnz * nf                                      # RLE
        return md, md


@dataclass
class DSFormat:
    """Representation of one data-space at one level; ``ranks[0]`` is the innermost rank."""

    ranks: list[RankFormat]
    inner_to_outer: bool

    @property
    def compressed(self) -> bool:
        """Any compressed rank makes the tensor compressed."""
        return any(r.compressed for r in self.ranks)


@dataclass
class ActionOpt:
    """A storage action optimization: ``kind`` of ``target`` conditioned on ``cond``."""

    kind: str
    target: int
    cond: list[int]


@dataclass
class SparseOpts:
    """Everything under ``sparse_optimizations``."""

    formats: dict[tuple[int, int], DSFormat] = field(default_factory=dict)     # (level, ds)
    warnings: list[str] = field(default_factory=list)
    actions: dict[int, list[list[ActionOpt]]] = field(default_factory=dict)   # level -> groups
    compute: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        """No optimization at all (pure dense analysis)."""
        return not self.formats and not self.actions and not self.compute


def _word_bits(spec: Any, default: int, md_width: int, loc: str) -> int:
    if spec is None:
        return default
    bits = int(spec)
    if bits and md_width and md_width % bits:
        bits = next((b for b in range(bits, 2 * bits) if md_width % b == 0), bits)
    if md_width and bits > md_width:
        raise SpecError(f"{loc}: format word bits {bits} exceed the metadata storage width {md_width}")
    return bits


def parse_sparse(node: Any, arch: Arch, problem: Problem) -> SparseOpts:
    """Parse ``sparse_optimizations`` (a mapping with ``targets``)."""
    opts = SparseOpts()
    if node is None:
        return opts
    check_keys(node, {"targets"}, "sparse_optimizations")
    for tgt in node.get("targets") or []:
        check_keys(tgt, {"name", "representation-format", "action-optimization", "compute-optimization"},
                   "a sparse-optimization target", required=("name",))
        name = str(tgt["name"])
        if "compute-optimization" in tgt:
            if name != arch.compute.name:
                raise SpecError(f"{where(tgt, 'name')}: compute-optimization targets the compute level "
                                f"{arch.compute.name!r}, not {name!r}")
            for co in tgt["compute-optimization"] or []:
                check_keys(co, {"type"}, "a compute optimization", required=("type",))
                kind = str(co["type"])
                if kind in ("gating", "gate-on-zero-operand"):
                    opts.compute.add("gating")
                elif kind in ("skipping", "skip_on_not_aligned_operands"):
                    opts.compute.add("skipping")
                else:
                    raise SpecError(f"{where(co, 'type')}: unknown compute optimization {kind!r}; "
                                    "valid: gating, skipping")
            if "representation-format" not in tgt and "action-optimization" not in tgt:
                continue
        lv = arch.level_index(name, where(tgt, "name"))
        level = arch.storage[lv]
        rf = tgt.get("representation-format")
        if rf is not None:
            check_keys(rf, {"data-spaces"}, "representation-format")
            for dsn in rf.get("data-spaces") or []:
                check_keys(dsn, {"name", "ranks", "rank-application-order"}, "a representation data-space",
                           required=("name", "ranks"))
                ds = problem.ds_index(str(dsn["name"]), where(dsn, "name"))
                order = str(dsn.get("rank-application-order", "outer-to-inner"))
                if order not in ("outer-to-inner", "inner-to-outer"):
                    raise SpecError(f"{where(dsn, 'rank-application-order')}: rank-application-order is "
                                    f"'outer-to-inner' or 'inner-to-outer', got {order!r}")
                ranks = []
                for rk in reversed(dsn["ranks"]):
                    check_keys(rk, _RANK_KEYS, "a format rank", required=("format",))
                    fmt = str(rk["format"]).upper()
                    if fmt not in _FORMATS:
                        raise SpecError(f"{where(rk, 'format')}: unknown rank format {rk['format']!r}; valid: "
                                        f"{', '.join(_FORMATS)}")
                    loc = where(rk, "format")
                    dflt_md = 1 if fmt == "B" else level.md_word_bits
                    flat = rk.get("flattened-rankIDs") or []
                    for k in IGNORED_RANK_KEYS:
                        if k in rk:
                            msg = (f"{where(rk, k)}: {k!r} is ignored (Timeloop reads 'flattened-rankIDs'); "
                                   "the rank takes one loop")
                            if msg not in opts.warnings:
                                opts.warnings.append(msg)
                    rules = [[problem.dim_index(str(d), where(rk))
                              for d in (rule if isinstance(rule, list) else [rule])]
                             for rule in flat]
                    ranks.append(RankFormat(fmt, _word_bits(rk.get("metadata-word-bits"), dflt_md,
                                                            level.md_storage_width, loc),
                                            _word_bits(rk.get("payload-word-bits"), level.md_word_bits,
                                                       level.md_storage_width, loc), rules))
                opts.formats[(lv, ds)] = DSFormat(ranks, order == "inner-to-outer")
        ao = tgt.get("action-optimization")
        if ao is not None:
            groups = opts.actions.setdefault(lv, [])
            for item in ao:
                check_keys(item, {"type", "options", "target", "condition-on"}, "an action optimization",
                           required=("type",))
                kind = str(item["type"])
                if kind not in _ACTION_TYPES:
                    raise SpecError(f"{where(item, 'type')}: unknown action optimization {kind!r}; valid: "
                                    f"{', '.join(_ACTION_TYPES)}")
                choices = item.get("options") or [item]
                group = []
                for ch in choices:
                    check_keys(ch, {"target", "condition-on", "type", "options"}, "an optimization option",
                               required=("target", "condition-on"))
                    cond = ch["condition-on"]
                    if not isinstance(cond, list):
                        raise SpecError(f"{where(ch, 'condition-on')}: condition-on is a list of data-spaces")
                    group.append(ActionOpt(_ACTION_TYPES[kind],
                                           problem.ds_index(str(ch["target"]), where(ch, "target")),
                                           [problem.ds_index(str(c), where(ch, "condition-on")) for c in cond]))
                groups.append(group)
    return opts


# ----------------------------------------------------------------------------- probabilities

def prob_empty(density, shape: int, constraint: Optional[tuple[Any, Any]] = None, box=None) -> np.ndarray | float:
    """P(a tile of ``shape`` elements is empty), optionally for every (S, k) constraint in arrays."""
    if shape <= 0:
        return 0.0
    if constraint is None:
        return density.prob_empty(shape, box)
    big_s, k = np.asarray(constraint[0], dtype=float), np.asarray(constraint[1], dtype=float)
    kind = density.kind
    if kind == "fixed-structured":
        exact = shape * np.where(big_s > 0, k / np.maximum(big_s, 1), 0.0)
        return np.where(np.floor(exact + 1e-12) == 0, 1.0 - exact, 0.0)
    if kind == "hypergeometric":
        # C(S - k, n) / C(S, n), zero when fewer than n empty slots.
        n = float(shape)
        ok = big_s - k >= n
        sk = np.where(ok, big_s - k, n)
        val = gammaln(sk + 1) - gammaln(sk - n + 1) - gammaln(big_s + 1) + gammaln(big_s - n + 1)
        return np.where(ok, np.exp(val), 0.0)
    # Actual data: the sub-tile's emptiness is read off the data (fraction of aligned boxes of
    # that shape that are empty), whatever the enclosing tile holds.
    base = float(density.prob_empty(shape, box))
    return np.full(np.shape(k), base)


# ----------------------------------------------------------------------------- representation

@dataclass
class RepInfo:
    """Metadata structure and expected occupancies of one kept (data-space, level)."""

    fmt: Optional[DSFormat]
    ranks_loops: list[list[Loop]] = field(default_factory=list)
    subtiles: list[tuple[int, ...]] = field(default_factory=list)   # op-space boxes, len = ranks + 1
    fiber_shape: list[int] = field(default_factory=list)
    expected_occupancy: float = 0.0
    expected_density: float = 1.0
    md_units: list[float] = field(default_factory=list)              # per rank (index 0 innermost)
    pl_units: list[float] = field(default_factory=list)
    md_bits: list[int] = field(default_factory=list)
    pl_bits: list[int] = field(default_factory=list)
    avg_replication_scale: float = 1.0

    @property
    def has_metadata(self) -> bool:
        """Whether a format is given for this data-space here."""
        return self.fmt is not None

    @property
    def nranks(self) -> int:
        """Ranks of the format (1 for default dense)."""
        return len(self.fmt.ranks) if self.fmt else 1


def _level_loops(m: Mapping, lv: int) -> list[Loop]:
    """All loops (trivial included) of storage level ``lv``, innermost first."""
    return list(m.spatial[lv]) + list(m.temporal[lv])


def _cumulative_boxes(m: Mapping, ndim: int) -> list[list[tuple[int, ...]]]:
    boxes, ext = [], [1] * ndim
    for lv in range(len(m.temporal)):
        row = []
        for lp in _level_loops(m, lv):
            ext[lp.dim] *= lp.end
            row.append(tuple(ext))
        boxes.append(row)
    return boxes


def define_formats(problem: Problem, arch: Arch, m: Mapping, opts: SparseOpts, kept: list[list[bool]],
                   sizes: list[list[int]]) -> dict[tuple[int, int], RepInfo]:
    """Rank structure of every kept (data-space, level)."""
    ndim, nlv = len(problem.dims), len(arch.storage)
    boxes = _cumulative_boxes(m, ndim)
    out: dict[tuple[int, int], RepInfo] = {}
    scalar = (1,) * ndim
    for pv, ds in enumerate(problem.dataspaces):
        levels = [lv for lv in range(nlv) if sizes[pv][lv] > 0]
        for i, lv in enumerate(levels):
            fmt = opts.formats.get((lv, pv))
            info = RepInfo(fmt)
            child = levels[i - 1] if i > 0 else None
            inner_most = child + 1 if child is not None else 0
            child_info = out.get((pv, child)) if child is not None else None
            pre = (fmt is not None and fmt.compressed and child is not None and sizes[pv][child] > 1)
            loops, molds = [], []
            for level in range(inner_most, lv + 1):
                for j, lp in enumerate(_level_loops(m, level)):
                    if lp.dim in ds.dims:
                        loops.append(lp)
                        molds.append(boxes[level][j])
            if not pre:
                below = [1] * ndim
                for level in range(inner_most):
                    for lp in _level_loops(m, level):
                        below[lp.dim] *= lp.end
                scaled = []
                for lp in loops:
                    scaled.append(Loop(lp.dim, lp.end * below[lp.dim], lp.spatial, lp.level))
                    below[lp.dim] = 1
                loops = scaled
            inner_rank = child_info.nranks if pre and child_info else 0
            if pre and child_info and child_info.nranks > info.nranks:
                raise SpecError(f"{arch.storage[lv].name}: pre-tiling {ds.name} needs at least the "
                                f"{child_info.nranks} ranks of {arch.storage[child].name}")
            ranks, subtiles, extra = _apply_ranks(loops, molds, info, inner_rank, scalar)
            if extra:
                raise SpecError(f"{arch.storage[lv].name}: the format of {ds.name} has fewer ranks than the "
                                "mapping's non-trivial loops need")
            if pre and child_info:
                ranks = child_info.ranks_loops + ranks
                subtiles = child_info.subtiles + subtiles
            else:
                subtiles = [scalar] + subtiles
            info.ranks_loops, info.subtiles = ranks, subtiles
            for rl in ranks:
                ext = [1] * ndim
                for lp in rl:
                    ext[lp.dim] *= lp.end
                info.fiber_shape.append(ds.size(ext))
            if fmt is not None:
                info.md_bits = [r.md_bits for r in fmt.ranks]
                info.pl_bits = [r.pl_bits for r in fmt.ranks]
            out[(pv, lv)] = info
    return out


def _apply_ranks(loops: list[Loop], molds: list, info: RepInfo, inner_rank: int, scalar):
    """Assign loops (innermost first) to ranks; returns (rank loops, subtiles, more_ranks_needed)."""
    has_md = info.fmt is not None
    nranks = info.nranks
    fmts = info.fmt.ranks if info.fmt else []
    first_mold = molds[0] if molds else scalar
    ranks: list[list[Loop]] = []
    tiles: list = []
    n = len(loops)

    def trivial(i):
        return loops[i].end <= 1

    if not (info.fmt and info.fmt.inner_to_outer):
        loop_id, r = n - 1, nranks
        while r > inner_rank and loop_id >= 0:
            while loop_id >= 0 and trivial(loop_id):
                loop_id -= 1
            if loop_id < 0:
                break
            r -= 1
            lp = loops[loop_id]
            rule = None
            if has_md and fmts[r].flatten:
                rule = fmts[r].rule_with(lp.dim)
                if rule is None:
                    ranks.append([])
                    tiles.append(first_mold)
                    continue
            group, corr = [lp], molds[loop_id]
            loop_id -= 1
            if loop_id >= 0 and (not has_md or rule is not None):
                while loop_id >= 0 and (not has_md or loops[loop_id].dim in rule or trivial(loop_id)):
                    if not trivial(loop_id):
                        group.append(loops[loop_id])
                    loop_id -= 1
            ranks.insert(0, group)
            tiles.insert(0, corr)
        while r > inner_rank:
            r -= 1
            ranks.insert(0, [])
            tiles.insert(0, first_mold)
        extra = any(not trivial(i) for i in range(loop_id + 1))
        return ranks, tiles, extra
    loop_id, r = 0, inner_rank - 1
    corr = scalar
    while r < nranks - 1 and loop_id < n:
        while loop_id < n and trivial(loop_id):
            loop_id += 1
        if loop_id >= n:
            break
        r += 1
        lp = loops[loop_id]
        rule = None
        if has_md and fmts[r].flatten:
            rule = fmts[r].rule_with(lp.dim)
            if rule is None:
                ranks.append([Loop(fmts[r].flatten[0][0], 1, TIME, lp.level)])
                tiles.append(corr)
                continue
        group, corr = [lp], molds[loop_id]
        loop_id += 1
        if loop_id < n and (not has_md or rule is not None):
            while loop_id < n and (not has_md or loops[loop_id].dim in rule or trivial(loop_id)):
                if not trivial(loop_id):
                    group.append(loops[loop_id])
                loop_id += 1
        ranks.append(group)
        tiles.append(corr)
        corr = scalar
    while r < nranks - 1:
        r += 1
        ranks.append([])
        tiles.append(first_mold)
    extra = any(not trivial(i) for i in range(loop_id, n))
    return ranks, tiles, extra


def rank_units(info: RepInfo, ds, density, shape: int, occ, box=None) -> tuple[np.ndarray, np.ndarray]:
    """(metadata, payload) units per rank for tiles of ``shape`` elements holding ``occ`` nonzeros
    (``occ`` may be an array); arrays of shape (ranks, len(occ))."""
    occ = np.atleast_1d(np.asarray(occ, dtype=float))
    n = info.nranks
    md = np.zeros((n, occ.size))
    pl = np.zeros((n, occ.size))
    fibers = np.ones_like(occ)
    big_s = np.full_like(occ, float(shape))
    cur_shape, cur_box = shape, box
    fmt = info.fmt
    for r in range(n - 1, -1, -1):
        fs = info.fiber_shape[r]
        nxt_shape, nxt_box = ds.size(info.subtiles[r]), ds.extents(info.subtiles[r])
        top = (r == 0) if fmt.inner_to_outer else (r == n - 1)
        if not (fs == 1 and not top):
            pe_cur = np.asarray(prob_empty(density, cur_shape, (big_s, occ), cur_box))
            pe_next = np.asarray(prob_empty(density, nxt_shape, (big_s, occ), nxt_box))
            if density.kind == "actual-data":
                # Counted on the data: coordinates per *nonempty* fibre, so units are exact.
                pe_next = np.where(pe_cur < 1, 1 - (1 - pe_next) / np.maximum(1 - pe_cur, 1e-300), 1.0)
            md[r], pl[r] = fmt.ranks[r].units(fibers, fs, pe_cur, pe_next)
        fibers = fibers * fs
        cur_shape, cur_box = nxt_shape, nxt_box
    for r in range(n):
        if np.any(md[r] != 0) or np.any(pl[r] != 0):
            pl[r] = 0.0
            break
    return md, pl


def expected_occupancy(info: RepInfo, ds, density, shape: int, box, parent_has_md: bool) -> None:
    """Fill ``info``'s expected data and metadata occupancy (average over the tile's occupancy)."""
    if shape == 0:
        return
    ks, ps = density.distribution(shape, box)
    ks, ps = np.asarray(ks, dtype=float), np.asarray(ps, dtype=float)
    keep = ps > 0
    ks, ps = ks[keep], ps[keep]
    if parent_has_md and ks.size and density.min_occupancy(shape, box) == 0:
        p0 = ps[0]
        info.avg_replication_scale = 1.0 - p0
        if p0 < 1:
            ps = ps / (1 - p0)
        ps = ps.copy()
        ps[0] = 0.0
    info.expected_occupancy = float(np.dot(ps, ks))
    info.expected_density = info.expected_occupancy / shape
    if info.fmt is not None:
        if density.kind == "actual-data":
            # Units do not depend on the tile's occupancy; given nonempty tiles only, scale up.
            md, pl = rank_units(info, ds, density, shape, ks[:1], box)
            scale = 1.0 / info.avg_replication_scale if info.avg_replication_scale > 0 else 1.0
            info.md_units = list(md[:, 0] * scale)
            info.pl_units = list(pl[:, 0] * scale)
        else:
            md, pl = rank_units(info, ds, density, shape, ks, box)
            info.md_units = list(md @ ps)
            info.pl_units = list(pl @ ps)


def metadata_accesses(info: RepInfo, reads: float, fills: float, updates: float, shape: int) -> dict[str, list]:
    """Per-rank (metadata, payload) accesses for reads, fills and updates of whole tiles."""
    out = {}
    for name, count in (("read", reads), ("fill", fills), ("update", updates)):
        ratio = count / shape if shape else 0.0
        out[name] = [[math.ceil(md * ratio - 1e-9), math.ceil(pl * ratio - 1e-9)]
                     for md, pl in zip(info.md_units, info.pl_units)]
    return out
