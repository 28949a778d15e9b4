"""Resident memory of this process, for the measurements that report it.

* :func:`resident_bytes`: the resident set size now (Linux ``/proc/self/status`` VmRSS);
* :func:`peak_bytes`: its high-water mark (VmHWM; ``getrusage``'s ``ru_maxrss`` where
  ``/proc`` is missing);
* :func:`reset_peak`: lower the high-water mark to the current size (writing 5 to
  ``/proc/self/clear_refs``, Linux >= 4.0), so that a later peak is the peak of what ran
  since, not of an earlier transient (data generation, a previous run);
* :func:`peak_growth`: how far a call raises the peak above the size before it.

Cost: one small file read per call.

>>> import mmap
>>> def touch(n=32 * 2**20):  # a fresh mapping: no freed, still resident heap block to reuse
...     m = mmap.mmap(-1, n)
...     for i in range(0, n, mmap.PAGESIZE):
...         m[i] = 1
...     return m
>>> out, growth = peak_growth(touch)
>>> growth is None or growth >= 16 * 2**20
True
"""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["peak_bytes", "peak_growth", "reset_peak", "resident_bytes"]


def _status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def resident_bytes() -> int | None:
    """The resident set size now (``None`` without ``/proc``)."""
    return _status("VmRSS")


def peak_bytes() -> int:
    """The resident high-water mark: VmHWM, or ``ru_maxrss`` without ``/proc``."""
    hwm = _status("VmHWM")
    if hwm is not None:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def reset_peak() -> bool:
    """Lower the high-water mark to the current resident size (after a garbage collection);
    ``False`` where the system does not allow it (the peak then keeps earlier transients)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status("VmHWM") is not None


def peak_growth(fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """``(fn(), bytes)``: the peak resident size during ``fn`` minus the resident size before
    it; ``None`` where the peak cannot be reset (see :func:`reset_peak`)."""
    if not reset_peak():
        return fn(), None
    before = resident_bytes()
    out = fn()
    return out, peak_bytes() - before
