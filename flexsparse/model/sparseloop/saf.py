"""Sparse acceleration features: gating and skipping at storage levels, spatial skipping, compute.

Algorithm (Sparseloop's, in closed form from the density models):

* Gating/skipping a target's reads at a level, conditioned on other data-spaces, removes the
  reads whose condition tile is empty. The condition tile is the operation-space box of the
  first loop above the target's child that touches the target, widened by the spatial loops
  above it (and scaled up when one target block spans several condition tiles); the
  probability that the read is ineffectual is ``1 - prod_c (1 - P(condition tile of c is empty))``.
  The saving is propagated to every level under it (their fills, reads and updates shrink by
  the same probability, ``floor``-rounded as Sparseloop does) and, for operands, to the
  compute; the level itself books the removed reads (and updates) as gated or skipped.
* Compressed formats: a level holding a tensor with metadata only moves nonzeros
  (``actual = algorithmic - floor(algorithmic * (1 - expected density))``), and a level that
  receives compressed data into an uncompressed tile pays decompression counts.
* Spatial skipping condenses a spatial fanout to the nonempty condition fibres: the utilized
  instances shrink to the maximal nonempty fraction, the average ones to the expected
  nonempty fraction, and the target's reads below are skipped with that probability.
* Compute: each operand is "exists and nonzero", "exists and zero" or "does not exist"
  (compressed away); computes with a zero operand are gated (if the compute gates) or run,
  those with a missing operand are skipped (if the compute skips) or gated/run, and an
  operand already filtered by a storage SAF is conditioned on its filter.

Cost: a few operations per (data-space, level, optimization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flexsparse.model.sparseloop.formats import RepInfo, SparseOpts, prob_empty
from flexsparse.model.sparseloop.mapping import TIME, Loop, Mapping
from flexsparse.model.sparseloop.nest import DenseTile
from flexsparse.model.sparseloop.spec import Arch, Problem
from flexsparse.model.sparseloop.yamlio import SpecError

__all__ = ["SparseState", "apply_safs"]

DATA_ACTIONS = ("read", "fill", "update")


@dataclass
class SparseState:
    """Working state of the sparse analysis."""

    problem: Problem
    arch: Arch
    mapping: Mapping
    opts: SparseOpts
    tiles: list[list[DenseTile]]
    reps: dict[tuple[int, int], RepInfo]
    subnests: list[list[Loop]] = field(default_factory=list)
    molds: list[list[tuple[int, ...]]] = field(default_factory=list)
    fg: list[list[dict[str, float]]] = field(default_factory=list)
    fmt: list[list[dict[str, list[list[float]]]]] = field(default_factory=list)
    masks: dict[str, set[tuple[int, int]]] = field(default_factory=lambda: {"gate": set(), "skip": set(),
                                                                           "spatial_skip": set(),
                                                                           "position_skip": set()})
    prob_opt: dict[tuple[int, int], float] = field(default_factory=dict)
    prob_spatial: dict[tuple[int, int], float] = field(default_factory=dict)
    prob_prop: dict[tuple[int, int], float] = field(default_factory=dict)     # propagated (below the level)
    saf_conds: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    saf_exts: dict[tuple[int, int], dict[int, list[int]]] = field(default_factory=dict)  # condition tiles
    compute_filters: dict[int, list[tuple[int, list[int]]]] = field(default_factory=dict)  # (data-space, tile)
    avg_ratio: list[list[float]] = field(default_factory=list)          # [pv][arch level]
    max_exp: list[list[list[float]]] = field(default_factory=list)      # [pv][arch level] -> [x, y]
    storage_gs_saf: dict[int, bool] = field(default_factory=dict)
    innermost_empty: dict[int, float] = field(default_factory=dict)
    compute: dict[str, float] = field(default_factory=dict)
    compute_avg_replication: float = 1.0
    compute_x: float = 1.0
    compute_y: float = 1.0
    compute_rep: float = 1.0
    position_targets: dict[int, list[int]] = field(default_factory=dict)
    exact_joint: bool = False       # see engine.evaluate

    def level_of(self, pv: int, lv: int) -> int | None:
        """First level >= ``lv`` keeping ``pv`` (None if none)."""
        return next((j for j in range(lv, len(self.arch.storage)) if self.tiles[pv][j].size > 0), None)

    def child_of(self, pv: int, lv: int) -> int:
        """Next kept level below ``lv`` (-1: the compute)."""
        return next((j for j in range(lv - 1, -1, -1) if self.tiles[pv][j].size > 0), -1)

    def has_md(self, pv: int, lv: int) -> bool:
        """Whether (pv, lv) carries a representation format."""
        info = self.reps.get((pv, lv))
        return bool(info and info.has_metadata)

    def density(self, pv: int):
        """Density model of data-space ``pv``."""
        return self.problem.densities[pv]

    def p_empty(self, pv: int, ext) -> float:
        """P(the projection of op-space box ``ext`` on ``pv`` is empty)."""
        ds = self.problem.dataspaces[pv]
        return float(prob_empty(self.density(pv), ds.size(ext), None, ds.extents(ext)))


def _ext(high) -> list[int]:
    return list(high)


def _read_impact(st: SparseState, lv: int, target: int,
                 cond: list[int]) -> tuple[float, int, float, float, dict[int, list[int]]]:
    """(ineffectual-read probability, level charged, expected target occupancy) of one option."""
    problem, dims_t = st.problem, st.problem.dataspaces[target].dims
    tl = st.level_of(target, lv)
    if tl is None:
        raise SpecError(f"{st.arch.storage[lv].name}: gating/skipping of "
                        f"{problem.dataspaces[target].name} has no level that stores it")
    child = st.child_of(target, tl)
    ndim = len(problem.dims)
    scalar = (1,) * ndim
    found, scalar_mold = None, False
    for l in range(child + 1, tl + 1):
        sub = st.subnests[l]
        for j, lp in enumerate(sub):
            if child != -1:
                if lp.end > 1 and lp.dim in dims_t:
                    found = (l, j)
            else:
                nxt = sub[j + 1] if j + 1 < len(sub) else None
                if nxt is None or nxt.spatial == TIME:
                    found = (l, j)
                    scalar_mold = lp.spatial == TIME
                elif lp.dim in dims_t and lp.end > 1:
                    found = (l, j)
            if found:
                break
        if found:
            break
    if not found:
        found = (tl, len(st.subnests[tl]) - 1)
    fl, fj = found
    target_loop = st.subnests[fl][fj]
    mold = scalar if scalar_mold else st.molds[fl][fj]
    is_spatial = target_loop.spatial != TIME
    relevant = [target_loop]
    cond_ext = list(mold)
    upper_found = not is_spatial
    for l in range(fl, tl + 1):
        start = fj + 1 if l == fl else 0
        for lp in st.subnests[l][start:]:
            if lp.end <= 1:
                continue
            sp = lp.spatial != TIME
            non_target_above = (not upper_found and not sp and child != -1 and lp.dim not in dims_t)
            if sp or non_target_above:
                cond_ext[lp.dim] *= lp.end
                relevant.append(lp)
            if is_spatial and not sp and (child == -1 or lp.dim in dims_t):
                upper_found = True
    effectual = 1.0
    block = st.arch.storage[tl].block_size
    cond_exts: dict[int, list[int]] = {}
    for c in cond:
        dims_c = problem.dataspaces[c].dims
        co = dims_t & dims_c
        factors: dict[int, float] = {}
        agg, seen_co, ineffective = 1.0, False, False
        for lp in ([] if scalar_mold else relevant):
            if is_spatial and seen_co and lp.dim in dims_c:
                ineffective = True
                break
            if lp.dim in co:
                factors[lp.dim] = factors.get(lp.dim, 1.0) * lp.end
                agg *= lp.end
                seen_co = True
        if ineffective:
            continue
        t_ext, c_ext = list(mold), list(cond_ext)
        gran = problem.dataspaces[target].size(t_ext)
        need = math.ceil(block / (gran / agg)) if gran else 1
        for d in sorted(factors):
            eff = factors[d] / need
            t_ext[d] = math.ceil(t_ext[d] / eff)
            c_ext[d] = math.ceil(c_ext[d] / eff)
            need = need / factors[d]
        if need > 1:
            c_ext[target_loop.dim] = int(c_ext[target_loop.dim] * need)
            t_ext[target_loop.dim] = int(t_ext[target_loop.dim] * need)
        cond_exts[c] = c_ext
        effectual *= 1 - st.p_empty(c, c_ext)
    info = st.reps.get((target, tl))
    occ = info.expected_occupancy if info else st.tiles[target][tl].size
    md_info = st.reps.get((target, child if child != -1 else tl))
    lvl = st.arch.storage[tl]
    ratio = lvl.md_word_bits // lvl.word_bits if lvl.word_bits else 0   # integer ratio, as Sparseloop
    if md_info and md_info.has_metadata:
        occ += (sum(md_info.md_units) + sum(md_info.pl_units)) * ratio
    exact = None
    if cond_exts:
        from flexsparse.model.sparseloop.actual import saf_probabilities
        exact = saf_probabilities(st, target, tl, list(cond_exts), list(cond_ext), cond_exts)
    if exact is not None:
        return exact[0], tl, occ, exact[1], cond_exts
    return 1.0 - effectual, tl, occ, 1.0 - effectual, cond_exts


def _define_read_impact(st: SparseState, lv: int, group, kind: str) -> None:
    options = [(_read_impact(st, lv, o.target, o.cond), o) for o in group]
    best, best_i = 0.0, 0
    for i, ((p, tl, occ, _, _), _o) in enumerate(options):
        lvl = st.arch.storage[tl]
        saving = lvl.energy["random_read"] / lvl.block_size * occ * p
        if saving >= best:
            best, best_i = saving, i
    (p, tl, _, prop, exts), o = options[best_i]
    key = (tl, o.target)
    if key in st.masks["gate"] or key in st.masks["skip"]:
        if st.prob_opt[key] < p:
            st.masks["gate"].discard(key)
            st.masks["skip"].discard(key)
            st.prob_opt[key], st.prob_prop[key], st.saf_conds[key] = p, prop, list(o.cond)
            st.saf_exts[key] = exts
            st.masks[kind].add(key)
    else:
        st.masks[kind].add(key)
        st.prob_opt[key], st.prob_prop[key], st.saf_conds[key] = p, prop, list(o.cond)
        st.saf_exts[key] = exts


def _max_elements(st: SparseState, pv: int, fiber_ext, elem_ext) -> int:
    ds, dens = st.problem.dataspaces[pv], st.density(pv)
    fiber, elem = ds.size(fiber_ext), ds.size(elem_ext)
    n_el = fiber // elem if elem else 0
    k, _ = dens.distribution(fiber, ds.extents(fiber_ext))
    return min(n_el, int(max(k)) if len(k) else 0)


def _spatial_mold(st: SparseState, u: int, j: int) -> list[int]:
    ndim = len(st.problem.dims)
    if u == 0 and j == 0:
        return [1] * ndim
    if j == 0:
        return list(st.molds[u - 1][-1])
    return list(st.molds[u][j - 1])


def _init_spatial(st: SparseState) -> tuple[list[list[bool]], dict]:
    nlv, npv = len(st.arch.storage), len(st.problem.dataspaces)
    red = [[False] * (nlv + 1) for _ in range(npv)]
    st.avg_ratio = [[1.0] * (nlv + 1) for _ in range(npv)]
    st.max_exp = []
    for pv in range(npv):
        row = [[st.compute_x, st.compute_y]]
        for u in range(nlv):
            row.append([float(st.tiles[pv][u].x_expansion), float(st.tiles[pv][u].y_expansion)])
        st.max_exp.append(row)
        for u in range(nlv):
            lin = st.level_of(pv, u)
            if lin is None or not st.has_md(pv, lin):
                continue
            inner, eff = True, 1.0
            for j, lp in enumerate(st.subnests[u]):
                if lp.spatial == TIME or lp.end <= 1 or lp.dim not in st.problem.dataspaces[pv].dims:
                    continue
                mold = _spatial_mold(st, u, j)
                if inner:
                    eff, inner = 1.0 - st.p_empty(pv, mold), False
                fiber = list(mold)
                fiber[lp.dim] *= lp.end
                ratio = _max_elements(st, pv, fiber, mold) / lp.end
                st.max_exp[pv][u][0 if lp.spatial == 1 else 1] *= ratio
            st.avg_ratio[pv][u] = eff
            red[pv][u] = eff != 1.0
    orig = [[[float(st.tiles[pv][s].x_expansion), float(st.tiles[pv][s].y_expansion)] for s in range(nlv)]
            for pv in range(npv)]
    for pv in range(npv):
        for a in range(nlv, -1, -1):
            if a == 0:
                continue
            rx = st.max_exp[pv][a][0] / orig[pv][a - 1][0]
            ry = st.max_exp[pv][a][1] / orig[pv][a - 1][1]
            if rx != 1.0 or ry != 1.0:
                cross = False
                for inner in range(a - 1, -1, -1):
                    st.max_exp[pv][inner][0] *= rx
                    st.max_exp[pv][inner][1] *= ry
                    if red[pv][inner]:
                        cross = True
                    if not cross:
                        st.avg_ratio[pv][inner] *= st.avg_ratio[pv][a]
    return red, orig


def _spatial_impact(st: SparseState, u: int, target: int, cond: list[int]) -> None:
    ds_t = st.problem.dataspaces[target]
    child = st.child_of(target, u)
    ratios: dict[int, float] = {}
    j = -1
    subs = st.subnests[u]
    for c in cond:
        dims_c = st.problem.dataspaces[c].dims
        lc = st.level_of(c, u)
        if lc is None or not st.has_md(c, lc):
            ratios[c] = 1.0
            continue
        captured = False
        while j + 1 < len(subs):
            j += 1
            lp = subs[j]
            if lp.spatial == TIME or lp.end <= 1 or lp.dim not in dims_c:
                continue
            mold = _spatial_mold(st, u, j)
            if child != -1 and lp.dim in (ds_t.dims & dims_c):
                tl = st.level_of(target, u)
                done = False
                for l in range(u, (tl if tl is not None else u) + 1):
                    for ul in st.subnests[l]:
                        if ul.spatial == TIME and ul.end > 1:
                            if ul.dim in ds_t.dims:
                                done = True
                                break
                            mold[ul.dim] *= ul.end
                    if done:
                        break
            if not captured:
                ratios[c] = 1.0 - st.p_empty(c, mold)
                captured = True
            fiber = list(mold)
            fiber[lp.dim] *= lp.end
            r = _max_elements(st, c, fiber, mold) / lp.end
            st.max_exp[target][u][0 if lp.spatial == 1 else 1] *= r
    agg = math.prod(ratios.values()) if ratios else 1.0
    st.avg_ratio[target][u] = agg
    st.masks["spatial_skip"].add((u, target))


def _summarize_spatial(st: SparseState, orig) -> None:
    nlv, npv = len(st.arch.storage), len(st.problem.dataspaces)
    cmax_x = cmax_y = cavg = None
    for pv in range(npv):
        for a in range(nlv, -1, -1):
            mx, my = st.max_exp[pv][a]
            avg = st.avg_ratio[pv][a]
            rx = ry = 1.0
            if a != 0:
                s = a - 1
                t = st.tiles[pv][s]
                t.max_x, t.max_y = mx, my
                t.avg_replication = t.replication * avg
                rx, ry = mx / orig[pv][s][0], my / orig[pv][s][1]
            else:
                r = st.compute_rep * avg
                cmax_x = mx if cmax_x is None else max(cmax_x, mx)
                cmax_y = my if cmax_y is None else max(cmax_y, my)
                cavg = r if cavg is None else max(cavg, r)
            if a < nlv:
                st.prob_spatial[(a, pv)] = 1.0 - avg
            if rx != 1.0 or ry != 1.0:
                cross = False
                for inner in range(a - 1, -1, -1):
                    if (inner, pv) in st.masks["spatial_skip"]:
                        cross = True
                    if not cross:
                        st.avg_ratio[pv][inner] *= avg
                    st.max_exp[pv][inner][0] *= rx
                    st.max_exp[pv][inner][1] *= ry
    st.compute_x, st.compute_y, st.compute_avg_replication = cmax_x, cmax_y, cavg
    for pv in range(npv):
        for a in range(nlv - 1, -1, -1):
            fx, fy = st.arch.fanout(a)
            need_x = st.max_exp[pv][a][0] / st.max_exp[pv][a + 1][0]
            need_y = st.max_exp[pv][a][1] / st.max_exp[pv][a + 1][1]
            if int(need_x) > fx or int(need_y) > fy:
                raise SpecError(f"{st.arch.storage[a].name}: the mapping needs a {int(need_x)}x{int(need_y)} "
                                f"fanout for {st.problem.dataspaces[pv].name} after spatial skipping; the "
                                f"hardware has {fx}x{fy}")


def apply_safs(st: SparseState) -> None:
    """Run storage SAFs, spatial skipping, the format/SAF combination and compute classification."""
    for lv, groups in st.opts.actions.items():
        for g in groups:
            if g[0].kind in ("gate", "skip"):
                _define_read_impact(st, lv, g, g[0].kind)
    spatial = [(lv, g) for lv, groups in st.opts.actions.items() for g in groups if g[0].kind == "spatial_skip"]
    for lv, groups in st.opts.actions.items():
        for g in groups:
            if g[0].kind == "position_skip":
                from flexsparse.model.sparseloop.position import position_impact
                for o in g:
                    position_impact(st, lv, o.target, o.cond)
    if spatial:
        _red, orig = _init_spatial(st)
        for lv, g in spatial:
            if len(g) != 1:
                raise SpecError(f"{st.arch.storage[lv].name}: spatial skipping takes exactly one option per entry")
            _spatial_impact(st, lv, g[0].target, g[0].cond)
        _summarize_spatial(st, orig)
    _repr_impact(st)
    _propagate(st)
    if st.position_targets:
        from flexsparse.model.sparseloop.position import finalize_positions
        finalize_positions(st)
    _decompression(st)


def _repr_impact(st: SparseState) -> None:
    for pv, row in enumerate(st.tiles):
        for lv, t in enumerate(row):
            info = st.reps.get((pv, lv))
            if t.size == 0 or not info or not info.has_metadata:
                continue
            sp = 1.0 - info.expected_density
            fg = st.fg[pv][lv]
            fg["random_read"] = t.reads - math.floor(t.reads * sp + 1e-9)
            fg["random_fill"] = t.fills - math.floor(t.fills * sp + 1e-9)
            if st.problem.dataspaces[pv].read_write:
                fg["random_update"] = t.updates - math.floor(t.updates * sp + 1e-9)


def _local(st: SparseState, p: float, pv: int, lv: int, kind: str) -> None:
    fg, fm = st.fg[pv][lv], st.fmt[pv][lv]
    rw = st.problem.dataspaces[pv].read_write
    reads, upd = fg["random_read"], fg["random_update"]
    dr = math.ceil(reads * p - 1e-9) if rw else math.floor(reads * p + 1e-9)
    fg[f"{kind}_read"] += dr
    du = math.floor(upd * p + 1e-9)
    fg[f"{kind}_update"] += du
    fg["random_read"], fg["random_update"] = reads - dr, upd - du
    child = st.child_of(pv, lv)
    nr = st.reps[(pv, child)].nranks if child != -1 and (pv, child) in st.reps else \
        (st.reps[(pv, lv)].nranks if (pv, lv) in st.reps else 0)
    for act in ("read", "update"):
        rnd = fm.get(f"random_metadata_{act}", [])
        dst = fm.setdefault(f"{kind}_metadata_{act}", [[0, 0] for _ in rnd])
        for r in range(min(nr, len(rnd))):
            for k in range(2):
                d = math.floor(rnd[r][k] * p + 1e-9)
                rnd[r][k] -= d
                dst[r][k] += d
    t = st.tiles[pv][lv]
    if t.size and rw and t.updates:
        t.temporal_reductions = math.ceil(t.temporal_reductions * fg["random_update"] / t.updates - 1e-9)


def _scale_fmt(acc: list[list[float]], p: float, upto: int) -> None:
    for r in range(min(upto, len(acc) - 1) + 1 if upto >= 0 else 0):
        if r >= len(acc):
            break
        acc[r][0] -= math.floor(acc[r][0] * p + 1e-9)
        acc[r][1] -= math.floor(acc[r][1] * p + 1e-9)


def _propagate(st: SparseState) -> None:
    nlv, npv = len(st.arch.storage), len(st.problem.dataspaces)
    fg, fm = st.fg, st.fmt
    mx = {(pv, lv): {a: fg[pv][lv][f"random_{a}"] for a in DATA_ACTIONS} for pv in range(npv) for lv in range(nlv)}
    mf = {(pv, lv): {a: [list(x) for x in fm[pv][lv].get(f"random_metadata_{a}", [])] for a in DATA_ACTIONS}
          for pv in range(npv) for lv in range(nlv)}
    done = set()
    computes = st.compute["random_compute"]
    kinds = ("gate", "skip", "spatial_skip", "position_skip")
    for pv in range(npv):
        for l in range(nlv - 1, -1, -1):
            if not any((l, pv) in st.masks[k] for k in kinds):
                continue
            gs = (l, pv) in st.masks["gate"] | st.masks["skip"]
            p = st.prob_prop.get((l, pv), st.prob_opt.get((l, pv), 0.0)) if gs else 0.0
            p_local = st.prob_opt.get((l, pv), 0.0) if gs else 0.0
            spatial = (l, pv) in st.masks["spatial_skip"] | st.masks["position_skip"]
            if spatial:
                p = p_local = st.prob_spatial.get((l, pv), 0.0)
            imp = l - 1
            while imp >= 0:
                for a in DATA_ACTIONS:
                    mx[(pv, imp)][a] -= math.floor(mx[(pv, imp)][a] * p + 1e-9)
                if st.has_md(pv, imp):
                    nr_l = len(mf[(pv, l)]["read"])
                    _scale_fmt(mf[(pv, imp)]["fill"], p, min(len(mf[(pv, imp)]["fill"]), nr_l - 1))
                    _scale_fmt(mf[(pv, imp)]["read"], p, min(len(mf[(pv, imp)]["read"]), nr_l - 1))
                    _scale_fmt(mf[(pv, imp)]["update"], p, len(mf[(pv, imp)]["update"]))
                local = [k for k in kinds if (imp, pv) in st.masks[k]]
                if local:
                    kind = local[0]
                    lp = st.prob_spatial.get((imp, pv), 0.0) if kind in ("spatial_skip", "position_skip") \
                        else st.prob_opt[(imp, pv)]
                    eff = 1 - (1 - lp) / (1 - p) if p < 1 else 0.0
                    _commit(st, pv, imp, mx, mf)
                    if kind in ("gate", "skip"):
                        _local(st, eff, pv, imp, "gated" if kind == "gate" else "skipped")
                    done.add((pv, imp))
                    break
                imp -= 1
            if (pv, l) not in done:
                done.add((pv, l))
                _commit(st, pv, l, mx, mf)
                if not spatial:
                    _local(st, p_local, pv, l, "gated" if (l, pv) in st.masks["gate"] else "skipped")
            if imp < 0 and not st.problem.dataspaces[pv].read_write:
                computes -= math.floor(computes * p + 1e-9)
                st.storage_gs_saf[pv] = True
                st.innermost_empty[pv] = round(p * 1e6) / 1e6
                exts = st.saf_exts.get((l, pv), {})
                st.compute_filters[pv] = [(c, list(exts.get(c, [1] * len(st.problem.dims))))
                                          for c in st.saf_conds.get((l, pv), [])]
    for pv in range(npv):
        for lv in range(nlv):
            if (lv, pv) in st.masks["gate"] or (lv, pv) in st.masks["skip"]:
                continue
            if (pv, lv) in done and ((lv, pv) in st.masks["spatial_skip"] or (lv, pv) in st.masks["position_skip"]):
                pass
            _commit(st, pv, lv, mx, mf)
            t = st.tiles[pv][lv]
            t.temporal_reductions = 0 if t.updates == 0 else math.ceil(
                t.temporal_reductions * fg[pv][lv]["random_update"] / t.updates - 1e-9)
    st.compute["random_compute"] = computes


def _commit(st: SparseState, pv: int, lv: int, mx, mf) -> None:
    for a in DATA_ACTIONS:
        st.fg[pv][lv][f"random_{a}"] = mx[(pv, lv)][a]
        if mf[(pv, lv)][a] or f"random_metadata_{a}" in st.fmt[pv][lv]:
            st.fmt[pv][lv][f"random_metadata_{a}"] = [list(x) for x in mf[(pv, lv)][a]]


def _decompression(st: SparseState) -> None:
    nlv = len(st.arch.storage)
    for lv in range(nlv - 1, -1, -1):
        for pv, ds in enumerate(st.problem.dataspaces):
            if st.tiles[pv][lv].size == 0:
                continue
            info = st.reps.get((pv, lv))
            if info and info.fmt and info.fmt.compressed:
                continue
            parent = st.level_of(pv, lv + 1)
            pinfo = st.reps.get((pv, parent)) if parent is not None else None
            if pinfo and pinfo.fmt and pinfo.fmt.compressed:
                if ds.read_write:
                    st.fg[pv][lv]["compression_count"] += st.fg[pv][parent]["random_update"]
                st.fg[pv][lv]["decompression_count"] += st.fg[pv][lv]["random_fill"]


def classify_compute(st: SparseState) -> None:
    """Split computes into random (effectual or run), gated and skipped (two operands)."""
    ops = [pv for pv, ds in enumerate(st.problem.dataspaces) if not ds.read_write]
    if len(ops) != 2:
        raise SpecError(f"compute classification needs two read-only operands, found {len(ops)}")
    dens, has_md = {}, {}
    for pv in ops:
        lv = next(j for j in range(len(st.arch.storage)) if st.tiles[pv][j].size > 0)
        dens[pv] = round(st.density(pv).expected_occupancy(1, (1,) * len(st.problem.dataspaces[pv].ranks)) * 1e6) / 1e6
        has_md[pv] = st.has_md(pv, lv)
    states = {}
    for pv in ops:
        d = dens[pv]
        states[pv] = {"enz": d, "ez": 0.0 if has_md[pv] else 1 - d, "ne": 1 - d if has_md[pv] else 0.0}
    a, b = ops

    def condition(x, y):
        ratio = 1 - st.innermost_empty[y]
        dx = dens[x] / ratio if ratio else 0.0
        states[x] = {"enz": dx, "ez": 0.0 if has_md[x] else 1 - dx, "ne": 1 - dx if has_md[x] else 0.0}

    positioned = {t for ts in st.position_targets.values() for t in ts}
    sa, sb = st.storage_gs_saf.get(a, False), st.storage_gs_saf.get(b, False)
    if a in positioned or b in positioned:
        # Position skipping: the computes left all have the skipped operand nonzero.
        for pv in (a, b):
            if pv in positioned:
                states[pv] = {"enz": 1.0, "ez": 0.0, "ne": 0.0}
        if a not in positioned and sb:
            condition(a, b)
        if b not in positioned and sa:
            condition(b, a)
    elif sa and sb:
        old_b = dict(states[b])
        condition(a, b)
        condition(b, a)
        del old_b
    elif sa:
        condition(b, a)
    elif sb:
        condition(a, b)
    for pv in ops:
        for k, v in states[pv].items():
            states[pv][k] = min(1.0, max(0.0, v))
    if not positioned:
        from flexsparse.model.sparseloop.actual import joint_nonzero
        unit = [1] * len(st.problem.dims)
        filters = [f if st.exact_joint else (f[0], unit) for pv in ops for f in st.compute_filters.get(pv, [])]
        joint = joint_nonzero(st, a, b, filters)
        if joint is not None:
            # Exact joint operand states counted on the masks (zero is "missing" when compressed).
            za, zb = ("ne" if has_md[a] else "ez"), ("ne" if has_md[b] else "ez")
            states[a] = {"enz": 1.0, "ez": 0.0, "ne": 0.0}
            states[b] = {"enz": 1.0, "ez": 0.0, "ne": 0.0}
            return _classify_joint(st, joint, za, zb)
    pa, pb = states[a], states[b]
    total = st.compute["random_compute"]
    gate, skip = "gating" in st.opts.compute, "skipping" in st.opts.compute
    rnd = total * pa["enz"] * pb["enz"]
    gated = skipped = 0.0
    one_zero = total * (pa["enz"] * pb["ez"] + pa["ez"] * pb["enz"])
    missing = total * (pa["enz"] * pb["ne"] + pa["ne"] * pb["enz"])
    both_zero = total * pa["ez"] * pb["ez"]
    zero_missing = total * (pa["ez"] * pb["ne"] + pa["ne"] * pb["ez"])
    none = total * pa["ne"] * pb["ne"]
    for amount, is_missing in ((one_zero, False), (missing, True), (both_zero, False), (zero_missing, True)):
        if is_missing and skip:
            skipped += amount
        elif gate:
            gated += amount
        else:
            rnd += amount
    st.compute["skipped_compute"] = math.floor(skipped + 1e-9)
    st.compute["gated_compute"] = math.floor(gated + 1e-9)
    st.compute["random_compute"] = total - math.floor(skipped + 1e-9) - math.floor(gated + 1e-9) - \
        math.floor(none + 1e-9)


def _classify_joint(st: SparseState, joint: dict, za: str, zb: str) -> None:
    """Sparseloop: the computes left by propagation split in the data's proportions among the
    computes whose filter operands are nonzero. Exact mode: effectual computes are the data's
    count (every storage skip keeps them); the rest split in the data's proportions among the
    computes that pass each skip's condition tile."""
    total = st.compute["random_compute"]
    gate, skip = "gating" in st.opts.compute, "skipping" in st.opts.compute
    rest = sum(v for k, v in joint.items() if k != "computes" and k != (True, True))
    if st.exact_joint:
        rnd = min(float(total), joint[(True, True)] * joint["computes"])
        none = (total - rnd) if rest <= 0 else 0.0   # propagation over-counted: no such computes
        left, share = total - rnd, rest
    else:
        rnd, none = total * joint[(True, True)], 0.0
        left, share = total, 1.0
    gated = skipped = 0.0
    for key, frac in joint.items():
        if key == "computes" or key == (True, True):
            continue
        na, nb = key
        states = [s for s, nz in ((za, na), (zb, nb)) if not nz]
        amount = left * frac / share if share > 0 else 0.0
        if states == ["ne", "ne"]:
            none += amount
        elif "ne" in states and skip:
            skipped += amount
        elif gate:
            gated += amount
        else:
            rnd += amount
    st.compute["skipped_compute"] = math.floor(skipped + 1e-9)
    st.compute["gated_compute"] = math.floor(gated + 1e-9)
    st.compute["random_compute"] = total - st.compute["skipped_compute"] - st.compute["gated_compute"] - \
        math.floor(none + 1e-9)
