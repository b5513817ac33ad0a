"""ReLU, average and max pooling: finite differences, adjoint of average pooling, floor, ties, dtypes."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import directional_check, to_np
from minivgg.pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                          max_pool2d_forward)
from minivgg.relu import relu_backward, relu_forward


def _away_from_kink(rng, shape, margin=0.1):
    """Random values with |x| >= margin, so a step of h never crosses ReLU's kink."""
    x = rng.standard_normal(shape)
    return np.where(x >= 0, x + margin, x - margin)


def _distinct(rng, shape, gap=0.05):
    """Values all at least ``gap`` apart, so no max-pool window has a near tie."""
    return rng.permutation(np.prod(shape)).reshape(shape) * gap


def test_relu_forward_backward_and_zero_convention(xp):
    x = xp.asarray([[-2.0, 0.0, 3.0]])
    out, cache = relu_forward(x)
    assert to_np(out).tolist() == [[0.0, 0.0, 3.0]]
    dx = relu_backward(xp.asarray([[5.0, 7.0, 11.0]]), cache)
    assert to_np(dx).tolist() == [[0.0, 0.0, 11.0]]              # derivative 0 at exactly 0


def test_relu_finite_differences(xp):
    rng = np.random.default_rng(0)
    x = xp.asarray(_away_from_kink(rng, (2, 3, 5, 4)))
    out, cache = relu_forward(x)
    dout = xp.asarray(rng.standard_normal(out.shape))
    dx = relu_backward(dout, cache)
    # piecewise linear and away from the kink: only rounding is left (measured <= 2.6e-9 over 20 seeds)
    assert directional_check(lambda v: xp.vdot(relu_forward(v)[0], dout), x, dx, rng) < 1e-8


@pytest.mark.parametrize("shape,kernel,stride", [((2, 3, 7, 9), 2, 2), ((1, 2, 8, 6), 3, 2),
                                                 ((2, 2, 9, 5), 3, 3), ((1, 3, 5, 7), 2, 1)])
def test_pool_finite_differences(xp, shape, kernel, stride):
    rng = np.random.default_rng(1)
    x = xp.asarray(_distinct(rng, shape))
    # both linear in x (max: no window near a tie), so only rounding is left: measured <= 4.0e-8 over 20 seeds
    for forward, backward, tol in ((avg_pool2d_forward, avg_pool2d_backward, 1e-7),
                                   (max_pool2d_forward, max_pool2d_backward, 1e-7)):
        out, cache = forward(x, kernel, stride)
        dout = xp.asarray(rng.standard_normal(out.shape))
        dx = backward(dout, cache)
        f = lambda v: xp.vdot(forward(v, kernel, stride)[0], dout)  # noqa: E731
        assert directional_check(f, x, dx, rng, h=1e-4) < tol


def test_pool_floor_drops_odd_last_row_and_column(xp):
    x = xp.arange(1 * 1 * 5 * 7, dtype=xp.float64).reshape(1, 1, 5, 7)
    avg, cache = avg_pool2d_forward(x)
    mx, _ = max_pool2d_forward(x)
    assert avg.shape == mx.shape == (1, 1, 2, 3)
    assert float(avg[0, 0, 0, 0]) == (0 + 1 + 7 + 8) / 4          # hand calculation
    assert float(mx[0, 0, 1, 2]) == 3 * 7 + 5                     # x[3, 5]: bottom-right of rows 2..3, cols 4..5
    dx = avg_pool2d_backward(xp.ones((1, 1, 2, 3)), cache)
    assert float(abs(dx[0, 0, 4, :]).sum()) == 0.0 and float(abs(dx[0, 0, :, 6]).sum()) == 0.0


def test_max_pool_ties_go_to_first_in_row_major_order(xp):
    x = xp.asarray([[[[1.0, 1.0], [1.0, 1.0]]]])
    out, cache = max_pool2d_forward(x)
    dx = max_pool2d_backward(xp.asarray([[[[3.0]]]]), cache)
    assert to_np(dx).tolist() == [[[[3.0, 0.0], [0.0, 0.0]]]]


def test_avg_pool_adjoint_at_realistic_size(xp):
    rng = np.random.default_rng(2)
    x = xp.asarray(rng.standard_normal((1, 64, 48, 64)))
    out, cache = avg_pool2d_forward(x)
    v = xp.asarray(rng.standard_normal(out.shape))
    lhs = float(xp.vdot(out, v))
    assert abs(lhs - float(xp.vdot(x, avg_pool2d_backward(v, cache)))) / abs(lhs) < 1e-10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_preserved(xp, dtype):
    x = xp.asarray(_distinct(np.random.default_rng(3), (1, 2, 6, 6))).astype(dtype) - 1
    out, cache = relu_forward(x)
    assert out.dtype == relu_backward(out, cache).dtype == dtype
    for forward, backward in ((avg_pool2d_forward, avg_pool2d_backward),
                              (max_pool2d_forward, max_pool2d_backward)):
        out, cache = forward(x)
        assert out.dtype == backward(out, cache).dtype == dtype
