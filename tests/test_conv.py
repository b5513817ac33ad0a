"""The reference conv2d (whole im2col): against the loops, finite differences for x, w and b, adjoints, dtypes."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import directional_check
from minivgg.conv import col2im, conv2d_backward, conv2d_forward, im2col
from minivgg.conv_naive import conv2d_backward_naive, conv2d_naive

# (N, C, H, W, O, KH, KW, stride, pad): non-square images, odd sizes, batch > 1,
# non-square kernels, stride 2, padding 0/1/2.
CASES = [
    (1, 3, 7, 5, 4, 3, 3, 1, 1),
    (2, 3, 6, 9, 5, 3, 3, 1, 0),
    (3, 2, 9, 7, 4, 3, 3, 2, 1),
    (2, 4, 8, 5, 3, 2, 3, 1, 2),
    (2, 3, 11, 6, 2, 5, 3, 2, 2),
    (1, 5, 5, 5, 6, 1, 1, 1, 0),
]


def _data(xp, rng, n, c, h, w, o, kh, kw):
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    w_ = xp.asarray(rng.standard_normal((o, c, kh, kw)))
    b = xp.asarray(rng.standard_normal(o))
    return x, w_, b


@pytest.mark.parametrize("case", CASES)
def test_im2col_matches_naive_forward_and_backward(xp, case):
    n, c, h, w, o, kh, kw, s, p = case
    rng = np.random.default_rng(1)
    x, wt, b = _data(xp, rng, n, c, h, w, o, kh, kw)
    out, cache = conv2d_forward(x, wt, b, stride=s, pad=p)
    ref = conv2d_naive(x, wt, b, stride=s, pad=p)
    assert out.shape == ref.shape
    assert float(abs(out - ref).max()) < 1e-12
    dout = xp.asarray(rng.standard_normal(out.shape))
    dx, dw, db = conv2d_backward(dout, cache, weight_grads=True)
    dx_ref, dw_ref, db_ref = conv2d_backward_naive(dout, x, wt, stride=s, pad=p)
    for got, want in ((dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        assert got.shape == want.shape
        assert float(abs(got - want).max()) < 1e-12


def test_non_contiguous_inputs(xp):
    rng = np.random.default_rng(2)
    base = xp.asarray(rng.standard_normal((2, 7, 3, 9)))
    x = base.transpose(0, 2, 3, 1)[:, :, ::-1, :]                 # (2, 3, 9, 7), strides scrambled
    w_base = xp.asarray(rng.standard_normal((3, 3, 4, 3)))
    wt = w_base.transpose(2, 1, 0, 3)                              # (4, 3, 3, 3) non-contiguous
    b = xp.asarray(rng.standard_normal(8))[::2]
    assert not x.flags.c_contiguous and not wt.flags.c_contiguous
    out, cache = conv2d_forward(x, wt, b, stride=1, pad=1)
    ref = conv2d_naive(xp.ascontiguousarray(x), xp.ascontiguousarray(wt), xp.ascontiguousarray(b))
    assert float(abs(out - ref).max()) < 1e-12
    dout = xp.asarray(rng.standard_normal(out.shape[::-1])).transpose(3, 2, 1, 0)
    dx, dw, _ = conv2d_backward(dout, cache, weight_grads=True)
    dx_ref, dw_ref, _ = conv2d_backward_naive(xp.ascontiguousarray(dout), x, wt)
    assert float(abs(dx - dx_ref).max()) < 1e-12 and float(abs(dw - dw_ref).max()) < 1e-12


@pytest.mark.parametrize("case", CASES[:4])
def test_finite_differences_each_input(xp, case):
    """Centred differences along random directions, separately for x, w and b (conv is smooth)."""
    n, c, h, w, o, kh, kw, s, p = case
    rng = np.random.default_rng(3)
    x, wt, b = _data(xp, rng, n, c, h, w, o, kh, kw)
    out, cache = conv2d_forward(x, wt, b, stride=s, pad=p)
    dout = xp.asarray(rng.standard_normal(out.shape))              # random upstream, never ones
    dx, dw, db = conv2d_backward(dout, cache, weight_grads=True)

    def loss(x_, w_, b_):
        return xp.vdot(conv2d_forward(x_, w_, b_, stride=s, pad=p)[0], dout)

    assert directional_check(lambda v: loss(v, wt, b), x, dx, rng) < 1e-7
    assert directional_check(lambda v: loss(x, v, b), wt, dw, rng) < 1e-7
    assert directional_check(lambda v: loss(x, wt, v), b, db, rng) < 1e-7


def test_adjoint_in_x_and_in_w_at_realistic_size(xp):
    """<A u, v> = <u, A^T v> for the conv as a linear map of x and of w (64 -> 64 channels, 48x64)."""
    rng = np.random.default_rng(4)
    x = xp.asarray(rng.standard_normal((1, 64, 48, 64)))
    wt = xp.asarray(rng.standard_normal((64, 64, 3, 3)))
    zero_b = xp.zeros(64)
    v = xp.asarray(rng.standard_normal((1, 64, 48, 64)))
    out, cache = conv2d_forward(x, wt, zero_b)
    dx, dw, _ = conv2d_backward(v, cache, weight_grads=True)
    lhs = float(xp.vdot(out, v))
    assert abs(lhs - float(xp.vdot(x, dx))) / abs(lhs) < 1e-10     # linear in x
    assert abs(lhs - float(xp.vdot(wt, dw))) / abs(lhs) < 1e-10    # linear in w


def test_im2col_col2im_adjoint(xp):
    rng = np.random.default_rng(5)
    x = xp.asarray(rng.standard_normal((2, 5, 13, 10)))
    cols = im2col(x, 3, 2, 2, 1)
    v = xp.asarray(rng.standard_normal(cols.shape))
    lhs = float(xp.vdot(cols, v))
    rhs = float(xp.vdot(x, col2im(v, x.shape, 3, 2, 2, 1)))
    assert abs(lhs - rhs) / abs(lhs) < 1e-12


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_preserved(xp, dtype):
    rng = np.random.default_rng(6)
    x, wt, b = (a.astype(dtype) for a in _data(xp, rng, 2, 3, 6, 5, 4, 3, 3))
    out, cache = conv2d_forward(x, wt, b)
    dx, dw, db = conv2d_backward(out, cache, weight_grads=True)
    assert {a.dtype for a in (out, dx, dw, db)} == {np.dtype(dtype)}


def test_refuses_mismatched_channels_and_empty_output(xp):
    x = xp.zeros((1, 3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        conv2d_forward(x, xp.zeros((2, 4, 3, 3)), xp.zeros(2))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d_forward(x, xp.zeros((2, 3, 7, 7)), xp.zeros(2), pad=0)
