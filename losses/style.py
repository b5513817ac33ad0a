"""Gram matrices and the style loss (PAPER.md).

Shapes: f: (N, C, H, W) post-ReLU features of one layer; N_l = C filters and
M_l = H * W positions; F = f reshaped to (N, C, M). Gram: G = F F^T, (N, C, C),
G_ij = sum_k F_ik F_jk, **not divided by anything**. A: the style image's Gram.

    E_l = 1 / (4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2          (summed over the batch too)

The 1/(4 N_l^2 M_l^2) makes E_l the squared difference of Gram matrices whose
entries are averages over positions (G / M), per filter pair (1 / N^2), with the 4
cancelling the two 2s the derivative brings down; it keeps layers of very
different sizes on comparable scales. Layer weights w_l are applied by the caller.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import channels_last, device_of, empty, flat_spatial, get_array_module


def gram_matrix(f):
    """G = F F^T; f: (N, C, H, W) -> G: (N, C, C)."""
    fmat = flat_spatial(f)                                         # (N, C, M), a view
    return fmat @ fmat.transpose(0, 2, 1)                          # (N, C, C)


def gram_backward(dgram, f):
    """Local derivative of G = F F^T: dF = (dG + dG^T) F; dgram: (N, C, C), f: (N, C, H, W) -> df like f."""
    xp = get_array_module(dgram, f)
    df = empty(xp, f.shape, xp.result_type(dgram, f), channels_last=channels_last(f), pooled=False)
    xp.matmul(dgram + dgram.transpose(0, 2, 1), flat_spatial(f), out=flat_spatial(df))  # (N, C, M)
    return df


#: Bytes of F one product of ``style_loss_backward`` reads (see there).
SPAN_BYTES = 2 * 2**20


class StyleCache(NamedTuple):
    """f (its positive entries are the mask), gram_diff = G - A, and the scale 1/(N^2 M^2)."""

    f: object
    gram_diff: object
    scale: float


def style_loss_forward(f, target_gram):
    """E_l = sum (G - A)^2 / (4 N_l^2 M_l^2); f: (N, C, H, W), target_gram A: (N or 1, C, C) -> (0-d E_l, cache)."""
    xp = get_array_module(f, target_gram)
    n, c, h, w = f.shape
    if target_gram.shape[-2:] != (c, c):
        raise ValueError(f"a Gram target of shape {tuple(target_gram.shape)} does not fit {c} filters")
    scale = 1.0 / (float(c) ** 2 * float(h * w) ** 2)              # 1 / (N_l^2 M_l^2)
    gram_diff = gram_matrix(f) - target_gram                       # (N, C, C)
    loss = 0.25 * scale * xp.vdot(gram_diff, gram_diff)            # 0-d
    return loss, StyleCache(f, gram_diff, scale)


def style_loss_backward(cache: StyleCache, dloss=1.0, *, mask: bool = True):
    """The paper's derivative: dE_l/dF_ij = ((F^T (G - A))_ji) / (N_l^2 M_l^2) if F_ij > 0, else 0.

    A is a Gram matrix, so G - A is symmetric and (F^T (G - A))^T = (G - A) F: one (C, C) @ (C, M)
    product, with the scale applied to the small (C, C) factor. The ReLU mask
    is the same as in the content loss (see losses/content.py): it is what the
    ReLU below applies anyway, so ``mask=False`` (the objective's choice) skips
    this copy of it and returns the unmasked (G - A) F / (N_l^2 M_l^2).
    Derived in notebooks/02_losses.ipynb.

    dF has F's memory order. Channels-last, each product writes an (M, C)
    matrix, which the BLAS computes with M as its long side and packs M-long
    panels into each thread's buffer; on the CPU the product goes ``SPAN_BYTES``
    of F at a time so those buffers stay small (measured with OpenBLAS at
    512 x 512: whole, the two threads' buffers held 33 MB more at the
    evaluation's peak). On the GPU it is one product, one launch.
    """
    f, gram_diff, scale = cache
    xp = get_array_module(f)
    scaled = gram_diff * gram_diff.dtype.type(scale * dloss)       # (N, C, C)
    df = empty(xp, f.shape, scaled.dtype, channels_last=channels_last(f), pooled=False)  # f's order
    fmat, dfmat = flat_spatial(f), flat_spatial(df)                # (N, C, M) views
    n, c, m = fmat.shape
    span = max(1, SPAN_BYTES // (c * f.dtype.itemsize)) if device_of(f) == "cpu" else m  # GPU: one launch
    for k0 in range(0, m, span):
        xp.matmul(scaled, fmat[:, :, k0:k0 + span], out=dfmat[:, :, k0:k0 + span])  # (C, C) @ (C, span)
    if mask:
        xp.multiply(df, f > 0, out=df)                             # the mask, in place
    assert df.shape == f.shape
    return df
