"""Checkpoints: written every epoch and on Ctrl-C, resumed bit-identically."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastbp

SCRIPT = Path(__file__).parent / "scripts" / "train_run.py"


def run_script(*args, check=True):
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.npy"
    run_script(out)
    return np.load(out)


def test_sigkill_after_epoch_two_then_resume_is_bit_identical(tmp_path, uninterrupted):
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.npy"
    killed = run_script(out, "--checkpoint", ckpt, "--kill-after-epoch", 3, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and ckpt.exists()
    run_script(out, "--checkpoint", ckpt, "--resume")
    np.testing.assert_array_equal(np.load(out), uninterrupted)


def test_ctrl_c_leaves_a_checkpoint_that_resumes_exactly(tmp_path, uninterrupted):
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.npy"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--checkpoint", str(ckpt),
                             "--slow"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "CheckpointedInterrupt" in err  # a KeyboardInterrupt
    assert not out.exists()
    run_script(out, "--checkpoint", ckpt, "--resume")
    np.testing.assert_array_equal(np.load(out), uninterrupted)


def test_checkpoint_holds_epoch_history_and_optimizer_state(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    ckpt = tmp_path / "c.ckpt"
    net = fastbp.MLP([3, 4, 2], backend="numpy", seed=0)
    net.fit(X, y, epochs=2, optimizer="adam", checkpoint=ckpt, verbose=0)
    meta, arrays = fastbp.files.read_savez(ckpt, "checkpoint")
    assert meta["epoch"] == 2 and meta["optimizer_scalars"]["t"] == 2 * 2
    assert len(meta["history"]["train_loss"]) == 2
    assert {"params", "opt_m", "opt_v"} <= set(arrays)
    resumed = fastbp.MLP([3, 4, 2], backend="numpy", seed=99)
    history = resumed.fit(X, y, epochs=3, optimizer="adam", checkpoint=ckpt, resume=True,
                          verbose=0)
    assert history.epoch == [1, 2, 3]


def test_resume_from_a_missing_file_starts_afresh(tmp_path):
    net = fastbp.MLP([3, 2], backend="numpy", seed=0)
    history = net.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=2, verbose=0,
                      checkpoint=tmp_path / "new.ckpt", resume=True)
    assert len(history) == 2 and (tmp_path / "new.ckpt").exists()


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    X, y = np.ones((4, 3)), [0, 1, 0, 1]
    ckpt = tmp_path / "c.ckpt"
    fastbp.MLP([3, 5, 2], backend="numpy").fit(X, y, epochs=1, verbose=0, checkpoint=ckpt)
    other = fastbp.MLP([3, 6, 2], backend="numpy")
    with pytest.raises(ValueError, match="another architecture: sizes"):
        other.fit(X, y, epochs=2, verbose=0, checkpoint=ckpt, resume=True)
    with pytest.raises(ValueError, match="optimizer"):
        fastbp.MLP([3, 5, 2], backend="numpy").fit(X, y, epochs=2, verbose=0, checkpoint=ckpt,
                                                   resume=True, optimizer="sgd")


def test_corrupt_checkpoint_and_bad_arguments(tmp_path):
    X, y = np.ones((4, 3)), [0, 1, 0, 1]
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    net = fastbp.MLP([3, 2], backend="numpy")
    with pytest.raises(ValueError, match="not a fastbp checkpoint"):
        net.fit(X, y, verbose=0, checkpoint=bad, resume=True)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        net.fit(X, y, verbose=0, resume=True)
    with pytest.raises(TypeError, match="checkpoint must be a file path"):
        net.fit(X, y, verbose=0, checkpoint=3)
