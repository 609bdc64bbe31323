"""The Numba CPU kernels (``fastbp.kernels.cpu``) equal the NumPy reference, property-based.

Hypothesis draws the shapes (1 row, 1 column, odd sizes, more columns than one column block),
the dtype, the layout (C-contiguous, or every array a strided view), the scale of the values
and, for each kernel, the activation or (output, loss) pair. Every kernel runs both ways: the
serial loop and the parallel one. Tolerances are relative: 1e-12 in float64, 1e-5 in float32.
"""

import re
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import given, settings, strategies as st  # noqa: E402
from numba import njit  # noqa: E402

from fastbp.backends import threads  # noqa: E402
from fastbp.kernels import codes, cpu, cpu_optimizers, kernel, reference as ref  # noqa: E402
from fastbp.losses import LOSSES  # noqa: E402

# These tests call the loops directly, not through a backend: choose Numba's threading layer
# first, as every NumbaBackend does (compiling a parallel loop starts Numba's threads, and the
# layer cannot change after that).
threads.configure()

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ACTIVATIONS = sorted(codes.ACTIVATION_CODES.values())
HIDDEN = [c for c in ACTIVATIONS if c != codes.SOFTMAX]
#: every (output activation, loss) pair the library accepts
PAIRS = sorted({(codes.ACTIVATION_CODES[out], loss.code)
                for loss in LOSSES.values() for out in loss.outputs})
#: the activation parameter: leaky-ReLU slope in [0, 1], ELU scale > 0
ALPHA = {codes.LEAKY_RELU: 0.1, codes.ELU: 1.3}

SETTINGS = settings(max_examples=25, deadline=None)


#: run a test through the serial loops, then through the parallel ones
both_loops = pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])


@contextmanager
def loops(parallel):
    """Route every kernel call through its parallel loop (or its serial one)."""
    saved = kernel.PARALLEL_MIN_WORK
    kernel.PARALLEL_MIN_WORK = 0 if parallel else 1 << 62
    try:
        yield
    finally:
        kernel.PARALLEL_MIN_WORK = saved


class Case:
    """Random arrays of one dtype and layout ('C', or 'strided': views of every other column)."""

    def __init__(self, dtype, layout, scale, seed):
        self.dtype, self.layout, self.scale = dtype, layout, scale
        self.rng = np.random.default_rng(seed)

    def array(self, *shape, values=None):
        values = self.scale * self.rng.standard_normal(shape) if values is None else values
        if self.layout == "C":
            return np.ascontiguousarray(values, dtype=self.dtype)
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype=self.dtype)
        view = wide[..., ::2]
        view[...] = values
        return view

    def targets(self, n_rows, n_cols, loss):
        """One-hot rows for the classification losses, 0/1 for bce, reals for mse."""
        task = next(spec.task for spec in LOSSES.values() if spec.code == loss)
        if task == "classification":
            values = np.eye(n_cols)[self.rng.integers(0, n_cols, n_rows)]
        elif task == "binary":
            values = self.rng.integers(0, 2, (n_rows, n_cols)).astype(float)
        else:
            values = self.rng.standard_normal((n_rows, n_cols))
        return self.array(n_rows, n_cols, values=values)

    def close(self, got, want, magnitude=1.0):
        """Equal to the relative tolerance of the dtype, on the scale of ``magnitude``."""
        rtol = RTOL[self.dtype]
        assert got.dtype == want.dtype == self.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * magnitude)


cases = st.builds(Case, st.sampled_from([np.float32, np.float64]),
                  st.sampled_from(["C", "strided"]), st.sampled_from([0.5, 3.0, 30.0]),
                  st.integers(0, 2**32 - 1))
rows = st.integers(1, 9)
#: narrow and wide rows, and the width where the softmax leaves its flat loop for the row one
columns = st.one_of(st.integers(1, 9), st.integers(10, 70), st.just(cpu.FLAT_SOFTMAX_COLS))


def forward(case, n_rows, n_cols, act):
    """``(z, a)`` of a layer, by the reference."""
    z = case.array(n_rows, n_cols)
    a = case.array(n_rows, n_cols)
    ref.bias_act_forward(z, case.array(n_cols), act, ALPHA.get(act, 0.0), a)
    return z, a


@both_loops
@SETTINGS
@given(case=cases, n_rows=rows, n_cols=columns, act=st.sampled_from(ACTIVATIONS))
def test_bias_act_forward(parallel, case, n_rows, n_cols, act):
    with loops(parallel):
        z, b, a = case.array(n_rows, n_cols), case.array(n_cols), case.array(n_rows, n_cols)
        z_ref, a_ref = z.copy(), a.copy()
        alpha = ALPHA.get(act, 0.0)
        assert cpu.bias_act_forward(z, b, act, alpha, a) is a
        ref.bias_act_forward(z_ref, b, act, alpha, a_ref)
        case.close(z, z_ref, case.scale)
        case.close(a, a_ref, np.abs(a_ref).max())


@both_loops
@SETTINGS
@given(case=cases, n_rows=rows, n_cols=columns, act=st.sampled_from(HIDDEN),
       dropout=st.sampled_from([None, 0.3]))
def test_act_backward(parallel, case, n_rows, n_cols, act, dropout):
    with loops(parallel):
        z, a = forward(case, n_rows, n_cols, act)
        delta = case.array(n_rows, n_cols)
        mask = None if dropout is None else case.array(
            n_rows, n_cols, values=(case.rng.random((n_rows, n_cols)) >= dropout) / (1 - dropout))
        delta_ref = delta.copy()
        alpha = ALPHA.get(act, 0.0)
        assert cpu.act_backward(delta, z, a, act, alpha, mask) is delta
        ref.act_backward(delta_ref, z, a, act, alpha, mask)
        case.close(delta, delta_ref, np.abs(delta_ref).max())


@both_loops
@SETTINGS
@given(case=cases, n_rows=rows, n_cols=columns, pair=st.sampled_from(PAIRS))
def test_output_delta_and_loss(parallel, case, n_rows, n_cols, pair):
    with loops(parallel):
        act, loss = pair
        alpha, scale = ALPHA.get(act, 0.0), 1.0 / n_rows
        z, a = forward(case, n_rows, n_cols, act)
        y = case.targets(n_rows, n_cols, loss)
        delta, delta_ref = case.array(n_rows, n_cols), case.array(n_rows, n_cols)
        total = cpu.output_delta_loss(z, a, y, loss, act, alpha, scale, delta)
        total_ref = ref.output_delta_loss(z, a, y, loss, act, alpha, scale, delta_ref)
        # delta is a difference (a - y, or d - sum_k d_k a_k): compare on the scale of its terms
        delta_magnitude = scale * (1 + np.abs(a).max() + np.abs(y).max()) ** 2
        case.close(delta, delta_ref, delta_magnitude)
        # the loss sums terms as large as |z| (or z^2 for mse) over the batch
        magnitude = n_rows * n_cols * (1 + np.abs(z).max() + np.abs(a - y).max() ** 2)
        case.close(np.asarray(total), np.asarray(total_ref), magnitude)
        case.close(np.asarray(cpu.loss_sum(z, a, y, loss)), np.asarray(total_ref), magnitude)
        delta[...] = 0
        assert cpu.output_delta(z, a, y, loss, act, alpha, scale, delta) is delta
        case.close(delta, delta_ref, delta_magnitude)


@pytest.mark.parametrize("act, loss", [(codes.TANH, codes.BINARY_CROSS_ENTROPY),
                                       (codes.RELU, codes.CROSS_ENTROPY)])
def test_an_undefined_output_gradient_is_an_error_like_the_reference(act, loss):
    z = np.zeros((2, 3))
    for kernels in (cpu, ref):
        with pytest.raises(ValueError, match="no output gradient"):
            kernels.output_delta(z, z, z, loss, act, 0.0, 0.5, z.copy())


def test_softmax_has_no_elementwise_derivative():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="no elementwise derivative"):
        cpu.act_backward(z.copy(), z, z, codes.SOFTMAX, 0.0)


@both_loops
@SETTINGS
@given(case=cases, n_rows=rows, n_cols=st.one_of(columns, st.integers(100, 300)))
def test_bias_grad_is_the_column_sum(parallel, case, n_rows, n_cols):
    with loops(parallel):
        delta, db = case.array(n_rows, n_cols), case.array(n_cols)
        assert cpu.bias_grad(delta, db) is db
        case.close(db, ref.bias_grad(delta, case.array(n_cols)), n_rows * case.scale)


@both_loops
@SETTINGS
@given(case=cases, n_rows=rows, n_cols=columns, lam=st.sampled_from([1e-4, 0.5]))
def test_add_weight_decay(parallel, case, n_rows, n_cols, lam):
    with loops(parallel):
        dW, W = case.array(n_rows, n_cols), case.array(n_rows, n_cols)
        dW_ref = dW.copy()
        assert cpu.add_weight_decay(dW, W, lam) is dW
        case.close(dW, ref.add_weight_decay(dW_ref, W, lam), case.scale)


def flat(case, n):
    """A parameter-like vector: contiguous, or every other element of a longer one."""
    return case.array(1, n)[0]


@both_loops
@SETTINGS
@given(case=cases, n=st.integers(1, 300), lr=st.sampled_from([1e-3, 0.1]))
def test_sgd_update(parallel, case, n, lr):
    with loops(parallel):
        p, g = flat(case, n), flat(case, n)
        p_ref = p.copy()
        cpu.sgd_update(p, g, lr)
        ref.sgd_update(p_ref, g, lr)
        case.close(p, p_ref, case.scale)


@both_loops
@SETTINGS
@given(case=cases, n=st.integers(1, 300), steps=st.integers(1, 3))
def test_momentum_update(parallel, case, n, steps):
    with loops(parallel):
        p, v = flat(case, n), flat(case, n)
        p_ref, v_ref = p.copy(), v.copy()
        for _ in range(steps):
            g = flat(case, n)
            cpu.momentum_update(p, g, v, 0.05, 0.9)
            ref.momentum_update(p_ref, g, v_ref, 0.05, 0.9)
        case.close(v, v_ref, case.scale)
        case.close(p, p_ref, case.scale)


@both_loops
@SETTINGS
@given(case=cases, n=st.integers(1, 300), t0=st.integers(1, 1000))
def test_adam_update(parallel, case, n, t0):
    with loops(parallel):
        p, m = flat(case, n), flat(case, n)
        v = case.array(1, n, values=case.rng.random((1, n)) * case.scale**2)[0]
        p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
        for t in (t0, t0 + 1):
            g = flat(case, n)
            cpu.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, t)
            ref.adam_update(p_ref, g, m_ref, v_ref, 1e-3, 0.9, 0.999, 1e-8, t)
        case.close(m, m_ref, case.scale)
        case.close(v, v_ref, case.scale**2)
        case.close(p, p_ref, case.scale)


@both_loops
@SETTINGS
@given(case=cases, sizes=st.lists(st.integers(0, 40), min_size=1, max_size=7),
       t=st.integers(1, 1000), bf16=st.booleans())
def test_decayed_adam_equals_the_decay_added_then_adam(parallel, case, sizes, t, bf16):
    """Alternating stretches of the flat vector without and with decay (biases and weights,
    empty ones included): bit for bit ``add_weight_decay`` on each decayed stretch, then
    ``adam_update``; the gradient is not written."""
    n = sum(sizes)
    if n == 0:
        return
    edges = np.cumsum([0] + sizes)
    starts, ends = edges[1:-1:2].astype(np.int64), edges[2::2].astype(np.int64)
    with loops(parallel):
        p, g, m = flat(case, n), flat(case, n), flat(case, n)
        v = case.array(1, n, values=case.rng.random((1, n)) * case.scale**2)[0]
        p16 = np.zeros(n, np.uint16) if bf16 and p.dtype == np.float32 else None
        want = [x.copy() for x in (p, g, m, v)]
        want16 = None if p16 is None else p16.copy()
        for lo, hi in zip(starts, ends):
            cpu.add_weight_decay(want[1][lo:hi].reshape(1, -1), want[0][lo:hi].reshape(1, -1),
                                 0.3)
        cpu.adam_update(*want, 1e-3, 0.9, 0.999, 1e-8, t, want16)
        g_before = g.copy()
        cpu.decayed_adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, t, 0.3, starts, ends, p16)
        for got, expected in zip((p, m, v, p16), (want[0], want[2], want[3], want16)):
            assert expected is None or np.array_equal(got, expected)
        assert np.array_equal(g, g_before)


def test_a_flat_update_refuses_an_array_it_could_only_copy():
    p = np.zeros((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="1-D or C-contiguous"):
        cpu.sgd_update(p, p.copy(), 0.1)


# -- float32 stays float32 -----------------------------------------------------------------

#: LLVM instructions that compute in double precision
DOUBLE_MATH = re.compile(r"= (?:fadd|fsub|fmul|fdiv|frem|fneg)(?: \w+)* double|"
                         r"call(?: \w+)* double @(?!PyFloat_AsDouble)|fpext float")
#: loops that add float32 terms into a float64 batch total, on purpose
FLOAT64_ACCUMULATORS = {"_loss_rows"}


def loop_named(name) -> kernel.Kernel:
    """The Numba loop ``name`` of the CPU kernels (the passes, or the optimizers)."""
    return getattr(cpu, name, None) or getattr(cpu_optimizers, name)


def float32_args(name):
    """Float32 arguments of the right kinds for kernel ``name`` (tiny shapes; the bf16 copies
    are written too, so their code is checked as well)."""
    m, v = np.ones((2, 3), np.float32), np.ones(3, np.float32)
    m16, v16 = np.ones((2, 3), np.uint16), np.ones(3, np.uint16)
    y = np.eye(3, dtype=np.float32)[[0, 2]]
    return {
        "_bias_act_rows": (m, v, codes.TANH, 0.1, m.copy(), m16),
        "_act_backward_rows": (m, m.copy(), codes.ELU, 0.1, m.copy(), m16),
        "_delta_rows": (m, m.copy(), y, cpu.SOFTMAX_JVP, codes.SOFTMAX, 0.0, 0.5, m.copy(),
                        m16),
        "_loss_rows": (m, m.copy(), y, codes.CROSS_ENTROPY),
        "_column_sums": (m, 16, v),
        "_axpy_rows": (m, m.copy(), 0.1),
        "_sgd": (v, v.copy(), 0.1, v16),
        "_momentum": (v, v.copy(), v.copy(), 0.1, 0.9, v16),
        "_adam": (v, v.copy(), v.copy(), v.copy(), 0.9, 0.1, 0.999, 1e-3, 1e-8, 1e-2, 1e3, v16),
        "_decayed_adam": (v, v.copy(), v.copy(), v.copy(), 0.9, 0.1, 0.999, 1e-3, 1e-8, 1e-2,
                          1e3, 0.1, np.array([1]), np.array([2]), v16),
        "_bf16_rows": (m, m16),
        "_bf16_flat": (v, v16),
    }[name]


@pytest.mark.parametrize("name", ["_bias_act_rows", "_act_backward_rows", "_delta_rows",
                                  "_loss_rows", "_column_sums",
                                  "_axpy_rows", "_sgd", "_momentum", "_adam",
                                  "_decayed_adam", "_bf16_rows", "_bf16_flat"])
def test_float32_kernels_compute_in_float32(name):
    """Python-float hyper-parameters must not promote a float32 loop to float64.

    Compiles a fresh, uncached serial copy (cached code cannot be inspected) and reads its
    LLVM IR: the only double-precision arithmetic allowed is the loss's float64 batch total.
    """
    kernel = njit(loop_named(name).py_func)
    kernel(*float32_args(name))
    (library,) = [ov.library for ov in kernel.overloads.values()]
    found = DOUBLE_MATH.findall(library.get_llvm_str())
    if name in FLOAT64_ACCUMULATORS:
        found = [op for op in found if "fadd" not in op and "fpext" not in op]
    assert not found, f"{name} computes in float64: {sorted(set(found))}"


@pytest.mark.parametrize("name", ["_sgd", "_momentum", "_adam", "_decayed_adam", "_axpy_rows"])
def test_serial_loops_vectorise(name):
    """The serial loops (every parameter vector under ``PARALLEL_MIN_WORK`` elements runs one)
    compile to SIMD code: Python's error model checks each float division and raises, which
    kept Adam's loop scalar and 4.6x slower. A fresh, uncached copy with the loops' options."""
    loop = njit(**kernel.LOOP_OPTIONS)(loop_named(name).py_func)
    loop(*float32_args(name))
    (library,) = [ov.library for ov in loop.overloads.values()]
    assert re.search(r"<(4|8|16) x float>", library.get_llvm_str()), f"{name} is not SIMD"


def test_serial_division_by_zero_is_nan_as_in_numpy():
    """Adam with ``eps = 0`` on a zero gradient divides 0 by 0: NaN, as the NumPy reference
    gives, in the serial loop as in the parallel one (not ZeroDivisionError)."""
    p = np.ones(8, np.float32)
    zeros = [np.zeros(8, np.float32) for _ in range(3)]
    args = (0.9, 0.1, 0.999, 1e-3, 0.0, 1e-2, 1e3, None)  # eps = 0
    cpu_optimizers._adam.serial(p, *zeros, *args)
    assert np.isnan(p).all()
