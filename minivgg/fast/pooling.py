"""The fast engine's average pooling: the window sum done separably, a block of rows at a time.

Same function, shapes and cache as ``minivgg.pool.avg_pool2d_forward`` (the
reference: k*k strided window sums) and tested against it. Max pooling has no
fast twin: the reference's k*k strided comparisons already keep the input's
memory order, and the fast network calls them directly.

Shape legend
    N, C, H, W   input        k  kernel (KH = KW = k)    s  stride
    OH = (H - k) // s + 1     OW = (W - k) // s + 1
    x: (N, C, H, W)  ->  out, dout: (N, C, OH, OW)

Outputs are packed in memory as their input is (C order or channels-last,
``minivgg.fast.layout``); NumPy runs each slice operation in memory order, so
one code serves both. ``pool``: an ``ArrayPool`` (``minivgg.fast.arrays``) for
the output and the row sums, or None.
"""
from __future__ import annotations

from minivgg.backend import get_array_module
from minivgg.conv import windows
from minivgg.fast.arrays import empty, work
from minivgg.fast.layout import channels_last, prefix_view
from minivgg.fast.threads import run_workers
from minivgg.pool import AvgPoolCache, pool_output_size


def avg_pool2d_forward(x, kernel: int = 2, stride: int = 2, *, pool=None, workers: int = 1):
    """out[n,c,i,j] = mean of x over the k x k window at (s*i, s*j); x (N,C,H,W) -> (N,C,OH,OW).

    The window sum is separable: the k row offsets are added first (whole
    rows, contiguous), then the k column offsets of that. This reads x once
    with unit stride instead of k*k times with stride s: twice as fast as
    summing the k*k strided windows for VGG's pool1. The row sums are a
    temporary of (N, C, rows, W), made a block of output rows at a time
    (``POOL_BLOCK_BYTES``) in a work buffer, and each block of the output is
    scaled by 1/k^2 while it is still in cache. ``workers``: threads that share
    the blocks (``minivgg.fast.threads``), each with a row-sum buffer of its own.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, w, kernel, stride)
    layout = channels_last(x)
    out = empty(pool, xp, (n, c, oh, ow), x.dtype, channels_last=layout)  # (N, C, OH, OW)
    scale = x.dtype.type(1.0 / (kernel * kernel))

    def block(i0, i1, rows_flat):
        rows = _block_view(rows_flat, (n, c, i1 - i0, w), layout)
        band = x[:, :, stride * i0:stride * (i1 - 1) + kernel]       # the input rows they read
        down = windows(band, (kernel, 1), (stride, 1), (i1 - i0, w))  # (k, 1, N, C, rows, W) view
        _sum_into(xp, rows, [down[u, 0] for u in range(kernel)])
        across = windows(rows, (1, kernel), (1, stride), (i1 - i0, ow))  # (1, k, N, C, rows, OW) view
        _sum_into(xp, out[:, :, i0:i1], [across[0, v] for v in range(kernel)])
        out[:, :, i0:i1] *= scale
    _blocks(xp, block, n * c * w, oh, x.dtype, pool, workers)
    return out, AvgPoolCache(x.shape, kernel, stride)


def avg_pool2d_backward(dout, cache: AvgPoolCache, *, pool=None, workers: int = 1):
    """dx = dout / k^2 spread over each window (local derivative: 1/k^2 inside the window, 0 outside).

    Rows/columns dropped by the floor get zero gradient; overlapping windows (s < k) add up.
    When s = k (VGG) the windows tile the image without overlap, so every
    value is *assigned* once, separably as in the forward: dout / k^2 is
    spread along each row (k strided copies into an OH x W block), then each
    such row is copied to its k rows of dx (whole rows, contiguous). Only the
    dropped rows and columns are zeroed; ``workers`` share the blocks, as in the
    forward. Otherwise slice additions, on the calling thread.
    """
    xp = get_array_module(dout)
    x_shape, kernel, stride = cache
    n, c, h, w = x_shape
    oh, ow = dout.shape[2:]
    scale = dout.dtype.type(1.0 / (kernel * kernel))
    layout = channels_last(dout)
    if stride == kernel:
        dx = empty(pool, xp, x_shape, dout.dtype, channels_last=layout, only_free=True)  # a gradient
        dx[:, :, kernel * oh:] = 0                                  # rows the floor dropped

        def block(i0, i1, rows_flat):
            rows = _block_view(rows_flat, (n, c, i1 - i0, w), layout)
            rows[..., kernel * ow:] = 0                             # columns the floor dropped
            across = windows(rows, (1, kernel), (1, stride), (i1 - i0, ow))  # (1, k, N, C, rows, OW) view
            xp.multiply(dout[:, :, i0:i1], scale, out=across[0, 0])
            for v in range(1, kernel):
                across[0, v][...] = across[0, 0]
            band = dx[:, :, stride * i0:stride * i1]                # disjoint windows cover the rest
            down = windows(band, (kernel, 1), (stride, 1), (i1 - i0, w))  # (k, 1, N, C, rows, W) view
            for u in range(kernel):
                down[u, 0][...] = rows
        _blocks(xp, block, n * c * w, oh, dout.dtype, pool, workers)
    else:
        share = dout * scale                                        # (N, C, OH, OW)
        dx = empty(None, xp, x_shape, dout.dtype, channels_last=layout)
        dx[...] = 0
        fields = windows(dx, (kernel, kernel), (stride, stride), (oh, ow))  # (k, k, N, C, OH, OW) view
        for u in range(kernel):
            for v in range(kernel):
                fields[u, v] += share                               # one offset at a time
    assert dx.shape == x_shape
    return dx


#: Bytes of the row-sum temporary per block of output rows in average pooling (about an L2 cache).
POOL_BLOCK_BYTES = 2 * 2**20


def workspace_bytes(x_shape, kernel: int, stride: int, itemsize: int, *, backward: bool = False,
                    workers: int = 1) -> int:
    """Bytes ``avg_pool2d_forward`` (or ``avg_pool2d_backward``) takes besides its input, output and cache,
    for x of ``x_shape`` (N, C, H, W) (the memory model asks): a block of row sums (N, C, rows, W)
    per worker that gets a block, ``work`` arrays; backward with overlapping windows (s != k), the
    share dout / k^2 (N, C, OH, OW) in plain memory instead."""
    n, c, h, w = x_shape
    oh, ow = pool_output_size(h, w, kernel, stride)
    if backward and stride != kernel:
        return n * c * oh * ow * itemsize
    rows = _row_block(n * c * w, oh, itemsize)
    return n * c * rows * w * itemsize * min(max(1, workers), -(-oh // rows))


def _blocks(xp, block, row: int, oh: int, dtype, pool, workers: int) -> None:
    """block(i0, i1, rows_flat) for the blocks of output rows 0..OH (``_row_block`` of them at a time),
    dealt out to ``workers`` threads (blocks k, k + workers, ...), each with its own row-sum buffer
    ``rows_flat`` of ``row`` elements per output row, from ``pool``'s work buffer."""
    size = _row_block(row, oh, dtype.itemsize)
    starts = range(0, oh, size)
    workers = max(1, min(workers, len(starts)))
    flats = work(pool, xp, (row * size,) * workers, dtype)

    def run(k, stop):
        for i0 in starts[k::workers]:
            if stop.is_set():
                return
            block(i0, min(oh, i0 + size), flats[k])
    run_workers(run, workers)


def _row_block(row: int, oh: int, itemsize: int) -> int:
    """Output rows per block so that block * row elements fit ``POOL_BLOCK_BYTES`` (at least 1, at most OH)."""
    return max(1, min(oh, POOL_BLOCK_BYTES // max(1, row * itemsize)))


def _block_view(flat, shape, layout: bool):
    """The start of the work array ``flat`` as an (N, C, rows, W) array, channels-last if ``layout``."""
    n, c, r, w = shape
    if layout:
        return prefix_view(flat, (n, r, w, c)).transpose(0, 3, 1, 2)
    return prefix_view(flat, shape)


def _sum_into(xp, out, parts) -> None:
    """out = the sum of ``parts`` (views of out's shape), with no zero fill."""
    if len(parts) == 1:
        out[...] = parts[0]
        return
    xp.add(parts[0], parts[1], out=out)
    for part in parts[2:]:
        out += part
