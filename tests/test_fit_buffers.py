"""The trainer's snapshots and batch buffers outlive a fit (fastbp.fit_buffers): a second fit
of the same shapes allocates none of them again, and nothing of one fit reaches the next."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastbp

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 5)).astype(np.float32)
Y = rng.integers(0, 3, 60)

SHUFFLED = dict(epochs=2, batch_size=16, lr=0.05, optimizer="momentum", shuffle=True,
                input_noise=0.1, verbose=0)


def kept_ids(net):
    return {key: id(buffer) for key, buffer in net.fit_buffers.kept.items()}


def test_a_second_fit_of_the_same_shapes_reuses_every_buffer():
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    net.fit(X, Y, **SHUFFLED, early_stopping=3, validation_split=0.2)
    first = kept_ids(net)
    assert {name for name, _, _ in first} == {"last_good", "vouched", "best", "noise", "X", "Y"}
    net.fit(X, Y, **SHUFFLED, early_stopping=3, validation_split=0.2)
    assert kept_ids(net) == first


def test_buffers_of_shapes_no_longer_used_are_dropped_a_fit_later():
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    net.fit(X, Y, **{**SHUFFLED, "batch_size": 16})
    net.fit(X, Y, **{**SHUFFLED, "batch_size": 7})  # the batch-16 buffers are still held ...
    net.fit(X, Y, **{**SHUFFLED, "batch_size": 7})  # ... until a fit that did not use them
    rows = {shape[0] for name, shape, _ in net.fit_buffers.kept if name == "X"}
    assert rows == {7, 60 % 7}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=10, deadline=None)
@given(first=st.sampled_from([4, 16, 60]), second=st.sampled_from([4, 16, 60]),
       diverge=st.booleans())
def test_a_fit_after_another_trains_as_on_a_network_that_never_fitted(
        first, second, diverge):
    """Fit ``first`` then fit ``second`` on one network gives the weights that fit ``second``
    gives on a fresh network with the same weights and random state: kept buffers carry
    nothing over (and a diverging second fit restores its own last finite weights)."""
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    net.fit(X, Y, **{**SHUFFLED, "batch_size": first}, early_stopping=2, validation_split=0.2)
    fresh = fastbp.MLP([5, 8, 3], backend="numpy", seed=1)
    fresh.set_flat_params(net.get_flat_params())
    fresh.preprocessor, fresh.auto_decided = net.preprocessor, net.auto_decided
    fresh.rng = copy.deepcopy(net.rng)
    second_fit = {**SHUFFLED, "batch_size": second, "lr": 1e38 if diverge else 0.05}
    outcomes = []
    for model in (net, fresh):
        try:
            model.fit(X, Y, **second_fit)
            outcomes.append(None)
        except FloatingPointError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
    np.testing.assert_array_equal(net.get_flat_params(), fresh.get_flat_params())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_fit_restores_its_own_start_not_the_previous_fits():
    net = fastbp.MLP([5, 8, 3], backend="numpy", seed=0)
    net.fit(X, Y, epochs=1, batch_size=16, lr=0.05, verbose=0)
    net.fit(X, Y, epochs=1, batch_size=16, lr=0.05, verbose=0)
    before = net.get_flat_params()
    with pytest.raises(FloatingPointError, match="diverged"):
        net.fit(X, Y, epochs=1, batch_size=16, lr=1e38, verbose=0)
    np.testing.assert_array_equal(net.get_flat_params(), before)
