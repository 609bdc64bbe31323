"""Class 2: every output goes through one atomic writer (fastbp.files), which keeps modes,
writes through symlinks, leaves the umask alone, names the user's path, and cleans up after
killed writers; a SIGKILL at a random moment never leaves a half-written file, for every
writer: models, checkpoints, predictions, JSON, figures."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastbp
from fastbp import files

SCRIPT = Path(__file__).parent / "scripts" / "write_loop.py"
KILLS_PER_WRITER = 4


def temporaries(folder):
    return [p for p in os.listdir(folder) if files.TEMP_TAG in p]


def test_a_replaced_file_keeps_its_mode_and_a_new_one_follows_the_umask(tmp_path):
    path = tmp_path / "out.txt"
    files.atomic_write_text(path, "one")
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    os.chmod(path, 0o600)
    files.atomic_write_text(path, "two")
    assert os.stat(path).st_mode & 0o777 == 0o600 and path.read_text() == "two"


def test_the_umask_is_never_touched(tmp_path, monkeypatch):
    def forbidden(_mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", forbidden)
    files.atomic_write_text(tmp_path / "a.txt", "x")
    fastbp.MLP([2, 2], backend="numpy").save(tmp_path / "m.npz")


def test_a_symlink_is_written_through_to_its_target(tmp_path):
    real = tmp_path / "real" / "m.npz"
    real.parent.mkdir()
    link = tmp_path / "m.npz"
    link.symlink_to(real)
    fastbp.MLP([2, 3, 2], backend="numpy").save(link)
    assert link.is_symlink() and real.is_file()
    assert fastbp.load(link, backend="numpy").sizes == [2, 3, 2]


def test_errors_name_the_users_path_and_leave_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "pred.csv"
    target.write_text("old\n")

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"cannot write '.*pred\.csv': No space left") as info:
        files.atomic_write_text(target, "new\n")
    assert files.TEMP_TAG not in str(info.value)
    assert target.read_text() == "old\n" and not temporaries(tmp_path)


def test_a_missing_folder_is_named():
    with pytest.raises(FileNotFoundError, match="no such directory '/nonexistent'"):
        files.atomic_write_text("/nonexistent/x.json", "{}")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        files.check_writable("/nonexistent/m.npz", "model")


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "m.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = files.socket.gethostname()
    stale = tmp_path / f".m.npz{files.TEMP_TAG}{host}-{dead}-abcd{files.TEMP_SUFFIX}"
    live = tmp_path / f".m.npz{files.TEMP_TAG}{host}-{os.getpid()}-abcd{files.TEMP_SUFFIX}"
    stale.write_bytes(b"x" * 100)
    live.write_bytes(b"x")
    files.atomic_write_text(target, "new")
    assert not stale.exists() and live.exists()


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["w", "wb"]))
def test_written_bytes_come_back_exactly(tmp_path_factory, payload, mode):
    path = tmp_path_factory.mktemp("w") / "f"
    data = payload if mode == "wb" else payload.decode("latin-1")
    with files.atomic_write(path, mode) as f:
        f.write(data)
    assert (path.read_bytes() if mode == "wb" else path.read_bytes().decode("utf-8")) == data


def test_an_exception_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(KeyError):
        with files.atomic_write(path, "w") as f:
            f.write("half")
            raise KeyError("boom")
    assert path.read_text() == "old" and not temporaries(tmp_path)


# -- targets that are not regular files: written as streams, never replaced -----------------

def test_a_fifo_target_is_written_as_a_stream_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    files.atomic_write_text(fifo, "through the pipe\n")
    assert reader.communicate(timeout=30)[0] == b"through the pipe\n"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not temporaries(tmp_path)


def test_dev_null_stays_a_device_for_every_writer(tmp_path):
    before = os.stat(os.devnull)
    files.atomic_write_text(os.devnull, "discarded")
    fastbp.MLP([2, 3, 2], backend="numpy").save(os.devnull)
    assert files.check_writable(os.devnull) == os.devnull
    after = os.stat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_a_symlink_to_a_device_writes_through_to_it(tmp_path):
    link = tmp_path / "out"
    link.symlink_to(os.devnull)
    files.atomic_write_text(link, "gone")
    assert link.is_symlink() and os.readlink(link) == os.devnull
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode) and not temporaries(tmp_path)


def test_a_full_device_names_the_users_path():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with pytest.raises(OSError, match="cannot write '/dev/full'"):
        files.atomic_write_text("/dev/full", "x" * 100000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


# -- SIGKILL during every writer -------------------------------------------------------------

def predictions_inputs(work):
    X = np.random.default_rng(0).normal(size=(20000, 4))
    np.savetxt(work / "X.csv", X, delimiter=",")
    for name, seed in (("a.npz", 1), ("b.npz", 2)):
        fastbp.MLP([4, 8, 3], backend="numpy", seed=seed).save(work / name)


def check_model(path, _work):
    net = fastbp.load(path, backend="numpy")
    assert net.sizes == [200, 2500, 3]


def check_checkpoint(path, _work):
    meta, arrays = files.read_savez(path, "fastbp checkpoint")
    assert arrays["params"].shape == (200 * 2500 + 2500 + 2500 * 3 + 3,)
    assert np.isfinite(arrays["params"]).all()


def check_predictions(path, _work):
    assert len(path.read_text().splitlines()) == 20000 + 1  # a header, then one row each


def check_json(path, _work):
    import json

    values = json.loads(path.read_text())
    assert len(values) == 400_000 and len(set(values)) == 1


def check_figure(path, _work):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")


WRITERS = {"model": ("m.npz", check_model), "checkpoint": ("run.ckpt", check_checkpoint),
           "predictions": ("pred.csv", check_predictions), "json": ("bench.json", check_json),
           "figure": ("curves.png", check_figure)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_sigkill_at_random_moments_never_leaves_a_half_written_file(tmp_path, kind):
    name, check = WRITERS[kind]
    target = tmp_path / name
    if kind == "figure":
        pytest.importorskip("matplotlib")
    if kind == "predictions":
        predictions_inputs(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(KILLS_PER_WRITER):
        proc = subprocess.Popen([sys.executable, str(SCRIPT), kind, str(target), str(tmp_path)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 120
        while not target.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        check(target, tmp_path)
    with files.atomic_write(tmp_path / name) as f:
        f.write(target.read_bytes())
    check(target, tmp_path)
    assert temporaries(tmp_path) == [], "the next write removes a killed writer's temporaries"


def test_a_long_file_name_is_written_or_refused_before_the_work(tmp_path):
    """The temporary of a 250-byte name would pass the 255-byte limit: it is shortened; a
    name past the limit is refused by check_writable, before the training it would lose."""
    long_name = tmp_path / ("m" * 246 + ".npz")
    files.atomic_write_bytes(long_name, b"model")
    assert long_name.read_bytes() == b"model" and temporaries(tmp_path) == []
    with pytest.raises(OSError, match="longer than 255 bytes"):
        files.check_writable(tmp_path / ("m" * 252 + ".npz"), "model")


def test_links_that_lead_nowhere_are_named(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    with pytest.raises(OSError, match="loop of symbolic links"):
        files.check_writable(loop, "model")
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "gone" / "m.npz", dangling)
    with pytest.raises(FileNotFoundError, match=r"a link to .*gone/m.npz.*no such directory"):
        files.check_writable(dangling, "model")
