"""The fast engine's average pooling (separable sums in row blocks, either memory order) against loops
and against its reference twin, ``minivgg.pool``."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import channels_last_copy, rel_error, to_np
from minivgg import pool as reference
from minivgg.fast import pooling
from minivgg.fast.arrays import ArrayPool
from minivgg.fast.layout import channels_last


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 3), (3, 2)])
def test_avg_pool_matches_loops_in_row_blocks_and_either_memory_order(xp, monkeypatch, kernel, stride):
    """The separable sums, one block of rows or many, C order or channels-last, against loops."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 9, 11))
    oh, ow = (9 - kernel) // stride + 1, (11 - kernel) // stride + 1
    dout = rng.standard_normal((2, 5, oh, ow))
    want = np.zeros((2, 5, oh, ow))
    want_dx = np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            window = (slice(None), slice(None), slice(stride * i, stride * i + kernel),
                      slice(stride * j, stride * j + kernel))
            want[:, :, i, j] = x[window].mean(axis=(2, 3))
            want_dx[window] += dout[:, :, i, j][:, :, None, None] / kernel**2
    results = []
    for last in (False, True):
        as_order = channels_last_copy if last else (lambda a: a)
        for block_bytes in (pooling.POOL_BLOCK_BYTES, 8 * 2 * 5 * 11):     # all rows, then one per block
            monkeypatch.setattr(pooling, "POOL_BLOCK_BYTES", block_bytes)
            out, cache = pooling.avg_pool2d_forward(as_order(xp.asarray(x)), kernel, stride)
            dx = pooling.avg_pool2d_backward(as_order(xp.asarray(dout)), cache)
            assert rel_error(out, want) < 1e-14 and rel_error(dx, want_dx) < 1e-14
            assert channels_last(out) == channels_last(dx) == last        # the input's order kept
            assert out.flags.c_contiguous != last and dx.flags.c_contiguous != last
            results.append((to_np(out), to_np(dx)))
    assert pooling._row_block(2 * 5 * 11, oh, 8) == 1
    assert all(np.array_equal(a, b) for other in results[1:] for a, b in zip(results[0], other))


@pytest.mark.parametrize("shape", [(1, 64, 32, 48), (2, 3, 7, 9), (1, 5, 6, 5)])
def test_matches_the_reference_twin_with_a_pool(xp, shape):
    """Same values as the k*k window sums of minivgg.pool, with and without an ArrayPool."""
    rng = np.random.default_rng(5)
    x = xp.asarray(rng.standard_normal(shape))
    want, want_cache = reference.avg_pool2d_forward(x, 2, 2)
    dout = xp.asarray(rng.standard_normal(want.shape))
    want_dx = reference.avg_pool2d_backward(dout, want_cache)
    for pool in (None, ArrayPool()):
        got, cache = pooling.avg_pool2d_forward(x, 2, 2, pool=pool)
        assert cache == want_cache and rel_error(got, want) < 1e-15
        assert rel_error(pooling.avg_pool2d_backward(dout, cache, pool=pool), want_dx) < 1e-15


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_share_the_blocks(monkeypatch, workers):
    """Blocks of rows dealt out to threads, a row-sum buffer each (one output row a block here, an odd
    number of blocks): the same values as one thread, to the last bit, forward and backward, from a
    pool whose work buffer then holds one buffer per worker (``workspace_bytes``)."""
    monkeypatch.setattr(pooling, "POOL_BLOCK_BYTES", 8 * 5 * 18)       # one output row a block
    rng = np.random.default_rng(6)
    x = channels_last_copy(rng.standard_normal((1, 5, 18, 18)))        # 9 output rows: 9 blocks
    dout = channels_last_copy(rng.standard_normal((1, 5, 9, 9)))
    one, cache = pooling.avg_pool2d_forward(x, 2, 2)
    one_dx = pooling.avg_pool2d_backward(dout, cache)
    for backward in (False, True):
        pool = ArrayPool()
        if backward:
            got = pooling.avg_pool2d_backward(dout, cache, pool=pool, workers=workers)
            assert np.array_equal(got, one_dx) and channels_last(got)
        else:
            got, _ = pooling.avg_pool2d_forward(x, 2, 2, pool=pool, workers=workers)
            assert np.array_equal(got, one) and channels_last(got)
        taken = pool._work.nbytes - 64
        want = pooling.workspace_bytes(x.shape, 2, 2, 8, backward=backward, workers=workers)
        assert want == workers * 5 * 18 * 8 and want <= taken < want + workers * 64
