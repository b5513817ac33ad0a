"""Each kernel's report of the bytes it keeps and takes (what ``minivgg.memory`` adds up), held to what
the kernel really takes: from an ``ArrayPool`` (its one work buffer) where the fast engine gives it one,
else as NumPy allocations traced by ``tracemalloc``. (Tiled im2col's figure: tests/test_fast_conv.py.)"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from gradcheck import channels_last_copy
from minivgg import pool as reference_pool
from minivgg.fast import lean, pooling, winograd
from minivgg.fast.arrays import ArrayPool

ALIGN = 64   # ArrayPool.work starts each array on a cache line and keeps 64 bytes to align the buffer


def _work_slack(arrays: int) -> int:
    """What ``ArrayPool.work`` may hold beyond the arrays' own bytes: alignment only."""
    return arrays * ALIGN + ALIGN


#: What NumPy may take beyond the arrays a kernel makes: a ufunc over strided or cast operands
#: copies them through buffers of ``numpy.getbufsize()`` elements (measured here: 5 to 34 kB,
#: whatever the array's size), and tracemalloc counts some bookkeeping.
UFUNC_SLACK = np.getbufsize() * 8 + 4096


def _traced(fn):
    """(fn(), the most bytes allocated at once while fn ran): what it returns and its temporaries."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak - before


# (C, O, H, W): tiles that do and do not divide the image, one band or several (the last one shorter).
WINOGRAD_SHAPES = [(16, 32, 24, 40), (64, 48, 37, 29), (256, 256, 64, 64)]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("c,o,h,w", WINOGRAD_SHAPES)
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("separable", [False, True])
def test_winograd_reports_what_it_keeps_and_takes_from_a_pool(m, c, o, h, w, last, separable):
    """``weights_bytes`` is what prepare keeps (U, and U^T in the forward's order for thin layers);
    ``temporary_bytes`` is the work buffer conv3x3 takes, forward
    (C -> O) and backward (O -> C), in either memory order, with either input transform."""
    rng = np.random.default_rng(1)
    order = channels_last_copy if last else (lambda a: a)
    weights = winograd.prepare(rng.standard_normal((o, c, 3, 3)).astype(np.float32), m)
    assert weights.nbytes == winograd.weights_bytes(o, c, m, 4)
    assert (weights.u_forward is not None) == (c * o <= 64 * 128)             # the thin layers' second U
    rows = winograd.band_rows(c, o, h, w, m, 4, weights.u.nbytes)
    assert (rows < -(-h // m)) == ((c, h) == (256, 64))                      # the last shape runs in bands
    for backward in (False, True):
        cin, cout = (o, c) if backward else (c, o)
        x = order(rng.standard_normal((1, cin, h, w)).astype(np.float32))
        pool = ArrayPool()
        out = winograd.conv3x3(x, weights, backward=backward, pool=pool, separable=separable)
        taken = pool.nbytes - (0 if backward else out.nbytes)              # the forward's out is pooled
        want = winograd.temporary_bytes(cin, cout, h, w, m, 4, separable=separable)
        assert want <= taken <= want + _work_slack(len(winograd.BandWork._fields)), (backward, taken, want)


@pytest.mark.parametrize("shape,kernel,stride", [((1, 64, 40, 56), 2, 2), ((1, 128, 200, 301), 2, 2),
                                                 ((2, 5, 9, 11), 3, 3), ((1, 6, 13, 11), 3, 2)])
@pytest.mark.parametrize("last", [False, True])
def test_average_pooling_reports_its_row_sums(shape, kernel, stride, last):
    """``pooling.workspace_bytes``: the row block from the pool's work buffer, one block or many; with
    overlapping windows the backward's share dout / k^2 in plain memory instead (traced)."""
    rng = np.random.default_rng(2)
    order = channels_last_copy if last else (lambda a: a)
    x = order(rng.standard_normal(shape).astype(np.float32))
    pool = ArrayPool()
    out, cache = pooling.avg_pool2d_forward(x, kernel, stride, pool=pool)
    want = pooling.workspace_bytes(shape, kernel, stride, 4)
    assert want <= pool.nbytes - out.nbytes <= want + _work_slack(1)
    dout = order(rng.standard_normal(out.shape).astype(np.float32))
    pool = ArrayPool()
    dx, taken = _traced(lambda: pooling.avg_pool2d_backward(dout, cache, pool=pool))
    want = pooling.workspace_bytes(shape, kernel, stride, 4, backward=True)
    if stride == kernel:
        assert want <= pool.nbytes <= want + _work_slack(1)
    else:
        # the share; the strided += goes through ufunc buffers, and the interpreter's cells for the
        # row-block closure of the other branch (about 0.4 kB) count too
        assert pool.nbytes == 0 and want <= taken - dx.nbytes <= want + UFUNC_SLACK


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("shape", [(1, 64, 64, 96), (2, 32, 31, 45)])
def test_the_reference_poolings_report_what_they_allocate(kind, shape):
    """``minivgg.pool.workspace_bytes`` (the reference engine's poolings, and the fast one's max
    pooling) against tracemalloc: the peak beyond the output and the cache they return."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    forward = getattr(reference_pool, f"{kind}_pool2d_forward")
    backward = getattr(reference_pool, f"{kind}_pool2d_backward")
    (out, cache), taken = _traced(lambda: forward(x, 2, 2))
    kept = getattr(cache, "argmax", out[:0]).nbytes                          # max pooling's int8 winners
    want = reference_pool.workspace_bytes(kind, shape, 2, 2, 4)
    assert want <= taken - out.nbytes - kept <= want + UFUNC_SLACK
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, taken = _traced(lambda: backward(dout, cache))
    want = reference_pool.workspace_bytes(kind, shape, 2, 2, 4, backward=True)
    assert want <= taken - dx.nbytes <= want + UFUNC_SLACK


@pytest.mark.parametrize("shape", [(1, 64, 40, 56), (1, 3, 5, 7)])
@pytest.mark.parametrize("last", [False, True])
def test_lean_mode_reports_its_bits_and_masks(shape, last):
    """``lean.packed_bytes`` is what pack_relu keeps; ``lean.workspace_bytes`` the boolean mask it
    packs, and the 0/1 bytes the backward unpacks (traced)."""
    rng = np.random.default_rng(4)
    order = channels_last_copy if last else (lambda a: a)
    out = order(np.maximum(rng.standard_normal(shape), 0).astype(np.float32))
    packed, taken = _traced(lambda: lean.pack_relu(out))
    assert packed.bits.nbytes == lean.packed_bytes(shape)
    want = lean.workspace_bytes(shape)
    assert want <= taken - packed.bits.nbytes <= want + UFUNC_SLACK
    dout = order(rng.standard_normal(shape).astype(np.float32))
    dx, taken = _traced(lambda: lean.packed_relu_backward(dout, packed))
    want = lean.workspace_bytes(shape, backward=True)
    assert want <= taken - dx.nbytes <= want + UFUNC_SLACK
