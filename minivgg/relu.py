"""Rectified linear unit.

Shape legend: x, out, dout, dx all share one shape (any; NCHW in the network).

    out = max(x, 0)

Convention at exactly 0: the derivative is taken as 0 (``out > 0`` is the
mask), the same choice as PyTorch and Caffe, and the one PAPER.md's
ReLU-masked loss derivatives assume.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import get_array_module


class ReluCache(NamedTuple):
    """Keeps the output ``out``: its positive entries are the mask, and the
    network keeps ``out`` anyway as the next layer's input, so this costs nothing."""

    out: object


def relu_forward(x):
    """out = max(x, 0); x: any shape -> out: same shape and dtype, cache."""
    xp = get_array_module(x)
    out = xp.maximum(x, 0)
    return out, ReluCache(out)


def relu_backward(dout, cache: ReluCache, *, out=None):
    """dx = dout * [x > 0]  (local derivative: 1 for x > 0, 0 for x <= 0).

    One pass: the boolean mask ``out > 0`` multiplies ``dout`` directly (no
    float copy of the mask). ``out``: optional array to write dx into; it may
    be ``dout`` itself (in place), which the fast network does with gradients it owns.
    """
    xp = get_array_module(dout)
    dx = xp.multiply(dout, cache.out > 0, out=out)
    assert dx.shape == cache.out.shape
    return dx
