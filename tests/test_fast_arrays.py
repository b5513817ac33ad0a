"""The fast engine's explicit ArrayPool and its channels-last views."""
from __future__ import annotations

import numpy as np

from minivgg.fast.arrays import ArrayPool, empty, release, work
from minivgg.fast.layout import channels_last, dense, flat_memory, flat_spatial


def test_array_pool_hands_buffers_out_again_only_after_recycle():
    pool = ArrayPool()
    a = empty(pool, np, (4, 5), np.float32)
    b = empty(pool, np, (20,), np.int32)                 # same byte size, same evaluation: new memory
    assert b.ctypes.data != a.ctypes.data
    assert empty(None, np, (4, 5), np.float32).ctypes.data not in (a.ctypes.data, b.ctypes.data)
    held = pool.nbytes
    first = {a.ctypes.data, b.ctypes.data}
    pool.recycle()                                       # the next evaluation: both are free again
    c = empty(pool, np, (2, 10), np.float32)
    d = empty(pool, np, (80,), np.uint8)
    assert {c.ctypes.data, d.ctypes.data} == first and c.shape == (2, 10) and c.dtype == np.float32
    assert pool.nbytes == held
    e = empty(pool, np, (3,), np.float64)                 # a size not seen before: a new buffer
    assert e.ctypes.data not in first and pool.nbytes == held + 24
    pool.recycle()
    empty(pool, np, (4, 5), np.float32)                   # only one of the three asked for this time
    pool.recycle()                                        # the two not asked for are forgotten
    assert pool.nbytes == 80


def test_array_pool_release_reuse_and_trim():
    """A released buffer is handed out again in the same evaluation, once; ``only_free`` takes only
    free buffers; released buffers not taken again are kept over ``recycle``; ``trim`` lets go."""
    pool = ArrayPool()
    a = empty(pool, np, (2, 3, 4, 5), np.float32, channels_last=True)     # a transposed view
    b = empty(pool, np, (120,), np.float32)
    assert pool.owns(a) and pool.owns(b[10:20]) and not pool.owns(np.empty(120, np.float32))
    assert empty(pool, np, (120,), np.float32, only_free=True).ctypes.data not in (a.ctypes.data, b.ctypes.data)
    assert pool.nbytes == 2 * 480                                         # that one was plain memory
    release(pool, a)                                                      # through the view's base
    assert not pool.owns(a) and not pool.release(a)                       # a second release does nothing
    release(None, b)                                                      # no pool: nothing
    c = empty(pool, np, (4, 30), np.float32, only_free=True)                       # a's buffer, again
    assert c.ctypes.data == a.ctypes.data and pool.owns(c)
    assert empty(pool, np, (120,), np.float32).ctypes.data not in (a.ctypes.data, b.ctypes.data)
    pool.release(c)
    pool.release(c)                                                       # released once only
    pool.recycle()                                                        # b, the third, and a's (free)
    assert pool.nbytes == 3 * 480
    got = {empty(pool, np, (120,), np.float32).ctypes.data for _ in range(3)}
    assert len(got) == 3 and a.ctypes.data in got and b.ctypes.data in got
    assert empty(pool, np, (120,), np.float32, only_free=True).ctypes.data not in got   # none free: plain
    pool.recycle()
    pool.trim()
    assert pool.nbytes == 0


def test_array_pool_work_buffers():
    pool = ArrayPool()
    assert [w.shape for w in work(None, np, (3, 0, 7), np.float32)] == [(3,), (0,), (7,)]   # no pool
    first = work(pool, np, (10, 100, 5), np.float32)
    assert [w.shape for w in first] == [(10,), (100,), (5,)]
    assert all(w.ctypes.data % 64 == 0 for w in first)            # each on a cache line
    first[0][:] = 1
    first[1][:] = 2                                               # no overlap
    assert float(first[0].sum()) == 10.0
    again = work(pool, np, (6,), np.float32)                      # the same buffer: the contract is
    assert again[0].ctypes.data == first[0].ctypes.data           # that first is no longer in use
    bigger = work(pool, np, (10_000,), np.float32)                # grows to the largest request
    assert pool.nbytes >= bigger[0].nbytes


def test_memory_orders():
    """Channels-last arrays: made by ``empty``, recognised, and flattened without copies."""
    c_order = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    last = empty(None, np, (2, 3, 4, 5), np.float32, channels_last=True)
    last[...] = c_order
    assert last.shape == (2, 3, 4, 5) and last.base.shape == (2, 4, 5, 3) and last.base.flags.c_contiguous
    assert channels_last(last) and not channels_last(c_order) and not last.flags.c_contiguous
    for a in (c_order, last):
        spatial = flat_spatial(a)
        assert spatial.shape == (2, 3, 20) and np.shares_memory(spatial, a)
        assert np.array_equal(spatial, c_order.reshape(2, 3, 20))
        flat = flat_memory(a)
        assert flat.shape == (120,) and np.shares_memory(flat, a) and float(flat @ flat) == float((a * a).sum())
        assert dense(a) is a
    scrambled = c_order[:, :, ::-1]
    assert not channels_last(scrambled) and dense(scrambled).flags.c_contiguous
    assert np.array_equal(dense(scrambled), scrambled) and np.array_equal(flat_spatial(scrambled),
                                                                          scrambled.reshape(2, 3, 20))
    pool = ArrayPool()
    pooled = empty(pool, np, (1, 2, 3, 4), np.float32, channels_last=True)
    assert pool.nbytes == pooled.nbytes and channels_last(pooled)
