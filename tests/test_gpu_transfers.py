"""Uploads of training data (fastbp.backends.transfers) against a stand-in of the CuPy calls
they make: a NumPy "device", streams and events that log what is ordered after what. On a GPU
the same code runs on CuPy itself (the training tests stream and upload through it)."""

from types import SimpleNamespace

import numpy as np
import pytest

from fastbp.backends import transfers

pytestmark = pytest.mark.gpu


class DeviceArray(np.ndarray):
    """A NumPy array with CuPy's ``set(host, stream=None)``; ``log`` sees each copy."""

    log = None

    def set(self, host, stream=None):
        assert host.flags.c_contiguous and host.shape == self.shape
        self[...] = host
        DeviceArray.log.append(("copy", None if stream is None else stream.name, host.shape))


class Event:
    def __init__(self, log):
        self.log = log

    def record(self, stream):
        self.log.append(("record", stream.name))

    def synchronize(self):
        self.log.append(("event sync",))


class Stream:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def record(self):
        self.log.append(("record", self.name))
        return Event(self.log)

    def wait_event(self, event):
        self.log.append(("wait", self.name))


def fake_cupy(log):
    DeviceArray.log = log
    compute = Stream(log, "compute")
    pool = SimpleNamespace(free_all_blocks=lambda: log.append(("free pinned pool",)))
    cuda = SimpleNamespace(Stream=lambda non_blocking=False: Stream(log, "copy"),
                           Event=lambda: Event(log), get_current_stream=lambda: compute)
    return SimpleNamespace(
        empty=lambda shape, dtype: np.empty(shape, dtype).view(DeviceArray),
        asarray=lambda x: np.asarray(x).view(DeviceArray),
        get_default_pinned_memory_pool=lambda: pool, cuda=cuda)


@pytest.mark.parametrize("shape", [(10, 3), (7,), (0, 4)])
def test_a_resident_set_is_uploaded_in_chunks_and_the_pinned_pool_freed(monkeypatch, shape):
    log = []
    monkeypatch.setattr(transfers, "CHUNK_BYTES", 3 * 3 * 4)  # three float32 rows of 3
    host = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    out = transfers.upload(fake_cupy(log), host, np.float32)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_array_equal(np.asarray(out), host.astype(np.float32))
    copies = [entry for entry in log if entry[0] == "copy"]
    if host.size:
        assert len(copies) == -(-shape[0] // (3 if len(shape) == 2 else 9))
        assert log[-1] == ("free pinned pool",)


def test_streamed_batches_alternate_two_pinned_buffers_on_the_copy_stream():
    log = []
    cupy = fake_cupy(log)
    pinned = []

    def empty_pinned(shape, dtype):
        pinned.append(np.empty(shape, dtype))
        return pinned[-1]

    batches = transfers.PinnedBatches(cupy, empty_pinned)
    host = np.arange(20, dtype=np.float64).reshape(10, 2)
    out = cupy.empty((3, 2), np.float32)
    for rows in (np.array([9, 0, 4]), slice(2, 5), np.array([1, 1, 1])):
        log.clear()
        batches.copy_rows(host, rows, out)
        np.testing.assert_array_equal(np.asarray(out), host[rows])
        # the buffer's last copy is done; the copy waits for the queued steps; the compute
        # stream waits for the copy
        assert log == [("event sync",), ("record", "compute"), ("wait", "copy"),
                       ("copy", "copy", (3, 2)), ("record", "copy"), ("wait", "compute")]
    assert len(pinned) == 2 and all(p.dtype == np.float32 for p in pinned)
