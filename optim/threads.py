"""One BLAS thread for scipy's L-BFGS-B while it runs; the network's own BLAS is left alone.

Why. Between two evaluations L-BFGS-B does O(n * maxcor) vector work in
float64 (dot products, axpys and the breakpoint search of its Cauchy step),
through the BLAS that *scipy* is linked with. Each of those calls is short; an
OpenBLAS with many threads wakes them all for each one, and the wake-ups cost
more than the arithmetic. Measured (scipy 1.17, a quadratic with box bounds,
maxcor 10, 590k unknowns: a 512 x 384 image): 278 ms of optimiser time per
iteration with 2 threads on a 2-core machine with one other busy process,
127 ms with one; on a 16-core GPU machine a GPU run spent 0.44 s per
iteration for 0.05 s of evaluation, its cores busy spinning.

How. NumPy's wheels and scipy's wheels each bundle their own OpenBLAS
(``scipy_openblas64_`` and ``scipy_openblas``), so the one scipy uses can be
told to use one thread (``<prefix>openblas_set_num_threads``, found with
ctypes in the wheel's ``scipy.libs`` folder) without touching the threads of
NumPy's, which runs the network's matrix products. Where that library is not
found (scipy built against MKL, Accelerate, a system BLAS), nothing changes.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def scipy_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS bundled with scipy, or None."""
    try:
        import scipy
    except ImportError:
        return None
    root = Path(scipy.__file__).resolve().parent
    candidates = sorted((root.parent / "scipy.libs").glob("libscipy_openblas*")) \
        + sorted((root / ".dylibs").glob("libscipy_openblas*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))
            get, put = lib.scipy_openblas_get_num_threads, lib.scipy_openblas_set_num_threads
        except (OSError, AttributeError):
            continue
        get.restype, get.argtypes = ctypes.c_int, []
        put.restype, put.argtypes = None, [ctypes.c_int]
        return get, put
    return None


@contextmanager
def scipy_blas_threads(count: int = 1):
    """Run the block with scipy's bundled OpenBLAS on ``count`` threads, then restore its setting."""
    found = scipy_openblas()
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
