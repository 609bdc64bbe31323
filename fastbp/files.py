"""The one atomic writer every fastbp output goes through, and the reader of fastbp's .npz files.

:func:`atomic_write` writes into a temporary file beside the target, flushes it to disk and
renames it over the target in one step, so a crash, a full disk or SIGKILL at any moment
leaves either the old file or the new one, never half of one. It is polite:

- a replaced file keeps its permission bits; a new one gets ``0o666`` minus the process umask
  (the kernel applies the umask when the temporary is created: the umask is never touched);
- a symlink is written through: its target is replaced, the link stays a link;
- a target that is not a regular file -- a device (``/dev/null``), a FIFO, a terminal, a
  socket, ``/dev/stdout`` -- is written to directly, as a stream: renaming over it would
  replace a device with a file (and, as root, ``/dev/null`` for everyone);
- errors name the user's path, never the temporary;
- the temporary is named ``.NAME.fastbp-HOST-PID-RANDOM.tmp``; a writer that was killed leaves
  it behind, and the next write to the same target removes those of dead processes on this host.

Models, checkpoints, predictions, benchmark JSON and figures are all written through it
(:func:`atomic_savez`, :func:`atomic_write_text`, :func:`save_figure`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile
import zipfile
from contextlib import contextmanager

import numpy as np

TEMP_SUFFIX = ".tmp"
#: binary output to a stream is held in memory up to this size, then in a temporary file
SPOOL_BYTES = 64 << 20
TEMP_TAG = ".fastbp-"
#: image formats :func:`save_figure` writes (Matplotlib's Agg and vector backends)
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff",
                  "webp", "pgf")


class FileFormatError(ValueError):
    """A file that is not what it should be (corrupt, truncated, foreign or hostile)."""


@contextmanager
def atomic_write(path, mode="wb"):
    """A file object (``mode`` ``"wb"`` or ``"w"``) whose contents replace ``path`` atomically
    when the block ends without an exception; on an exception ``path`` is left as it was."""
    user_path = os.fspath(path)
    if is_stream(user_path):
        with write_stream(user_path, mode) as f:
            yield f
        return
    target = os.path.realpath(user_path)
    remove_stale_temporaries(target)
    tmp, fd = create_temporary(user_path, target)
    try:
        with os.fdopen(fd, mode, **text_options(mode)) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            keep_mode(target, f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        discard(tmp)
        raise naming(exc, user_path) from None
    except BaseException:
        discard(tmp)
        raise


def is_stream(path) -> bool:
    """Whether ``path`` (links followed) is an existing file that is not a regular file or a
    folder: a device, a FIFO, a terminal or a socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextmanager
def write_stream(user_path, mode):
    """``user_path`` opened for writing as it is (no rename, no fsync: a device or a pipe has
    nothing to make atomic); errors name ``user_path``. Text goes straight through; binary
    output is spooled first (memory, then disk) and copied when the block ends, since its
    writers may seek (a zip archive's directory points back into it) and a pipe cannot."""
    try:
        with open(user_path, mode, **text_options(mode)) as stream:
            if "b" not in mode:
                yield stream
                return
            with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
                yield spool
                spool.seek(0)
                shutil.copyfileobj(spool, stream)
    except OSError as exc:
        raise naming(exc, user_path) from None


def text_options(mode) -> dict:
    """``open`` options of a text ``mode``: UTF-8, line ends as written."""
    return {} if "b" in mode else {"encoding": "utf-8", "newline": ""}


def create_temporary(user_path, target):
    """``(name, fd)`` of a new, empty temporary beside ``target``, created ``0o666`` so that
    the kernel applies the umask."""
    folder, name = os.path.split(target)
    check_folder(user_path, folder)
    while True:
        tmp = os.path.join(folder, f"{temporary_prefix(name)}{os.getpid()}-"
                                   f"{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise naming(exc, user_path) from None


#: the longest file name most file systems take (bytes)
NAME_MAX = 255
#: the bytes of a file's name kept in its temporaries' names
KEPT_NAME = 120


def temporary_prefix(name: str) -> str:
    """What the temporaries of the file ``name`` are called before the writer's pid: the
    name, or for a long one its start and a digest of the rest, so that the temporary's name
    stays within :data:`NAME_MAX` where the file's own does."""
    if len(name.encode()) > KEPT_NAME:
        digest = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
        name = name.encode()[:KEPT_NAME - 13].decode(errors="ignore") + "-" + digest
    return f".{name}{TEMP_TAG}{socket.gethostname()[:40]}-"


def naming(exc: OSError, user_path) -> OSError:
    """``exc`` again (same class), its message naming the user's path, not a temporary."""
    if exc.errno is None:
        return OSError(f"cannot write {user_path!r}: {exc}")
    return OSError(exc.errno, f"cannot write {user_path!r}: {exc.strerror}")


def check_folder(user_path, folder):
    """An OSError naming ``user_path`` unless ``folder`` is an existing directory."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot write {user_path!r}: no such directory "
                                              f"{os.path.dirname(user_path) or '.'!r}")


def keep_mode(target, fd):
    """Give the temporary (open as ``fd``) the permission bits of the file it replaces."""
    try:
        os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
    except FileNotFoundError:
        pass  # a new file: 0o666 minus the umask, as created


def discard(tmp):
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def remove_stale_temporaries(target):
    """Remove the temporaries of ``target`` left by killed writers (dead processes of this
    host); those of live writers, and of other hosts, stay."""
    folder, name = os.path.split(target)
    prefix = temporary_prefix(name)
    try:
        entries = os.listdir(folder)
    except OSError:
        return  # the write itself reports the folder
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(TEMP_SUFFIX):
            pid = entry[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                discard(os.path.join(folder, entry))


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def check_writable(path, what="output file") -> str:
    """``path`` if a file can be written there (its folder exists, is writable, and ``path`` is
    not a folder), else an OSError naming ``path`` and ``what`` it was to hold. Run before
    the work whose result goes there."""
    user_path = os.fspath(path)
    try:
        os.stat(user_path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"cannot write the {what} to {user_path!r}: it is a "
                                       "loop of symbolic links") from None
    if is_stream(user_path):
        if not os.access(user_path, os.W_OK):
            raise PermissionError(errno.EACCES, f"cannot write the {what} to {user_path!r}: "
                                                "permission denied")
        return user_path
    target = os.path.realpath(user_path)
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, f"cannot write the {what} to {user_path!r}: "
                                              "it is a directory")
    if not os.path.isdir(folder):
        link = f" (a link to {target!r})" if os.path.islink(user_path) else ""
        raise FileNotFoundError(errno.ENOENT, f"cannot write the {what} to {user_path!r}"
                                              f"{link}: no such directory {folder!r}")
    if len(os.path.basename(target).encode()) > NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, f"cannot write the {what} to {user_path!r}: the "
                                          f"file name is longer than {NAME_MAX} bytes")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot write the {what} to {user_path!r}: the "
                                            "directory is not writable")
    return user_path


def check_distinct(outputs: dict, inputs: dict):
    """No two of ``outputs`` (what -> path or None) are one file, and none is one of the
    existing files of ``inputs``, links followed: a write would destroy the other. Streams
    (``/dev/stdout``) may be shared."""
    seen = {}
    for what, path in [*inputs.items(), *outputs.items()]:
        if not path or is_stream(path) or (what in inputs and not os.path.isfile(path)):
            continue
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"{what} {os.fspath(path)!r} is the same file as {seen[real]}: "
                             "writing it would destroy that; give another path")
        seen[real] = what if what in inputs else f"{what} {os.fspath(path)!r}"


def figure_format(path) -> str:
    """The image format of ``path`` from its extension, else a ValueError listing them."""
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in FIGURE_FORMATS:
        raise ValueError(f"figure file {os.fspath(path)!r} must end in one of "
                         f"{', '.join('.' + f for f in FIGURE_FORMATS)}")
    return ext


def save_figure(fig, path, **kwargs):
    """Write a Matplotlib figure to ``path`` atomically, in the format its extension names."""
    fmt = figure_format(path)
    with atomic_write(path) as f:
        fig.savefig(f, format=fmt, **kwargs)


def atomic_write_text(path, text: str):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_savez(path, arrays: dict, meta: dict):
    """Write ``arrays`` plus ``meta`` (as JSON in a uint8 array named ``meta``) to ``path``."""
    payload = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8))
    with atomic_write(path) as f:
        np.savez(f, **payload)


def read_savez(path, what: str, validate=None):
    """``(meta, arrays)`` from a file written by :func:`atomic_savez`.

    ``validate(meta, shapes)`` (``shapes``: array name -> shape, read from the headers) runs
    before any array is read, so that a file whose config and arrays disagree is refused
    before memory is allocated for it. Every problem is a :class:`FileFormatError` (a
    ValueError) or OSError naming ``path`` and ``what`` was expected.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"no {what} at {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path!r} is a directory, not a {what}")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = read_meta(archive, path, what)
            shapes = read_shapes(archive, path, what)
            if validate is not None:
                validate(meta, shapes)
            arrays = {name: read_array(archive, name, path, what) for name in shapes}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError,
            RuntimeError) as exc:
        raise FileFormatError(f"{path!r} is not a {what}: {describe_zip_error(exc)}") from None
    return meta, arrays


def describe_zip_error(exc) -> str:
    if isinstance(exc, zipfile.BadZipFile):
        return "not a complete .npz (zip) archive: truncated, corrupt or another kind of file"
    return f"unreadable archive ({type(exc).__name__}: {exc})"


def read_meta(archive, path, what) -> dict:
    """The JSON ``meta`` entry of a fastbp .npz, a dict."""
    if "meta.npy" not in archive.namelist():
        raise FileFormatError(f"{path!r} is not a {what}: it has no 'meta' entry")
    raw = read_array(archive, "meta", path, what)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path!r} is not a {what}: its 'meta' entry is not JSON "
                              f"({exc})") from None
    if not isinstance(meta, dict):
        raise FileFormatError(f"{path!r} is not a {what}: its 'meta' entry is not a JSON object")
    return meta


def read_shapes(archive, path, what) -> dict:
    """Array name -> shape for every array but ``meta``, from the .npy headers alone."""
    shapes = {}
    for entry in archive.namelist():
        if not entry.endswith(".npy"):
            raise FileFormatError(f"{path!r} is not a {what}: unexpected entry {entry!r}")
        name = entry[:-4]
        if name == "meta":
            continue
        with archive.open(entry) as f:
            shape, _ = read_header(f, name, path, what)
        shapes[name] = shape
    return shapes


def read_header(f, name, path, what):
    """``(shape, dtype)`` from an open .npy entry; object (pickled) arrays are refused."""
    try:
        version = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, _, dtype = reader(f)
    except ValueError as exc:
        raise FileFormatError(f"{path!r} is not a {what}: array {name!r} has a bad header "
                              f"({exc})") from None
    if dtype.hasobject:
        raise FileFormatError(f"{path!r} is not a {what}: array {name!r} holds Python "
                              "objects (pickle), which fastbp never loads")
    return shape, dtype


def read_array(archive, name, path, what) -> np.ndarray:
    """The array ``name`` of an open .npz archive."""
    try:
        with archive.open(f"{name}.npy") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as exc:
        raise FileFormatError(f"{path!r} is not a {what}: array {name!r} is unreadable "
                              f"({exc})") from None


def atomic_write_bytes(path, data):
    """Write the bytes ``data`` to ``path`` atomically (exported ONNX graphs, safetensors)."""
    with atomic_write(path) as f:
        f.write(data)
