"""Serial twins are cached apart from their threaded kernels (flexsparse.kernels.cpu._twin)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import pytest

from flexsparse.kernels.cpu._twin import serial_twin

MODULE = textwrap.dedent('''
    import numpy as np
    from numba import get_thread_id, njit, prange

    from flexsparse.kernels.cpu._twin import serial_twin


    @njit(parallel=True, cache=True)
    def kernel(ids):
        for p in prange(ids.shape[0]):
            ids[p] = get_thread_id()
        return ids


    twin = serial_twin(kernel)
''')


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="needs compiled kernels")
def test_twin_compiled_first_does_not_replace_the_threaded_kernel(tmp_path):
    """The twin compiles first and both are cached; a new process must still load the threaded
    kernel (two iterations on two threads), not the twin's serial code."""
    (tmp_path / "twin_mod.py").write_text(MODULE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_DISABLE_JIT", None)
    first = "import numpy as np, twin_mod; twin_mod.twin(np.zeros(2, np.int64)); twin_mod.kernel(np.zeros(2, np.int64))"
    second = ("import numpy as np, twin_mod; print(twin_mod.kernel(np.zeros(2, np.int64)).tolist(), "
              "len(twin_mod.kernel.stats.cache_hits), twin_mod.twin(np.zeros(2, np.int64)).tolist())")
    subprocess.run([sys.executable, "-c", first], env=env, check=True, cwd=tmp_path)
    out = subprocess.run([sys.executable, "-c", second], env=env, check=True, cwd=tmp_path,
                         capture_output=True, text=True).stdout.split("]")
    assert out[0].strip() == "[0, 1", out  # the threaded kernel, loaded from the cache
    assert out[1].strip() == "1 [0, 0", out  # one cache hit; the twin stays serial


def test_twin_names_and_jitless():
    @numba.njit(parallel=True)
    def k(x):
        return x

    t = serial_twin(k)
    assert t.py_func.__qualname__ == k.py_func.__qualname__ + "_serial"
    assert t.py_func is not k.py_func and t(3) == 3

    def plain(x):
        return x

    assert serial_twin(plain) is plain  # NUMBA_DISABLE_JIT: kernels are plain functions
