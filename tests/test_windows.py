"""``minivgg.conv.windows``: the one strided view of every window (im2col, pooling, Winograd's tiles)."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import channels_last_copy, to_np
from minivgg.conv import windows


@pytest.mark.parametrize("size,stride,count", [((3, 3), (1, 1), (5, 7)), ((6, 6), (4, 4), (2, 3)),
                                               ((2, 1), (2, 1), (3, 9)), ((1, 3), (1, 2), (7, 4)),
                                               ((3, 2), (2, 3), (3, 3))])
def test_every_window_against_loops(xp, size, stride, count):
    """view[u, v, n, c, i, j] = a[n, c, SH*i + u, SW*j + v], in C order and channels-last alike."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 10, 14))
    (kh, kw), (sh, sw), (oh, ow) = size, stride, count
    want = np.empty((kh, kw, 2, 3, oh, ow))                    # every case fits 10 x 14
    for u in range(kh):
        for v in range(kw):
            for i in range(oh):
                for j in range(ow):
                    want[u, v, :, :, i, j] = a[:, :, sh * i + u, sw * j + v]
    for order in (lambda t: t, channels_last_copy):
        view = windows(order(xp.asarray(a)), size, stride, count)
        assert view.shape == want.shape and np.array_equal(to_np(view), want)


def test_writes_through_one_offset_reach_the_array():
    """col2im's use: adding through view[u, v], one offset at a time, sums where windows overlap."""
    a = np.zeros((1, 1, 5, 5))
    fields = windows(a, (3, 3), (1, 1), (3, 3))
    for u in range(3):
        for v in range(3):
            fields[u, v] += 1
    counts = np.minimum(np.minimum(np.arange(5), 4 - np.arange(5)) + 1, 3)
    assert np.array_equal(a[0, 0], np.outer(counts, counts))       # how many windows hold each pixel


def test_refuses_windows_past_the_edge():
    a = np.zeros((1, 1, 7, 9))
    assert windows(a, (3, 3), (2, 2), (3, 4)).shape == (3, 3, 1, 1, 3, 4)      # 2*2 + 3 = 7, 2*3 + 3 = 9
    with pytest.raises(ValueError, match="do not fit"):
        windows(a, (3, 3), (2, 2), (4, 4))
    with pytest.raises(ValueError, match="do not fit"):
        windows(a, (3, 3), (2, 2), (3, 5))
