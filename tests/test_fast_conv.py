"""The fast engine's tiled convolution against the loops and the reference: tile boundaries, both
input-gradient routes, the fused ReLU, channels-last memory, bounded memory, its size model."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from gradcheck import channels_last_copy, to_np
from minivgg import conv as reference
from minivgg.conv_naive import conv2d_backward_naive, conv2d_naive
from minivgg.fast import conv
from minivgg.fast.arrays import ArrayPool
from minivgg.fast.conv import conv2d_forward, rows_per_tile, tile_bytes, uses_transposed_conv, workspace_bytes
from minivgg.fast.conv_backward import _dx_col2im, _dx_transposed_conv, conv2d_backward
from minivgg.fast.layout import channels_last

# (N, C, H, W, O, KH, KW, stride, pad): odd sizes, batch > 1, stride 2, padding
# wider than the kernel (whole tiles of padding), 1x1 kernels, O > 2C (col2im route).
CASES = [
    (1, 3, 7, 5, 4, 3, 3, 1, 1),
    (2, 3, 9, 6, 5, 3, 3, 1, 0),
    (3, 2, 9, 7, 4, 3, 3, 2, 1),
    (2, 4, 8, 5, 3, 2, 3, 1, 2),
    (2, 3, 11, 6, 2, 5, 3, 2, 2),
    (1, 5, 5, 5, 6, 1, 1, 1, 0),
    (2, 3, 4, 5, 7, 2, 2, 1, 3),
    (1, 2, 5, 3, 9, 3, 3, 1, 1),
    (2, 6, 13, 8, 3, 3, 3, 1, 1),
]
# max_tile_bytes: 1 forces one output row per tile; 600 a few rows, with a short last tile.
TILES = [1, 600]


def _data(xp, rng, n, c, h, w, o, kh, kw):
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    wt = xp.asarray(rng.standard_normal((o, c, kh, kw)))
    b = xp.asarray(rng.standard_normal(o))
    return x, wt, b


def _err(a, b) -> float:
    return float(abs(a - b).max())


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", CASES)
def test_tiny_tiles_match_naive(xp, case, tile, workers):
    """Every route, its tiles on one thread or dealt to three (``minivgg.fast.threads``)."""
    n, c, h, w, o, kh, kw, s, p = case
    rng = np.random.default_rng(10)
    x, wt, b = _data(xp, rng, n, c, h, w, o, kh, kw)
    out, cache = conv2d_forward(x, wt, b, stride=s, pad=p, max_tile_bytes=tile, workers=workers)
    ref = conv2d_naive(x, wt, b, stride=s, pad=p)
    assert out.shape == ref.shape and out.flags.c_contiguous
    assert _err(out, ref) < 1e-12
    dout = xp.asarray(rng.standard_normal(out.shape))
    dx, dw, db = conv2d_backward(dout, cache, weight_grads=True, max_tile_bytes=tile, workers=workers)
    dx_ref, dw_ref, db_ref = conv2d_backward_naive(dout, x, wt, stride=s, pad=p)
    assert _err(dx, dx_ref) < 1e-12 and _err(dw, dw_ref) < 1e-12 and _err(db, db_ref) < 1e-12


@pytest.mark.parametrize("case", CASES)
def test_both_input_gradient_routes_match_naive(xp, case):
    """col2im works for every case; the transposed convolution wherever stride 1 and p <= K-1."""
    n, c, h, w, o, kh, kw, s, p = case
    rng = np.random.default_rng(11)
    x, wt, _ = _data(xp, rng, n, c, h, w, o, kh, kw)
    oh, ow = reference.output_size(h, w, kh, kw, s, p)
    dout = xp.asarray(rng.standard_normal((n, o, oh, ow)))
    dx_ref, _, _ = conv2d_backward_naive(dout, x, wt, stride=s, pad=p)
    for tile in TILES + [None]:
        for workers in (1, 2):                     # col2im's tiles own their rows of dx: no shared writes
            assert _err(_dx_col2im(dout, wt, x.shape, s, p, tile, workers=workers), dx_ref) < 1e-12
            if s == 1 and p <= kh - 1 and p <= kw - 1:
                assert _err(_dx_transposed_conv(dout, wt, p, tile, workers=workers), dx_ref) < 1e-12


def test_route_choice():
    assert uses_transposed_conv(64, 64, 3, 3, 1, 1)               # VGG's conv1_2 .. conv5_4
    assert uses_transposed_conv(64, 128, 3, 3, 1, 1)              # conv2_1: O = 2C
    assert not uses_transposed_conv(3, 64, 3, 3, 1, 1)            # conv1_1: col2im is cheaper
    assert not uses_transposed_conv(4, 4, 3, 3, 2, 1)             # stride 2
    assert not uses_transposed_conv(4, 4, 2, 3, 1, 2)             # p > KH - 1


def test_default_tiles_are_tiled_when_the_bound_is_small(xp, monkeypatch):
    """Shrinking TILE_BYTES (the module constant) tiles the default path itself, ReLU fused or not."""
    monkeypatch.setitem(conv.TILE_BYTES, "cpu", (256, 256))
    monkeypatch.setitem(conv.TILE_BYTES, "gpu", (256, 256))
    rng = np.random.default_rng(12)
    x, wt, b = _data(xp, rng, 2, 5, 9, 7, 6, 3, 3)
    assert rows_per_tile(2, 5 * 9, 7, 8, tile_bytes(wt.nbytes, "cpu")) == 1
    ref = conv2d_naive(x, wt, b)
    out, cache = conv2d_forward(x, wt, b)
    assert _err(out, ref) < 1e-12
    relu_out, _ = conv2d_forward(x, wt, b, relu=True)
    assert _err(relu_out, xp.maximum(ref, 0)) < 1e-12
    dout = xp.asarray(rng.standard_normal(out.shape))
    dx, _, _ = conv2d_backward(dout, cache)
    assert _err(dx, conv2d_backward_naive(dout, x, wt)[0]) < 1e-12


@pytest.mark.parametrize("tile", TILES)
def test_non_contiguous_inputs_with_tiny_tiles(xp, tile):
    rng = np.random.default_rng(13)
    x = xp.asarray(rng.standard_normal((2, 7, 3, 9))).transpose(0, 2, 3, 1)[:, :, ::-1, :]  # (2, 3, 9, 7)
    wt = xp.asarray(rng.standard_normal((3, 3, 4, 3))).transpose(2, 1, 0, 3)             # (4, 3, 3, 3)
    b = xp.asarray(rng.standard_normal(8))[::2]
    assert not x.flags.c_contiguous and not wt.flags.c_contiguous and not b.flags.c_contiguous
    for s in (1, 2):
        out, cache = conv2d_forward(x, wt, b, stride=s, pad=1, max_tile_bytes=tile)
        xc, wc = xp.ascontiguousarray(x), xp.ascontiguousarray(wt)
        assert _err(out, conv2d_naive(xc, wc, xp.ascontiguousarray(b), stride=s)) < 1e-12
        dout = xp.asarray(rng.standard_normal(out.shape[::-1])).transpose(3, 2, 1, 0)
        dx, dw, _ = conv2d_backward(dout, cache, weight_grads=True, max_tile_bytes=tile)
        dx_ref, dw_ref, _ = conv2d_backward_naive(xp.ascontiguousarray(dout), xc, wc, stride=s)
        assert _err(dx, dx_ref) < 1e-12 and _err(dw, dw_ref) < 1e-12


def test_adjoint_with_row_tiles_at_realistic_size(xp):
    """<A x, v> = <x, A^T v> with 3-row tiles on 64 -> 128 channels, 47x64 (odd height: a short last tile)."""
    rng = np.random.default_rng(14)
    x = xp.asarray(rng.standard_normal((1, 64, 47, 64)))
    wt = xp.asarray(rng.standard_normal((128, 64, 3, 3)))
    v = xp.asarray(rng.standard_normal((1, 128, 47, 64)))
    tile = 3 * 64 * 9 * 64 * 8                                     # 3 rows of the unrolled input
    out, cache = conv2d_forward(x, wt, xp.zeros(128), max_tile_bytes=tile)
    dx, _, _ = conv2d_backward(v, cache, max_tile_bytes=tile)
    lhs = float(xp.vdot(out, v))
    assert abs(lhs - float(xp.vdot(x, dx))) / abs(lhs) < 1e-12


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_relu_and_dtype(xp, dtype):
    rng = np.random.default_rng(15)
    x, wt, b = (a.astype(dtype) for a in _data(xp, rng, 1, 4, 10, 9, 5, 3, 3))
    plain, _ = conv2d_forward(x, wt, b, max_tile_bytes=1)
    fused, cache = conv2d_forward(x, wt, b, relu=True, max_tile_bytes=1)
    assert fused.dtype == np.dtype(dtype) and cache.x is x
    assert _err(fused, xp.maximum(plain, 0)) == 0.0


def test_tile_bytes_clamps_twice_the_weights():
    floor, cap = conv.TILE_BYTES["cpu"]
    assert tile_bytes(1, "cpu") == floor
    assert tile_bytes(10 * cap, "cpu") == cap
    assert tile_bytes((floor + cap) // 4, "cpu") == (floor + cap) // 4 * 2
    assert tile_bytes(10 * cap, "cpu", max_tile_bytes=100) == 100
    assert tile_bytes(1, "cpu", max_tile_bytes=100) == 100          # the floor never exceeds the cap
    assert rows_per_tile(1, 576, 512, 4, 1) == 1                    # at least one row
    assert rows_per_tile(1, 576, 512, 4, 576 * 512 * 4 * 7 + 5) == 7


def test_extra_memory_is_one_tile_not_the_unrolled_matrix():
    """NumPy's allocations (traced) in forward and backward: output + one tile, not 9x the input."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((1, 64, 96, 128)).astype(np.float32)   # unrolled whole: 28 MB
    wt = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    b = np.zeros(64, np.float32)
    tile = 2**20
    tracemalloc.start()
    try:
        out, cache = conv2d_forward(x, wt, b, max_tile_bytes=tile)
        _, forward_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        dx, _, _ = conv2d_backward(out, cache, max_tile_bytes=tile)
        _, backward_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    padded_rows = 64 * 130 * 4 * 8                                 # a few padded input rows
    assert forward_peak < out.nbytes + tile + padded_rows
    assert backward_peak - base < dx.nbytes + tile + wt.nbytes + padded_rows
    assert to_np(out).shape == (1, 64, 96, 128)


@pytest.mark.parametrize("case", CASES)
def test_matches_the_reference_twin(xp, case):
    """minivgg.conv (whole im2col, one product) and the tiled route: the same function, every case."""
    n, c, h, w, o, kh, kw, s, p = case
    rng = np.random.default_rng(17)
    x, wt, b = _data(xp, rng, n, c, h, w, o, kh, kw)
    want, want_cache = reference.conv2d_forward(x, wt, b, stride=s, pad=p)
    got, cache = conv2d_forward(x, wt, b, stride=s, pad=p, max_tile_bytes=600)
    assert _err(got, want) < 1e-12
    dout = xp.asarray(rng.standard_normal(want.shape))
    for a, b_ in zip(conv2d_backward(dout, cache, weight_grads=True, max_tile_bytes=600),
                     reference.conv2d_backward(dout, want_cache, weight_grads=True)):
        assert _err(a, b_) < 1e-12


@pytest.mark.parametrize("case", CASES)
def test_channels_last_in_and_out(xp, case):
    """Channels-last x or dout, and a channels-last output on request: the same numbers, both dx routes."""
    n, c, h, w, o, kh, kw, s, p = case
    rng = np.random.default_rng(6)
    x, wt, b = _data(xp, rng, n, c, h, w, o, kh, kw)
    ref, ref_cache = conv2d_forward(x, wt, b, stride=s, pad=p)
    dout = xp.asarray(rng.standard_normal(ref.shape))
    dx_ref = conv2d_backward(dout, ref_cache)[0]
    for x_in, want_last in ((x, True), (channels_last_copy(x), None), (channels_last_copy(x), False)):
        out, cache = conv2d_forward(x_in, wt, b, stride=s, pad=p, channels_last=want_last)
        assert _err(out, ref) < 1e-12
        assert channels_last(out) == (want_last is not False)
        assert out.flags.c_contiguous == (want_last is False)
        dx, dw, db = conv2d_backward(channels_last_copy(dout), cache, weight_grads=True)
        assert _err(dx, dx_ref) < 1e-12
    assert _err(dw, conv2d_backward(dout, ref_cache, weight_grads=True)[1]) < 1e-12


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("cin,cout", [(3, 64), (64, 64), (64, 128), (256, 512)])
def test_workspace_bytes_is_what_the_kernel_takes_from_a_pool(cin, cout, workers):
    """The memory model's number (``workspace_bytes``) against the pool's work buffer after a real call,
    its tiles on one thread or two (a set of buffers per worker)."""
    rng = np.random.default_rng(18)
    h, w = 40, 56
    x = rng.standard_normal((1, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    for backward in (False, True):
        pool = ArrayPool()
        out, cache = conv2d_forward(x, wt, np.zeros(cout, np.float32), pool=None if backward else pool,
                                    workers=workers)
        if backward:
            conv2d_backward(out, cache, pool=pool, workers=workers)
        flipped = cin * cout * 9 * 4 if backward and uses_transposed_conv(cin, cout, 3, 3, 1, 1) else 0
        pooled = pool.nbytes - (0 if backward else out.nbytes)        # the work buffer alone
        want = workspace_bytes(cin, cout, h, w, 4, backward=backward, workers=workers) - flipped
        assert want <= pooled <= want + 2 * 64 + 64, (backward, pooled, want)  # alignment slack only


def test_the_network_keeps_each_transposed_matrix_once(vgg_params):
    """On the im2col route the fast network flips each layer's weights once (``transposed_weights``),
    keeps them, shares them with ``with_transforms``, and its dx equals the one that flips per call
    (float64; measured: 0, the same products). conv1_1 goes by col2im: nothing kept."""
    from minivgg.fast.network import FastVGG19, kept_weights_bytes
    from minivgg.fast.transforms import Transforms
    from minivgg.vgg import VGG19
    params = VGG19(vgg_params, dtype="float64").params
    net = FastVGG19(params, "avg", "cpu", Transforms(winograd=False))
    flipped = net.transposed_weights("conv2_1")
    w = params["conv2_1"][0]
    assert flipped.shape == (64, 128 * 9) and flipped.flags.c_contiguous
    assert np.array_equal(flipped.reshape(64, 128, 3, 3), w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    assert net.transposed_weights("conv2_1") is flipped and net.transposed_weights("conv1_1") is None
    assert net.with_transforms(Transforms(winograd=False, threads=False)).transposed_weights("conv2_1") is flipped
    assert FastVGG19(params, "avg", "cpu").transposed_weights("conv2_1") is None         # Winograd's layer
    assert kept_weights_bytes("conv2_1", 64, 128, 8, "im2col") == flipped.nbytes
    assert kept_weights_bytes("conv1_1", 3, 64, 8, "im2col") == 0
    rng = np.random.default_rng(4)
    x, dout = rng.standard_normal((1, 64, 12, 10)), rng.standard_normal((1, 128, 12, 10))
    _, cache = conv2d_forward(x, w, params["conv2_1"][1])
    assert np.array_equal(conv2d_backward(dout, cache, transposed=flipped)[0], conv2d_backward(dout, cache)[0])
