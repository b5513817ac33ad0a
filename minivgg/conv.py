"""2-D convolution (cross-correlation, as in Caffe and PAPER.md): forward and backward by im2col.

Shape legend
    N  batch            C  input channels       H, W   input height, width
    O  output channels  KH, KW kernel size      s  stride    p  zero padding
    OH = (H + 2p - KH) // s + 1                 OW = (W + 2p - KW) // s + 1
    K  = C * KH * KW    (length of one unrolled receptive field)
    L  = N * OH * OW    (number of output positions)

    x: (N, C, H, W)   w: (O, C, KH, KW) (OIHW)   b: (O,)   out: (N, O, OH, OW)

    out[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * xpad[n, c, s*i + u, s*j + v]

im2col turns that sum into one matrix product: every receptive field becomes
a column of ``cols`` (K, L), so ``out = w.reshape(O, K) @ cols``. The
backward is the same product transposed: ``dcols = w.reshape(O, K).T @ dout``,
and col2im (the adjoint of im2col) adds each column back onto the pixels it
came from. Both are KH*KW slice copies or additions, never a loop over pixels.

This is the reference: the whole input is unrolled at once, 9 times its size
for a 3x3 kernel. ``conv_naive.py`` holds the loops it is tested against;
``minivgg.fast.conv`` and ``minivgg.fast.winograd`` compute the same function
in bounded memory and with fewer multiplications. Derivations:
``notebooks/01_layers.ipynb``.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import get_array_module


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs: the input ``x`` (a reference to the previous layer's output,
    so it costs no memory), ``w``, stride and padding. ``cols`` (KH*KW times larger than x) is not
    kept: it is rebuilt only when weight gradients are asked for, which style transfer never does."""

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


def windows(a, size, stride, count):
    """Every window of a (..., H, W) at once, as one view (KH, KW, ..., OH, OW) of a's memory:

        view[u, v, ..., i, j] = a[..., SH*i + u, SW*j + v]     (KH, KW) = size, (SH, SW) = stride, (OH, OW) = count

    so ``view[u, v]`` is offset (u, v) of every window (im2col's receptive fields, a
    pooling's windows, Winograd's tiles). Windows overlap when the stride is smaller than
    the size: write through one ``view[u, v]`` at a time (its elements are distinct), never
    through the whole view. Refuses windows that would reach past a's last row or column.
    """
    (kh, kw), (sh, sw), (oh, ow) = size, stride, count
    if sh * (oh - 1) + kh > a.shape[-2] or sw * (ow - 1) + kw > a.shape[-1]:
        raise ValueError(f"{oh}x{ow} windows of {kh}x{kw}, stride {sh}x{sw}, do not fit a "
                         f"{a.shape[-2]}x{a.shape[-1]} map")
    *lead, sr, sc = a.strides
    return get_array_module(a).lib.stride_tricks.as_strided(
        a, shape=(kh, kw, *a.shape[:-2], oh, ow), strides=(sr, sc, *lead, sh * sr, sw * sc))


def im2col(x, kh: int, kw: int, stride: int, pad: int):
    """Unroll receptive fields: x (N, C, H, W) -> cols (K, L), rows (c, u, v), columns (n, i, j).

    cols[(c, u, v), (n, i, j)] = xpad[n, c, s*i + u, s*j + v]: for each kernel
    offset (u, v), one strided view of the padded input (``windows``) fills KH*KW-th of the rows.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = output_size(h, w, kh, kw, stride, pad)
    xpad = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))     # (N, C, H+2p, W+2p)
    fields = windows(xpad, (kh, kw), (stride, stride), (oh, ow))    # (KH, KW, N, C, OH, OW) view
    cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, u, v] = fields[u, v].transpose(1, 0, 2, 3)      # (C, N, OH, OW)
    return cols.reshape(c * kh * kw, n * oh * ow)                    # (K, L)


def col2im(dcols, x_shape, kh: int, kw: int, stride: int, pad: int):
    """Adjoint of ``im2col``: dcols (K, L) -> dx (N, C, H, W), summing where receptive fields overlap.

    Accumulates with slice ``+=`` over the KH*KW kernel offsets (each offset's
    slices are disjoint), never with a fancy-index scatter.
    """
    xp = get_array_module(dcols)
    n, c, h, w = x_shape
    oh, ow = output_size(h, w, kh, kw, stride, pad)
    dcols = dcols.reshape(c, kh, kw, n, oh, ow)                     # (C, KH, KW, N, OH, OW)
    dxpad = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    fields = windows(dxpad, (kh, kw), (stride, stride), (oh, ow))   # (KH, KW, N, C, OH, OW) view
    for u in range(kh):
        for v in range(kw):
            fields[u, v] += dcols[:, u, v].transpose(1, 0, 2, 3)    # (N, C, OH, OW), one offset at a time
    return dxpad[:, :, pad:pad + h, pad:pad + w]                     # (N, C, H, W), a view


def workspace_bytes(c: int, o: int, h: int, w: int, itemsize: int) -> int:
    """Bytes a 3x3, stride-1, pad-1 conv (C -> O channels, an h x w map, batch 1) allocates besides its
    input and output, forward or backward (the memory model asks): the unrolled matrix (K, L), the
    padded input (or padded dx), and one (O, L) product (before the bias, or the ReLU's gradient)."""
    return (9 * c * h * w + c * (h + 2) * (w + 2) + o * h * w) * itemsize


def conv2d_forward(x, w, b, stride: int = 1, pad: int = 1):
    """out = w * x + b (cross-correlation); x (N, C, H, W), w (O, C, KH, KW), b (O,) -> out (N, O, OH, OW), cache."""
    n, c, h, wd = x.shape
    o, c_w, kh, kw = w.shape
    if c != c_w:
        raise ValueError(f"input has {c} channels but the weights expect {c_w}")
    oh, ow = output_size(h, wd, kh, kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad)                           # (K, L)
    out = w.reshape(o, c * kh * kw) @ cols + b.reshape(o, 1)        # (O, K) @ (K, L) -> (O, L)
    out = out.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)           # (N, O, OH, OW)
    return out, Conv2dCache(x, w, stride, pad)


def conv2d_backward(dout, cache: Conv2dCache, weight_grads: bool = False):
    """Gradients of a scalar loss through ``out = w * x + b``.

    Local derivatives: dx = col2im(w^T dout) (the transposed convolution),
    dw[o,c,u,v] = sum_{n,i,j} dout[n,o,i,j] xpad[n,c,s*i+u,s*j+v], db[o] = sum_{n,i,j} dout[n,o,i,j].
    Derived in notebooks/01_layers.ipynb.

    dout: (N, O, OH, OW) -> (dx (N, C, H, W), dw (O, C, KH, KW) or None, db (O,) or None);
    dw and db only when ``weight_grads`` is true (style transfer needs dx alone).
    """
    x, w, stride, pad = cache
    o, c, kh, kw = w.shape
    dout2 = dout.transpose(1, 0, 2, 3).reshape(o, -1)               # (O, L), columns (n, i, j)
    dcols = w.reshape(o, c * kh * kw).T @ dout2                     # (K, O) @ (O, L) -> (K, L)
    dx = col2im(dcols, x.shape, kh, kw, stride, pad)                # (N, C, H, W)
    assert dx.shape == x.shape
    if not weight_grads:
        return dx, None, None
    dw = (dout2 @ im2col(x, kh, kw, stride, pad).T).reshape(w.shape)  # (O, L) @ (L, K) -> (O, C, KH, KW)
    db = dout2.sum(axis=1)                                          # (O,)
    assert dw.shape == w.shape and db.shape == (o,)
    return dx, dw, db
