"""Finite-difference checks in float64, in the manner of Chainer's gradient_check.

``directional_check(f, x, grad, rng)``: for a scalar function f, compare the
centred difference (f(x + h r) - f(x - h r)) / 2h with <grad, r> along random
unit directions r: two evaluations per direction, whatever the size of x.
"""
from __future__ import annotations

import numpy as np

from minivgg.backend import get_array_module


def to_np(a):
    """NumPy copy of a NumPy or CuPy array or scalar."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def channels_last_copy(a):
    """a (N, C, H, W) copied into channels-last memory, (N, H, W, C), and returned as its (N, C, H, W) view."""
    xp = get_array_module(a)
    return xp.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def rel_error(a, b) -> float:
    """|a - b| / max(|a|, |b|, tiny), on scalars or arrays (norms)."""
    a, b = to_np(a).astype(np.float64), to_np(b).astype(np.float64)
    num = np.linalg.norm(a - b)
    den = max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
    return float(num / den)


def directional_check(f, x, grad, rng, h=1e-5, directions=3):
    """Worst relative error between (f(x+hr) - f(x-hr)) / 2h and <grad, r> over random unit r.

    f: array -> scalar (0-d array or float); x, grad: same shape, float64.
    """
    xp = get_array_module(x)
    worst = 0.0
    for _ in range(directions):
        r = rng.standard_normal(x.shape)
        r /= np.linalg.norm(r)
        r = xp.asarray(r)
        numeric = (float(f(x + h * r)) - float(f(x - h * r))) / (2 * h)
        analytic = float(xp.vdot(grad, r))
        worst = max(worst, abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-300))
    return worst
