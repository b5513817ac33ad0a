"""Guided Gram matrices and the guided style loss: spatial control (Gatys, Ecker, Bethge,
Hertzmann & Shechtman 2017, "Controlling Perceptual Factors in Neural Style Transfer").

Shapes: f: (N, C, H, W) post-ReLU features of one layer; N_l = C filters and M_l = M = H * W
positions; F = f as (N, C, M). t: (H, W) one region's guide at this layer's resolution
(``minivgg.masks`` takes an image mask down to it), values in [0, 1], soft edges allowed,
not all zero; T = diag(t) over the M positions. Gram matrices: (N, C, C).

Guided Gram, **divided by the region's mass** m = sum_k t_k^2 (for a 0/1 mask: the number of
positions inside it, the region's own M_l):

    G_t = (F o t)(F o t)^T / m            (G_t)_ij = sum_k t_k^2 F_ik F_jk / sum_k t_k^2

a weighted *mean* over positions of F_:k F_:k^T. It does not grow with the region's size, so
a half-image region, the whole image, and a style image of another size (with or without its
own mask) give Gram matrices of the same magnitude (``tests/test_guided.py``). The mask enters
squared because it multiplies F on both sides, as in the paper's G = (F o t)(F o t)^T.

Guided style loss of one region, with A_t its target (the style image's guided Gram):

    E_t = m / (4 N^2 M) * sum_ij (G_t - A_t)_ij^2

The weight m / M is the region's share of the image. It makes two things true: with t = 1
everywhere (m = M) and A_t = A / M, E_t is the paper's E_l = sum (G - A)^2 / (4 N^2 M^2)
exactly; and the gradient at every position,

    dE_t/dF = (G_t - A_t)(F o t^2) / (N^2 M)      (then the paper's mask [F > 0]),

has the paper's 1 / (N^2 M) scale whatever the region's size, so alpha/beta means the same
with masks as without. Regions are summed: E_l = sum_r E_{t_r}. Layer weights w_l are the
caller's. Derived step by step in notebooks/08_control.ipynb.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import get_array_module


def _check_guide(f, t):
    if t.shape != f.shape[2:]:
        raise ValueError(f"a guide of shape {tuple(t.shape)} does not fit features of shape {tuple(f.shape)}")


def region_mass(t):
    """m = sum_k t_k^2, the region's number of positions for a 0/1 mask; t: (H, W) -> 0-d."""
    xp = get_array_module(t)
    return xp.sum(t * t)


def guided_gram(f, t):
    """G_t = (F o t)(F o t)^T / sum t^2; f: (N, C, H, W), t: (H, W) -> (N, C, C)."""
    _check_guide(f, t)
    n, c, h, w = f.shape
    ft = (f * t).reshape(n, c, h * w)                              # F o t: (N, C, M)
    return (ft @ ft.transpose(0, 2, 1)) / region_mass(t)           # (N, C, C)


def guided_gram_backward(dgram, f, t):
    """Local derivative of G_t: dF = t o ((dG + dG^T)(F o t)) / m; dgram (N, C, C) -> df like f.

    The chain of gram_backward (losses/style.py) through F o t and the constant 1/m.
    """
    _check_guide(f, t)
    n, c, h, w = f.shape
    ft = (f * t).reshape(n, c, h * w)                              # (N, C, M)
    dft = (dgram + dgram.transpose(0, 2, 1)) @ ft / region_mass(t)  # d/d(F o t): (N, C, M)
    df = dft.reshape(f.shape) * t                                  # d/dF: (N, C, H, W)
    assert df.shape == f.shape
    return df


class GuidedStyleCache(NamedTuple):
    """f (its positive entries are the mask), t^2 (H, W), gram_diff = G_t - A_t, scale 1/(N^2 M).

    Kept: t^2 rather than t (the gradient needs only t^2); F o t is not kept, the
    backward reads f itself (F o t^2 = (F o t) o t, one product either way).
    """

    f: object
    t2: object
    gram_diff: object
    scale: float


def guided_style_loss_forward(f, t, target_gram):
    """E_t = m / (4 N^2 M) * sum (G_t - A_t)^2; f (N, C, H, W), t (H, W), A_t (N or 1, C, C) -> (0-d, cache)."""
    xp = get_array_module(f, t, target_gram)
    n, c, h, w = f.shape
    if target_gram.shape[-2:] != (c, c):
        raise ValueError(f"a Gram target of shape {tuple(target_gram.shape)} does not fit {c} filters")
    scale = 1.0 / (float(c) ** 2 * float(h * w))                   # 1 / (N_l^2 M_l)
    gram_diff = guided_gram(f, t) - target_gram                    # G_t - A_t: (N, C, C)
    loss = 0.25 * scale * region_mass(t) * xp.sum(gram_diff * gram_diff)   # 0-d
    return loss, GuidedStyleCache(f, t * t, gram_diff, scale)


def guided_style_loss_backward(cache: GuidedStyleCache, dloss=1.0):
    """dE_t/dF = (G_t - A_t)(F o t^2) / (N^2 M) where F > 0, else 0 (times dloss).

    From dE/dG_t = m / (2 N^2 M) (G_t - A_t) and guided_gram_backward: the 1/m of G_t
    cancels the region's weight m, and G_t - A_t is symmetric, so (dG + dG^T) = 2 dG.
    Positions outside the region (t = 0) get no gradient from it; the mask [F > 0] is the
    one of losses/style.py. Derived in notebooks/08_control.ipynb.
    """
    f, t2, gram_diff, scale = cache
    n, c, h, w = f.shape
    ft2 = (f * t2).reshape(n, c, h * w)                            # F o t^2: (N, C, M)
    df = (dloss * scale) * (gram_diff @ ft2)                       # (N, C, C) @ (N, C, M)
    df = df.reshape(f.shape) * (f > 0)                             # the paper's mask
    assert df.shape == f.shape
    return df
