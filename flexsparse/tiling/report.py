"""What a tiled run did: :class:`TilingReport` (a frozen record printed as a table).

Figures are gathered by :mod:`flexsparse.tiling.executor`; nothing here computes. Two
kinds of memory figures are kept apart:

* ``peak_ws_bytes`` -- the largest *estimated* working set of any executed tile (the
  formula of :mod:`flexsparse.tiling.workingset` on exact counts);
* ``rss_growth_bytes`` -- the *measured* growth of the process's resident-set high-water
  mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over the run; 0 when the run
  stayed under an earlier peak of the process (so measure in a fresh subprocess);
* ``traced_peak_bytes`` -- the *measured* ``tracemalloc`` peak of the run (NumPy
  buffers; numba's internal allocations are not traced), or ``None`` when not traced.

>>> r = TilingReport(strategy="overbook", limit=1000, planned_tiles=2, tiles=3,
...                  row_size=4, col_size=5, k_size=5, sampling_seconds=0.01,
...                  total_seconds=1.0, overbooked_tiles=1, bumped_bytes=120, passes=2,
...                  mean_utilisation=0.8, peak_ws_bytes=990, rss_growth_bytes=0,
...                  traced_peak_bytes=None, sampled_rows=8)
>>> r.sampling_fraction
0.01
>>> print(r)  # doctest: +ELLIPSIS
tiling report (overbook)
  memory limit              1,000 B
  tiles (planned/executed)  2 / 3
...
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TilingReport"]


def _fmt_bytes(n: float | int | None) -> str:
    if n is None:
        return "not traced"
    n = float(n)
    if abs(n) < 1024:
        return f"{n:,.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:,.2f} {unit}"
    return f"{n / 1024:,.2f} GiB"


@dataclass(frozen=True)
class TilingReport:
    """Figures of one tiled ``A @ B`` run.

    Attributes:
        strategy: tiling strategy name.
        limit: memory limit (bytes).
        planned_tiles: tiles in the strategy's plan.
        tiles: tiles executed (planned tiles + bumped remainders + runtime splits).
        row_size, col_size, k_size: the plan's tile extents.
        sampling_seconds: time spent choosing the plan (sampling / counting).
        total_seconds: wall time of the whole call, sampling included.
        overbooked_tiles: executed tiles whose working set exceeded the limit
            (processed in part, the rest bumped).
        bumped_bytes: working-set bytes processed again in later passes (the
            overflow streamed back in, Tailors' extra traffic).
        passes: passes over the tile queue (1 = nothing overflowed).
        mean_utilisation: mean over executed tiles of working set / limit.
        peak_ws_bytes: largest estimated working set of an executed tile.
        rss_growth_bytes: measured growth of ``ru_maxrss`` (bytes) over the call.
        traced_peak_bytes: measured ``tracemalloc`` peak (bytes) or ``None``.
        sampled_rows: output rows counted symbolically to choose the plan.
        reserved_bytes: bytes the caller held for this product (operand conversions, live
            results), charged to the limit before the tiles.
        statistics_bytes: peak bytes of the statistics the strategy gathered (charged too).
    """

    strategy: str
    limit: int
    planned_tiles: int
    tiles: int
    row_size: int
    col_size: int
    k_size: int
    sampling_seconds: float
    total_seconds: float
    overbooked_tiles: int
    bumped_bytes: int
    passes: int
    mean_utilisation: float
    peak_ws_bytes: int
    rss_growth_bytes: int
    traced_peak_bytes: int | None
    sampled_rows: int = 0
    reserved_bytes: int = 0
    statistics_bytes: int = 0

    @property
    def sampling_fraction(self) -> float:
        """``sampling_seconds / total_seconds`` (0 for an instantaneous run)."""
        return self.sampling_seconds / self.total_seconds if self.total_seconds > 0 else 0.0

    def rows(self) -> list[tuple[str, str]]:
        """The table as ``(label, value)`` pairs."""
        return [
            ("memory limit", _fmt_bytes(self.limit)),
            ("tiles (planned/executed)", f"{self.planned_tiles} / {self.tiles}"),
            ("tile size (rows x cols x k)", f"{self.row_size} x {self.col_size} x {self.k_size}"),
            ("sampling/counting", f"{self.sampling_seconds:.4f} s "
                                  f"({100 * self.sampling_fraction:.1f}% of total)"),
            ("rows counted", f"{self.sampled_rows}"),
            ("overbooked tiles", f"{self.overbooked_tiles}"),
            ("bumped bytes", _fmt_bytes(self.bumped_bytes)),
            ("passes", f"{self.passes}"),
            ("mean buffer utilisation", f"{100 * self.mean_utilisation:.1f}%"),
            ("peak working set (estimated)", _fmt_bytes(self.peak_ws_bytes)),
            ("held by the caller / statistics", f"{_fmt_bytes(self.reserved_bytes)} / "
                                                f"{_fmt_bytes(self.statistics_bytes)}"),
            ("RSS high-water growth (measured)", _fmt_bytes(self.rss_growth_bytes)),
            ("tracemalloc peak (measured)", _fmt_bytes(self.traced_peak_bytes)),
            ("time", f"{self.total_seconds:.4f} s"),
        ]

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"tiling report ({self.strategy})"]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        return "\n".join(lines)
