"""flexsparse.kernels.cpu: the numba CPU engines (SpGEMM, dot products, SpMM, structured).

Importing this package (the first time an engine runs; ``import flexsparse`` does not) sets
``OMP_WAIT_POLICY=PASSIVE`` unless it is already set. numba's default threading layer is GNU
OpenMP, whose threads otherwise spin-wait for new work: while other processes keep the cores
busy, a thread that spins burns the time slice its partner needs, and every parallel region
waits for the scheduler. Measured on the 2-core VM at load 7-8 (an empty 2-thread ``prange``,
300 calls): 12-18 ms median per region with the default policy, 9-50 us with the passive one
(numba's ``workqueue`` layer: 55-135 us). The setting takes effect only if no library has
started the OpenMP runtime in this process yet.

Each ``parallel=True`` kernel runs one parallel region, its ``prange`` loop: outside it, NumPy
array calls that numba parallelises (``np.zeros``, ``np.ones``, ``.sum()``...) would be
regions of their own, each waking the threads again. The flops count (with its inf/nan scan)
took 1.02 ms with such calls against 0.88 ms without on 3-D Poisson, and 2.14 against 1.37 ms
on R-MAT 18, two threads reading A from memory; ``tests/kernels/test_parallel_regions.py``
checks every kernel.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
