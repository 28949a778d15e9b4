"""Cost-balanced splitting of independent jobs (matrix rows, dot products) over threads.

Numba's ``prange`` splits its iteration space *statically* into one contiguous range per
thread (we measured that ``numba.set_parallel_chunksize`` does not make the ``omp``
layer's parfors dynamic), so balance has to be decided up front. A schedule turns per-job
cost estimates (flops of an output row, the summed fiber lengths of a dot product) into a
:class:`Partition`:

* ``order: int64[n_items]`` -- a permutation of the jobs (identity for contiguous splits);
* ``bounds: int64[n_parts + 1]`` -- part ``p`` runs jobs ``order[bounds[p]:bounds[p+1]]``;
* ``worker_bounds: int64[n_workers + 1]`` -- worker ``w`` runs parts
  ``worker_bounds[w]:worker_bounds[w+1]`` one after the other;
* ``part_costs: float64[n_parts]`` -- the summed estimate of each part.

Parts are finer than workers (``parts_per_worker``) so that per-part decisions (the
SpGEMM accumulator) adapt to local density, while every worker still gets one contiguous
slice of equal estimated cost.

Registered schedules (:data:`SCHEDULES`):

* ``"cost"`` -- prefix sums of the costs, cut at the job boundaries nearest to
  multiples of ``total / n_workers`` (``searchsorted``), each worker's range cut again
  into parts. Every worker costs at most ``total / n_workers + max(cost)``.
  O(n_items) time, one compiled kernel (:func:`cost_partition_kernel`).
  Kernels that walk row ranges take :func:`cost_split`: the same bounds without ``order``.
* ``"round-robin"`` -- job ``i`` goes to worker ``i % n_workers`` regardless of cost,
  as in FLAASH's job dispatcher; kept as a baseline for benchmarks.

Take-over (:func:`take_job`): a static split waits for its slowest thread, and a thread
can start several milliseconds late or run at half speed (right after an OpenBLAS or
torch call, that runtime's idle workers keep spinning on the core it needs). Kernels whose
jobs *write* their outputs (never accumulate into them) therefore walk their range with
:func:`take_job`: a worker runs its own jobs upwards, then the next worker's downwards from
the top, each until it meets a job marked done. The marks are plain unsynchronised bytes:
a job met by both workers at the meeting point runs twice and writes the same values
twice, which costs duplicated work but never a wrong result. ``O(1)`` per job.

>>> p = cost_partition(np.array([8, 1, 1, 1, 1, 1, 1, 1, 1]), n_workers=2)
>>> p.bounds.tolist(), p.part_costs.tolist()
([0, 1, 9], [8.0, 8.0])
>>> round_robin_partition(np.ones(5), n_workers=2).order.tolist()
[0, 2, 4, 1, 3]
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import numba
import numpy as np
from numba import njit

__all__ = [
    "SCHEDULES",
    "Partition",
    "Split",
    "check_threads",
    "cost_partition",
    "cost_partition_kernel",
    "cost_split",
    "get_schedule",
    "round_robin_partition",
    "take_job",
    "thread_scope",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
    """A split of ``n_items`` jobs into parts and workers (layout in the module docstring)."""

    order: np.ndarray
    bounds: np.ndarray
    worker_bounds: np.ndarray
    part_costs: np.ndarray
    contiguous: bool

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def _trusted(cls, order: np.ndarray, bounds: np.ndarray, worker_bounds: np.ndarray,
                 part_costs: np.ndarray, contiguous: bool) -> Partition:
        """Build without validation (O(n) checks) for partitions correct by construction."""
        obj = object.__new__(cls)
        for name, value in (("order", order), ("bounds", bounds), ("worker_bounds", worker_bounds),
                            ("part_costs", part_costs), ("contiguous", contiguous)):
            object.__setattr__(obj, name, value)
        return obj

    def validate(self) -> None:
        """Check the layout; raise ``ValueError`` naming the first problem."""
        b, wb, order = self.bounds, self.worker_bounds, self.order
        for name, arr in (("order", order), ("bounds", b), ("worker_bounds", wb)):
            if arr.ndim != 1 or arr.dtype != np.int64:
                raise ValueError(f"Partition {name} must be a 1-D int64 array, got {arr.ndim}-D {arr.dtype}")
        if b.size < 2 or b[0] != 0 or b[-1] != order.size or np.any(np.diff(b) < 0):
            raise ValueError(f"Partition bounds must rise from 0 to n_items={order.size}, got {b.tolist()[:8]}...")
        n_parts = b.size - 1
        if wb.size < 2 or wb[0] != 0 or wb[-1] != n_parts or np.any(np.diff(wb) < 0):
            raise ValueError(f"Partition worker_bounds must rise from 0 to n_parts={n_parts}")
        if self.part_costs.shape != (n_parts,):
            raise ValueError(f"Partition part_costs must have shape ({n_parts},), got {self.part_costs.shape}")
        if self.contiguous:
            if not np.array_equal(order, np.arange(order.size)):
                raise ValueError("Partition marked contiguous but order is not the identity")
        elif not np.array_equal(np.sort(order), np.arange(order.size)):
            raise ValueError("Partition order is not a permutation of range(n_items)")

    @property
    def n_items(self) -> int:
        return int(self.order.size)

    @property
    def n_parts(self) -> int:
        return int(self.bounds.size - 1)

    @property
    def n_workers(self) -> int:
        return int(self.worker_bounds.size - 1)

    def worker_costs(self) -> np.ndarray:
        """``float64[n_workers]`` estimated cost of each worker's slice."""
        c = np.concatenate(([0.0], np.cumsum(self.part_costs)))
        return c[self.worker_bounds[1:]] - c[self.worker_bounds[:-1]]

    def imbalance(self) -> float:
        """Max worker cost over mean worker cost (1.0 = perfect; 1.0 for zero total cost)."""
        w = self.worker_costs()
        mean = float(w.mean()) if w.size else 0.0
        return float(w.max()) / mean if mean > 0 else 1.0


@njit(cache=True, inline="always")
def take_job(done, bounds, p, j):
    """The job worker ``p`` runs after job ``j`` (``-1`` for its first), marked in ``done``;
    ``-1`` when it has none left.

    ``bounds: int64[P + 1]``: worker ``w`` owns jobs ``bounds[w]:bounds[w+1]``; ``done:
    uint8[bounds[P]]``, zeroed before the parallel region. Worker ``p`` takes its own jobs
    upwards and then those of worker ``(p + 1) % P`` downwards from the top, each run
    stopping at the first job already marked (see the module docstring). Usage::

        j = take_job(done, bounds, p, -1)
        while j >= 0:
            ...  # job j: every output it owns written, none accumulated
            j = take_job(done, bounds, p, j)
    """
    P = bounds.shape[0] - 1
    lo = bounds[p]
    hi = bounds[p + 1]
    q = p + 1 if p + 1 < P else 0
    if j < 0 or (lo <= j and j < hi):  # own range, upwards
        k = lo if j < 0 else j + 1
        if k < hi and done[k] == 0:
            done[k] = 1
            return k
        k = bounds[q + 1] - 1  # own range finished or met: the next worker's, from the top
    else:
        k = j - 1
    if k >= bounds[q] and done[k] == 0:
        done[k] = 1
        return k
    return -1


def _check_costs(costs: np.ndarray, n_workers: int, parts_per_worker: int) -> np.ndarray:
    costs = np.asarray(costs)
    if costs.ndim != 1 or costs.dtype.kind not in "iuf":
        raise ValueError(f"costs must be a 1-D integer or float array, got {costs.ndim}-D {costs.dtype}")
    if costs.size and (not np.isfinite(costs).all() or costs.min() < 0):
        raise ValueError("costs must be finite and non-negative")
    for name, v in (("n_workers", n_workers), ("parts_per_worker", parts_per_worker)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return costs


@njit(cache=True, inline="always")
def _nearest_cut(weights, target, lo, hi):
    """Index ``i`` in ``[lo, hi]`` whose prefix cost ``weights[i]`` is nearest to ``target``
    (ties go to the lower index); ``weights[n + 1]`` non-decreasing, ``n >= 1``."""
    n = weights.shape[0] - 1
    j = min(max(np.searchsorted(weights, target), 1), n)
    if target - weights[j - 1] <= weights[j] - target:
        j -= 1
    return min(max(j, lo), hi)


@njit(cache=True)
def cost_partition_kernel(costs, n_workers, parts_per_worker, bounds, part_costs, cuts):
    """Fill ``bounds: int64[n_workers * parts_per_worker + 1]`` and ``part_costs:
    float64[n_parts]`` of the contiguous equal-cost split (see :func:`cost_partition`);
    ``cuts: float64[n_workers, parts_per_worker + 1]`` the shares of each worker's cost at
    which its parts end, or empty: equal parts.

    One compiled pass, O(n_items + n_parts * log n_items): the NumPy formulation costs
    ~70 us of call overhead, as much as a small SpGEMM.
    """
    n = costs.shape[0]
    n_parts = n_workers * parts_per_worker
    # prefix sums in the costs' own type: int64 adds (1 cycle) do not chain like float adds
    # (4 cycles a row: 3-D Poisson's 216K rows took 0.20 ms)
    ends = np.empty(n + 1, dtype=costs.dtype)
    ends[0] = 0
    for i in range(n):
        ends[i + 1] = ends[i] + costs[i]
    if n == 0:
        bounds[:] = 0
        part_costs[:] = 0.0
        return
    weights = ends if ends[n] > 0 else np.arange(n + 1).astype(costs.dtype)  # all zero: by count
    total = weights[n]
    wb = np.empty(n_workers + 1, dtype=np.int64)
    for w in range(n_workers + 1):
        wb[w] = _nearest_cut(weights, total * w / n_workers, 0, n)
    wb[0] = 0
    wb[n_workers] = n
    for w in range(n_workers):
        lo = wb[w]
        hi = wb[w + 1]
        bounds[w * parts_per_worker] = lo
        for f in range(1, parts_per_worker):
            share = cuts[w, f] if cuts.shape[0] else f / parts_per_worker
            target = weights[lo] + (weights[hi] - weights[lo]) * share
            bounds[w * parts_per_worker + f] = _nearest_cut(weights, target, lo, hi)
    bounds[n_parts] = n
    for part in range(n_parts):
        part_costs[part] = ends[bounds[part + 1]] - ends[bounds[part]]


def cost_partition(costs: np.ndarray, n_workers: int, parts_per_worker: int = 1) -> Partition:
    """Contiguous equal-cost split: prefix sums cut at the boundaries nearest to equal shares.

    Worker ``w`` gets the jobs between the prefix-sum boundaries nearest to
    ``w * total / n_workers`` and ``(w + 1) * total / n_workers``; its range is cut the
    same way into ``parts_per_worker`` parts (some may be empty when jobs are few).
    Computed by :func:`cost_partition_kernel`.

    Args:
        costs: ``[n_items]`` non-negative cost estimate of each job (all zero: equal counts).
        n_workers: threads that will run the parts.
        parts_per_worker: parts per worker (finer granularity for per-part decisions).

    Returns:
        A contiguous :class:`Partition` (built without re-validation; call
        :meth:`Partition.validate` to check it) with ``n_workers * parts_per_worker``
        parts. Every worker costs at most ``total / n_workers + max(costs)`` and every
        part at most ``worker cost / parts_per_worker + max(costs)``.
    """
    costs = _check_costs(costs, n_workers, parts_per_worker)
    return _cost_partition_trusted(costs, int(n_workers), int(parts_per_worker))


_EQUAL_PARTS = np.zeros((0, 0))
_EQUAL_PARTS.flags.writeable = False  # as the kept cuts callers pass: one compiled signature


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """A contiguous split without its identity ``order`` (what the kernels that walk row
    ranges read): ``bounds``, ``worker_bounds``, ``part_costs`` as in :class:`Partition`."""

    bounds: np.ndarray
    worker_bounds: np.ndarray
    part_costs: np.ndarray


def cost_split(costs: np.ndarray, n_workers: int, parts_per_worker: int, cuts: np.ndarray | None = None) -> Split:
    """The bounds of :func:`cost_partition` without its argument checks and without the
    ``order`` array (an ``arange`` of every item: 0.05 ms of 216K rows), for callers that
    built ``costs`` themselves (SpGEMM's flops per row). ``cuts``: the cumulative shares of
    each worker's cost at which its parts end (``float64[n_workers, parts_per_worker + 1]``,
    rising from 0 to 1); ``None``: equal parts."""
    n_parts = n_workers * parts_per_worker
    bounds = np.empty(n_parts + 1, dtype=np.int64)
    part_costs = np.empty(n_parts, dtype=np.float64)
    # integer costs summed exactly in int64, others in float64
    costs = costs.astype(np.int64 if costs.dtype.kind == "i" or costs.dtype.kind == "u" and costs.dtype.itemsize < 8
                         else np.float64, copy=False)
    cost_partition_kernel(costs, n_workers, parts_per_worker, bounds, part_costs,
                          _EQUAL_PARTS if cuts is None else cuts)
    return Split(bounds, np.arange(n_workers + 1, dtype=np.int64) * parts_per_worker, part_costs)


def _cost_partition_trusted(costs: np.ndarray, n_workers: int, parts_per_worker: int) -> Partition:
    """:func:`cost_partition` without the O(n) argument checks."""
    split = cost_split(costs, n_workers, parts_per_worker)
    return Partition._trusted(np.arange(costs.size, dtype=np.int64), split.bounds, split.worker_bounds,
                              split.part_costs, True)


def round_robin_partition(costs: np.ndarray, n_workers: int, parts_per_worker: int = 1) -> Partition:
    """FLAASH's dispatch: job ``i`` to worker ``i % n_workers``, one part per worker.

    ``costs`` is only used to report ``part_costs``; ``parts_per_worker`` is accepted
    for a uniform signature and ignored.
    """
    costs = _check_costs(costs, n_workers, parts_per_worker)
    n = costs.size
    order = np.concatenate([np.arange(w, n, n_workers, dtype=np.int64) for w in range(n_workers)])
    counts = np.array([len(range(w, n, n_workers)) for w in range(n_workers)], dtype=np.int64)
    bounds = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    c = np.concatenate(([0.0], np.cumsum(costs[order], dtype=np.float64)))
    part_costs = c[bounds[1:]] - c[bounds[:-1]]
    return Partition._trusted(order, bounds, np.arange(n_workers + 1, dtype=np.int64), part_costs,
                              n_workers == 1)


SCHEDULES: dict[str, Callable[..., Partition]] = {
    "cost": cost_partition,
    "round-robin": round_robin_partition,
}


def get_schedule(name: str) -> Callable[..., Partition]:
    """Look up a registered schedule.

    >>> get_schedule("fifo")
    Traceback (most recent call last):
    ...
    ValueError: unknown schedule 'fifo'; valid names: cost, round-robin
    """
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}") from None


def check_threads(threads: int | None) -> None:
    """Raise ``ValueError`` unless ``threads`` is None or an int in [1, NUMBA_NUM_THREADS]."""
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be None or an int in [1, {limit}], got {threads!r}")


@contextlib.contextmanager
def thread_scope(threads: int | None) -> Iterator[int]:
    """Run a block with ``threads`` numba threads (``None``: numba's current setting).

    Yields the thread count in effect and restores the previous one afterwards.

    >>> with thread_scope(1) as t:
    ...     t
    1
    >>> with thread_scope(0):
    ...     pass
    Traceback (most recent call last):
    ...
    ValueError: threads must be None or an int in [1, ...], got 0
    """
    check_threads(threads)
    if threads is None:
        yield numba.get_num_threads()
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(int(threads))
    try:
        yield int(threads)
    finally:
        numba.set_num_threads(previous)
