"""Evaluate a Sparseloop/Timeloop input: actions -> energy (ERT) and cycles (bandwidths).

Per storage level and data-space, the fine-grained scalar actions (actual/gated/skipped reads,
fills, updates, metadata reads/fills/updates per rank, (de)compression counts) come from the
dense nest analysis and the sparse analysis. They become *vector* accesses: data actions are
``ceil(scalar / block_size)``, scaled for compressed tiles narrower than the block by the
expected ``ceil(nnz / block)`` of the tile's occupancy distribution (Sparseloop's
vector-width table decides when this matters); metadata actions are the accessed bits over the
metadata storage width. Energy is vector accesses times the ERT action energies, spread over
the utilized instances of each cluster. Cycles: the compute takes ``(actual + gated computes) /
average utilized instances``; each level needs its read and write traffic (data plus metadata
words) per compute cycle, and a level whose bandwidth is lower slows the run by that ratio. The
run takes the slowest level's cycles.

Two extensions beyond Sparseloop, both off unless asked for: a storage level with
``overbooking: true`` (Tailors) keeps the part of each tile that fits its share of the capacity
and streams the overflow from its parent on every use (``_overbook``); ``evaluate(...,
exact_joint=True)`` counts effectual computes on actual data exactly (see ``saf``).

Cost: ``O(levels * data-spaces * actions)`` after the analyses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from flexsparse.model.sparseloop.formats import (
    SparseOpts,
    define_formats,
    expected_occupancy,
    metadata_accesses,
    parse_sparse,
)
from flexsparse.model.sparseloop.mapping import Mapping, parse_mapping
from flexsparse.model.sparseloop.nest import NestResult, analyze
from flexsparse.model.sparseloop.saf import SparseState, apply_safs, classify_compute
from flexsparse.model.sparseloop.spec import STORAGE_ACTIONS, Arch, Problem, apply_ert, parse_arch, parse_problem
from flexsparse.model.sparseloop.yamlio import SpecError, YDict, load_files, where

__all__ = ["Evaluation", "Spec", "evaluate", "load_spec"]

# Timeloop's vector-width coefficients: block size -> thresholds of tile_shape / block_size per
# density decile, below which a compressed tile's partly filled blocks are counted exactly.
VECTOR_WIDTH_THRESHOLDS = {
    2: (251, 125, 84, 63, 51, 42, 36, 32, 28, 1), 4: (375, 188, 125, 94, 75, 63, 54, 47, 42, 1),
    8: (438, 219, 146, 110, 88, 73, 63, 55, 49, 1), 16: (469, 235, 157, 118, 94, 79, 67, 59, 52, 1),
    32: (485, 243, 162, 122, 97, 81, 70, 61, 52, 1),
}
TOP_LEVEL_KEYS = {"architecture", "problem", "mapping", "sparse_optimizations", "ERT", "ART", "compound_components",
                  "architecture_constraints", "mapspace_constraints", "mapspace", "mapper", "model", "globals",
                  "variables", "components", "ERT_summary", "ART_summary", "flattened_architecture", "constraints"}


@dataclass
class Spec:
    """A parsed input: architecture (with energies), problem, mapping (may be None), sparse opts."""

    arch: Arch
    problem: Problem
    mapping: Optional[Mapping]
    sparse: SparseOpts
    raw: YDict = field(default_factory=YDict)
    default_energy_levels: list[str] = field(default_factory=list)


def load_spec(files: Iterable[str | Path | dict]) -> Spec:
    """Merge and parse input files (architecture, problem, mapping, sparse_optimizations, ERT)."""
    files = list(files)
    raw = load_files(files)
    for k in raw:
        if k not in TOP_LEVEL_KEYS:
            raise SpecError(f"{where(raw, k)}: unknown top-level key {k!r}; valid: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    for need in ("architecture", "problem"):
        if need not in raw:
            raise SpecError(f"no input file defines {need!r} (files: {', '.join(map(str, files))})")
    arch = parse_arch(raw["architecture"])
    base = Path(raw.key_src.get("problem", ".")).parent if raw.key_src.get("problem", "").endswith(
        (".yaml", ".yml")) else None
    problem = parse_problem(raw["problem"], base)
    defaults = apply_ert(arch, raw.get("ERT") and {"ERT": raw["ERT"]})
    mapping = parse_mapping(raw["mapping"], arch, problem) if raw.get("mapping") is not None else None
    sparse = parse_sparse(raw.get("sparse_optimizations"), arch, problem)
    return Spec(arch, problem, mapping, sparse, raw, defaults)


@dataclass
class LevelStats:
    """Statistics of one storage level."""

    name: str
    cycles: int
    slowdown: float
    energy_pj: float
    dataspaces: dict[str, dict[str, Any]]


@dataclass
class Evaluation:
    """Result of one evaluation."""

    cycles: int
    energy_pj: float
    algorithmic_computes: float
    computes: float
    gated_computes: float
    skipped_computes: float
    utilization: float
    compute_energy_pj: float
    compute_cycles: int
    levels: list[LevelStats]
    mapping_text: list[str]
    overflow: dict[str, dict[str, float]] = field(default_factory=dict)   # overbooked levels

    @property
    def energy_uJ(self) -> float:
        """Total energy in microjoules."""
        return self.energy_pj / 1e6

    def pj_per_compute(self) -> dict[str, float]:
        """Energy per actual compute, per level (compute level first)."""
        n = self.computes or 1.0
        out = {"compute": self.compute_energy_pj / n}
        for lv in self.levels:
            out[lv.name] = lv.energy_pj / n
        out["Total"] = self.energy_pj / n
        return out


def _vector_ratio(density, shape: int, mean_density: float, block: int, box) -> float:
    table = VECTOR_WIDTH_THRESHOLDS.get(block)
    if table is None:
        return 1.0
    idx = max(0, math.floor(mean_density / 0.1 + 1e-9) - 1) if mean_density >= 0.1 else 0
    if table[min(idx, 9)] <= shape // block:
        return 1.0
    k, p = density.distribution(shape, box)
    k, p = np.asarray(k, dtype=float), np.asarray(p, dtype=float)
    nz = k >= 1
    total = float(np.dot(np.ceil(k[nz] / block), p[nz]))
    naive = shape * mean_density / block
    return total / naive if naive else 1.0


def _storage_stats(spec: Spec, st: SparseState | None, dense: NestResult, lv: int, compute_cycles: int,
                   fg, fmt) -> LevelStats:
    arch, problem = spec.arch, spec.problem
    level = arch.storage[lv]
    per_ds: dict[str, dict[str, Any]] = {}
    read_bw = write_bw = 0.0
    energy = 0.0
    for pv, ds in enumerate(problem.dataspaces):
        t = dense.tiles[pv][lv]
        acts = fg[pv][lv]
        info = st.reps.get((pv, lv)) if st else None
        shape = t.size
        ratio = 1.0
        if info and info.fmt and info.fmt.compressed and shape and level.block_size > 1 and info.expected_density < 1:
            ratio = _vector_ratio(problem.densities[pv], shape, info.expected_density, level.block_size, t.box)
        vec = {}
        for op, val in acts.items():
            if "count" not in op and val and (shape or t.passthrough):
                vec[op] = math.ceil(val / level.block_size - 1e-9) * ratio
            else:
                vec[op] = val
        bits = {}
        for op, ranks in (fmt[pv][lv] or {}).items():
            if not info or not info.has_metadata:
                continue
            b = sum(info.md_bits[r] * ranks[r][0] + info.pl_bits[r] * ranks[r][1] for r in range(min(len(ranks),
                                                                                                      info.nranks)))
            bits[op] = b
            vec[op] = math.ceil(b / level.md_storage_width - 1e-9) if level.md_storage_width else 0
        e_cluster = sum(v * level.energy.get(op, 0.0) for op, v in vec.items())
        x, y = (t.max_x or 1), (t.max_y or 1)
        clusters = min(x * y, level.instances / level.cluster_size)
        util = (x * y) / clusters if clusters else 1.0
        inst = t.avg_replication
        e_inst = e_cluster / util if inst > 0 else 0.0
        energy += e_inst * inst
        # Bandwidth demand (words per compute cycle, averaged over utilized instances).
        wb = level.word_bits
        rd = acts.get("random_read", 0) + acts.get("gated_read", 0)
        wr = sum(acts.get(f"{k}_{a}", 0) for k in ("random", "gated") for a in ("fill", "update"))
        frd = bits.get("random_metadata_read", 0) + bits.get("gated_metadata_read", 0)
        fwr = sum(bits.get(f"{k}_metadata_{a}", 0) for k in ("random", "gated") for a in ("fill", "update"))
        tr = rd + math.ceil(frd / wb - 1e-9)
        tw = wr + math.ceil(fwr / wb - 1e-9)
        scale = (x * y) / inst if inst else 1.0
        tr, tw = math.ceil(tr / scale - 1e-9), math.ceil(tw / scale - 1e-9)
        read_bw += tr / compute_cycles if compute_cycles else 0.0
        write_bw += tw / compute_cycles if compute_cycles else 0.0
        if shape or any(acts.values()):
            per_ds[ds.name] = _ds_record(t, acts, fmt[pv][lv], info, e_inst, inst, level)
    slow = 1.0
    if level.read_bandwidth is not None and level.read_bandwidth < read_bw:
        slow = min(slow, level.read_bandwidth / read_bw)
    if level.write_bandwidth is not None and level.write_bandwidth < write_bw:
        slow = min(slow, level.write_bandwidth / write_bw)
    if level.shared_bandwidth is not None and level.shared_bandwidth < read_bw + write_bw:
        slow = min(slow, level.shared_bandwidth / (read_bw + write_bw))
    cycles = math.ceil(compute_cycles / slow)   # same float arithmetic as Timeloop
    return LevelStats(level.name, cycles, slow, energy, per_ds)


def _ds_record(t, acts, fmt, info, e_inst, inst, level) -> dict[str, Any]:
    rec: dict[str, Any] = {"tile_shape": t.size, "partition_size": t.partition_size, "utilized_instances": inst,
                           "energy_pj": e_inst * inst}
    for a, dense in (("reads", t.reads), ("fills", t.fills), ("updates", t.updates)):
        s = a[:-1]
        rec[a] = {"algorithmic": dense, "actual": acts.get(f"random_{s}", 0), "gated": acts.get(f"gated_{s}", 0),
                  "skipped": acts.get(f"skipped_{s}", 0)}
    if info and info.has_metadata:
        rec["format"] = [r.name for r in reversed(info.fmt.ranks)]
        rec["metadata"] = {f"{k}_{a}": [list(map(float, x)) for x in fmt.get(f"{k}_metadata_{a}", [])]
                           for k in ("random", "gated", "skipped") for a in ("read", "fill", "update")}
        rec["expected_density"] = info.expected_density
    rec["decompression_count"] = acts.get("decompression_count", 0)
    rec["compression_count"] = acts.get("compression_count", 0)
    return rec


def evaluate(spec: Spec | Iterable[str | Path | dict], mapping: Optional[Mapping] = None,
             exact_joint: bool = False) -> Evaluation:
    """Evaluate ``spec`` (or the files it names) with its mapping or ``mapping``.

    Inputs without a mapping are searched with :func:`flexsparse.model.sparseloop.mapper.search`.
    ``exact_joint`` (an extension; off reproduces Sparseloop): with actual data for both
    operands, count effectual computes exactly on the data, with each storage skip's condition
    at its own tile granularity, instead of Sparseloop's element-level filtering of the
    computes left by independently combined skip probabilities.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    if mapping is None:
        mapping = spec.mapping
    if mapping is None:
        from flexsparse.model.sparseloop.mapper import search
        mapping = search(spec).mapping
    arch, problem = spec.arch, spec.problem
    dense = analyze(problem, arch, mapping)
    nlv, npv = len(arch.storage), len(problem.dataspaces)
    fg = [[_init_actions(dense.tiles[pv][lv]) for lv in range(nlv)] for pv in range(npv)]
    fmt: list[list[dict]] = [[{} for _ in range(nlv)] for _ in range(npv)]
    compute = {"random_compute": dense.algorithmic_computes, "gated_compute": 0.0, "skipped_compute": 0.0}
    comp_avg = float(dense.compute_replication)
    st = None
    if not spec.sparse.empty:
        st = _sparse(spec, mapping, dense, fg, fmt, compute, exact_joint)
        comp_avg = st.compute_avg_replication
    overflow = _overbook(spec, dense, st, fg)
    # Compute level.
    c = arch.compute
    c_energy = sum(compute[k] * c.energy.get(k, 0.0) for k in compute)
    busy = compute["random_compute"] + compute["gated_compute"]
    c_cycles = math.ceil(busy / comp_avg - 1e-9) if comp_avg else 0
    levels = [_storage_stats(spec, st, dense, lv, c_cycles, fg, fmt) for lv in range(nlv)]
    cycles = max([c_cycles] + [lv.cycles for lv in levels])
    energy = c_energy + sum(lv.energy_pj for lv in levels)
    util = (compute["random_compute"] + compute["gated_compute"]) / c.instances / cycles if cycles else 0.0
    return Evaluation(cycles=cycles, energy_pj=energy, algorithmic_computes=dense.algorithmic_computes,
                      computes=compute["random_compute"], gated_computes=compute["gated_compute"],
                      skipped_computes=compute["skipped_compute"], utilization=util, compute_energy_pj=c_energy,
                      compute_cycles=c_cycles, levels=levels, mapping_text=mapping.describe(problem, arch),
                      overflow=overflow)


def _overbook(spec: Spec, dense: NestResult, st: SparseState | None, fg) -> dict[str, dict[str, float]]:
    """Tailors' overbooking: at a level with ``overbooking``, a tile larger than its share of the
    capacity keeps what fits and streams the rest from the parent on every use.

    A data-space's share of the capacity is proportional to its expected occupancy; the overflow
    fraction ``f = E[max(0, occ - share)] / E[occ]`` over the tile occupancy distribution moves
    that fraction of the level's reads to the parent (per parent instance) and removes it from
    the level's fills. First-order traffic of a tile used R times: ``occ + (R - 1) * overflow``.
    """
    arch, problem = spec.arch, spec.problem
    out: dict[str, dict[str, float]] = {}
    for lv, level in enumerate(arch.storage):
        if not level.overbooking or level.size is None:
            continue
        kept = [pv for pv in range(len(problem.dataspaces)) if dense.tiles[pv][lv].size > 0]
        dists, means = {}, {}
        for pv in kept:
            t = dense.tiles[pv][lv]
            k, p = problem.densities[pv].distribution(t.size, t.box)
            dists[pv] = (np.asarray(k, dtype=float), np.asarray(p, dtype=float))
            means[pv] = float(np.dot(*dists[pv]))
        total = sum(means.values()) or 1.0
        for pv in kept:
            share = level.size * means[pv] / total
            k, p = dists[pv]
            over = float(np.dot(np.maximum(0.0, k - share), p))
            f = over / means[pv] if means[pv] else 0.0
            parent = next((j for j in range(lv + 1, len(arch.storage)) if dense.tiles[pv][j].size > 0), None)
            out.setdefault(level.name, {})[problem.dataspaces[pv].name] = f
            out[level.name][problem.dataspaces[pv].name + " tiles overflowing"] = float(p[k > share].sum())
            if f <= 0 or parent is None:
                continue
            acts, pacts = fg[pv][lv], fg[pv][parent]
            moved = acts["random_read"] * f
            acts["random_read"] -= moved
            acts["random_fill"] *= 1 - f
            pacts["random_read"] += (moved * dense.tiles[pv][lv].replication
                                     / max(1, dense.tiles[pv][parent].replication))
    return out


def _init_actions(t) -> dict[str, float]:
    acts = {op: 0.0 for op in STORAGE_ACTIONS if "metadata" not in op}
    acts["random_read"], acts["random_fill"], acts["random_update"] = t.reads, t.fills, t.updates
    return acts


def _sparse(spec: Spec, mapping: Mapping, dense: NestResult, fg, fmt, compute,
            exact_joint: bool = False) -> SparseState:
    arch, problem, opts = spec.arch, spec.problem, spec.sparse
    nlv = len(arch.storage)
    sizes = [[dense.tiles[pv][lv].size for lv in range(nlv)] for pv in range(len(problem.dataspaces))]
    reps = define_formats(problem, arch, mapping, opts, [], sizes)
    st = SparseState(problem, arch, mapping, opts, dense.tiles, reps, fg=fg, fmt=fmt, compute=compute)
    st.exact_joint = exact_joint
    st.compute_x, st.compute_y = float(dense.compute_x), float(dense.compute_y)
    st.compute_rep = float(dense.compute_replication)
    st.compute_avg_replication = float(dense.compute_replication)
    ndim = len(problem.dims)
    ext = [1] * ndim
    for lv in range(nlv):
        loops = list(mapping.spatial[lv]) + list(mapping.temporal[lv])
        st.subnests.append(loops)
        row = []
        for lp in loops:
            ext[lp.dim] *= lp.end
            row.append(tuple(ext))
        st.molds.append(row)
    for (pv, lv), info in reps.items():
        t = dense.tiles[pv][lv]
        parent = next((j for j in range(lv + 1, nlv) if sizes[pv][j] > 0), None)
        parent_md = parent is not None and reps.get((pv, parent)) is not None and reps[(pv, parent)].has_metadata
        expected_occupancy(info, problem.dataspaces[pv], problem.densities[pv], t.size, t.box, parent_md)
        t.avg_replication = t.replication * info.avg_replication_scale
        if info.has_metadata:
            acc = metadata_accesses(info, t.reads, t.fills, t.updates, t.size)
            for a in ("read", "fill", "update"):
                fmt[pv][lv][f"random_metadata_{a}"] = acc[a]
                for k in ("gated", "skipped"):
                    fmt[pv][lv][f"{k}_metadata_{a}"] = [[0, 0] for _ in acc[a]]
    apply_safs(st)
    classify_compute(st)
    return st
