"""2-D convolution (cross-correlation, as in Caffe and PAPER.md): forward and backward.

Shape legend
    N  batch            C  input channels       H, W   input height, width
    O  output channels  KH, KW kernel size      s  stride    p  zero padding
    OH = (H + 2p - KH) // s + 1                 OW = (W + 2p - KW) // s + 1
    K  = C * KH * KW    (length of one unrolled receptive field)
    L  = N * OH * OW    (number of output positions)

    x: (N, C, H, W)   w: (O, C, KH, KW) (OIHW)   b: (O,)   out: (N, O, OH, OW)

    out[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * xpad[n, c, s*i + u, s*j + v]

The fast path is one matrix product: the receptive fields are unrolled into a
(K, L) matrix ``cols`` (im2col, built by KH*KW strided slice copies, never a
loop over pixels), and ``out = w.reshape(O, K) @ cols``. Backward is the
transpose of that linear map: ``dcols = w.reshape(O, K).T @ dout`` folded back
onto the padded image by KH*KW slice additions (col2im). Derivations:
``notebooks/01_layers.ipynb``. ``conv2d_naive.py`` holds the loop reference.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import get_array_module


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs.

    Keeps the input ``x`` (a reference, usually the previous layer's output, so
    it costs no memory) and ``w``; the unrolled ``cols`` (KH*KW times larger
    than x) is *not* kept: it is rebuilt only when weight gradients are asked
    for, which style transfer never does.
    """

    x: object  # (N, C, H, W)
    w: object  # (O, C, KH, KW)
    stride: int
    pad: int


def output_size(h: int, w: int, kh: int, kw: int, stride: int, pad: int) -> tuple[int, int]:
    """(OH, OW) = ((H + 2p - KH) // s + 1, (W + 2p - KW) // s + 1); refuses an empty output."""
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(
            f"a {kh}x{kw} kernel with stride {stride} and padding {pad} does not fit a "
            f"{h}x{w} input")
    return oh, ow


def im2col(x, kh: int, kw: int, stride: int, pad: int):
    """Unroll receptive fields: x (N, C, H, W) -> cols (K, L), rows ordered (c, u, v), columns (n, i, j)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = output_size(h, w, kh, kw, stride, pad)
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)            # (C, KH, KW, N, OH, OW)
    for u in range(kh):
        for v in range(kw):
            window = xpad[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride]  # (N, C, OH, OW)
            cols[:, u, v] = window.transpose(1, 0, 2, 3)               # (C, N, OH, OW)
    return cols.reshape(c * kh * kw, n * oh * ow)                      # (K, L)


def col2im(dcols, x_shape, kh: int, kw: int, stride: int, pad: int):
    """Adjoint of ``im2col``: dcols (K, L) -> dx (N, C, H, W), summing overlapping fields.

    Accumulates with slice ``+=`` over the KH*KW kernel offsets (each offset's
    slices are disjoint), never with a fancy-index scatter.
    """
    xp = get_array_module(dcols)
    n, c, h, w = x_shape
    oh, ow = output_size(h, w, kh, kw, stride, pad)
    dcols = dcols.reshape(c, kh, kw, n, oh, ow)                        # (C, KH, KW, N, OH, OW)
    dxpad = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for u in range(kh):
        for v in range(kw):
            dxpad[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride] += (
                dcols[:, u, v].transpose(1, 0, 2, 3))                  # (N, C, OH, OW)
    return dxpad[:, :, pad:pad + h, pad:pad + w]


def conv2d_forward(x, w, b, stride: int = 1, pad: int = 1):
    """out = w * x + b (cross-correlation).

    x: (N, C, H, W), w: (O, C, KH, KW), b: (O,) -> out: (N, O, OH, OW), cache.
    OH = (H + 2*pad - KH) // stride + 1, OW likewise.
    """
    xp = get_array_module(x, w, b)
    n, c, h, wd = x.shape
    o, c_w, kh, kw = w.shape
    if c != c_w:
        raise ValueError(f"input has {c} channels but the weights expect {c_w}")
    oh, ow = output_size(h, wd, kh, kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad)                              # (K, L)
    out = w.reshape(o, -1) @ cols                                      # (O, L)
    out += b.reshape(o, 1)
    out = out.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)              # (N, O, OH, OW)
    return xp.ascontiguousarray(out), Conv2dCache(x, w, stride, pad)


def conv2d_backward(dout, cache: Conv2dCache, weight_grads: bool = False):
    """Gradients of a scalar loss through ``out = w * x + b``.

    Local derivatives: dx = w^T * dout (the transposed convolution),
    dw[o,c,u,v] = sum_{n,i,j} dout[n,o,i,j] xpad[n,c,s*i+u,s*j+v], db[o] = sum_{n,i,j} dout[n,o,i,j].
    Derived in notebooks/01_layers.ipynb.

    dout: (N, O, OH, OW) -> (dx (N, C, H, W), dw (O, C, KH, KW) or None, db (O,) or None);
    dw and db only when ``weight_grads`` is true (style transfer needs dx alone).
    """
    x, w, stride, pad = cache
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    dout_mat = dout.transpose(1, 0, 2, 3).reshape(o, -1)               # (O, L)
    dcols = w.reshape(o, -1).T @ dout_mat                              # (K, L)
    dx = col2im(dcols, x.shape, kh, kw, stride, pad)                   # (N, C, H, W)
    assert dx.shape == x.shape
    if not weight_grads:
        return dx, None, None
    dw = (dout_mat @ im2col(x, kh, kw, stride, pad).T).reshape(w.shape)  # (O, C, KH, KW)
    db = dout_mat.sum(axis=1)                                          # (O,)
    assert dw.shape == w.shape and db.shape == (o,)
    return dx, dw, db
