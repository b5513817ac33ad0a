"""Memory for the same arrays, evaluation after evaluation: an explicit array pool.

An optimiser calls the objective hundreds of times, and every call allocates
the same arrays in the same order. Asked of the C library anew, a large array
is fresh pages that the kernel must fault in and zero at first touch: at
512 x 512 that was about 11,000 page faults and 0.2 s of system time per
evaluation, and evaluations alternated between 1.3 and 1.7 s. With a pool, the
next evaluation gets the previous one's memory back instead. Its gain today, as
a switch of the fast engine (``Transforms.array_pool``):
``python -m minivgg.bench --sizes 256 512 --ablate``.

The pool is an object, passed to whoever allocates from it (``empty(pool, ...)``,
``work(pool, ...)``); ``pool=None`` everywhere means plain ``xp.empty``. Its
lifetime rule is explicit, not inferred:

* an array from ``empty`` is the pool's again after ``pool.recycle()``: the
  owner (``minivgg.fast.objective.FastEvaluator``) calls it between two
  evaluations, when nothing made during the first is used any more. What an
  evaluation hands back to its caller (the gradient, the losses) never comes
  from the pool;
* the arrays of one ``work`` call are valid until the next ``work`` call on
  the same pool: a function's own temporaries (the convolutions' tiles and
  bands, pooling's row sums), never kept beyond the function.

What goes through the pool costs no memory at the peak: the layers' outputs
(all alive at the peak, in the backward, anyway) and the work buffer (one
buffer, the largest band). The gradients of the walk down do not: each lives
for one layer, and the C library reuses a freed gradient's memory for the next
one (a pool keeping one per size held ~70 MB more at 512 x 512). They take a
pooled buffer only when one of their size is free (``empty(..., only_free=True)``).

Arrays that die before the evaluation ends can be given back early,
``pool.release(array)``: the next ``empty`` of that size may hand the buffer out
again. The lean mode (``minivgg.fast.lean``) gives back every activation that
is not a tap once the next layer has read it, and ``trim``s the pool's free
buffers after the forward.

NumPy only (CuPy has a pool of its own); one evaluation at a time (no lock).
"""
from __future__ import annotations

import math

import numpy


class ArrayPool:
    """Buffers handed out during one evaluation, handed out again in the next (module docstring)."""

    def __init__(self):
        self._free = {}        # nbytes -> [uint8 buffers of exactly that size, free in this evaluation]
        self._taken = []       # buffers handed out since the last recycle, in order
        self._work = None      # one grow-only buffer for ``work``
        self._released = []    # buffers given back by ``release`` during this evaluation

    @property
    def nbytes(self) -> int:
        """Bytes the pool holds (free or in use)."""
        held = sum(buf.nbytes for same in self._free.values() for buf in same)
        held += sum(buf.nbytes for buf in self._taken)
        return held + (0 if self._work is None else self._work.nbytes)

    def empty(self, shape, dtype, *, only_free: bool = False):
        """An uninitialised NumPy array: a free buffer of exactly its size, or a new one.

        ``only_free``: never a new one (None instead), so that nothing new is kept.
        """
        dtype = numpy.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        same = self._free.get(nbytes)
        if not same and only_free:
            return None
        buf = same.pop() if same else numpy.empty(nbytes, dtype=numpy.uint8)
        self._taken.append(buf)
        return buf.view(dtype).reshape(shape)

    def release(self, array) -> bool:
        """Give the buffer under ``array`` back before the evaluation ends: the next ``empty`` of
        its size may hand it out again. False (nothing done) when it is not one of this
        evaluation's buffers. The caller promises that nothing uses the array any more."""
        i = self._index(array)
        if i is None:
            return False
        buf = self._taken.pop(i)
        self._free.setdefault(buf.nbytes, []).append(buf)
        self._released.append(buf)
        return True

    def trim(self) -> None:
        """Let go of every free buffer (memory back to the C library): for when what is left of an
        evaluation allocates in other sizes than it released, as the lean mode's walk down."""
        self._free, self._released = {}, []

    def owns(self, array) -> bool:
        """Whether ``array`` lies in a buffer this evaluation took from the pool (and did not release)."""
        return self._index(array) is not None

    def _index(self, array):
        """Position in ``_taken`` of the buffer under ``array`` (following ``.base``), or None."""
        base = array
        while base is not None:
            for i, buf in enumerate(self._taken):
                if buf is base:
                    return i
            base = getattr(base, "base", None)
        return None

    def work(self, sizes, dtype) -> list:
        """1-D arrays of ``sizes`` elements, carved one after another from the work buffer.

        The buffer grows to the largest request. The arrays of the previous
        call share its memory: they must no longer be in use.
        """
        dtype = numpy.dtype(dtype)
        align = max(1, 64 // dtype.itemsize)                  # each array starts on a cache line
        offsets, total = [], 0
        for n in sizes:
            offsets.append(total)
            total += -(-n // align) * align
        nbytes = total * dtype.itemsize + 64
        if self._work is None or self._work.nbytes < nbytes:
            self._work = None                                 # let the old one go first
            self._work = numpy.empty(nbytes, dtype=numpy.uint8)
        start = -self._work.ctypes.data % 64
        flat = self._work[start:start + total * dtype.itemsize].view(dtype)
        return [flat[o:o + n] for o, n in zip(offsets, sizes)]

    def recycle(self) -> None:
        """Every buffer handed out since the last recycle is free again; the rest are forgotten.

        Call it between evaluations, when no array made from the pool is in
        use. Forgetting the buffers the last evaluation did not ask for keeps
        the pool to one evaluation's working set.
        """
        free_now = {id(buf): buf for same in self._free.values() for buf in same}
        spare = {id(buf): buf for buf in self._released if id(buf) in free_now}   # once each
        self._free = {}
        for buf in self._taken + list(spare.values()):
            self._free.setdefault(buf.nbytes, []).append(buf)
        self._taken, self._released = [], []


def empty(pool, xp, shape, dtype, channels_last: bool = False, *, only_free: bool = False):
    """``xp.empty(shape, dtype)``, from ``pool`` when one is given (NumPy arrays only).

    ``channels_last`` (4-D shapes): the memory is laid out (N, H, W, C) and the
    array returned is its (N, C, H, W) transposed view (``minivgg.fast.layout``).
    ``only_free``: from the pool only if it has a free buffer of exactly that size,
    else plain memory: for arrays that live briefly, like the walk down's
    gradients, which a pool would otherwise hold to the end of the evaluation.
    """
    if channels_last:
        n, c, h, w = shape
        return empty(pool, xp, (n, h, w, c), dtype, only_free=only_free).transpose(0, 3, 1, 2)
    got = None if pool is None or xp is not numpy else pool.empty(shape, dtype, only_free=only_free)
    return xp.empty(shape, dtype=dtype) if got is None else got


def release(pool, array) -> None:
    """``pool.release(array)`` when there is a pool (see ``ArrayPool.release``); else nothing."""
    if pool is not None and isinstance(array, numpy.ndarray):
        pool.release(array)


def work(pool, xp, sizes, dtype) -> list:
    """1-D work arrays of ``sizes`` elements (contents undefined), from ``pool``'s work buffer if given.

    For a function's temporaries that never leave it (valid until the pool's next ``work`` call).
    """
    if pool is None or xp is not numpy:
        return [xp.empty(n, dtype=dtype) for n in sizes]
    return pool.work(sizes, dtype)

