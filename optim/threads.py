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

How. scipy's wheels bundle their own OpenBLAS, apart from NumPy's, which runs
the network's matrix products: ``minivgg.blas`` finds it and sets its thread
count alone. Where it is not found (scipy built against MKL, Accelerate, a
system BLAS), nothing changes.
"""
from __future__ import annotations

from minivgg.blas import blas_threads, bundled_openblas


def scipy_openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS bundled with scipy, or None."""
    return bundled_openblas("scipy")


def scipy_blas_threads(count: int = 1):
    """Run the block with scipy's bundled OpenBLAS on ``count`` threads, then restore its setting
    (a context manager; yields the count it had, or None where that library is not found)."""
    return blas_threads("scipy", count)
