"""The one place that knows about NumPy versus CuPy.

Every maths function in this project starts with ``xp = get_array_module(x)``
and uses only ``xp.*`` afterwards: the array's own type picks the backend,
nothing global does. This module is the only one that imports CuPy, and the
only one in the maths code that imports NumPy by name.

    get_array_module(*arrays)  -> numpy or cupy
    to_device(x, device)       -> array on "cpu" (NumPy) or "gpu" (CuPy)
    to_numpy(x)                -> NumPy array (copies from the GPU if needed)
    device_of(x)               -> "cpu" or "gpu"
    synchronize(x)             -> wait for the GPU (timing only)
    gpu_status()               -> (available: bool, reason: str)

The fast engine's memory helpers (an explicit array pool, channels-last
views, work buffers) are in ``minivgg.fast``; nothing here keeps state.
"""
from __future__ import annotations

import numpy

try:  # CuPy is optional: NumPy always works.
    import cupy as _cupy
except Exception as _exc:  # ImportError, or a broken CUDA install
    _cupy = None
    _CUPY_IMPORT_ERROR = f"CuPy is not importable ({type(_exc).__name__}: {_exc})"
else:
    _CUPY_IMPORT_ERROR = ""


def gpu_status() -> tuple[bool, str]:
    """Return ``(True, device name)`` when CuPy and a GPU are usable, else ``(False, why)``."""
    if _cupy is None:
        return False, _CUPY_IMPORT_ERROR
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device
        return False, f"CuPy is installed but no CUDA device is usable ({exc})"
    if count < 1:
        return False, "CuPy is installed but no CUDA device was found"
    props = _cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return True, name.decode() if isinstance(name, bytes) else str(name)


def get_array_module(*arrays):
    """The array module (``numpy`` or ``cupy``) that owns ``arrays``.

    NumPy unless at least one argument is a CuPy array.
    """
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return numpy


def host_random(seed):
    """A seeded random generator on the host (NumPy's PCG64): draws that are the same for a NumPy
    and a CuPy run of one seed; move them with ``xp.asarray``. The losses' random directions and
    features come from here, since maths code names no array library itself."""
    return numpy.random.default_rng(seed)


def to_device(x, device: str = "cpu"):
    """Move ``x`` to ``device`` ("cpu" gives NumPy, "gpu" gives CuPy); no copy if already there."""
    if device == "cpu":
        return to_numpy(x)
    if device == "gpu":
        ok, why = gpu_status()
        if not ok:
            raise RuntimeError(f"--device gpu is not available: {why}")
        return _cupy.asarray(x)
    raise ValueError(f"unknown device {device!r}: use 'cpu' or 'gpu'")


def to_numpy(x):
    """A NumPy array holding ``x`` (copied from the GPU when ``x`` is a CuPy array)."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    return numpy.asarray(x)


def device_of(x) -> str:
    """"gpu" for a CuPy array, "cpu" otherwise."""
    return "gpu" if get_array_module(x) is not numpy else "cpu"


def synchronize(x) -> None:
    """Wait for the GPU work producing ``x`` to finish (a no-op on NumPy); for timing only."""
    if device_of(x) == "gpu":
        _cupy.cuda.get_current_stream().synchronize()
