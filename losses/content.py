"""Content loss (PAPER.md): L = 1/2 * sum_ij (F_ij - P_ij)^2 at one layer.

Shapes: f (generated) and p (content target): (N, C, H, W), the post-ReLU
features of that layer; the loss is a 0-d array; dloss/df: (N, C, H, W).
Normalisation: one half of the plain sum of squares, nothing divided by N_l or M_l.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import get_array_module


class ContentCache(NamedTuple):
    """diff = f - p, and f itself (its positive entries are the paper's mask)."""

    diff: object
    f: object


def content_loss_forward(f, p):
    """L = 1/2 sum (f - p)^2; f, p: (N, C, H, W) -> (0-d loss, cache)."""
    if f.shape != p.shape:
        raise ValueError(f"content features {tuple(f.shape)} and target {tuple(p.shape)} differ in shape")
    xp = get_array_module(f, p)
    diff = f - p                                                   # (N, C, H, W)
    loss = 0.5 * xp.sum(diff * diff)                               # 0-d
    return loss, ContentCache(diff, f)


def content_loss_backward(cache: ContentCache, dloss=1.0):
    """The paper's derivative: dL/dF_ij = (F - P)_ij if F_ij > 0, and 0 if F_ij < 0 (times dloss).

    The mask [F > 0] is exactly what the ReLU below this layer applies on its
    own way back (relu_backward multiplies by [out > 0], and F *is* that
    ReLU's output), so the masked gradient and the plain gradient (F - P) give
    the same dx once they pass the network; the paper writes the mask because it
    differentiates with respect to the rectified map. Applying it twice is
    harmless (the mask is 0/1). F_ij = 0 counts as masked (ReLU's convention).
    The fast engine (``minivgg.fast.losses``) returns the unmasked gradient for
    that reason. Derived in notebooks/02_losses.ipynb.
    """
    diff, f = cache
    df = dloss * diff * (f > 0)                                    # (N, C, H, W)
    assert df.shape == f.shape
    return df
