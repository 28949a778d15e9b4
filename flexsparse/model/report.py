"""The result of evaluating one design on one workload, and side-by-side comparison tables.

:class:`Report` is a frozen dataclass: cycles, seconds, energy (pJ) by storage level and by
compute, EDP, DRAM traffic, buffer utilisation, algorithmic vs effectual MACs, and for tiled
designs tiles / overbooked tiles / bumped bytes. Invariants (checked by ``validate``):
``energy_pj == sum(energy_by_level) + compute_energy_pj``, ``edp == energy_pj * seconds``,
``effectual_macs <= algorithmic_macs``. Reports of the layers of a network add up with
:func:`combine` (cycles and energies add; utilisation is traffic-weighted). O(levels) time.

>>> r = Report("d", "w", cycles=10.0, clock_hz=1e9, energy_by_level={"DRAM": 3.0}, compute_energy_pj=1.0,
...            dram_bytes=8.0, buffer_utilization=0.5, algorithmic_macs=20, effectual_macs=10)
>>> r.energy_pj, r.edp
(4.0, 4e-08)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "combine", "format_table", "print_table"]


@dataclass(frozen=True)
class Report:
    """Cycles, energy (pJ) and traffic of ``design`` on ``workload``. ``edp`` is in pJ*s."""

    design: str
    workload: str
    cycles: float
    clock_hz: float
    energy_by_level: dict[str, float]
    compute_energy_pj: float
    dram_bytes: float
    buffer_utilization: float
    algorithmic_macs: float
    effectual_macs: float
    executed_macs: float = -1.0
    tiles: int = 0
    overbooked_tiles: int = 0
    bumped_bytes: float = 0.0
    preprocessing_cycles: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    layers: tuple[Report, ...] = ()

    def __post_init__(self) -> None:
        for key in ("cycles", "algorithmic_macs", "effectual_macs", "executed_macs", "dram_bytes", "bumped_bytes"):
            object.__setattr__(self, key, float(getattr(self, key)))
        if self.executed_macs < 0:
            object.__setattr__(self, "executed_macs", float(self.effectual_macs))
        object.__setattr__(self, "energy_by_level", {k: float(v) for k, v in self.energy_by_level.items()})
        self.validate()

    @property
    def energy_pj(self) -> float:
        """Total energy: storage levels plus compute."""
        return float(sum(self.energy_by_level.values()) + self.compute_energy_pj)

    @property
    def seconds(self) -> float:
        """cycles / clock."""
        return self.cycles / self.clock_hz

    @property
    def edp(self) -> float:
        """Energy-delay product, pJ * s."""
        return self.energy_pj * self.seconds

    def validate(self) -> None:
        """Raise ``ValueError`` if an invariant does not hold."""
        if not self.cycles >= 0 or not self.clock_hz > 0:
            raise ValueError(f"report {self.design}/{self.workload}: cycles must be >= 0 and clock > 0")
        if any(v < 0 for v in self.energy_by_level.values()) or self.compute_energy_pj < 0:
            raise ValueError(f"report {self.design}/{self.workload}: negative energy {self.energy_by_level}")
        if self.effectual_macs > self.algorithmic_macs * (1 + 1e-9) + 1e-9:
            raise ValueError(f"report {self.design}/{self.workload}: effectual MACs {self.effectual_macs} "
                             f"exceed algorithmic {self.algorithmic_macs}")
        if not 0 <= self.overbooked_tiles <= max(self.tiles, 0):
            raise ValueError(f"report {self.design}/{self.workload}: overbooked tiles {self.overbooked_tiles} "
                             f"not in [0, tiles={self.tiles}]")

    def as_row(self) -> dict[str, Any]:
        """Flat dict for tables/CSV."""
        return {"design": self.design, "workload": self.workload, "cycles": self.cycles,
                "energy_uJ": self.energy_pj / 1e6, "edp_pJs": self.edp, "dram_MB": self.dram_bytes / 1e6,
                "buf_util": self.buffer_utilization, "alg_MACs": self.algorithmic_macs,
                "eff_MACs": self.effectual_macs, "tiles": self.tiles, "overbooked": self.overbooked_tiles,
                "bumped_MB": self.bumped_bytes / 1e6}


def combine(design: str, workload: str, parts: Sequence[Report]) -> Report:
    """Sum the reports of layers run one after the other."""
    if not parts:
        raise ValueError("combine needs at least one report")
    levels: dict[str, float] = {}
    for p in parts:
        for k, v in p.energy_by_level.items():
            levels[k] = levels.get(k, 0.0) + v
    traffic = sum(p.dram_bytes for p in parts)
    util = (sum(p.buffer_utilization * p.dram_bytes for p in parts) / traffic) if traffic \
        else parts[0].buffer_utilization
    return Report(design, workload, cycles=sum(p.cycles for p in parts), clock_hz=parts[0].clock_hz,
                  energy_by_level=levels, compute_energy_pj=sum(p.compute_energy_pj for p in parts),
                  dram_bytes=traffic, buffer_utilization=util,
                  algorithmic_macs=sum(p.algorithmic_macs for p in parts),
                  effectual_macs=sum(p.effectual_macs for p in parts),
                  executed_macs=sum(p.executed_macs for p in parts), tiles=sum(p.tiles for p in parts),
                  overbooked_tiles=sum(p.overbooked_tiles for p in parts),
                  bumped_bytes=sum(p.bumped_bytes for p in parts),
                  preprocessing_cycles=sum(p.preprocessing_cycles for p in parts), layers=tuple(parts))


_COLUMNS = ("design", "cycles", "energy_uJ", "edp_pJs", "dram_MB", "buf_util", "eff_MACs", "tiles", "overbooked")


def format_table(reports: Iterable[Report], baseline: str | None = None) -> list[list[str]]:
    """Rows of strings (header first); with ``baseline``, add EDP and speedup relative to it."""
    reports = list(reports)
    base = next((r for r in reports if r.design == baseline), None)
    header = list(_COLUMNS) + (["speedup", "edp_gain"] if base else [])
    rows = [header]
    for r in reports:
        row = r.as_row()
        cells = [str(row["design"])] + [f"{row[c]:.4g}" for c in _COLUMNS[1:]]
        if base:
            cells += [f"{base.cycles / r.cycles:.3g}x" if r.cycles else "inf",
                      f"{base.edp / r.edp:.3g}x" if r.edp else "inf"]
        rows.append(cells)
    return rows


def print_table(reports: Iterable[Report], title: str = "", baseline: str | None = None, console: Any = None) -> None:
    """Print :func:`format_table` with rich (full width outside a terminal: nothing is cut)."""
    from rich.table import Table

    from flexsparse.model.sparseloop.report import table_console
    rows = format_table(reports, baseline)
    table = Table(title=title or None)
    for h in rows[0]:
        table.add_column(h, justify="left" if h == "design" else "right", no_wrap=True)
    for r in rows[1:]:
        table.add_row(*r)
    (console or table_console()).print(table)
