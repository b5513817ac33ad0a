"""Losses against hand calculations and naive loops, their derivatives, the paper's ReLU mask."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import directional_check, rel_error, to_np
from losses import (content_loss_backward, content_loss_forward, gram_backward, gram_matrix,
                    style_loss_backward, style_loss_forward, tv_loss_backward, tv_loss_forward)
from minivgg.relu import ReluCache, relu_backward


def _positive(rng, shape, margin=0.1):
    """Post-ReLU-like features kept away from 0 (no kink within a finite-difference step)."""
    return np.abs(rng.standard_normal(shape)) + margin


def test_content_loss_hand_value(xp):
    f = xp.asarray([[[[1.0, 2.0], [0.0, 4.0]]]])
    p = xp.asarray([[[[0.0, 2.0], [3.0, 1.0]]]])
    loss, cache = content_loss_forward(f, p)
    assert float(loss) == 0.5 * (1 + 0 + 9 + 9)                    # 1/2 * sum of squares
    # derivative (F - P) where F > 0, 0 where F is not positive (F[1, 0] = 0 is masked)
    assert to_np(content_loss_backward(cache)).ravel().tolist() == [1.0, 0.0, 0.0, 3.0]


def test_content_mask_is_what_relu_backward_applies(xp):
    """The paper's masked derivative equals the plain (F - P) sent through ReLU's backward."""
    rng = np.random.default_rng(0)
    f = xp.maximum(xp.asarray(rng.standard_normal((1, 4, 5, 6))), 0)   # real post-ReLU map: zeros
    p = xp.asarray(rng.standard_normal(f.shape))
    _, cache = content_loss_forward(f, p)
    through_relu = relu_backward(f - p, ReluCache(f))
    assert float(abs(content_loss_backward(cache) - through_relu).max()) == 0.0
    assert float((f == 0).mean()) > 0.3                              # the mask really bites


def test_gram_matches_naive_loop(xp):
    rng = np.random.default_rng(1)
    f = rng.standard_normal((2, 3, 4, 5))
    naive = np.zeros((2, 3, 3))
    for n in range(2):
        for i in range(3):
            for j in range(3):
                naive[n, i, j] = sum(f[n, i].ravel()[k] * f[n, j].ravel()[k] for k in range(20))
    assert float(np.abs(to_np(gram_matrix(xp.asarray(f))) - naive).max()) < 1e-12


def test_style_loss_matches_naive_formula(xp):
    rng = np.random.default_rng(2)
    f = _positive(rng, (1, 3, 4, 5))
    b = rng.standard_normal((1, 3, 7))
    a = b @ b.transpose(0, 2, 1)                                   # a Gram target: symmetric
    n_l, m_l = 3, 20
    g = np.einsum("ik,jk->ij", f[0].reshape(3, -1), f[0].reshape(3, -1))
    naive = sum((g[i, j] - a[0, i, j]) ** 2 for i in range(3) for j in range(3)) / (4 * n_l**2 * m_l**2)
    loss, cache = style_loss_forward(xp.asarray(f), xp.asarray(a))
    assert abs(float(loss) - naive) / naive < 1e-13
    # the paper's closed form, written with explicit loops: ((F^T (G - A))_ji) / (N^2 M^2)
    fm = f[0].reshape(3, -1)
    naive_df = np.zeros_like(fm)
    for i in range(3):
        for k in range(20):
            naive_df[i, k] = sum(fm[j, k] * (g[j, i] - a[0, j, i]) for j in range(3)) / (n_l**2 * m_l**2)
    assert rel_error(style_loss_backward(cache).reshape(3, -1), naive_df) < 1e-13


@pytest.mark.parametrize("which", ["content", "style", "gram", "tv"])
def test_finite_differences(xp, which):
    rng = np.random.default_rng(3)
    f = xp.asarray(_positive(rng, (1, 4, 5, 3)))
    if which == "content":
        p = xp.asarray(rng.standard_normal(f.shape))
        fwd = lambda v: content_loss_forward(v, p)[0]             # noqa: E731
        grad = content_loss_backward(content_loss_forward(f, p)[1])
    elif which == "style":
        b = rng.standard_normal((1, 4, 9))
        a = xp.asarray(b @ b.transpose(0, 2, 1))                  # Gram targets are symmetric
        fwd = lambda v: style_loss_forward(v, a)[0]               # noqa: E731
        grad = style_loss_backward(style_loss_forward(f, a)[1])
    elif which == "gram":
        dgram = xp.asarray(rng.standard_normal((1, 4, 4)))        # random upstream, not symmetric
        fwd = lambda v: xp.vdot(gram_matrix(v), dgram)            # noqa: E731
        grad = gram_backward(dgram, f)
    else:
        fwd = lambda v: tv_loss_forward(v)[0]                     # noqa: E731
        grad = tv_loss_backward(tv_loss_forward(f)[1])
    assert directional_check(fwd, f, grad, rng, h=1e-5) < 1e-7


def test_tv_hand_value(xp):
    x = xp.asarray([[[[0.0, 1.0], [3.0, 7.0]]]])
    loss, _ = tv_loss_forward(x)
    assert float(loss) == (3**2 + 6**2) + (1**2 + 4**2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_preserved(xp, dtype):
    rng = np.random.default_rng(4)
    f = xp.asarray(_positive(rng, (1, 2, 3, 3))).astype(dtype)
    _, cc = content_loss_forward(f, f * 0)
    _, sc = style_loss_forward(f, gram_matrix(f) * 0)
    _, tc = tv_loss_forward(f)
    for g in (content_loss_backward(cc), style_loss_backward(sc), tv_loss_backward(tc), gram_matrix(f)):
        assert g.dtype == dtype
