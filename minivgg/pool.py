"""Average and max pooling, no padding, floor output size.

Shape legend
    N, C, H, W   input        k  kernel (KH = KW = k)    s  stride
    OH = (H - k) // s + 1     OW = (W - k) // s + 1
    x: (N, C, H, W)  ->  out, dout: (N, C, OH, OW)

VGG uses k = 2, s = 2: an odd last row or column is dropped (floor), as
PAPER.md specifies. Both poolings loop only over the k*k kernel offsets, each
a strided slice of the whole batch, never over pixels. Outputs are packed in
memory as their input is (C order or channels-last, ``minivgg.backend``);
NumPy runs each slice operation in memory order, so one code serves both.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import channels_last, empty, get_array_module, prefix_view, work


def pool_output_size(h: int, w: int, kernel: int, stride: int) -> tuple[int, int]:
    """(OH, OW) = ((H - k) // s + 1, (W - k) // s + 1); refuses an input smaller than the kernel."""
    if h < kernel or w < kernel:
        raise ValueError(f"a {kernel}x{kernel} pooling window does not fit a {h}x{w} input")
    return (h - kernel) // stride + 1, (w - kernel) // stride + 1


def _window(a, u: int, v: int, oh: int, ow: int, stride: int):
    """The (N, C, OH, OW) view of ``a`` holding offset (u, v) of every pooling window."""
    return a[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride]


class AvgPoolCache(NamedTuple):
    """Only the input shape: average pooling is linear, so backward needs no values."""

    x_shape: tuple
    kernel: int
    stride: int


def avg_pool2d_forward(x, kernel: int = 2, stride: int = 2):
    """out[n,c,i,j] = mean of x over the k x k window at (s*i, s*j); x (N,C,H,W) -> (N,C,OH,OW).

    The window sum is separable: the k row offsets are added first (whole
    rows, contiguous), then the k column offsets of that. This reads x once
    with unit stride instead of k*k times with stride s: twice as fast as
    summing the k*k strided windows for VGG's pool1. The row sums are a
    temporary of (N, C, rows, W), made a block of output rows at a time
    (``POOL_BLOCK_BYTES``) in a work buffer.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, w, kernel, stride)
    layout = channels_last(x)
    out = empty(xp, (n, c, oh, ow), x.dtype, channels_last=layout)  # (N, C, OH, OW)
    block = _row_block(n * c * w, oh, x.dtype.itemsize)
    (rows_flat,) = work(xp, (n * c * block * w,), x.dtype)
    for i0 in range(0, oh, block):
        i1 = min(oh, i0 + block)
        rows = _block_view(rows_flat, (n, c, i1 - i0, w), layout)
        band = x[:, :, stride * i0:stride * (i1 - 1) + kernel]       # the input rows they read
        _sum_into(xp, rows, [_offsets(band, 2, u, i1 - i0, stride) for u in range(kernel)])
        _sum_into(xp, out[:, :, i0:i1], [_offsets(rows, 3, v, ow, stride) for v in range(kernel)])
    out *= x.dtype.type(1.0 / (kernel * kernel))
    return out, AvgPoolCache(x.shape, kernel, stride)


def avg_pool2d_backward(dout, cache: AvgPoolCache):
    """dx = dout / k^2 spread over each window (local derivative: 1/k^2 inside the window, 0 outside).

    Rows/columns dropped by the floor get zero gradient; overlapping windows (s < k) add up.
    When s = k (VGG) the windows tile the image without overlap, so every
    value is *assigned* once, separably as in the forward: dout / k^2 is
    spread along each row (k strided copies into an OH x W block), then each
    such row is copied to its k rows of dx (whole rows, contiguous). Only the
    dropped rows and columns are zeroed. Otherwise slice additions.
    """
    xp = get_array_module(dout)
    x_shape, kernel, stride = cache
    n, c, h, w = x_shape
    oh, ow = dout.shape[2:]
    scale = dout.dtype.type(1.0 / (kernel * kernel))
    layout = channels_last(dout)
    if stride == kernel:
        dx = empty(xp, x_shape, dout.dtype, channels_last=layout, pooled=False)  # a gradient: plain memory
        dx[:, :, kernel * oh:] = 0                                  # rows the floor dropped
        block = _row_block(n * c * w, oh, dout.dtype.itemsize)
        (rows_flat,) = work(xp, (n * c * block * w,), dout.dtype)
        for i0 in range(0, oh, block):
            i1 = min(oh, i0 + block)
            rows = _block_view(rows_flat, (n, c, i1 - i0, w), layout)
            rows[..., kernel * ow:] = 0                             # columns the floor dropped
            first = _offsets(rows, 3, 0, ow, stride)
            xp.multiply(dout[:, :, i0:i1], scale, out=first)
            for v in range(1, kernel):
                _offsets(rows, 3, v, ow, stride)[...] = first
            band = dx[:, :, stride * i0:stride * i1]                # disjoint windows cover the rest
            for u in range(kernel):
                _offsets(band, 2, u, i1 - i0, stride)[...] = rows
    else:
        share = dout * scale                                        # (N, C, OH, OW)
        dx = empty(xp, x_shape, dout.dtype, channels_last=layout, pooled=False)
        dx[...] = 0
        for u in range(kernel):
            for v in range(kernel):
                _window(dx, u, v, oh, ow, stride)[...] += share
    assert dx.shape == x_shape
    return dx


#: Bytes of the row-sum temporary per block of output rows in average pooling (about an L2 cache).
POOL_BLOCK_BYTES = 2 * 2**20


def _row_block(row: int, oh: int, itemsize: int) -> int:
    """Output rows per block so that block * row elements fit ``POOL_BLOCK_BYTES`` (at least 1, at most OH)."""
    return max(1, min(oh, POOL_BLOCK_BYTES // max(1, row * itemsize)))


def _block_view(flat, shape, layout: bool):
    """The start of the work array ``flat`` as an (N, C, rows, W) array, channels-last if ``layout``."""
    n, c, r, w = shape
    if layout:
        return prefix_view(flat, (n, r, w, c)).transpose(0, 3, 1, 2)
    return prefix_view(flat, shape)


def _offsets(a, axis: int, u: int, count: int, stride: int):
    """The view of ``a`` taking every stride-th index from u along ``axis`` (2: rows, 3: columns), count of them."""
    index = [slice(None)] * 4
    index[axis] = slice(u, u + stride * (count - 1) + 1, stride)
    return a[tuple(index)]


def _sum_into(xp, out, parts) -> None:
    """out = the sum of ``parts`` (views of out's shape), with no zero fill."""
    if len(parts) == 1:
        out[...] = parts[0]
        return
    xp.add(parts[0], parts[1], out=out)
    for part in parts[2:]:
        out += part


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
    out = xp.array(_window(x, 0, 0, oh, ow, stride))
    argmax = xp.zeros(out.shape, dtype=xp.int8)
    for u in range(kernel):
        for v in range(kernel):
            if u == 0 and v == 0:
                continue
            candidate = _window(x, u, v, oh, ow, stride)
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
    for u in range(kernel):
        for v in range(kernel):
            won = (argmax == u * kernel + v).astype(dout.dtype)
            _window(dx, u, v, oh, ow, stride)[...] += dout * won
    assert dx.shape == x_shape
    return dx
