"""flexsparse.tiling: bounded-memory tiled SpGEMM (Swiftiles sizing + Tailors overbooking).

``tiled_spgemm(a, b, memory_limit=..., tiling="overbook")`` computes ``a @ b`` tile by tile
so that no tile's working set (:mod:`~flexsparse.tiling.workingset`) exceeds the limit,
with the tile size chosen by a registered strategy (:mod:`~flexsparse.tiling.strategies`)
and overflowing tiles absorbed at run time (:mod:`~flexsparse.tiling.executor`). Results
can go to disk tile by tile (:mod:`~flexsparse.tiling.outfile`). Importing this package
compiles nothing and reads no file.
"""

from flexsparse.tiling.executor import MemoryLimitError, tiled_spgemm
from flexsparse.tiling.outfile import IncompleteResultError, LazyResult
from flexsparse.tiling.report import TilingReport
from flexsparse.tiling.strategies import (
    STRATEGIES,
    Tile,
    TilePlan,
    TileStatistics,
    TilingRefusedError,
    get_strategy,
    register_strategy,
)
from flexsparse.tiling.workingset import ByteModel

__all__ = ["STRATEGIES", "ByteModel", "IncompleteResultError", "LazyResult",
           "MemoryLimitError", "Tile", "TilePlan", "TileStatistics", "TilingRefusedError", "TilingReport",
           "get_strategy", "register_strategy", "tiled_spgemm"]
