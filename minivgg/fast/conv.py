"""The fast engine's convolution: tiled im2col with fused bias and ReLU, and the tiles' sizes.

The same function as ``minivgg.conv`` (the reference: unroll the whole input,
one matrix product), transformed for memory and speed; ``tests/test_fast_conv.py``
holds every route to the reference and to the loops of ``minivgg.conv_naive``.

Shapes and the sum computed: ``minivgg.conv``'s legend (N, C, H, W, O, KH, KW,
s, p, OH, OW, K, L), and here also
    R  rows of output in one tile, RI = s * (R - 1) + KH padded input rows it reads,
    WP = W + 2p padded width

The reference unrolls the receptive fields into a matrix ``cols`` (im2col)
and computes ``out = w.reshape(O, K) @ cols``. Unrolled whole, ``cols`` is
KH*KW = 9 times the input: 604 MB for VGG's conv1_2 on a 512x512 image. So
this route unrolls **a block of R output rows at a time** (a tile), sized so the
tile never exceeds ``TILE_BYTES``' cap, and multiplies each tile straight into
its rows of the preallocated output (``xp.matmul(..., out=...)``). A tile of
output rows i0..i1 reads only padded input rows s*i0 .. s*(i1-1)+KH, which are
copied (with their zero padding) into a small buffer first, so the padded
image is never materialised either. Each output value is the same sum as
untiled, computed block by block (BLAS may round the last bits differently).

Backward: ``minivgg.fast.conv_backward`` (the input gradient by two tiled
routes, the transposed convolution or col2im; ``uses_transposed_conv`` and
``col2im_rows``, kept here, choose and size them).

Threads: ``workers`` > 1 deals the tiles out (tile i to worker i % workers,
``minivgg.fast.threads``), each worker with tile buffers of its own, within
1/workers of the bound (``tile_rows``), in both directions and both routes.

Slice additions cost about twice slice copies, so the transposed route is
taken when it applies and its unrolled matrix is at most twice as tall
(O <= 2C): all of VGG's convs but conv1_1 (3 -> 64 channels), whose 27-row
col2im is far cheaper than a 576-row transposed unroll. Derivations:
``notebooks/01_layers.ipynb``.

Fused: with ``relu=True`` the bias and the ReLU are applied to each tile
while it is still in cache (VGG follows every conv by one), instead of two
more passes over the output. Memory order: the output is written
channels-last on request (a transposed ``out`` is the same BLAS call).
``pool``: the output and the tiles come from an ``ArrayPool``
(``minivgg.fast.arrays``).

``winograd=`` hands a 3x3, stride-1, pad-1 convolution (forward and backward)
to ``minivgg.fast.winograd``, which computes the same function with 2.25-4 times
fewer multiplications; the fast network does so for all its convs but conv1_1.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import device_of, get_array_module
from minivgg.conv import output_size, windows
from minivgg.fast.arrays import empty, work
from minivgg.fast.layout import channels_last as layout_channels_last
from minivgg.fast.layout import flat_spatial, padded_rows, prefix_view
from minivgg.fast.threads import run_workers
from minivgg.fast.winograd import conv3x3 as winograd_conv3x3
from minivgg.fast.winograd import worker_rows

#: Tile sizes in bytes, per device: (floor, cap). A tile of the unrolled
#: matrix (or of dcols in backward) is sized to twice the layer's weight matrix,
#: clamped to [floor, cap]; the cap is the hard bound on the extra memory a
#: convolution uses. Why twice the weights: each tile's GEMM streams the whole
#: weight matrix once, so a tile smaller than the weights spends its time
#: re-reading them (measured, one core: conv4_2, 9.4 MB of weights, 25% slower
#: with 2 MB tiles than with 16 MB). Why a floor this small: a tile still in
#: cache when the GEMM reads it is faster (one core: conv1_2, 0.15 MB of
#: weights, 20% faster with 4 MB tiles than with 24 MB); why not smaller: each
#: tile is one multi-threaded BLAS call, and a call waits for all its threads,
#: so on a shared machine, where a thread is often preempted, many small calls
#: cost far more than their FLOPs (8 MB: half the calls of 4 MB, and 2% more
#: CPU time, one core, for the whole VGG objective at 512x512). On the CPU the
#: cap (24 MiB) stays under glibc's largest ``mmap`` threshold (32 MiB), so
#: tile buffers are recycled heap memory rather than fresh pages. On the GPU
#: memory is plentiful and each tile costs about twenty kernel launches, so
#: tiles are large. Whole rows are the unit: a tile holds at least one output
#: row of every image, whatever the bound says.
TILE_BYTES = {"cpu": (8 * 2**20, 24 * 2**20), "gpu": (64 * 2**20, 256 * 2**20)}


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` (``minivgg.fast.conv_backward``) needs.

    Keeps the input ``x`` (a reference, usually the previous layer's output, so
    it costs no memory) and ``w``; the unrolled ``cols`` (KH*KW times larger
    than x) is *not* kept: it is rebuilt tile by tile only when weight
    gradients are asked for, which style transfer never does. dx needs only
    x's shape, so a caller that wants no weight gradient may drop x
    (``without_input``: the fast network's lean mode).
    """

    x: object  # (N, C, H, W), or None once dropped
    w: object  # (O, C, KH, KW)
    stride: int
    pad: int
    winograd: object = None  # the layer's ``WinogradWeights`` when forward went that way
    x_shape: tuple = None    # x.shape, kept when x is dropped

    def without_input(self) -> "Conv2dCache":
        """The same cache without its reference to x: enough for dx, not for dw."""
        return self._replace(x=None, x_shape=tuple(self.x.shape))


def tile_bytes(weight_bytes: int, device: str = "cpu", max_tile_bytes: int | None = None) -> int:
    """Bytes allowed for one tile: clamp(2 * weight_bytes, floor, cap) from ``TILE_BYTES[device]``.

    ``max_tile_bytes`` replaces the cap (and lowers the floor to it if smaller):
    tests pass tiny values to force many tiles.
    """
    floor, cap = TILE_BYTES[device]
    if max_tile_bytes is not None:
        cap = max_tile_bytes
        floor = min(floor, cap)
    return min(cap, max(floor, 2 * weight_bytes))


def rows_per_tile(n: int, k: int, ow: int, itemsize: int, limit_bytes: int) -> int:
    """R: how many output rows of all N images fit one (N, K, R*OW) tile of ``limit_bytes``; at least 1."""
    return max(1, limit_bytes // (n * k * ow * itemsize))


def tile_rows(n: int, k: int, oh: int, ow: int, itemsize: int, weight_bytes: int, device: str,
              max_tile_bytes: int | None = None, workers: int = 1) -> int:
    """R for a layer: output rows per tile of the (N, K, R*OW) unrolled matrix, within ``tile_bytes``
    (split among ``workers``, each with a tile of its own); 1..OH. With several workers (dealt tiles
    k, k + workers, ...) R is then the largest within that bound that gives no worker more than
    ceil(OH / workers) rows (Winograd's rule for its bands: ``minivgg.fast.winograd.band_rows``)."""
    limit = tile_bytes(weight_bytes, device, max_tile_bytes) // max(1, workers)
    rows = min(rows_per_tile(n, k, ow, itemsize, limit), oh)
    if workers > 1:
        rows = max(r for r in range(1, rows + 1) if worker_rows(oh, r, workers) == -(-oh // workers))
    return rows


def col2im_rows(stride: int, kh: int, rows: int) -> tuple[int, int]:
    """(RY, RO) for col2im's tiles of dx rows: RY rows of dx per tile, read from at most RO rows of
    dout (the output rows whose windows touch them), RO <= ``rows`` where RY can be at least 1."""
    ry = max(1, stride * (rows - 1) - kh + 2)
    return ry, (ry + kh - 2) // stride + 1


def dealt(tiles, workers: int, job) -> None:
    """job(k, tile) for each tile, tile i to worker i % ``workers`` (``run_workers``); returns when all are done."""
    def run(k, stop):
        for tile in tiles[k::workers]:
            if stop.is_set():
                return
            job(k, tile)
    run_workers(run, workers)


def tile_work_sizes(n: int, c: int, kh: int, kw: int, stride: int, rows: int, ow: int, wp: int) -> tuple:
    """Elements of a tile's two work arrays: the unrolled matrix (N, C*KH*KW, R*OW) and the padded
    input rows it reads (N, C, s*(R-1)+KH, WP). (In col2im's backward, dcols and the padded dx rows.)"""
    return n * c * kh * kw * rows * ow, n * c * (stride * (rows - 1) + kh) * wp


def workspace_bytes(cin: int, cout: int, h: int, w: int, itemsize: int, device: str = "cpu",
                    backward: bool = False, workers: int = 1, transposed_given: bool = False) -> int:
    """Bytes a 3x3, stride-1, pad-1 conv (C_in -> C_out, an h x w map, batch 1) allocates besides its
    output: a tile's work arrays per worker that gets a tile, and in the backward on the transposed
    route the flipped weights, unless the caller hands them in (``transposed_given``: the fast
    network keeps them, ``transposed_weights``) (col2im's tiles: ``col2im_rows``)."""
    weight_bytes = cin * cout * 9 * itemsize
    c, extra, transposed = cin, 0, uses_transposed_conv(cin, cout, 3, 3, 1, 1)
    if backward and transposed:                                     # a forward conv of dout: C_out channels in
        c, extra = cout, 0 if transposed_given else weight_bytes
    rows = tile_rows(1, c * 9, h, w, itemsize, weight_bytes, device, workers=workers)
    tiles = -(-h // rows)
    if backward and not transposed:
        ry, rows = col2im_rows(1, 3, rows)
        tiles = -(-h // ry)
    used = max(1, min(workers, tiles))                              # workers that get a tile
    return sum(tile_work_sizes(1, c, 3, 3, 1, rows, w, w + 2)) * itemsize * used + extra


def row_blocks(oh: int, rows: int):
    """(i0, i1) for consecutive blocks of at most ``rows`` output rows covering 0..OH."""
    return [(i0, min(i0 + rows, oh)) for i0 in range(0, oh, rows)]


def _unroll(xt, kh: int, kw: int, stride: int, rows: int, ow: int, cols):
    """im2col of one tile: cols[n, c, u, v, i, j] = xt[n, c, s*i + u, s*j + v].

    xt: (N, C, RI, WP) padded input rows; cols: (N, C, KH, KW, rows, OW), filled and returned.
    """
    fields = windows(xt, (kh, kw), (stride, stride), (rows, ow))    # (KH, KW, N, C, rows, OW) view
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = fields[u, v]                         # (N, C, rows, OW)
    return cols


def _unrolled_tile(x, kh: int, kw: int, stride: int, ph: int, pw: int, i0: int, i1: int, cols_flat, xt_flat):
    """cols (N, K, R*OW): the im2col of output rows i0..i1 of x (N, C, H, W), zero-padded by ph rows
    and pw columns, made in two flat work buffers (the padded input rows, ``xt_flat``, and the
    unrolled matrix, ``cols_flat``: ``tile_work_sizes``)."""
    n, c, h, wd = x.shape
    ow = output_size(h + 2 * ph, wd + 2 * pw, kh, kw, stride, 0)[1]
    r = i1 - i0
    ri = stride * (r - 1) + kh
    xt = padded_rows(x, stride * i0 - ph, stride * i0 - ph + ri, pw,
                     prefix_view(xt_flat, (n, c, ri, wd + 2 * pw)))  # (N, C, RI, WP)
    cols = _unroll(xt, kh, kw, stride, r, ow, prefix_view(cols_flat, (n, c, kh, kw, r, ow)))
    return cols.reshape(n, c * kh * kw, r * ow)


def unrolled_tiles(x, kh: int, kw: int, stride: int, ph: int, pw: int, rows: int, pool=None):
    """(i0, i1, cols) for each block of output rows i0..i1: cols (N, K, R*OW) is the block's im2col,
    in two buffers sized for ``rows`` output rows and reused from block to block (a block's cols is
    overwritten by the next). x: (N, C, H, W); ph, pw: zero padding of rows and columns."""
    xp = get_array_module(x)
    n, c, h, wd = x.shape
    oh, ow = output_size(h + 2 * ph, wd + 2 * pw, kh, kw, stride, 0)  # padded on each side by ph, pw
    cols_flat, xt_flat = work(pool, xp, tile_work_sizes(n, c, kh, kw, stride, rows, ow, wd + 2 * pw),
                              x.dtype)                              # one tile of each, reused
    for i0, i1 in row_blocks(oh, rows):
        yield i0, i1, _unrolled_tile(x, kh, kw, stride, ph, pw, i0, i1, cols_flat, xt_flat)


def conv_tiled(x, w2, kh: int, kw: int, stride: int, ph: int, pw: int, out, b=None,
                relu: bool = False, max_tile_bytes: int | None = None, pool=None, workers: int = 1):
    """out[n] = w2 @ im2col(x[n]) (+ b, then max(., 0) if relu), R output rows at a time.

    x: (N, C, H, W); w2: (O, K) with K = C*KH*KW ordered (c, u, v); ph, pw:
    zero padding of rows and columns (>= 0); out: (N, O, OH*OW), written in
    place (every element) and returned, in either memory order (a transposed
    ``out`` is the same BLAS call); b: (O,) or None. ``workers``: threads the
    tiles are dealt to (``minivgg.fast.threads``), each with buffers of its own.
    """
    xp = get_array_module(x, w2)
    n, c, h, wd = x.shape
    o, k = w2.shape
    oh, ow = output_size(h + 2 * ph, wd + 2 * pw, kh, kw, stride, 0)  # padded on each side by ph, pw
    rows = tile_rows(n, k, oh, ow, x.dtype.itemsize, w2.nbytes, device_of(x), max_tile_bytes, workers)
    tiles = row_blocks(oh, rows)
    workers = max(1, min(workers, len(tiles)))
    flat = work(pool, xp, tile_work_sizes(n, c, kh, kw, stride, rows, ow, wd + 2 * pw) * workers, x.dtype)
    bias = None if b is None else b.reshape(o, 1)                   # (O, 1)

    def tile(k_worker, rows_i):
        i0, i1 = rows_i
        cols = _unrolled_tile(x, kh, kw, stride, ph, pw, i0, i1, *flat[2 * k_worker:2 * k_worker + 2])
        out_tile = out[:, :, i0 * ow:i1 * ow]                       # (N, O, R*OW) view
        xp.matmul(w2, cols, out=out_tile)                           # (O, K) @ (N, K, R*OW)
        if bias is not None:
            out_tile += bias
        if relu:
            xp.maximum(out_tile, 0, out=out_tile)
    dealt(tiles, workers, tile)
    return out


def conv2d_forward(x, w, b, stride: int = 1, pad: int = 1, *, relu: bool = False,
                   max_tile_bytes: int | None = None, winograd=None, channels_last: bool | None = None,
                   pool=None, workers: int = 1, separable: bool = False, small_products: bool = False):
    """out = w * x + b (cross-correlation); with ``relu``, out = max(w * x + b, 0) fused.

    x: (N, C, H, W), w: (O, C, KH, KW), b: (O,) -> out: (N, O, OH, OW) packed (see
    ``channels_last``), cache.
    OH = (H + 2*pad - KH) // stride + 1, OW likewise. Peak extra memory: one
    tile of at most ``max_tile_bytes`` (default: ``TILE_BYTES``' cap) plus its
    padded input rows. ``relu`` applies the ReLU to each tile while it is
    still in cache (VGG follows every conv by one); the cache is the same
    either way, the ReLU's own cache is then the returned ``out``.
    ``winograd``: w transformed by ``minivgg.fast.winograd.prepare`` (3x3, stride 1,
    pad 1 only); forward and backward then go through Winograd's algorithm
    instead of im2col (same function, far fewer multiplications); ``separable``: its input
    transform one axis at a time, ``small_products``: its products in pieces that OpenBLAS
    multiplies without packing (both ``minivgg.fast.winograd.conv3x3``'s).
    ``channels_last``: lay out the output's memory as (N, OH, OW, O) (True) or
    in C order (False); by default as x's (``minivgg.fast.layout.channels_last``).
    ``pool``: an ``ArrayPool`` for the output and the tiles, or None.
    ``workers``: threads that share Winograd's bands or im2col's tiles (``minivgg.fast.threads``).
    """
    xp = get_array_module(x, w, b)
    n, c, h, wd = x.shape
    o, c_w, kh, kw = w.shape
    if c != c_w:
        raise ValueError(f"input has {c} channels but the weights expect {c_w}")
    if winograd is not None:
        if (kh, kw, stride, pad) != (3, 3, 1, 1) or winograd.shape != (o, c):
            raise ValueError(f"Winograd weights of {winograd.shape} fit 3x3 stride-1 pad-1 convs of "
                             f"those channels, not {kh}x{kw}, stride {stride}, pad {pad}, {o}x{c}")
        out = winograd_conv3x3(x, winograd, b, relu=relu, max_band_bytes=max_tile_bytes,
                               channels_last=channels_last, pool=pool, workers=workers, separable=separable,
                               small_products=small_products)
        return out, Conv2dCache(x, w, stride, pad, winograd)
    oh, ow = output_size(h, wd, kh, kw, stride, pad)
    layout = layout_channels_last(x) if channels_last is None else channels_last
    out = empty(pool, xp, (n, o, oh, ow), x.dtype, channels_last=layout)  # (N, O, OH, OW)
    w2 = w.reshape(o, c * kh * kw)                                  # (O, K)
    conv_tiled(x, w2, kh, kw, stride, pad, pad, flat_spatial(out), b=b, relu=relu,
                max_tile_bytes=max_tile_bytes, pool=pool, workers=workers)
    return out, Conv2dCache(x, w, stride, pad)


def uses_transposed_conv(c: int, o: int, kh: int, kw: int, stride: int, pad: int) -> bool:
    """Whether dx goes through the transposed convolution (see the module docstring) rather than col2im."""
    return stride == 1 and pad <= kh - 1 and pad <= kw - 1 and o <= 2 * c
