"""Average and max pooling, no padding, floor output size.

Shape legend
    N, C, H, W   input        k  kernel (KH = KW = k)    s  stride
    OH = (H - k) // s + 1     OW = (W - k) // s + 1
    x: (N, C, H, W)  ->  out, dout: (N, C, OH, OW)

VGG uses k = 2, s = 2: an odd last row or column is dropped (floor), as
PAPER.md specifies. Both poolings loop only over the k*k kernel offsets, each
a strided slice of the whole batch (``window``), never over pixels.
``minivgg.fast.pooling`` sums average pooling's windows separably instead.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minivgg.backend import get_array_module
from minivgg.conv import output_size, windows


def pool_output_size(h: int, w: int, kernel: int, stride: int) -> tuple[int, int]:
    """(OH, OW) = ((H - k) // s + 1, (W - k) // s + 1): the convolution's rule
    (``minivgg.conv.output_size``) without padding; refuses an input smaller than the kernel."""
    if h < kernel or w < kernel:
        raise ValueError(f"a {kernel}x{kernel} pooling window does not fit a {h}x{w} input")
    return output_size(h, w, kernel, kernel, stride, 0)


def pooling_windows(a, kernel: int, stride: int, oh: int, ow: int):
    """(K, K, N, C, OH, OW) view of ``a``: [u, v] is offset (u, v) of every pooling window,
    view[u, v, n, c, i, j] = a[n, c, s*i + u, s*j + v] (``minivgg.conv.windows``)."""
    return windows(a, (kernel, kernel), (stride, stride), (oh, ow))


class AvgPoolCache(NamedTuple):
    """Only the input shape: average pooling is linear, so backward needs no values."""

    x_shape: tuple
    kernel: int
    stride: int


def avg_pool2d_forward(x, kernel: int = 2, stride: int = 2):
    """out[n,c,i,j] = mean of x over the k x k window at (s*i, s*j); x (N,C,H,W) -> (N,C,OH,OW)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, w, kernel, stride)
    out = xp.zeros((n, c, oh, ow), dtype=x.dtype)                 # (N, C, OH, OW)
    fields = pooling_windows(x, kernel, stride, oh, ow)
    for u in range(kernel):
        for v in range(kernel):
            out += fields[u, v]                                    # offset (u, v) of every window
    out /= kernel * kernel
    return out, AvgPoolCache(x.shape, kernel, stride)


def avg_pool2d_backward(dout, cache: AvgPoolCache):
    """dx = dout / k^2 spread over each window (local derivative: 1/k^2 inside the window, 0 outside).

    Rows/columns dropped by the floor get zero gradient; overlapping windows (s < k) add up.
    """
    xp = get_array_module(dout)
    x_shape, kernel, stride = cache
    oh, ow = dout.shape[2:]
    share = dout / (kernel * kernel)                               # (N, C, OH, OW)
    dx = xp.zeros(x_shape, dtype=dout.dtype)                       # (N, C, H, W)
    fields = pooling_windows(dx, kernel, stride, oh, ow)           # overlapping: one offset at a time
    for u in range(kernel):
        for v in range(kernel):
            fields[u, v] += share
    assert dx.shape == x_shape
    return dx


class MaxPoolCache(NamedTuple):
    """The input shape and, per output, which of the k*k offsets won (int8, u*k + v).

    Keeping the winning offset (1 byte per output) instead of the input means
    backward needs no comparison and no copy of x.
    """

    x_shape: tuple
    argmax: object  # (N, C, OH, OW) int8
    kernel: int
    stride: int


def max_pool2d_forward(x, kernel: int = 2, stride: int = 2):
    """out[n,c,i,j] = max of x over the k x k window at (s*i, s*j); x (N,C,H,W) -> (N,C,OH,OW).

    Ties: the first maximal element in row-major window order wins (offsets are
    visited u-major and only a strictly larger value replaces the current one).
    """
    xp = get_array_module(x)
    if kernel * kernel > 127:
        raise ValueError("max pooling keeps the winning offset in int8: kernel must be at most 11")
    oh, ow = pool_output_size(x.shape[2], x.shape[3], kernel, stride)
    fields = pooling_windows(x, kernel, stride, oh, ow)
    out = xp.array(fields[0, 0])
    argmax = xp.zeros(out.shape, dtype=xp.int8)
    for u in range(kernel):
        for v in range(kernel):
            if u == 0 and v == 0:
                continue
            candidate = fields[u, v]
            larger = candidate > out
            out = xp.where(larger, candidate, out)
            argmax[larger] = u * kernel + v
    return out, MaxPoolCache(x.shape, argmax, kernel, stride)


def max_pool2d_backward(dout, cache: MaxPoolCache):
    """dx = dout routed to the winning element of each window (local derivative: 1 there, 0 elsewhere)."""
    xp = get_array_module(dout)
    x_shape, argmax, kernel, stride = cache
    oh, ow = dout.shape[2:]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    fields = pooling_windows(dx, kernel, stride, oh, ow)
    for u in range(kernel):
        for v in range(kernel):
            won = (argmax == u * kernel + v).astype(dout.dtype)
            fields[u, v] += dout * won
    assert dx.shape == x_shape
    return dx


def workspace_bytes(kind: str, x_shape, kernel: int, stride: int, itemsize: int, *,
                    backward: bool = False) -> int:
    """Bytes this module's ``kind`` ("avg" or "max") pooling takes besides its input, output and
    cache, for x of ``x_shape`` (N, C, H, W) (the memory model asks; the reference engine runs
    these poolings, and the fast one its max pooling): A = N*C*OH*OW outputs, s = itemsize.

    avg: forward 0 (it sums into out); backward the share dout / k^2, A*s.
    max: forward the comparison (A booleans) and ``where``'s new out beside the old (A*s);
    backward, at the second offset, the old 0/1 weights, the new comparison and the new
    weights (2*A*s + A), then the weights and their product with dout (2*A*s).
    """
    if kind not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', not {kind!r}")
    n, c, h, w = x_shape
    a = n * c * math.prod(pool_output_size(h, w, kernel, stride))
    if kind == "avg":
        return a * itemsize if backward else 0
    return 2 * a * itemsize + a if backward else a * itemsize + a
