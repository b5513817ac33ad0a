"""Explicit-loop convolution: the readable reference the fast path is tested against.

Same shapes and conventions as ``minivgg.conv`` (NCHW input, OIHW weights,
cross-correlation, zero padding, floor output size). One Python iteration per
output value, so only for tiny inputs: tests and notebooks.
"""
from __future__ import annotations

from minivgg.backend import get_array_module
from minivgg.conv import output_size


def _padded(x, pad):
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def conv2d_naive(x, w, b, stride: int = 1, pad: int = 1):
    """out[n, o, i, j] = b[o] + sum_{c,u,v} w[o,c,u,v] xpad[n, c, s*i+u, s*j+v].

    x: (N, C, H, W), w: (O, C, KH, KW), b: (O,) -> out: (N, O, OH, OW).
    """
    xp = get_array_module(x, w, b)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = output_size(h, wd, kh, kw, stride, pad)
    xpad = _padded(x, pad)
    out = xp.zeros((n, o, oh, ow), dtype=x.dtype)
    for ni in range(n):
        for oi in range(o):
            for i in range(oh):
                for j in range(ow):
                    window = xpad[ni, :, stride * i:stride * i + kh, stride * j:stride * j + kw]
                    out[ni, oi, i, j] = (window * w[oi]).sum() + b[oi]
    return out


def conv2d_backward_naive(dout, x, w, stride: int = 1, pad: int = 1):
    """Loop form of the backward: every output value sends dout back along its own window.

    dout: (N, O, OH, OW) -> dx (N, C, H, W), dw (O, C, KH, KW), db (O,).
    """
    xp = get_array_module(dout, x, w)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    _, _, oh, ow = dout.shape
    xpad = _padded(x, pad)
    dxpad = xp.zeros_like(xpad)
    dw = xp.zeros_like(w)
    db = xp.zeros((o,), dtype=w.dtype)
    for ni in range(n):
        for oi in range(o):
            for i in range(oh):
                for j in range(ow):
                    g = dout[ni, oi, i, j]
                    rows = slice(stride * i, stride * i + kh)
                    cols = slice(stride * j, stride * j + kw)
                    dxpad[ni, :, rows, cols] += g * w[oi]
                    dw[oi] += g * xpad[ni, :, rows, cols]
                    db[oi] += g
    return dxpad[:, :, pad:pad + h, pad:pad + wd], dw, db
