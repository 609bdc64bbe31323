"""The command line: train, predict, info; help texts; one-line errors."""

import subprocess
import sys

import numpy as np
import pytest

from fastbp.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastbp", *args], capture_output=True,
                          text=True, timeout=300)


def test_train_digits_prints_backend_epochs_and_test_accuracy(tmp_path):
    model = tmp_path / "model.npz"
    result = run_cli("train", "--epochs", "3", "--save", str(model))
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "backend: " in out and "auto picked" in out
    assert "epoch 3/3" in out and "val_acc" in out
    accuracy = float(out.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.9
    assert model.exists()


def test_predict_writes_one_prediction_per_row(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert main(["train", "iris", "--epochs", "60", "--quiet", "--save", str(model)]) == 0
    from sklearn.datasets import load_iris

    iris = load_iris()
    csv = tmp_path / "iris.csv"
    np.savetxt(csv, np.c_[iris.data, iris.target], delimiter=",", header="a,b,c,d,label",
               comments="")
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(model), str(csv), "--target", "label", "-o", str(preds)]) == 0
    values = np.loadtxt(preds, dtype=int, skiprows=1)
    assert values.shape == (150,) and set(values) <= {0, 1, 2}
    assert (values == iris.target).mean() > 0.8
    assert "accuracy" in capsys.readouterr().err
    assert main(["predict", str(model), str(csv), "--target", "label", "--proba",
                 "-o", str(preds)]) == 0
    np.testing.assert_allclose(np.loadtxt(preds, delimiter=",", skiprows=1).sum(axis=1), 1,
                               rtol=1e-4)


def test_train_from_csv_and_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.savetxt(tmp_path / "d.csv", np.c_[y, X], delimiter=",", header="label,x1,x2,x3",
               comments="")
    assert main(["train", str(tmp_path / "d.npz"), "--epochs", "5", "--quiet"]) == 0
    assert main(["train", str(tmp_path / "d.csv"), "--target", "label", "--epochs", "5",
                 "--quiet"]) == 0
    assert capsys.readouterr().out.count("test accuracy") == 2


def test_info_lists_every_backend_and_blas(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "numba", "cupy", "cupy-sim", "auto ->"):
        assert name in out
    assert "threads" in out


@pytest.mark.parametrize("command", [[], ["train"], ["predict"], ["info"]])
def test_help_is_complete(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    if command == ["train"]:
        for flag in ("--hidden", "--activation", "--output", "--loss", "--init", "--epochs",
                     "--batch-size", "--lr", "--optimizer", "--momentum", "--weight-decay",
                     "--dropout", "--validation-split", "--early-stopping", "--no-shuffle",
                     "--backend", "--seed", "--save", "--dtype", "--target"):
            assert flag in out, flag


@pytest.mark.parametrize("args", [
    ["train", "--epochs", "x"],
    ["train", "--lr", "-1"],
    ["train", "--hidden", "a,b"],
    ["train", "--optimizer", "lbfgs2"],
    ["train", "--precision", "tf32", "--backend", "numpy"],
    ["train", "--optimizer", "lbfgs", "--dropout", "0.5"],
    ["train", "no-such-set"],
    ["train", "--backend", "tpu"],
    ["train", "--loss", "binary_cross_entropy"],
    ["train", "missing.csv"],
    ["predict", "missing.npz", "x.csv"],
    ["frobnicate"],
])
def test_bad_flags_are_one_line_errors(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err and "Traceback" not in err


def test_train_plot_and_course_options(tmp_path, capsys):
    curves = tmp_path / "curves.png"
    assert main(["train", "iris", "--epochs", "3", "--quiet", "--plot", str(curves),
                 "--activation", "prelu", "--input-noise", "0.05", "--preprocess", "zca",
                 "--backend", "numpy"]) == 0
    assert curves.stat().st_size > 10_000
    assert main(["train", "iris", "--optimizer", "lbfgs", "--epochs", "5", "--quiet",
                 "--backend", "numpy"]) == 0
    assert capsys.readouterr().out.count("test accuracy") == 2


def test_diagnose_prints_the_per_layer_table(capsys):
    assert main(["diagnose", "--layers", "3", "--width", "20", "--activation", "tanh",
                 "--init", "normal", "--init-scale", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "layer" in out and "std" in out and len(out.splitlines()) >= 5


def test_string_labels_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 3))
    names = np.array(["cat", "dog", "emu"])[(X[:, 0] > 0.5).astype(int) + (X[:, 1] > 0.5)]
    csv = tmp_path / "animals.csv"
    with open(csv, "w") as f:
        f.write("x1,x2,x3,animal\n")
        for row, name in zip(X, names):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{name}\n")
    model, preds = tmp_path / "m.npz", tmp_path / "p.csv"
    assert main(["train", str(csv), "--target", "animal", "--epochs", "40", "--test-size",
                 "0", "--save", str(model), "--quiet"]) == 0
    assert main(["predict", str(model), str(csv), "--target", "animal", "-o", str(preds)]) == 0
    lines = preds.read_text().splitlines()
    assert lines[0] == "prediction" and len(lines) == 151
    assert (np.array(lines[1:]) == names).mean() > 0.85
    assert main(["predict", str(model), str(csv), "--target", "animal", "--proba",
                 "-o", str(preds)]) == 0
    assert preds.read_text().splitlines()[0] == "cat,dog,emu"
    import fastbp

    assert fastbp.load(model).config["classes"] == ["cat", "dog", "emu"]


def test_labels_with_gaps_size_the_output_by_classes_and_task_overrides(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 2))
    y = np.array([10, 20, 30])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]
    csv = tmp_path / "gaps.csv"
    np.savetxt(csv, np.c_[X, y], delimiter=",", header="a,b,y", comments="")
    assert main(["train", str(csv), "--epochs", "2", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    assert "MLP(2-4-3" in out and "task: classification (guessed" in out
    assert main(["train", str(csv), "--epochs", "2", "--task", "regression"]) == 0
    assert "test R^2" in capsys.readouterr().out
