"""The fast engine's content and style losses: the reference's (``losses``) on channels-last features.

Same values and normalisations as ``losses.content`` and ``losses.style``
(tested against them), with three transformations:

* **memory order**: features may be channels-last (``minivgg.fast.layout``);
  every product and sum reads them through views (``flat_spatial``,
  ``flat_memory``) instead of ``reshape``, which would copy (``vdot`` of a
  channels-last array copied it, 3.5 ms per evaluation at 256 x 256), and
  gradients come out in the features' own order;
* **no mask**: the gradients are the unmasked dL/dF. Every tap is a ReLU's
  output, and the network's walk applies that ReLU's mask [F > 0] anyway
  (``losses/content.py`` has the argument), so the losses skip their copy;
* **spanned style gradient**: (G - A) F is computed ``SPAN_BYTES`` of F at a
  time on the CPU, the scale applied to the small (C, C) factor.

Shapes as in ``losses``: f, p (N, C, H, W); G, A (N, C, C); losses 0-d arrays.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import device_of, get_array_module
from minivgg.fast.arrays import empty
from minivgg.fast.layout import channels_last, flat_memory, flat_spatial

#: Bytes of F one product of ``style_loss_backward`` reads (see there).
SPAN_BYTES = 2 * 2**20


class ContentCache(NamedTuple):
    """diff = f - p, in f's memory order."""

    diff: object


def content_loss_forward(f, p, *, pool=None):
    """L = 1/2 sum (f - p)^2; f, p: (N, C, H, W) -> (0-d loss, cache). diff comes from ``pool`` if given."""
    if f.shape != p.shape:
        raise ValueError(f"content features {tuple(f.shape)} and target {tuple(p.shape)} differ in shape")
    xp = get_array_module(f, p)
    diff = xp.subtract(f, p, out=empty(pool, xp, f.shape, xp.result_type(f, p), channels_last(f)))
    flat = flat_memory(diff)                                       # a view, in either order
    loss = 0.5 * xp.vdot(flat, flat)                               # 0-d
    return loss, ContentCache(diff)


def content_loss_backward(cache: ContentCache, dloss=1.0, *, pool=None):
    """dloss * (F - P), unmasked (module docstring); in F's memory order, from ``pool`` if given."""
    diff = cache.diff
    xp = get_array_module(diff)
    df = empty(pool, xp, diff.shape, diff.dtype, channels_last(diff))
    xp.multiply(diff, diff.dtype.type(dloss), out=df)
    return df


def gram_matrix(f):
    """G = F F^T; f: (N, C, H, W) in either memory order -> G: (N, C, C)."""
    fmat = flat_spatial(f)                                         # (N, C, M), a view
    return fmat @ fmat.transpose(0, 2, 1)                          # (N, C, C)


class StyleCache(NamedTuple):
    """f, gram_diff = G - A, and the scale 1/(N^2 M^2)."""

    f: object
    gram_diff: object
    scale: float


def style_loss_forward(f, target_gram):
    """E_l = sum (G - A)^2 / (4 N_l^2 M_l^2); f: (N, C, H, W), A: (N or 1, C, C) -> (0-d E_l, cache)."""
    xp = get_array_module(f, target_gram)
    n, c, h, w = f.shape
    if target_gram.shape[-2:] != (c, c):
        raise ValueError(f"a Gram target of shape {tuple(target_gram.shape)} does not fit {c} filters")
    scale = 1.0 / (float(c) ** 2 * float(h * w) ** 2)              # 1 / (N_l^2 M_l^2)
    gram_diff = gram_matrix(f) - target_gram                       # (N, C, C)
    loss = 0.25 * scale * xp.vdot(gram_diff, gram_diff)            # 0-d
    return loss, StyleCache(f, gram_diff, scale)


def style_loss_backward(cache: StyleCache, dloss=1.0):
    """dloss * (G - A) F / (N_l^2 M_l^2), unmasked, in F's memory order (plain memory: a gradient).

    Channels-last, each product writes an (M, C) matrix, which the BLAS
    computes with M as its long side and packs M-long panels into each
    thread's buffer; on the CPU the product goes ``SPAN_BYTES`` of F at a time
    so those buffers stay small (measured with OpenBLAS at 512 x 512: whole,
    the two threads' buffers held 33 MB more at the evaluation's peak). On the
    GPU it is one product, one launch.
    """
    f, gram_diff, scale = cache
    xp = get_array_module(f)
    scaled = gram_diff * gram_diff.dtype.type(scale * dloss)       # (N, C, C)
    df = empty(None, xp, f.shape, scaled.dtype, channels_last=channels_last(f))  # f's order
    fmat, dfmat = flat_spatial(f), flat_spatial(df)                # (N, C, M) views
    n, c, m = fmat.shape
    span = max(1, SPAN_BYTES // (c * f.dtype.itemsize)) if device_of(f) == "cpu" else m  # GPU: one launch
    for k0 in range(0, m, span):
        xp.matmul(scaled, fmat[:, :, k0:k0 + span], out=dfmat[:, :, k0:k0 + span])  # (C, C) @ (C, span)
    assert df.shape == f.shape
    return df
