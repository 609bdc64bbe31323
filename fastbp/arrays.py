"""The one input converter: every array a user hands to fastbp comes in through :func:`to_array`.

Accepted: NumPy arrays and memory maps (used without a copy), anything with ``__dlpack__``
(PyTorch tensors, with or without ``requires_grad``: they are detached; JAX arrays; CuPy),
pandas Series and DataFrames, nested lists. An array that already lives on the backend's device
(:meth:`fastbp.backend.Backend.device_array`: a CuPy array for the ``cupy`` backend) is used in
place; everything else becomes a host NumPy array, copied at most once (a tensor on another
device: once to the host).

The element type must be real: bool, integers or floats. float16 and bfloat16 become float32
(the model then casts once, to its own dtype); complex, datetime, timedelta, strings, objects and
other records are refused with a TypeError naming the argument.
"""

from __future__ import annotations

import math
import sys

import numpy as np

#: ``dtype.kind`` of the real element types: bool, signed and unsigned integers, floats
REAL_KINDS = "biuf"
#: reduced-precision float types widened to float32 on the way in (bfloat16 has kind "V")
NARROW_FLOATS = ("float16", "bfloat16")
#: DLPack device types of host memory (kDLCPU, kDLCUDAHost, kDLROCMHost)
HOST_DLPACK_DEVICES = (1, 3, 11)


def to_array(x, name: str, backend=None):
    """``x`` as an array of a real dtype: ``backend``'s own device array used in place if
    ``x`` is one, else a host NumPy array (float16 / bfloat16 widened to float32)."""
    x = detached(x)
    if backend is not None:
        on_device = backend.device_array(x)
        if on_device is not None:
            return real(on_device, name)
    return real(host_array(x, name), name)


def as_float_array(x, name: str, backend=None, dtype=None, keep_exact_integers=False):
    """:func:`to_array` as native float32 or float64: integers and bools become ``dtype`` (the
    model's, which the backend would cast them to anyway; float64 when not given), long doubles
    float64 (checked against ``dtype``'s range before any narrowing), other byte orders native;
    float32/float64 are kept as they are (no copy: the backend casts once, to the model's
    dtype). ``keep_exact_integers``: a host array of integers that ``dtype`` holds exactly
    (:func:`exact_integers`) is kept as it is, for training to convert batch by batch."""
    arr = to_array(x, name, backend)
    if keep_exact_integers and isinstance(arr, np.ndarray) and exact_integers(arr.dtype, dtype):
        return arr
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64 if dtype is None else dtype)
    if arr.dtype.itemsize > 8:
        return arr.astype(np.float64)
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def exact_integers(kind, dtype) -> bool:
    """Whether ``kind`` is a native integer or bool dtype whose every value the float
    ``dtype`` represents exactly: no more bits than its significand (24 in float32: ``uint8``
    pixels, ``int16`` samples)."""
    kind = np.dtype(kind)
    if dtype is None or kind.kind not in "biu" or not kind.isnative:
        return False
    return kind.itemsize * 8 <= np.finfo(dtype).nmant + 1


def detached(x):
    """A tensor that records gradients (``requires_grad``), detached from its graph."""
    if getattr(x, "requires_grad", False) and callable(getattr(x, "detach", None)):
        return x.detach()
    return x


def host_array(x, name: str) -> np.ndarray:
    """``x`` as a NumPy array on the host: NumPy (and memory maps) as they are, pandas by
    ``to_numpy``, DLPack exporters by ``numpy.from_dlpack`` (zero-copy on the host), device
    tensors copied once, anything else by ``numpy.asarray``."""
    if isinstance(x, np.ndarray):
        return x
    if is_pandas(x):
        return pandas_array(x)
    if hasattr(x, "__dlpack__"):
        return from_dlpack(x, name)
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}: "
                        f"{exc}") from None


def is_pandas(x) -> bool:
    """A pandas Series or DataFrame (pandas is never imported for this)."""
    return type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "to_numpy")


def pandas_array(frame) -> np.ndarray:
    """A Series / DataFrame's values; numeric columns of mixed or nullable types (``NA``)
    as float64 with NaN for the missing values (which the finiteness check then reports by
    row and column), anything else as it comes (text is refused later)."""
    arr = frame.to_numpy()
    if arr.dtype == object:
        try:
            return frame.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            pass
    return arr


def from_dlpack(x, name: str) -> np.ndarray:
    """A DLPack exporter as a NumPy array: a view of host memory, or one copy from a device.

    DLPack has no NumPy type for bfloat16, so a bfloat16 tensor is widened by its own library
    first (``x.float()``), or read through ``__array__`` (JAX, as ml_dtypes' bfloat16); a
    device array is brought to the host by its library (``.cpu()`` for
    PyTorch, ``.get()`` for CuPy) or by ``numpy.asarray``.
    """
    if dtype_name(x) == "bfloat16" and callable(getattr(x, "float", None)):
        x = x.float()
    if dlpack_device(x) not in HOST_DLPACK_DEVICES:
        x = to_host(x, name)
        if isinstance(x, np.ndarray):
            return x
    try:
        return np.from_dlpack(x)
    except (BufferError, TypeError, RuntimeError, ValueError) as exc:
        if hasattr(x, "__array__"):  # e.g. a JAX bfloat16 array: NumPy's ml_dtypes type
            return np.asarray(x)
        raise TypeError(f"{name} must be a numeric array: its DLPack export "
                        f"({type(x).__name__}, dtype {dtype_name(x)}) failed: {exc}") from None


def dlpack_device(x) -> int:
    """The DLPack device type of ``x`` (1 = CPU); CPU when it does not say."""
    try:
        return int(x.__dlpack_device__()[0])
    except Exception:
        return 1


def to_host(x, name: str):
    """A device tensor copied to the host, by its library's own call."""
    for method in ("cpu", "get"):
        if callable(getattr(x, method, None)):
            return getattr(x, method)()
    try:
        return np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name} lives on a device fastbp cannot read from "
                        f"({type(x).__name__}): {exc}") from None


def dtype_name(x) -> str:
    """The element type's name without its library prefix ("torch.bfloat16" -> "bfloat16")."""
    return str(getattr(x, "dtype", "")).rsplit(".", 1)[-1]


def real(arr, name: str):
    """``arr`` if its element type is real (float16 / bfloat16 widened to float32), else a
    TypeError naming ``name``, the expected and the actual type."""
    dtype = arr.dtype
    if dtype.name in NARROW_FLOATS:
        return arr.astype(np.float32)
    if dtype.kind not in REAL_KINDS:
        raise TypeError(f"{name} must be a real numeric array (bool, integer or float), got "
                        f"dtype {dtype} ({KIND_NAMES.get(dtype.kind, 'not a number')})")
    return arr


KIND_NAMES = {"c": "complex numbers", "m": "time spans", "M": "dates and times",
              "O": "Python objects", "U": "text", "S": "bytes", "V": "raw records"}


def check_finite(arr, name: str, dtype=None):
    """Raise if ``arr`` holds NaN or inf, or a finite value too large for the model's ``dtype``
    (``1e200`` would become inf in float32), saying where the first one is.

    One pass of ``min`` and ``max`` decides (NaN propagates through both, and an inf or a too
    large value is one of them), with no temporary the size of ``arr``; only a bad array is
    swept again to find where."""
    if arr.size == 0 or arr.dtype.kind != "f":  # integers and booleans are always finite
        return
    low, high = float(arr.min()), float(arr.max())  # host floats, from device arrays too
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = ~np.isfinite(arr)
        where = first_index(bad)
        raise ValueError(f"{name} must be finite, got {arr[where]} at index {where}")
    if dtype is None or np.dtype(dtype).itemsize >= arr.dtype.itemsize:
        return
    limit = float(np.finfo(dtype).max)
    if max(-low, high) > limit:
        where = first_index(abs(arr) > limit)
        raise ValueError(f"{name} must fit the model's {np.dtype(dtype).name} (magnitude at "
                         f"most {limit:.4g}), got {float(arr[where]):g} at index {where}")


def first_index(mask) -> tuple:
    """The index of the first true element of a boolean array (host or device)."""
    flat = int(mask.reshape(-1).argmax())
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape))


def namespace(arr):
    """The array library of ``arr`` (NumPy, CuPy, ...), for maths on a device array where it
    lives."""
    if isinstance(arr, np.ndarray):
        return np
    return sys.modules[type(arr).__module__.split(".")[0]]
