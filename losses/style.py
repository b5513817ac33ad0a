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

from minivgg.backend import get_array_module


def gram_matrix(f):
    """G = F F^T; f: (N, C, H, W) -> G: (N, C, C)."""
    n, c, h, w = f.shape
    fmat = f.reshape(n, c, h * w)                                  # F: (N, C, M)
    return fmat @ fmat.transpose(0, 2, 1)                          # (N, C, C)


def gram_backward(dgram, f):
    """Local derivative of G = F F^T: dF = (dG + dG^T) F; dgram: (N, C, C), f: (N, C, H, W) -> df like f."""
    n, c, h, w = f.shape
    df = (dgram + dgram.transpose(0, 2, 1)) @ f.reshape(n, c, h * w)  # (N, C, M)
    return df.reshape(f.shape)


class StyleCache(NamedTuple):
    """f (its positive entries are the mask), gram_diff = G - A, and the scale 1/(N^2 M^2)."""

    f: object
    gram_diff: object
    scale: float


def style_loss_forward(f, target_gram, gram=None):
    """E_l = sum (G - A)^2 / (4 N_l^2 M_l^2); f: (N, C, H, W), target_gram A: (N or 1, C, C) -> (0-d E_l, cache).

    gram: G = F F^T when the caller has made it already (the fast engine sums it on several threads)."""
    xp = get_array_module(f, target_gram)
    n, c, h, w = f.shape
    if target_gram.shape[-2:] != (c, c):
        raise ValueError(f"a Gram target of shape {tuple(target_gram.shape)} does not fit {c} filters")
    scale = 1.0 / (float(c) ** 2 * float(h * w) ** 2)              # 1 / (N_l^2 M_l^2)
    gram_diff = (gram_matrix(f) if gram is None else gram) - target_gram  # G - A: (N, C, C)
    loss = 0.25 * scale * xp.sum(gram_diff * gram_diff)            # 0-d
    return loss, StyleCache(f, gram_diff, scale)


def style_loss_backward(cache: StyleCache, dloss=1.0):
    """The paper's derivative: dE_l/dF_ij = ((F^T (G - A))_ji) / (N_l^2 M_l^2) if F_ij > 0, else 0.

    A is a Gram matrix, so G - A is symmetric and (F^T (G - A))^T = (G - A) F: one
    (C, C) @ (C, M) product. The ReLU mask is the same as in the content loss
    (see losses/content.py). Derived in notebooks/02_losses.ipynb.
    """
    f, gram_diff, scale = cache
    n, c, h, w = f.shape
    df = (dloss * scale) * (gram_diff @ f.reshape(n, c, h * w))    # (N, C, C) @ (N, C, M)
    df = df.reshape(f.shape) * (f > 0)                             # the paper's mask
    assert df.shape == f.shape
    return df


def gram_target_bytes(style_shape, itemsize: int) -> int:
    """Bytes the Gram target keeps for the whole run, A / M_s (``losses.statistics.gram_target``):
    style features (Ns, C, Hs, Ws) -> Ns C^2 s (s = itemsize)."""
    ns, c = style_shape[:2]
    return ns * c * c * itemsize


def gram_workspace_bytes(shape, itemsize: int) -> int:
    """Bytes ``gram_forward`` + ``style_loss_backward`` take at their peak besides f and the returned
    gradient (the peak of the pair, less the gradient's A s), for f (N, C, H, W), A = N C H W
    elements, s = itemsize:

        max(3 N C^2 s - A s,  N C^2 s + A s + A)

    forward: the target rescaled to M positions, G and G - A, all alive at the subtraction and
    again beside (G - A)^2 (3 N C^2 s); backward: G - A in the cache (N C^2 s), the product
    (G - A) F, scaled in place (NumPy elides the temporary; without that, product and copy are
    2 A s, no more than the next step), then it, the mask [f > 0] (A bytes, bool) and the
    gradient (A s + A + A s).
    """
    n, c, h, w = shape
    a, cc = n * c * h * w, n * c * c
    return max(3 * cc * itemsize - a * itemsize, cc * itemsize + a * itemsize + a)
