"""The command line on user files: predictions that match columns by name and read back
exactly, labels compared whole, .npz files without ``y``, task guesses, and error messages that
name the flags as typed."""

import csv
import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edits import rewrite
from fastbp import cli

QUICK = ["--epochs", "3", "--quiet", "--backend", "numpy", "--hidden", "4"]


def run_main(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows(([header] if header else []) + rows)
    return path


@pytest.fixture
def pets(tmp_path):
    """A model trained on columns a, b (target label: 'big, cat' / 'dog'), and its rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2)) * [1, 10]
    labels = np.where(X[:, 0] > 0, "big, cat", "dog")
    rows = [[a, b, label] for (a, b), label in zip(X.tolist(), labels)]
    write_csv(tmp_path / "train.csv", ["a", "b", "label"], rows)
    model = tmp_path / "m.npz"
    assert cli.main(["train", str(tmp_path / "train.csv"), "--save", str(model), *QUICK]) == 0
    return model, X, labels


def test_columns_in_another_order_give_the_same_predictions(tmp_path, pets, capsys):
    model, X, _ = pets
    same = write_csv(tmp_path / "same.csv", ["a", "b"], X.tolist())
    swapped = write_csv(tmp_path / "swapped.csv", ["b", "a"], X[:, ::-1].tolist())
    _, expected, _ = run_main(["predict", model, same], capsys)
    code, out, err = run_main(["predict", model, swapped], capsys)
    assert code == 0 and out == expected, err
    no_header = write_csv(tmp_path / "plain.csv", None, X.tolist())
    assert run_main(["predict", model, no_header], capsys)[1] == expected


@pytest.mark.parametrize("header,argv,message", [
    (["a", "c"], [], r"missing ['b'], unexpected ['c']"),
    (["b", "label", "a"], [], "'label' is the training target: pass --target label"),
])
def test_columns_that_do_not_match_are_named(tmp_path, pets, capsys, header, argv, message):
    model, _, _ = pets
    path = write_csv(tmp_path / "p.csv", header, [["1"] * len(header)])
    code, _, err = run_main(["predict", model, path, *argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_model_saved_without_names_still_predicts_by_position(tmp_path, pets, capsys):
    model, X, _ = pets
    _, expected, _ = run_main(["predict", model, write_csv(tmp_path / "s.csv", ["a", "b"],
                                                           X.tolist())], capsys)

    def forget_names(meta):
        del meta["config"]["feature_names"], meta["config"]["target_name"]

    rewrite(model, edit_meta=forget_names)
    swapped = write_csv(tmp_path / "w.csv", ["x", "y"], X.tolist())
    assert run_main(["predict", model, swapped], capsys)[1] == expected


def test_class_names_with_commas_are_quoted(tmp_path, pets, capsys):
    model, X, labels = pets
    target = write_csv(tmp_path / "t.csv", ["b", "a", "label"],
                       [[b, a, label] for (a, b), label in zip(X.tolist(), labels)])
    code, out, err = run_main(["predict", model, target, "--target", "label"], capsys)
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and rows[0] == ["prediction"] and "accuracy" in err
    assert {r[0] for r in rows[1:]} <= {"big, cat", "dog"} and len(rows) == 81
    code, out, _ = run_main(["predict", model, target, "--target", "label", "--proba"], capsys)
    assert list(csv.reader(io.StringIO(out)))[0] == ["big, cat", "dog"]


@pytest.mark.parametrize("label,message", [
    ("dogfish", "not seen in training: ['dogfish']"),
    ("3.5", "holds numbers (such as 3.5), but the classes are names"),
])
def test_unknown_target_labels_are_refused_by_name(tmp_path, pets, capsys, label, message):
    model, _, _ = pets
    path = write_csv(tmp_path / "t.csv", ["a", "b", "label"], [[0, 0, label]])
    code, _, err = run_main(["predict", model, path, "--target", "label"], capsys)
    assert code == 2 and message in err, err


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=6),
       st.sampled_from([np.float32, np.float64]))
def test_predictions_read_back_exactly(values, dtype):
    out = np.array(values, dtype=dtype).reshape(-1, 1)
    text = io.StringIO()
    cli.write_predictions(text, out, ["prediction"], None)
    rows = list(csv.reader(io.StringIO(text.getvalue())))
    assert rows[0] == ["prediction"]
    np.testing.assert_array_equal(np.array([r[0] for r in rows[1:]]).astype(dtype), out[:, 0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1,
                        max_size=5), min_size=2, max_size=4, unique=True))
def test_class_names_read_back_exactly(names):
    text = io.StringIO()
    cli.write_predictions(text, np.arange(len(names)).reshape(-1, 1), ["prediction"], names)
    cli.write_predictions(text, np.eye(len(names)), names, None)
    rows = list(csv.reader(io.StringIO(text.getvalue())))
    assert [r[0] for r in rows[1:len(names) + 1]] == names
    assert rows[len(names) + 1] == names


def test_an_npz_without_y(tmp_path, pets, capsys):
    model, X, _ = pets
    np.savez(tmp_path / "x.npz", X=X)
    code, out, _ = run_main(["predict", model, tmp_path / "x.npz"], capsys)
    assert code == 0 and len(out.splitlines()) == 81
    code, _, err = run_main(["train", tmp_path / "x.npz"], capsys)
    assert code == 2 and "has no array 'y'" in err


def test_hidden_sizes():
    assert cli.int_list("") == () and cli.int_list("4, 5") == (4, 5)
    with pytest.raises(Exception, match="expected comma-separated integers"):
        cli.int_list("4,,4")


def test_no_hidden_layers_and_upper_case_extensions(tmp_path, capsys):
    path = write_csv(tmp_path / "UP.CSV", ["a", "label"], [[k, k % 2] for k in range(20)])
    code, out, err = run_main(["train", path, "--hidden", "", "--epochs", "1", "--backend",
                               "numpy"], capsys)
    assert code == 0 and "MLP(1-2," in out, err


@pytest.mark.parametrize("target,task", [
    ([1000 + 7 * k for k in range(60)], "regression"),
    ([-1, 1] * 30, "classification"),
])
def test_the_task_guess_is_printed_first(tmp_path, capsys, target, task):
    path = write_csv(tmp_path / "d.csv", ["a", "y"], [[k, v] for k, v in enumerate(target)])
    code, out, err = run_main(["train", path, "--epochs", "1", "--backend", "numpy"], capsys)
    assert code == 0 and out.startswith(f"task: {task} (guessed"), err


def test_a_class_the_split_cannot_share_is_named_with_what_to_do(tmp_path, capsys):
    path = write_csv(tmp_path / "d.csv", ["a", "price"], [[k, 1000 + k] for k in range(60)])
    code, out, err = run_main(["train", path, "--task", "classification"], capsys)
    assert code == 2 and out.startswith("task: classification (from --task)")
    assert "--test-size=0.2 cannot put class 1000 in both splits: its 1 row(s)" in err
    assert "--task regression" in err


def test_a_value_too_large_for_float32_is_refused_before_training(tmp_path, capsys):
    rows = [[k, 1e200 if k == 7 else k, k % 2] for k in range(40)]
    path = write_csv(tmp_path / "big.csv", ["a", "b", "label"], rows)
    code, out, err = run_main(["train", path], capsys)
    assert code == 2 and "model:" not in out
    assert "data row 8, feature column 2 ('b'): 1e+200 is too large for --dtype=float32" in err


def test_ctrl_c_while_the_parser_is_built_is_one_line(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert run_main(["train"], capsys)[2] == "fastbp: interrupted\n"


def test_words_that_are_not_flags_stay_words(tmp_path, capsys):
    np.savez(tmp_path / "r.npz", X=np.ones((20, 2)), y=np.linspace(0, 1, 20))
    model = tmp_path / "reg.npz"
    assert cli.main(["train", str(tmp_path / "r.npz"), "--save", str(model), *QUICK]) == 0
    code, _, err = run_main(["predict", model, tmp_path / "r.npz", "--proba"], capsys)
    assert code == 2 and "output='identity'" in err and "--output" not in err
    message = cli.name_flags("y must be numeric, got dtype <U1 (text)", cli.build_parser(),
                             cli.build_parser().parse_args(["train"]))
    assert message.endswith("got dtype <U1 (text)")


@pytest.mark.parametrize("argv,message", [
    (["--resume"], "--resume needs --checkpoint"),
    (["--resume-new-lr"], "--resume-new-lr needs --checkpoint"),
    (["--seed", "-1"], "--seed must be"),
])
def test_flags_are_named_as_typed(capsys, argv, message):
    code, _, err = run_main(["train", "xor", *argv], capsys)
    assert code == 2 and message in err, err


def test_resume_messages_name_the_flags(tmp_path, capsys):
    np.savez(tmp_path / "r.npz", X=np.ones((20, 2)), y=np.linspace(0, 1, 20))
    ckpt = tmp_path / "run.ckpt"
    argv = ["train", tmp_path / "r.npz", "--checkpoint", ckpt, *QUICK]
    assert run_main(argv, capsys)[0] == 0
    code, _, err = run_main([*argv, "--resume", "--lr", "0.1"], capsys)
    assert code == 2 and "(--resume-new-lr continues" in err, err
    code, _, err = run_main([*argv, "--resume", "--epochs", "2"], capsys)
    assert code == 2 and "is already at epoch 3, past --epochs=2" in err, err
    assert "--epochs > 3" in err
