"""The one place that knows about NumPy versus CuPy.

Every maths function in this project starts with ``xp = get_array_module(x)``
and uses only ``xp.*`` afterwards: the array's own type picks the backend,
nothing global does. This module is the only one that imports CuPy, and the
only one in the maths code that imports NumPy by name.

    get_array_module(*arrays)  -> numpy or cupy
    to_device(x, device)       -> array on "cpu" (NumPy) or "gpu" (CuPy)
    to_numpy(x)                -> NumPy array (copies from the GPU if needed)
    gpu_status()               -> (available: bool, reason: str)
    empty(xp, shape, dtype)    -> xp.empty, or reused memory while an ArrayPool is active
    work(xp, sizes, dtype)     -> 1-D work arrays, likewise
    channels_last(x)           -> whether an (N, C, H, W) array's memory is (N, H, W, C)
    flat_spatial(x)            -> (N, C, H*W) view of x in either layout
    flat_memory(x)             -> 1-D view of x's elements in memory order
    dense(x)                   -> x if its memory is packed in either layout, else a C-order copy
    prefix_view(flat, shape)   -> the start of a work array as an array of shape
    padded_rows(x, r0, r1, pw, buf) -> rows of x with zero padding, in buf
"""
from __future__ import annotations

import contextvars
import math
import sys
import threading

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


_ACTIVE_POOL = contextvars.ContextVar("minivgg_array_pool", default=None)


class ArrayPool:
    """Memory for the same arrays, evaluation after evaluation (NumPy; CuPy has a pool of its own).

    An optimiser calls the objective hundreds of times, and every call
    allocates the same arrays in the same order. Asked of the C library anew, a
    large array is fresh pages that the kernel must fault in and zero at first
    touch: at 512 x 512 that was about 11,000 page faults and 0.2 s of system
    time per evaluation, and evaluations alternated between 1.3 and 1.7 s.
    While a pool is active (``with pool:``), ``empty`` and ``work`` take their
    memory from it instead (``Objective`` holds one).

    What goes through it is chosen so that it costs no memory at the peak: the
    layers' outputs (``empty``: all alive at the peak, in the backward, anyway)
    and the convolutions' work buffers (``work``: one buffer, the largest
    band). Not the gradients of the walk down: each lives for one layer, and
    a pool keeping one per size would hold ~70 MB more at 512 x 512 than the C
    library, which reuses a freed gradient's memory for the next, larger one.

    Reuse never aliases an array somebody holds. Every NumPy view keeps the
    array that owns its memory as its ``base`` (NumPy collapses chains of
    views), so the owner's CPython reference count is the pool's own
    references plus one per living view; a buffer is handed out again only
    when its count is what a buffer referenced by the pool alone reports
    (measured once, the same way, so it holds on any CPython), i.e. no array
    made from it is alive: a gradient the caller kept, features a notebook
    holds. A lock makes the check and the hand-out one step across threads.

    ``trim()`` forgets the buffers not handed out since the previous ``trim``:
    called once per evaluation, it keeps the pool to one evaluation's working
    set (the same arrays that are alive at its peak anyway).
    """

    def __init__(self):
        self._by_size = {}       # nbytes -> [uint8 buffers of exactly that size]
        self._work = [None]      # one grow-only buffer for ``work``
        self._used = set()       # id() of the buffers handed out since the last trim
        self._token = None
        self._lock = threading.Lock()

    def __enter__(self):
        self._token = _ACTIVE_POOL.set(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE_POOL.reset(self._token)
        self._token = None

    @property
    def nbytes(self) -> int:
        """Bytes the pool holds (free or in use)."""
        held = sum(buf.nbytes for same in self._by_size.values() for buf in same)
        return held + (self._work[0].nbytes if self._work[0] is not None else 0)

    def empty(self, shape, dtype):
        """An uninitialised NumPy array: a free pooled buffer of exactly its size, or a new one."""
        dtype = numpy.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        with self._lock:
            same = self._by_size.setdefault(nbytes, [])
            buf = next((same[i] for i in range(len(same)) if _unreferenced(same, i)), None)
            if buf is None:
                buf = numpy.empty(nbytes, dtype=numpy.uint8)
                same.append(buf)
            self._used.add(id(buf))
            return buf.view(dtype).reshape(shape)

    def work(self, sizes, dtype) -> list:
        """1-D arrays of ``sizes`` elements, carved one after another from the pool's work buffer.

        The buffer grows to the largest request; while the arrays of an earlier
        call are still alive a fresh buffer is used instead.
        """
        dtype = numpy.dtype(dtype)
        align = max(1, 64 // dtype.itemsize)                  # each array starts on a cache line
        offsets, total = [], 0
        for n in sizes:
            offsets.append(total)
            total += -(-n // align) * align
        nbytes = total * dtype.itemsize + 64
        with self._lock:
            if self._work[0] is None or self._work[0].nbytes < nbytes or not _unreferenced(self._work, 0):
                self._work[0] = None                          # let an unused old one go first
                self._work[0] = numpy.empty(nbytes, dtype=numpy.uint8)
            buf = self._work[0]
            start = -buf.ctypes.data % 64
            flat = buf[start:start + total * dtype.itemsize].view(dtype)
            return [flat[o:o + n] for o, n in zip(offsets, sizes)]

    def trim(self) -> None:
        """Forget the buffers not handed out since the last trim (arrays still using them live on)."""
        with self._lock:
            for nbytes in list(self._by_size):
                kept = [buf for buf in self._by_size[nbytes] if id(buf) in self._used]
                if kept:
                    self._by_size[nbytes] = kept
                else:
                    del self._by_size[nbytes]
            self._used.clear()


def _reference_count(buffers: list, i: int) -> int:
    return sys.getrefcount(buffers[i])


# What _reference_count reports for an array that only its list refers to (2 on CPython up to
# 3.13: the list's reference and the argument's; measured rather than assumed, since newer
# interpreters may skip counting the argument).
_ALONE = _reference_count([numpy.empty(0, dtype=numpy.uint8)], 0)


def _unreferenced(buffers: list, i: int) -> bool:
    """Whether nothing but the list ``buffers`` refers to ``buffers[i]`` (no view of it is alive)."""
    return _reference_count(buffers, i) == _ALONE


def empty(xp, shape, dtype, channels_last: bool = False, pooled: bool = True):
    """``xp.empty(shape, dtype)``, or memory from the active ``ArrayPool`` (NumPy arrays only).

    ``channels_last`` (4-D shapes): the memory is laid out (N, H, W, C) and the
    array returned is its (N, C, H, W) transposed view (``channels_last``).
    ``pooled=False``: plain memory even while a pool is active (the walk's gradients).
    """
    if channels_last:
        n, c, h, w = shape
        return empty(xp, (n, h, w, c), dtype, pooled=pooled).transpose(0, 3, 1, 2)
    pool = _ACTIVE_POOL.get()
    if pool is None or xp is not numpy or not pooled:
        return xp.empty(shape, dtype=dtype)
    return pool.empty(shape, dtype)


def channels_last(x) -> bool:
    """Whether x (N, C, H, W) is a view of packed (N, H, W, C) memory: channel vectors contiguous.

    Every layer takes arrays of the logical shape (N, C, H, W), whatever their
    memory order, and gives its outputs the order of its input; ``VGG19``
    keeps its activations channels-last on the CPU, which makes Winograd's tile
    copies move whole channel vectors instead of single floats (``minivgg.winograd``).
    """
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def flat_spatial(x):
    """x (N, C, H, W) as (N, C, H*W), a view for C-order and channels-last memory alike.

    For channels-last x it is the transpose of an (N, H*W, C) matrix, which
    matrix products take as it is (a transposed operand); ``x.reshape`` would copy.
    """
    n, c, h, w = x.shape
    if channels_last(x) and not x.flags.c_contiguous:
        return x.transpose(0, 2, 3, 1).reshape(n, h * w, c).transpose(0, 2, 1)
    return x.reshape(n, c, h * w)


def flat_memory(x):
    """The elements of a ``dense`` x as a 1-D view in memory order (for sums over all of them:
    ``vdot`` of a channels-last array would copy it into C order first)."""
    if channels_last(x) and not x.flags.c_contiguous:
        return x.transpose(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


def dense(x):
    """x itself when its memory is packed in C order or channels-last, else a C-order copy."""
    if x.flags.c_contiguous or channels_last(x):
        return x
    return get_array_module(x).ascontiguousarray(x)


def work(xp, sizes, dtype) -> list:
    """1-D work arrays of ``sizes`` elements (contents undefined), from the active ``ArrayPool`` if any.

    For a function's temporaries that never leave it: with a pool active they
    share one buffer that the next ``work`` call reuses.
    """
    pool = _ACTIVE_POOL.get()
    if pool is None or xp is not numpy:
        return [xp.empty(n, dtype=dtype) for n in sizes]
    return pool.work(sizes, dtype)


def prefix_view(flat, shape):
    """The first prod(shape) elements of the 1-D array ``flat`` as a C-contiguous array of ``shape``.

    How a work buffer sized for the largest tile serves the smaller ones: a
    prefix of a contiguous buffer reshapes without a copy.
    """
    return flat[:math.prod(shape)].reshape(shape)


def padded_rows(x, r0: int, r1: int, pw: int, buf):
    """Rows r0..r1 of x (N, C, H, W) (rows outside 0..H are zeros), pw zero columns on the left.

    buf: (N, C, r1 - r0, width) with width >= W + 2*pw; every column from
    pw + W on is zero (a wider buffer just has more of them: Winograd's tiles
    can overhang the image). Fully overwritten and returned.
    """
    h, w = x.shape[2:]
    lo = max(r0, 0)                                                 # first row inside the image
    hi = max(min(r1, h), lo)                                        # one past the last (lo if none)
    buf[:, :, :lo - r0] = 0                                         # rows above the image
    buf[:, :, hi - r0:] = 0                                         # rows below it
    buf[:, :, :, :pw] = 0                                           # left padding
    buf[:, :, :, pw + w:] = 0                                       # right padding
    buf[:, :, lo - r0:hi - r0, pw:pw + w] = x[:, :, lo:hi]          # (N, C, hi-lo, W)
    return buf
