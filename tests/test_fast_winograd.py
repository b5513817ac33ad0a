"""Winograd F(m x m, 3 x 3): the exact construction, against the loop reference, its backward, rounding."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from gradcheck import channels_last_copy, rel_error, to_np
from minivgg.conv_naive import conv2d_backward_naive, conv2d_naive
from minivgg.fast.conv import conv2d_forward
from minivgg.fast.conv_backward import conv2d_backward
from minivgg.fast.layout import channels_last
from minivgg.fast.toom_cook import flip_map, plans, toom_cook
from minivgg.fast.winograd import conv3x3, prepare
from minivgg.architecture import CONV_SHAPES
from minivgg.vgg import VGG19

# (N, C, O, H, W): batch > 1, sizes that are and are not multiples of the tile, images smaller
# than one tile, a single pixel.
CASES = [(2, 5, 7, 9, 11), (1, 16, 16, 13, 8), (1, 6, 3, 8, 8), (1, 4, 5, 3, 2), (2, 3, 4, 1, 1)]


@pytest.mark.parametrize("m", [2, 4])
def test_the_one_dimensional_algorithm_is_correlation(m):
    at, g, bt = (np.array(mat, dtype=np.float64) for mat in toom_cook(m, {2: (0, 1, -1),
                                                                          4: (0, 1, -1, 2, Fraction(1, 2))}[m]))
    rng = np.random.default_rng(0)
    d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
    direct = np.array([k @ d[i:i + 3] for i in range(m)])
    assert rel_error(at @ ((g @ k) * (bt @ d)), direct) < 1e-14
    assert at.shape == (m, m + 2) and g.shape == (m + 2, 3) and bt.shape == (m + 2, m + 2)


def test_flip_map_needs_points_closed_under_inversion():
    _, g, _ = toom_cook(2, (0, 1, -1))
    pi, s = flip_map(g)
    assert pi == [3, 1, 2, 0] and s == [-1, 1, 1, -1]       # 0 <-> infinity swap, f_0 = -1
    _, g4, _ = toom_cook(4, (0, 1, -1, 2, -2))              # the usual points: 2 has no partner 1/2
    with pytest.raises(ValueError, match="closed"):
        flip_map(g4)


def test_toom_cook_refuses_repeated_points():
    with pytest.raises(ValueError, match="distinct"):
        toom_cook(2, (0, 1, 1))


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("band", [None, 600])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("separable", [False, True])
def test_forward_and_backward_match_the_loops(xp, m, case, band, last, separable):
    """float64: same numbers as conv_naive to rounding, whole image or bands of one tile row,
    inputs in C order or channels-last (outputs keep the input's order), the input transform in
    one product or one axis at a time (measured: at most 5e-15 either way)."""
    n, c, o, h, w = case
    rng = np.random.default_rng(2)
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    wt = xp.asarray(rng.standard_normal((o, c, 3, 3)))
    b = xp.asarray(rng.standard_normal(o))
    order = channels_last_copy if last else (lambda a: a)
    weights = prepare(wt, m)
    out = conv3x3(order(x), weights, b, max_band_bytes=band, separable=separable)
    ref = conv2d_naive(x, wt, b, stride=1, pad=1)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert rel_error(out, ref) < 1e-13
    assert channels_last(out) == channels_last(order(x)) and out.flags.c_contiguous == order(x).flags.c_contiguous
    relu = conv3x3(order(x), weights, b, relu=True, max_band_bytes=band, separable=separable)
    assert float(abs(relu - xp.maximum(ref, 0)).max()) < 1e-12
    dout = xp.asarray(rng.standard_normal(ref.shape))
    dx = conv3x3(order(dout), weights, backward=True, max_band_bytes=band, separable=separable)
    dx_ref, _, _ = conv2d_backward_naive(dout, x, wt, stride=1, pad=1)
    assert dx.shape == x.shape and channels_last(dx) == channels_last(order(dout))
    assert rel_error(dx, dx_ref) < 1e-13


def test_the_output_order_can_be_chosen(xp):
    """``channels_last=`` overrides the input's order; the values are the same either way."""
    rng = np.random.default_rng(7)
    x = xp.asarray(rng.standard_normal((1, 16, 9, 10)))
    weights = prepare(xp.asarray(rng.standard_normal((8, 16, 3, 3))), 4)
    c_order = conv3x3(x, weights)
    last = conv3x3(x, weights, channels_last=True)
    back = conv3x3(channels_last_copy(x), weights, channels_last=False)
    assert c_order.flags.c_contiguous and not channels_last(c_order)
    assert channels_last(last) and not last.flags.c_contiguous and back.flags.c_contiguous
    assert rel_error(last, c_order) < 1e-15 and rel_error(back, c_order) < 1e-15


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_both_product_orders_of_a_channels_last_band(monkeypatch, first, case):
    """The forward's channels-last band multiplies M = V U^T or M^T = U V^T
    (``channels_first_products``): each order, forced, gives the loops' numbers (float64), with
    the bias and the ReLU, whole image and bands of one tile row (the image's edge cutting them)."""
    import minivgg.fast.winograd as winograd
    calls = []
    monkeypatch.setattr(winograd, "channels_first_products", lambda c, p: calls.append((c, p)) or first)
    n, c, o, h, w = case
    rng = np.random.default_rng(8)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((o, c, 3, 3))
    b = rng.standard_normal(o)
    ref = conv2d_naive(x, wt, b, stride=1, pad=1)
    for band in (None, 600):
        out = conv3x3(channels_last_copy(x), prepare(wt, 4), b, relu=True, max_band_bytes=band)
        assert channels_last(out)
        assert float(abs(out - np.maximum(ref, 0)).max()) < 1e-12 * float(abs(ref).max())
    assert calls and all(cc == c for cc, _ in calls)           # asked, with the layer's C
    calls.clear()
    conv3x3(x, prepare(wt, 4), b, channels_last=False)         # C order: one band kind, not asked
    conv3x3(channels_last_copy(ref), prepare(wt, 4), backward=True)  # backward: V U reads U in order
    assert calls == []


def test_the_product_order_rule_on_vgg():
    """Channels-first products where a band's tiles are fewer than its channels: at 512 x 512 with two
    workers conv1_2 (P = 128 > C = 64) stays tiles-first, conv4_2 (P = 32 < 512) goes channels-first."""
    from minivgg.fast.winograd import band_rows, channels_first_products, weights_bytes
    chosen = {}
    for name, h in (("conv1_2", 512), ("conv2_1", 256), ("conv4_2", 64)):
        o, c = CONV_SHAPES[name][:2]
        rows = band_rows(c, o, h, h, 4, 4, weights_bytes(o, c, 4, 4), "cpu", workers=2)
        chosen[name] = channels_first_products(c, rows * (h // 4))
    assert chosen == {"conv1_2": False, "conv2_1": False, "conv4_2": True}


@pytest.mark.parametrize("m", [2, 4])
def test_backward_is_the_adjoint(xp, m):
    """<conv(x), y> = <x, conv^T(y)> at 64 -> 48 channels, 20 x 27, to 1e-12."""
    rng = np.random.default_rng(3)
    x = xp.asarray(rng.standard_normal((1, 64, 20, 27)))
    y = xp.asarray(rng.standard_normal((1, 48, 20, 27)))
    weights = prepare(xp.asarray(rng.standard_normal((48, 64, 3, 3))), m)
    lhs = float((conv3x3(x, weights) * y).sum())
    rhs = float((x * conv3x3(y, weights, backward=True)).sum())
    assert abs(lhs - rhs) < 1e-12 * abs(lhs) + 1e-9


@pytest.mark.parametrize("m, bound", [(2, 2e-6), (4, 5e-5)])
def test_float32_rounding_stays_small(xp, m, bound):
    """float32 against the float64 loops, relative to the output's scale: about 1e-7 and 1e-5 (docstring)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 64, 24, 24))
    w = rng.standard_normal((64, 64, 3, 3)) / 24
    ref = to_np(conv2d_naive(xp.asarray(x), xp.asarray(w), xp.zeros(64), stride=1, pad=1))
    out = to_np(conv3x3(xp.asarray(x, dtype=xp.float32), prepare(xp.asarray(w, dtype=xp.float32), m)))
    assert out.dtype == np.float32
    err = float(abs(out - ref).max() / abs(ref).max())
    assert err < bound
    assert err > 1e-9                                        # it did run in float32


def test_conv2d_routes_through_winograd_and_back(xp):
    """conv2d_forward/backward with ``winograd=`` give im2col's numbers; the cache remembers the route."""
    rng = np.random.default_rng(5)
    x = xp.asarray(rng.standard_normal((2, 16, 10, 7)))
    wt = xp.asarray(rng.standard_normal((24, 16, 3, 3)))
    b = xp.asarray(rng.standard_normal(24))
    out, cache = conv2d_forward(x, wt, b, relu=True, winograd=prepare(wt, 4))
    ref, ref_cache = conv2d_forward(x, wt, b, relu=True)
    assert cache.winograd is not None and ref_cache.winograd is None
    assert rel_error(out, ref) < 1e-13
    dout = xp.asarray(rng.standard_normal(out.shape))
    assert rel_error(conv2d_backward(dout, cache)[0], conv2d_backward(dout, ref_cache)[0]) < 1e-13
    with pytest.raises(ValueError, match="stride"):
        conv2d_forward(x, wt, b, stride=2, winograd=prepare(wt, 4))
    with pytest.raises(ValueError, match="3x3"):
        prepare(xp.asarray(rng.standard_normal((4, 4, 5, 5))), 4)


@pytest.mark.parametrize("m", [2, 4])
def test_the_bias_column(m):
    """The forward's output transform has one all-ones column: a bias added there reaches all m*m outputs."""
    forward, _ = plans(m)
    ka = np.array(forward.output_transform)
    assert ka.shape == (m * m, (m + 2) ** 2)
    assert (ka[:, forward.ones_column] == 1).all()


@pytest.mark.parametrize("m", [2, 4])
def test_prepare_in_parts_is_the_whole_product(monkeypatch, m):
    """U made a few output channels at a time (PREPARE_BYTES) equals U = KG @ w made at once: to the
    last bits in float64 (the BLAS's 9-term sums may round differently with the product's shape),
    and within one float32 ulp, each element the float64 product rounded once."""
    import minivgg.fast.winograd as winograd
    rng = np.random.default_rng(4)
    a = m + 2
    kg = np.asarray(plans(m)[0].kernel_transform)                           # (a*a, 9) float64
    for dtype in (np.float64, np.float32):
        w = rng.standard_normal((37, 11, 3, 3)).astype(dtype)
        whole = (kg @ w.reshape(37 * 11, 9).T.astype(np.float64)).reshape(a * a, 37, 11).astype(dtype)
        monkeypatch.setattr(winograd, "PREPARE_BYTES", a * a * 11 * 8 * 5)  # 5 channels a part: 8 parts
        u = prepare(w, m).u
        assert u.dtype == dtype and u.flags.c_contiguous and u.shape == whole.shape
        if dtype is np.float64:
            assert rel_error(u, whole) < 1e-15                                  # measured: 1e-17
        else:
            np.testing.assert_array_max_ulp(u, whole, maxulp=1)


def test_one_tile_rule_the_networks():
    """The tile is chosen in one place, ``network.winograd_tile``; ``prepare`` takes it, it has no rule of its own."""
    from minivgg.architecture import CONV_NAMES
    from minivgg.fast.network import winograd_tile
    assert [winograd_tile(name) for name in CONV_NAMES] == [None] + [4] * 11 + [2] * 4
    w = np.zeros((8, 16, 3, 3))
    with pytest.raises(TypeError):
        prepare(w)                                                          # no default tile
    with pytest.raises(ValueError, match="side 3"):
        prepare(w, 3)
    assert [prepare(w, m).u.shape for m in (2, 4)] == [(16, 8, 16), (36, 8, 16)]
    with pytest.raises(ValueError, match="unknown"):
        winograd_tile("conv6_1")
    forward, backward = plans(4)
    assert forward.m == backward.m == 4 and forward.kernel_transform == backward.kernel_transform
    assert forward.input_transform != backward.input_transform             # the flip, folded in
    assert sorted(forward.input_transform) == sorted(backward.input_transform)  # ... as a row permutation


def test_vgg_winograd_im2col_and_reference_agree(xp):
    """The whole network, forward to conv5_1 and back: the fast engine's two routes and the reference
    engine, float64, synthetic weights."""
    rng = np.random.default_rng(6)
    params = {name: (rng.standard_normal(shape) * np.sqrt(2 / (9 * shape[1])), rng.standard_normal(shape[0]) * 0.1)
              for name, shape in CONV_SHAPES.items()}
    device = "cpu" if xp is np else "gpu"
    nets = [VGG19(params, dtype="float64", device=device, conv=conv) for conv in ("winograd", "im2col")]
    x = xp.asarray(rng.standard_normal((1, 3, 37, 45)) * 50)
    taps = ("conv1_1", "conv2_2", "conv4_2", "conv5_1")
    (fa, ca), (fb, cb) = (net.forward(x, taps) for net in nets)
    for tap in taps:
        assert rel_error(fa[tap], fb[tap]) < 1e-12, tap
        on_cpu = xp is np                                                         # Winograd: channels-last
        assert channels_last(fa[tap]) == on_cpu and fa[tap].flags.c_contiguous != on_cpu, tap  # on the CPU
        assert fb[tap].flags.c_contiguous, tap                                    # im2col: C order
    grads = {tap: xp.asarray(rng.standard_normal(fa[tap].shape)) for tap in taps}
    assert rel_error(nets[0].backward(grads, ca), nets[1].backward(grads, cb)) < 1e-12
    reference = VGG19(params, dtype="float64", device=device, engine="reference")
    fr, cr = reference.forward(x, taps)
    assert all(rel_error(fr[tap], fa[tap]) < 1e-12 for tap in taps)
    assert rel_error(reference.backward(grads, cr), nets[0].backward(grads, ca)) < 1e-12
    assert nets[0].fast.winograd_weights("conv1_1") is None and nets[0].fast.winograd_weights("conv4_2").m == 4
    assert nets[0].fast.winograd_weights("conv5_1").m == 2
    assert nets[1].fast.winograd_weights("conv3_1") is None
    with pytest.raises(ValueError, match="conv must be"):
        VGG19(params, conv="fft")
