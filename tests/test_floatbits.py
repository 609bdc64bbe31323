"""The float32 bit-level helpers: softmax's vectorising exp against float64 exp."""

import math
import re

import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import given, settings, strategies as st  # noqa: E402
from numba import njit  # noqa: E402

from fastbp.kernels import floatbits  # noqa: E402

#: the smallest input with a normal float32 result, as float32 holds it
LOWEST = float(np.float32(floatbits.EXP_LOWEST))


@njit(error_model="numpy")
def exp_each(x, out):
    for i in range(x.shape[0]):
        out[i] = floatbits.exp_nonpositive(x[i])


def compiled_exp(values, dtype=np.float32):
    x = np.asarray(values, dtype)
    out = np.empty_like(x)
    exp_each(x, out)
    return out


def ulps_off(got, x):
    """``|got - exp(x)|`` in units of the float32 spacing at ``exp(x)`` (computed in float64)."""
    exact = np.exp(x.astype(np.float64))
    return np.abs(got - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(LOWEST, 0.0, width=32), min_size=1, max_size=64))
def test_exp_is_within_one_ulp_over_the_normal_range(values):
    x = np.asarray(values, np.float32)
    assert ulps_off(compiled_exp(x), x).max() <= 1.0


def test_exp_is_within_one_ulp_on_a_dense_grid():
    """Two million points over [EXP_LOWEST, 0], where a reduction or polynomial slip shows."""
    x = np.linspace(LOWEST, 0.0, 2_000_001, dtype=np.float32)
    assert ulps_off(compiled_exp(x), x).max() <= 1.0


def test_exp_edges():
    """exp(0) = 1 exactly, 0 below the normal range and at -inf, nan stays nan."""
    got = compiled_exp([0.0, -0.0, -1e-30, LOWEST - 0.01, -100.0, -np.inf,
                        np.nan])
    assert got[:3].tolist() == [1.0, 1.0, 1.0]
    assert got[3:6].tolist() == [0.0, 0.0, 0.0]
    assert math.isnan(got[6])


def test_float64_keeps_libm_exp():
    """float64 stays on the C library's exp, which Python's math.exp calls too (not NumPy's:
    on an AVX-512 CPU NumPy runs an exp of its own, 1 ulp off libm's for some inputs)."""
    x = np.linspace(-700.0, 0.0, 1001)
    assert compiled_exp(x, np.float64).tolist() == [math.exp(v) for v in x]


def test_the_float32_exp_loop_vectorises():
    """No call into libm: the loop compiles to SIMD code (the reason it exists)."""
    compiled_exp([-1.0])
    (library,) = [ov.library for ov in exp_each.overloads.values()
                  if ov.signature.args[0].dtype.name == "float32"]
    ir = library.get_llvm_str()
    assert re.search(r"<(4|8|16) x float>", ir)
    assert not re.search(r"call[^\n]*@(llvm\.exp|expf|exp)\b", ir)
