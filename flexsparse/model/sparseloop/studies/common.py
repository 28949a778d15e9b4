"""Shared pieces of the design studies: parameters, energy tables, GEMM problems, sensitivity.

Every study describes its hardware with a frozen dataclass of *architecture parameters*; each
field's docstring-comment gives its source. Nothing is fitted to a published result: the
parameters are set from the cited table or from the design's description, and each
conclusion is re-checked with every parameter halved and doubled (``sensitivity``).

Energy (``ert_for``): per vector access, ``bytes * pJ/byte`` with DRAM at the Horowitz 45 nm
midpoint (243.75 pJ/B) and SRAM interpolated on capacity (``flexsparse.model.arch``), scaled by
the study's ``dram_scale``/``sram_scale``; metadata accesses cost the same per bit as data;
gated and skipped actions cost nothing (ideal clock gating); a MAC costs ``mac_pj``.
Cost: O(levels) per table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ert_for", "gemm_problem", "largest_divisor", "sensitivity"]


def gemm_problem(m: int, k: int, n: int, dens_a: Any = 1.0, dens_b: Any = 1.0, name: str = "gemm") -> dict:
    """Problem dict for Z[m, n] += A[m, k] * B[k, n] (A: weights, B: activations)."""
    return {"shape": {"name": name, "dimensions": ["M", "N", "K"],
                      "data-spaces": [{"name": "A", "projection": [[["M"]], [["K"]]]},
                                      {"name": "B", "projection": [[["K"]], [["N"]]]},
                                      {"name": "Z", "projection": [[["M"]], [["N"]]], "read-write": True}]},
            "instance": {"M": int(m), "N": int(n), "K": int(k), "densities": {"A": dens_a, "B": dens_b}}}


def largest_divisor(n: int, limit: int) -> int:
    """Largest divisor of ``n`` that is at most ``limit`` (at least 1)."""
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def ert_for(levels: list[tuple[str, str, int, int, int, int]], mac: str, mac_pj: float, dram_scale: float = 1.0,
            sram_scale: float = 1.0) -> dict:
    """ERT dict for ``levels`` = (name, technology, word bits, block size, capacity bytes, md width bits)."""
    from flexsparse.model.arch import DRAM_PJ_PER_BYTE, sram_energy_per_byte
    tables = []
    for name, tech, bits, block, cap, md_bits in levels:
        per_byte = DRAM_PJ_PER_BYTE * dram_scale if tech == "DRAM" else sram_energy_per_byte(max(cap, 64)) * sram_scale
        data = per_byte * bits * block / 8
        meta = per_byte * md_bits / 8
        tables.append({"name": name, "actions": [
            {"name": "read", "energy": data}, {"name": "write", "energy": data},
            {"name": "metadata_read", "energy": meta}, {"name": "metadata_write", "energy": meta},
            {"name": "gated_read", "energy": 0.0}, {"name": "gated_write", "energy": 0.0},
            {"name": "gated_metadata_read", "energy": 0.0}, {"name": "gated_metadata_write", "energy": 0.0}]})
    tables.append({"name": mac, "actions": [{"name": "mac_random", "energy": mac_pj},
                                            {"name": "mac_gated", "energy": 0.0},
                                            {"name": "mac_skipped", "energy": 0.0}]})
    return {"ERT": {"version": 0.3, "tables": tables}}


def sensitivity(params: Any, run: Callable[[Any], dict], names: Iterable[str] | None = None,
                base: dict | None = None) -> dict[str, Any]:
    """Re-run ``run`` with each numeric parameter halved and doubled.

    ``run(params)`` returns a dict with a boolean ``holds``, optionally ``claims`` (claim name ->
    bool, summarised per claim) and any numbers worth reporting. Integer parameters stay
    integers (rounded, at least 1). ``base`` is the result at ``params`` when already computed.
    """
    base = run(params) if base is None else base
    out = {"base": base, "variants": {}}
    for f in dataclasses.fields(params):
        if names is not None and f.name not in names:
            continue
        v = getattr(params, f.name)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        for factor in (0.5, 2.0):
            nv = v * factor
            if isinstance(v, int):
                nv = max(1, int(round(nv)))
            if nv == v:
                continue
            res = run(dataclasses.replace(params, **{f.name: nv}))
            out["variants"][f"{f.name} x{factor:g}"] = res
    out["holds_everywhere"] = bool(base.get("holds")) and all(r.get("holds") for r in out["variants"].values())
    out["fails_under"] = [k for k, r in out["variants"].items() if not r.get("holds")]
    if isinstance(base.get("claims"), dict):
        # Per claim: does it hold at the base point, and under which variants does it fail?
        out["claims"] = {c: {"holds_at_base": bool(v),
                             "fails_under": [k for k, r in out["variants"].items() if not r["claims"].get(c)]}
                         for c, v in base["claims"].items()}
    return out


def geomean(xs: Iterable[float]) -> float:
    """Geometric mean."""
    xs = [x for x in xs]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
