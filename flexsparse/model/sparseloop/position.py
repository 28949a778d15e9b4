"""Position skipping (``position-skipping``): a spatial array that only visits nonzero positions.

A level ``L`` whose fanout runs over a compressed operand ``T`` (e.g. DSTC's outer-product
array: ``A``'s column fragment along one axis, ``B``'s row fragment along the other) can pack
the nonzeros of each of ``T``'s tiles onto its ``F_T`` spatial positions (``F_T`` = product of
``L``'s spatial factors over ``T``'s dimensions) instead of visiting every coordinate:

* A tile of ``T`` with ``occ`` nonzeros takes ``ceil(occ / F_T)`` passes instead of the
  ``tile_T / F_T`` temporal iterations the dense mapping has; so the reads of every *other*
  position-skipped operand ``U`` at ``L`` are scaled by ``E[ceil(occ_T / F_T)] / (tile_T / F_T)``,
  and ``T``'s own reads are only its nonzeros (the compressed format already removes the rest).
* The last pass of a tile is partly filled: the children's average utilization is
  ``prod_T E[occ_T / (F_T * ceil(occ_T / F_T)) | occ_T > 0]``, which lowers the average utilized
  compute instances and so lengthens the compute time.
* Computes on a skipped position never happen: the compute count shrinks by ``P(T is zero)``
  for every position-skipped ``T`` (propagated like a storage skipping SAF), and the computes
  left have ``T`` nonzero.

These semantics are not in the public Timeloop sources; they are inferred from (and checked
against) the Sparseloop MICRO'22 artifact's DSTC reference outputs. Cost: one pass over each
operand's tile occupancy distribution.
"""

from __future__ import annotations

import math

import numpy as np

from flexsparse.model.sparseloop.mapping import TIME

__all__ = ["position_impact", "finalize_positions"]


def position_impact(st, lv: int, target: int, cond: list[int]) -> None:
    """Record a position-skipping target at level ``lv`` (``cond`` must be empty or the target)."""
    from flexsparse.model.sparseloop.yamlio import SpecError
    if any(c != target for c in cond):
        raise SpecError(f"{st.arch.storage[lv].name}: position-skipping of "
                        f"{st.problem.dataspaces[target].name} is conditioned on the target itself (condition-on: [])")
    st.masks["position_skip"].add((lv, target))
    d = st.density(target)
    dens = d.expected_occupancy(1, (1,) * len(st.problem.dataspaces[target].ranks))
    st.prob_spatial[(lv, target)] = 1.0 - dens
    st.position_targets.setdefault(lv, []).append(target)


def _fragment(st, lv: int, pv: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(occupancies, probabilities, spatial positions F, dense passes tile / F) of pv's tile at lv."""
    t = st.tiles[pv][lv]
    if t.size == 0:
        from flexsparse.model.sparseloop.yamlio import SpecError
        raise SpecError(f"{st.arch.storage[lv].name}: position-skipping needs the level to keep "
                        f"{st.problem.dataspaces[pv].name}")
    dims = st.problem.dataspaces[pv].dims
    fan = math.prod(lp.end for lp in st.mapping.spatial[lv] if lp.dim in dims and lp.spatial != TIME)
    k, p = st.density(pv).distribution(t.size, t.box)
    return np.asarray(k, dtype=float), np.asarray(p, dtype=float), max(1, fan), max(1, t.size // max(1, fan))


def finalize_positions(st) -> None:
    """Apply the read scaling and the utilization loss of every position-skipping level."""
    for lv, targets in st.position_targets.items():
        passes, util = {}, {}
        for pv in targets:
            k, p, fan, dense_passes = _fragment(st, lv, pv)
            passes[pv] = float(np.dot(np.ceil(k / fan), p)) / dense_passes
            nz = k > 0
            pn = p[nz].sum()
            util[pv] = float(np.dot(k[nz] / (fan * np.ceil(k[nz] / fan)), p[nz]) / pn) if pn > 0 else 1.0
        for pv in targets:
            factor = math.prod(passes[u] for u in targets if u != pv)
            fg = st.fg[pv][lv]
            fg["random_read"] = math.ceil(fg["random_read"] * factor - 1e-9)
        u = math.prod(util.values())
        if lv == 0:
            st.compute_avg_replication *= u
        else:
            for pv in range(len(st.problem.dataspaces)):
                st.tiles[pv][lv - 1].avg_replication *= u
