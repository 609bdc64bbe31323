"""Host buffers start on a cache line (fastbp.backends.host_memory): the GEMM operands and
outputs of a training step, and their bf16 copies, never straddle one at a row start."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from fastbp.backends.host_memory import ALIGNMENT, aligned_empty, aligned_zeros
from tests.backends import usable_backends

CPU_BACKENDS = [name for name in ("numpy", "numba") if name in usable_backends(False)]
shapes = st.lists(st.integers(0, 70), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64, np.uint16, np.int64, np.uint8])


def address(x):
    return x.__array_interface__["data"][0]


@settings(max_examples=80, deadline=None)
@given(shapes, dtypes, st.sampled_from([16, 64, 4096]))
def test_aligned_arrays_have_the_shape_dtype_and_alignment_asked_for(shape, dtype, alignment):
    for make in (aligned_empty, aligned_zeros):
        x = make(shape, dtype, alignment)
        assert x.shape == shape and x.dtype == dtype and x.flags.c_contiguous
        assert x.flags.writeable and (x.size == 0 or address(x) % alignment == 0)
    assert not aligned_zeros(shape, dtype).any()


def test_an_int_shape_is_a_vector():
    assert aligned_empty(5, np.float32).shape == (5,)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_buffer_of_a_training_step_is_aligned(backend):
    """The flat parameters and gradients, every layer's z, a and delta, and (where bf16 runs)
    every bf16 copy a step reads start on a cache line (layer sizes multiples of 32)."""
    be = fastbp.get_backend(backend)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((128, 64)).astype(np.float32), rng.integers(0, 3, 128)
    net = fastbp.MLP([64, 96, 32, 3], backend=be, dtype="float32", seed=0)
    precision = "bf16" if "bf16" in be.precisions else "highest"
    seen = []
    gemm = be.gemms.bf16 if precision == "bf16" else be.gemms.fp32
    name = "matmul_bf16" if precision == "bf16" else "matmul"
    original = getattr(gemm, name)

    def recording(a, b, out):
        seen.extend(address(x) % ALIGNMENT for x in (a, b, out))
        return original(a, b, out)

    setattr(gemm, name, recording)
    try:
        net.fit(X, y, epochs=1, batch_size=64, verbose=0, shuffle=False, precision=precision)
    finally:
        delattr(gemm, name)
    assert len(seen) >= 3 * 2 * (3 + 3 + 2)  # two steps of 3 forward, 3 weight, 2 delta GEMMs
    assert set(seen) == {0}
    assert address(net.params) % ALIGNMENT == address(net.grads) % ALIGNMENT == 0
