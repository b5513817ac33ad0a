"""Total variation (not in the paper; off by default): a smoothness prior on the image.

Shapes: x: (N, C, H, W) image in input space; loss 0-d; dx like x.

    TV(x) = sum_{n,c,i,j} (x[i+1, j] - x[i, j])^2 + (x[i, j+1] - x[i, j])^2

Plain sum of squared neighbour differences (no square root, no mean).
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import get_array_module


class TVCache(NamedTuple):
    """The vertical and horizontal neighbour differences."""

    dv: object  # (N, C, H-1, W)
    dh: object  # (N, C, H, W-1)


def tv_loss_forward(x):
    """TV = sum dv^2 + sum dh^2 with dv = x[:, :, 1:] - x[:, :, :-1], dh = x[..., 1:] - x[..., :-1]."""
    xp = get_array_module(x)
    dv = x[:, :, 1:, :] - x[:, :, :-1, :]                          # (N, C, H-1, W)
    dh = x[:, :, :, 1:] - x[:, :, :, :-1]                          # (N, C, H, W-1)
    loss = xp.vdot(dv, dv) + xp.vdot(dh, dh)
    return loss, TVCache(dv, dh)


def tv_loss_backward(cache: TVCache, dloss=1.0):
    """dTV/dx: each difference d = x_b - x_a sends +2d to x_b and -2d to x_a."""
    xp = get_array_module(cache.dv)
    dv, dh = cache
    n, c, hm1, w = dv.shape
    dx = xp.zeros((n, c, hm1 + 1, w), dtype=dv.dtype)
    dx[:, :, 1:, :] += 2 * dv
    dx[:, :, :-1, :] -= 2 * dv
    dx[:, :, :, 1:] += 2 * dh
    dx[:, :, :, :-1] -= 2 * dh
    if dloss != 1.0:
        dx *= dloss
    return dx
