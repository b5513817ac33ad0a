"""Winograd's bands dealt out to worker threads, the BLAS on one thread each (switch ``threads``).

Why. On the CPU an evaluation is about half matrix products and half copies:
the Winograd transforms' gathers and scatters, the padded bands, the ReLU
masks. NumPy runs a product on its OpenBLAS's threads but every copy on the
calling thread alone, and between two products OpenBLAS's idle threads spin,
waiting for the next call: on a 2-core machine one core copies while the other
spins. Here the bands of a convolution (each one padded rows -> gather ->
products -> scatter, on its own rows of the image: ``minivgg.fast.winograd``)
go to as many threads as the BLAS had, and the BLAS gets one thread: each
worker runs its bands' copies and products alike (NumPy lets go of the GIL in
both). The one-thread setting holds for a whole evaluation (``one_blas_thread``
around it), since one product on several threads anywhere in it (a Gram
matrix, conv1_1's im2col) would wake the spinning threads again.

Measured gain: ``python -m minivgg.bench --sizes 256 512 --ablate``, switch
``threads``. Where NumPy's bundled OpenBLAS is not found (``minivgg.blas``) or
has one thread, there is one worker and nothing changes.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from contextlib import contextmanager

from minivgg.blas import bundled_openblas

_lock = threading.Lock()
_depth = 0            # nesting of one_blas_thread blocks
_workers = 1          # their worker count, while _depth > 0
_restore = None       # the BLAS's thread count before the outermost block
_executor = None      # the worker threads beside the caller's own (made on first use, grown on demand)
_executor_size = 0


def blas_thread_count() -> int:
    """Threads NumPy's bundled OpenBLAS runs now (1 where it is not found)."""
    found = bundled_openblas("numpy")
    return 1 if found is None else max(1, found[0]())


@contextmanager
def one_blas_thread(enabled: bool = True):
    """Within: NumPy's OpenBLAS on one thread; yields the number of band workers to use.

    That is the thread count the BLAS had (1 when not ``enabled`` or where the
    library is not found). A block inside another yields the outer one's count
    and changes nothing; the outermost gives the BLAS its setting back, on
    errors too.
    """
    global _depth, _workers, _restore
    if not enabled:
        yield 1
        return
    with _lock:
        if _depth == 0:
            found = bundled_openblas("numpy")
            _restore = None if found is None else found[0]()
            _workers = max(1, _restore or 1)
            if _workers > 1:
                found[1](1)
        _depth += 1
        workers = _workers
    try:
        yield workers
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _restore is not None and _workers > 1:
                bundled_openblas("numpy")[1](_restore)


def run_workers(job, workers: int) -> None:
    """job(k, stop) for k in range(workers), k = 0 on the calling thread, the rest on worker threads.

    Returns when all have finished. ``stop`` is a ``threading.Event`` a job
    checks between its pieces of work: it is set when one job fails or the
    caller is interrupted (Ctrl-C), so the others end at their next check, and
    the error is raised once every job has ended (no thread is left writing into
    memory the caller may reuse).
    """
    stop = threading.Event()

    def guarded(k):
        try:
            job(k, stop)
        except BaseException:
            stop.set()                        # the others end at their next check
            raise
    if workers <= 1:
        job(0, stop)
        return
    futures = [_pool(workers - 1).submit(guarded, k) for k in range(1, workers)]
    try:
        guarded(0)
    finally:
        try:
            wait_all(futures)
        except BaseException:                 # interrupted while waiting: stop them, then wait
            stop.set()
            wait_all(futures)
            raise
    for future in futures:
        if future.exception() is not None:
            raise future.exception()


def run_split(fn, n: int, workers: int) -> None:
    """fn(lo, hi) over range(n) cut into at most ``workers`` contiguous parts, one per worker
    (``run_workers``); for elementwise passes and span loops."""
    workers = max(1, min(workers, n))
    cuts = [n * k // workers for k in range(workers + 1)]
    run_workers(lambda k, stop: fn(cuts[k], cuts[k + 1]), workers)


def _pool(size: int) -> ThreadPoolExecutor:
    """The worker threads, at least ``size`` of them."""
    global _executor, _executor_size
    with _lock:
        if _executor is None or _executor_size < size:
            old = _executor
            _executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="minivgg-band")
            _executor_size = size
            if old is not None:
                old.shutdown(wait=False)
        return _executor
