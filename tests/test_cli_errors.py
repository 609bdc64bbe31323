"""Class 1 and 8: the command line never shows a traceback. Every user error is one line and
exit status 2 naming the flag as typed; flags are checked before the data load; output paths
are checked before training and the model is saved before the extras; a closed pipe is quiet;
Ctrl-C says where the checkpoint went."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastbp import cli


class ReachedTheData(Exception):
    """Raised instead of loading data: every flag passed the checks."""


FLAGS = ["--hidden", "--activation", "--output", "--loss", "--init", "--init-scale",
         "--leaky-slope", "--elu-alpha", "--preprocess", "--maxout-pieces", "--prelu-init",
         "--backend", "--dtype", "--seed", "--epochs", "--batch-size", "--lr", "--optimizer",
         "--momentum", "--weight-decay", "--dropout", "--input-noise", "--precision", "--plot",
         "--validation-split", "--early-stopping", "--checkpoint", "--save", "--test-size",
         "--target"]
VALUES = st.one_of(
    st.sampled_from(["-1", "0", "1", "1.5", "nan", "inf", "-inf", "1e400", "", "full", "x",
                     "relu,relux", "10000000000", "99999999999999999999", "/nonexistent/x",
                     "/", "a.txt", "3,0", "softmax", "1,2,3", "--", "-", "0.999999", "2"]),
    st.text(max_size=6))


def run_main(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), min_size=1, max_size=3))
def test_random_bad_flags_give_one_line_and_status_2(monkeypatch, capsys, pairs):
    monkeypatch.setattr(cli.data, "load_any", lambda *a, **k: (_ for _ in ()).throw(
        ReachedTheData()))
    argv = ["train"] + [f"{flag}={value}" for flag, value in pairs]
    try:
        code, err = run_main(argv, capsys)
    except ReachedTheData:
        return  # all flags valid: the data load is the next step
    except SystemExit as exc:  # --help-like flags never drawn; nothing else exits
        pytest.fail(f"SystemExit {exc.code} for {argv}")
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastbp"), (argv, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("argv,message", [
    (["train", "--batch-size", "0"], "--batch-size must be"),
    (["train", "--lr", "-1"], "--lr must be"),
    (["train", "--validation-split", "1"], "--validation-split must be"),
    (["train", "--early-stopping", "2", "--validation-split", "0"], "--validation-split > 0"),
    (["train", "--test-size", "-0.1"], "--test-size must be"),
    (["train", "--activation", "relux"], "--activation must be one of"),
    (["train", "--hidden", "10000000000"], "--hidden 10000000000 gives at least"),
    (["train", "--precision", "tf32", "--backend", "numpy"], "--precision='tf32'"),
    (["train", "--plot", "/nonexistent/c.png"], "argument --plot: cannot write"),
    (["train", "--plot", "curves.txt"], "must end in one of .png"),
    (["train", "--save", "/nonexistent/m.npz"], "argument --save: cannot write the model"),
    (["train", "--checkpoint", "/"], "argument --checkpoint: cannot write"),
    (["predict", "missing.npz", "x.csv"], "no fastbp model file at 'missing.npz'"),
    (["predict", "m.npz", "x.csv", "-o", "/nonexistent/p.csv"], "argument --output"),
    (["train", "nosuchset"], "data set must be one of"),
    (["train", "missing.csv"], "no CSV file at 'missing.csv'"),
    (["bench", "--json", "/nonexistent/b.json"], "argument --json: cannot write"),
    (["diagnose", "--plot", "/nonexistent/d.png"], "argument --plot: cannot write"),
])
def test_user_errors_name_the_flag_as_typed(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_plot_path_fails_before_training_and_a_plot_failure_keeps_the_model(
        tmp_path, capsys, monkeypatch):
    started = time.perf_counter()
    code, _ = run_main(["train", "xor", "--plot", str(tmp_path / "no" / "c.png"), "--save",
                        str(tmp_path / "m.npz")], capsys)
    assert code == 2 and time.perf_counter() - started < 5
    import fastbp.plots

    def broken_plot(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fastbp.plots, "plot_history", broken_plot)
    code, err = run_main(["train", "iris", "--epochs", "2", "--quiet", "--backend", "numpy",
                          "--plot", str(tmp_path / "c.png"), "--save", str(tmp_path / "m.npz")],
                         capsys)
    assert code == 2 and "No space left" in err
    assert (tmp_path / "m.npz").exists()


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    model = work / "m.npz"
    assert cli.main(["train", "iris", "--epochs", "1", "--quiet", "--backend", "numpy",
                     "--save", str(model)]) == 0
    X = np.random.default_rng(0).integers(0, 8, size=(200_000, 4))
    np.savetxt(work / "X.csv", X, delimiter=",", fmt="%d")
    return model, work / "X.csv"


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "fastbp", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_no_user_error_prints_a_traceback(tmp_path, model_and_data):
    model, csv = model_and_data
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("a,b\n1,NA\n")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really")
    cases = [["train", "--epochs", "x"], ["train", str(bad_csv)], ["predict", str(junk), csv],
             ["predict", model, bad_csv], ["predict", model, tmp_path], ["train", "--hidden",
             "10000000000"], ["predict", csv, model], ["train", str(junk)]]
    for argv in cases:
        result = run_cli(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_predict_into_a_closed_pipe_is_quiet(model_and_data):
    model, csv = model_and_data
    result = subprocess.run(f"{sys.executable} -m fastbp predict {model} {csv} | head -2",
                            shell=True, capture_output=True, text=True, timeout=300)
    header, first = result.stdout.split()
    assert header == "prediction" and first in ("0", "1", "2")
    assert result.stderr == ""


def test_ctrl_c_says_where_the_checkpoint_went(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "iris", "--epochs",
                             "100000", "--quiet", "--backend", "numpy", "--checkpoint",
                             str(ckpt)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"checkpoint written to {ckpt}" in err and "--resume" in err


@pytest.mark.parametrize("flag", ["--activation", "--hidden", "--epochs", "--target"])
def test_a_bare_double_dash_as_a_value_is_one_clear_error(capsys, flag):
    """argparse drops ``--`` given as a value and leaves an empty list (found by hypothesis)."""
    code, err = run_main(["train", f"{flag}=--"], capsys)
    assert code == 2 and err.strip() == f"fastbp train: error: argument {flag}: expected one value"


@pytest.mark.parametrize("argv,match", [
    (["train", "--save", "{d}/m.png", "--plot", "{d}/m.png"], "--plot .* same file as --save"),
    (["train", "--save", "{d}/x", "--checkpoint", "{d}/link"], "--checkpoint .* same file"),
    (["train", "{d}/data.npz", "--save", "{d}/data.npz"], "same file as the training data"),
    (["train", "--checkpoint", "/dev/null"], "checkpoint must be a regular file"),
])
def test_outputs_that_would_destroy_an_input_or_each_other_are_refused_first(
        argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.data, "load_any", lambda *a, **k: (_ for _ in ()).throw(
        ReachedTheData()))
    np.savez(tmp_path / "data.npz", X=np.zeros((4, 2)), y=np.zeros(4))
    (tmp_path / "link").symlink_to(tmp_path / "x")
    code, err = run_main([a.format(d=tmp_path) for a in argv], capsys)
    assert code == 2 and err.count("\n") == 1 and "error" in err
    assert __import__("re").search(match, err), err


def test_predict_never_writes_over_its_model(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert cli.main(["train", "xor", "--epochs", "1", "--quiet", "--save", str(model)]) == 0
    before = model.read_bytes()
    code, err = run_main(["predict", str(model), "xor", "-o", str(model)], capsys)
    assert code == 2 and "same file as the model" in err and model.read_bytes() == before


def test_a_missing_extra_for_the_model_file_is_named_before_training(capsys, monkeypatch):
    def missing():
        raise ImportError("safetensors model files need the safetensors package: pip install "
                          "'fastbp[safetensors]'")

    monkeypatch.setattr("fastbp.train_flags.import_safetensors", missing)
    monkeypatch.setattr(cli.data, "load_any", lambda *a, **k: (_ for _ in ()).throw(
        ReachedTheData()))
    code, err = run_main(["train", "--save", "m.safetensors"], capsys)
    assert code == 2 and "fastbp[safetensors]" in err


def test_the_tiny_bundled_set_trains_with_the_default_flags(capsys):
    assert cli.main(["train", "xor", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 rows are too few to hold any out" in out
