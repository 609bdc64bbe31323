"""A fresh install says why its first training steps are slow: the Numba loops compile once.

:meth:`fastbp.kernels.kernel.Kernel.compiled` asks Numba's own cache index (stamp check
included); the Numba backend's :meth:`first_run_notice` is printed before the progress bar.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from fastbp.kernels import kernel

pytest.importorskip("numba")

LOOP_SOURCE = '''
from numba import prange


def double(x):
    for i in prange(x.shape[0]):
        x[i] *= 2.0
'''


def load_loop(path):
    """A fresh :class:`Kernel` over ``double`` from the source file at ``path``."""
    namespace = {"__file__": str(path), "__name__": "loop_under_test"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return kernel.Kernel(namespace["double"])


def test_a_loop_is_compiled_after_a_call_and_from_the_cache_until_its_source_changes(
        tmp_path, monkeypatch):
    import numpy as np
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "cache"))  # not the user's
    path = tmp_path / "loop_under_test.py"
    path.write_text(LOOP_SOURCE)
    loop = load_loop(path)
    assert loop.compiled() is False  # never compiled: no code here, no index on disk
    x = np.ones(4)
    loop(x.size, x)
    assert loop.compiled() is True and (x == 2).all()
    assert load_loop(path).compiled() is True  # another Kernel on that source: from the cache
    path.write_text(LOOP_SOURCE + "\n# edited\n")  # the source stamp no longer matches
    assert load_loop(path).compiled() is False


SCRIPT = textwrap.dedent("""
    import numpy as np
    import fastbp
    rng = np.random.default_rng(0)
    fastbp.MLP([4, 8, 3], seed=0).fit(rng.standard_normal((40, 4)), rng.integers(0, 3, 40),
                                      epochs=1, verbose={verbose})
""")


def train(cache_dir, verbose=2):
    environ = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(verbose=verbose)], env=environ,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_only_the_first_training_run_says_the_loops_compile(tmp_path):
    first = train(tmp_path)
    assert "compiling the Numba loops" in first and str(tmp_path) in first
    second = train(tmp_path)
    assert "compiling" not in second and "epoch 1/1" in second
    assert "compiling" not in train(tmp_path / "fresh", verbose=0)  # quiet means quiet


def test_the_notice_is_silent_when_numbas_cache_cannot_be_read(monkeypatch):
    """A Numba whose private cache index moved: unknown, so no notice rather than a wrong
    one."""
    import types

    import fastbp
    from fastbp.kernels import cpu

    monkeypatch.setattr(cpu.FIRST_LOOP, "serial", types.SimpleNamespace(overloads={}))
    assert cpu.FIRST_LOOP.compiled() is None
    assert fastbp.get_backend("numba").first_run_notice() is None
