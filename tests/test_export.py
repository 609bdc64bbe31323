"""to_torch, from_torch, from_sklearn and to_onnx compute exactly what fastbp computes."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbp
from fastbp import export

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOL = dict(rtol=1e-5, atol=1e-5)
HIDDEN = ["identity", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "prelu", "maxout"]
PREPROCESS = [None, "standardize", "pca", "zca"]
PAIRS = [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy"),
         ("identity", "hinge"), ("identity", "mse"), ("sigmoid", "mse"), ("tanh", "mse"),
         ("relu", "mse"), ("leaky_relu", "mse"), ("elu", "mse"), ("softmax", "mse")]
rng = np.random.default_rng(0)
# features far from standard, so that a missing or wrong preprocessing would show
X = rng.normal(loc=3.0, scale=[0.5, 2.0, 4.0, 1.0], size=(40, 4))


def targets(net):
    if net.task == "classification":
        return np.arange(len(X)) % net.sizes[-1]
    if net.task == "binary":
        return (X[:, :net.sizes[-1]] > 3).astype(float)
    return X[:, :net.sizes[-1]] * 0.1


def trained(activation="relu", output="softmax", loss="cross_entropy", preprocess=None,
            dtype="float32", **kwargs):
    net = fastbp.MLP([4, 6, 5, 3], activation=activation, output=output, loss=loss,
                     preprocess=preprocess, dtype=dtype, seed=3, backend="numpy",
                     leaky_slope=0.1, elu_alpha=0.7, maxout_pieces=3, **kwargs)
    net.fit(X, targets(net), epochs=2, batch_size=8, lr=0.05, verbose=0)
    return net


def torch_outputs(net, inputs=X):
    module = net.to_torch()
    with torch.no_grad():
        return module(torch.tensor(inputs, dtype=getattr(torch, net.dtype))).numpy()


def onnx_outputs(net, inputs=X):
    session = ort.InferenceSession(net.to_onnx().SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(["Y"], {"X": inputs.astype(np.float32)})[0]


@pytest.mark.parametrize("preprocess", PREPROCESS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_every_activation_and_preprocessing_exports_exactly(activation, preprocess):
    net = trained(activation, preprocess=preprocess)
    expected = net.forward(X)
    np.testing.assert_allclose(torch_outputs(net), expected, **TOL)
    np.testing.assert_allclose(onnx_outputs(net), expected, **TOL)


@pytest.mark.parametrize("output,loss", PAIRS)
def test_every_output_and_loss_exports_exactly(output, loss):
    net = trained(["tanh", "prelu"], output=output, loss=loss, preprocess="standardize")
    expected = net.forward(X)
    np.testing.assert_allclose(torch_outputs(net), expected, **TOL)
    np.testing.assert_allclose(onnx_outputs(net), expected, **TOL)


@settings(max_examples=15, deadline=None)
@given(hidden=st.lists(st.sampled_from(HIDDEN), min_size=0, max_size=3),
       widths=st.lists(st.integers(1, 6), min_size=3, max_size=3),
       pair=st.sampled_from(PAIRS), preprocess=st.sampled_from(PREPROCESS),
       seed=st.integers(0, 2**16))
def test_any_architecture_exports_exactly(hidden, widths, pair, preprocess, seed):
    sizes = [4] + widths[:len(hidden)] + [3]
    net = fastbp.MLP(sizes, activation=hidden, output=pair[0], loss=pair[1],
                     preprocess=preprocess, seed=seed, backend="numpy")
    if preprocess:
        net.fit_preprocessor(X)
    expected = net.forward(X)
    np.testing.assert_allclose(torch_outputs(net), expected, **TOL)
    np.testing.assert_allclose(onnx_outputs(net), expected, **TOL)
    np.testing.assert_allclose(fastbp.MLP.from_torch(net.to_torch(), loss=pair[1],
                                                     backend="numpy").forward(X), expected, **TOL)


def test_float64_networks_export_in_their_dtype():
    net = trained(["maxout", "elu"], preprocess="zca", dtype="float64")
    assert next(net.to_torch().parameters()).dtype == torch.float64
    np.testing.assert_allclose(torch_outputs(net), net.forward(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(onnx_outputs(net), net.forward(X), **TOL)


@pytest.mark.parametrize("activation", HIDDEN)
def test_from_torch_of_to_torch_is_the_same_network(activation):
    net = trained([activation, "relu"], output="sigmoid", loss="binary_cross_entropy")
    back = fastbp.MLP.from_torch(net.to_torch(), backend="numpy")
    assert back.sizes == net.sizes
    used = {"leaky_relu": "leaky_slope", "elu": "elu_alpha", "maxout": "maxout_pieces"}
    if activation in used:
        assert back.config[used[activation]] == net.config[used[activation]]
    assert [l.name for l in back.layers] == [l.name for l in net.layers]
    assert back.loss_fn.name == "binary_cross_entropy"
    for got, want in zip(back.get_weights(), net.get_weights()):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_from_torch_folds_preprocessing_into_the_first_layer():
    net = trained("relu", preprocess="standardize")
    back = fastbp.MLP.from_torch(net.to_torch(), backend="numpy")
    assert back.preprocessor is None
    np.testing.assert_allclose(back.forward(X), net.forward(X), **TOL)


def test_from_torch_of_a_hand_built_module():
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.PReLU(), nn.Dropout(0.5), nn.Linear(8, 6),
                           export.maxout_module()(2), nn.Linear(3, 2), nn.Identity(),
                           nn.Linear(2, 5), nn.LeakyReLU(0.2), nn.Linear(5, 3),
                           nn.Softmax(dim=-1)).eval()
    net = fastbp.MLP.from_torch(module, backend="numpy")
    assert net.sizes == [4, 8, 3, 2, 5, 3]
    assert [layer.name for layer in net.layers] == ["prelu", "maxout", "identity",
                                                    "leaky_relu", "softmax"]
    with torch.no_grad():
        expected = module(torch.tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(net.forward(X), expected, **TOL)
    net.fit(X, np.arange(40) % 3, epochs=1, verbose=0)  # and it trains on


@pytest.mark.parametrize("module,match", [
    (lambda nn: nn.Linear(4, 3), "torch.nn.Sequential"),
    (lambda nn: nn.Sequential(), "no Linear"),
    (lambda nn: nn.Sequential(nn.ReLU(), nn.Linear(4, 3)), r"module\[0\].*follow a Linear"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Tanh()), "one activation"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.GELU()), "GELU"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.Linear(2, 1)), "takes 2 inputs"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.1), nn.Linear(3, 3),
                              nn.LeakyReLU(0.2), nn.Linear(3, 1)), "leaky_slope"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=0)), "dim 1"),
    (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1), nn.Linear(3, 2)),
     "Softmax may only end the module"),
    (lambda nn: nn.Sequential(nn.Linear(4, 5), nn.PReLU(3), nn.Linear(5, 2)),
     r"PReLU has 3 slopes; the Linear before it gives 5 units"),
    (lambda nn: nn.Sequential(nn.Linear(4, 5), export.maxout_module()(2)), "multiple of 2"),
])
def test_from_torch_refuses_what_fastbp_cannot_compute(module, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fastbp.MLP.from_torch(module(torch.nn), backend="numpy")


def test_from_torch_opens_nested_sequentials_and_skips_flatten():
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 6), nn.ReLU()),
                           nn.Sequential(nn.Linear(6, 3))).eval()
    net = fastbp.MLP.from_torch(module, backend="numpy")
    assert net.sizes == [4, 6, 3]
    with torch.no_grad():
        expected = module(torch.tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(net.forward(X), expected, **TOL)


@pytest.mark.parametrize("source", ["torch", "sklearn"])
def test_fine_tuning_an_imported_network_starts_from_its_function(source):
    """An imported network maps raw features: a first fit must not put a standardiser in
    front of it (X is far from standard here, so preprocess="auto" would)."""
    if source == "torch":
        original = trained("relu")
        net = fastbp.MLP.from_torch(original.to_torch(), backend="numpy")
    else:
        estimator, _ = sklearn_fit("classifier")
        estimator.fit(X, np.arange(40) % 3)
        net = fastbp.MLP.from_sklearn(estimator, backend="numpy")
    before = net.forward(X)
    net.fit(X, np.arange(40) % 3, epochs=1, lr=1e-9, verbose=0)
    assert net.preprocessor is None
    np.testing.assert_allclose(net.forward(X), before, atol=1e-5)


def sklearn_fit(kind, **kwargs):
    neural = pytest.importorskip("sklearn.neural_network")
    Xs = (X - 3) / 2
    estimator = {"classifier": neural.MLPClassifier, "regressor": neural.MLPRegressor}[kind](
        hidden_layer_sizes=(7, 5), max_iter=50, random_state=0, **kwargs)
    return estimator, Xs


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("labels", ["multiclass", "binary", "multilabel"])
def test_from_sklearn_classifiers(activation, labels):
    estimator, Xs = sklearn_fit("classifier", activation=activation)
    y = {"multiclass": np.array(["a", "b", "c", "d"])[np.arange(40) % 4],
         "binary": np.arange(40) % 2,
         "multilabel": (Xs[:, :3] > 0).astype(int)}[labels]
    estimator.fit(Xs, y)
    net = fastbp.MLP.from_sklearn(estimator, backend="numpy", dtype="float64")
    proba = estimator.predict_proba(Xs)
    np.testing.assert_allclose(net.forward(Xs), proba[:, 1:] if labels == "binary" else proba,
                               rtol=1e-10, atol=1e-12)
    predicted = net.predict(Xs)
    if labels == "multilabel":
        np.testing.assert_array_equal(predicted, estimator.predict(Xs))
    else:
        np.testing.assert_array_equal(estimator.classes_[predicted.reshape(-1)],
                                      estimator.predict(Xs))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_from_sklearn_regressor_and_back_out_to_onnx():
    estimator, Xs = sklearn_fit("regressor", activation="tanh")
    estimator.fit(Xs, Xs[:, :2] @ [[1.0, 0.5], [-1.0, 2.0]])
    net = fastbp.MLP.from_sklearn(estimator, backend="numpy")
    assert (net.output.name, net.loss_fn.name) == ("identity", "mse")
    np.testing.assert_allclose(net.predict(Xs), estimator.predict(Xs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(onnx_outputs(net, Xs), estimator.predict(Xs), rtol=1e-5,
                               atol=1e-5)


def test_from_sklearn_refuses_unfitted_and_foreign_estimators():
    neural = pytest.importorskip("sklearn.neural_network")
    with pytest.raises(TypeError, match="not fitted"):
        fastbp.MLP.from_sklearn(neural.MLPClassifier())
    with pytest.raises(TypeError, match="fitted scikit-learn MLPClassifier"):
        fastbp.MLP.from_sklearn(object())


def test_onnx_graph_is_self_contained_with_a_dynamic_batch(tmp_path):
    import onnx

    net = trained(["maxout", "prelu"], preprocess="pca")
    path = tmp_path / "net.onnx"
    returned = net.to_onnx(path)
    assert sorted(os.listdir(tmp_path)) == ["net.onnx"]  # no temporary left behind
    model = onnx.load(path)
    assert model == returned
    assert [o.version for o in model.opset_import] == [export.ONNX_OPSET]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 4
    assert not model.graph.input[1:]  # the weights are initializers, not inputs
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for rows in (1, 7, 40):
        got = session.run(["Y"], {"X": X[:rows].astype(np.float32)})[0]
        np.testing.assert_allclose(got, net.forward(X[:rows]), **TOL)


def test_cli_export_writes_a_graph_onnxruntime_runs(tmp_path):
    net = trained("elu", preprocess="standardize")
    net.save(tmp_path / "m.npz")
    out = tmp_path / "m.onnx"
    done = subprocess.run([sys.executable, "-m", "fastbp", "export", str(tmp_path / "m.npz"),
                           str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["Y"], {"X": X.astype(np.float32)})[0],
                               net.forward(X), **TOL)


@pytest.mark.parametrize("args,match", [
    (["m.npz", "out.txt"], "must end in .onnx"),
    (["m.npz", "nowhere/out.onnx"], "no such directory"),
    (["missing.npz", "out.onnx"], "no fastbp model file"),
])
def test_cli_export_errors_are_one_line(tmp_path, args, match):
    trained().save(tmp_path / "m.npz")
    done = subprocess.run([sys.executable, "-m", "fastbp", "export", *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert match in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_summary_lists_layers_shapes_and_counts():
    net = fastbp.MLP([4, 6, 5, 3], activation=["maxout", "prelu"], preprocess="zca",
                     backend="numpy")
    text = net.summary()
    assert "hidden maxout (2 pieces)" in text and "(N, 6)" in text and "60" in text
    assert "hidden prelu" in text and "40" in text  # 6*5 + 5 + 5 slopes
    assert "output softmax" in text and "18" in text
    assert "zca (fitted at the first fit)" in text
    assert "backend: numpy; dtype: float32" in text
    assert f"total parameters: {net.n_params}" in text


def test_summary_says_what_preprocess_auto_chose():
    rng = np.random.default_rng(0)
    scaled, raw = rng.normal(size=(30, 3)), rng.normal(size=(30, 3)) * [1, 100, 1e4]
    y = rng.integers(0, 2, 30)
    lines = []
    for X in (scaled, raw):
        net = fastbp.MLP([3, 4, 2], backend="numpy", seed=0)
        assert "auto (fitted at the first fit)" in net.summary()
        net.fit(X, y, epochs=1, verbose=0)
        lines.append(net.summary().splitlines()[-3])
    assert lines[0].endswith("auto: none chosen (the features are well scaled)")
    assert lines[1].endswith("auto: standardizer (fitted)")
