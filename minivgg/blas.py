"""The thread count of a wheel's bundled OpenBLAS, read and set through ctypes.

NumPy's and scipy's wheels each carry their own OpenBLAS
(``libscipy_openblas64_`` in ``numpy.libs``, ``libscipy_openblas`` in
``scipy.libs``; in ``.dylibs`` on macOS), with the thread count as a C function
(``scipy_openblas_get_num_threads`` and ``scipy_openblas_set_num_threads``, with
the suffix ``64_`` in NumPy's 64-bit-integer build). Two callers:
``optim.threads`` gives scipy's L-BFGS-B one thread, and
``minivgg.fast.threads`` gives each of the fast engine's band workers one.
Where the library is not found (a NumPy or scipy built against MKL,
Accelerate or a system BLAS) ``bundled_openblas`` says so with None, and both
callers change nothing.
"""
from __future__ import annotations

import ctypes
import importlib
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def bundled_openblas(package: str):
    """(get_num_threads, set_num_threads) of the OpenBLAS bundled with ``package`` ("numpy", "scipy"), or None."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    root = Path(module.__file__).resolve().parent
    candidates = sorted((root.parent / f"{package}.libs").glob("libscipy_openblas*")) \
        + sorted((root / ".dylibs").glob("libscipy_openblas*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))      # the library the package already loaded: same handle
        except OSError:
            continue
        for suffix in ("", "64_"):
            get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                return get, put
    return None


@contextmanager
def blas_threads(package: str, count: int):
    """Run the block with ``package``'s bundled OpenBLAS on ``count`` threads, then restore its setting.

    Yields the count it had, or None where the library is not found (then nothing changes).
    """
    found = bundled_openblas(package)
    if found is None:
        yield None
        return
    get, put = found
    before = get()
    put(count)
    try:
        yield before
    finally:
        put(before)
