"""The fast engine's guided style loss: ``losses.guided`` on channels-last features.

Same values, normalisations and cache (``losses.guided.GuidedStyleCache``) as
``losses.guided`` (tested against it in ``tests/test_guided.py``), with the
transformations of ``minivgg.fast.losses``:

* **memory order**: f may be channels-last; products read it through
  ``flat_spatial`` views, and the gradient comes out in f's order;
* **spans**: G_t is summed over spans of ``SPAN_BYTES`` of F on the CPU, so
  F o t exists one span at a time (no temporary the size of f);
* **no mask**: the gradient is the unmasked dE/dF (the walk applies ReLU's mask);
* **one gradient for all regions, in spans**: a layer's regions share one
  output array, sum_r (s_r (G_r - A_r) F) o t_r^2, a span at a time. The mask
  scales positions (columns of F), so it is applied to each span's product
  instead of to a copy of F: (G - A)(F o t^2) = ((G - A) F) o t^2.

Shapes as in ``losses.guided``: f (N, C, H, W); t (H, W); G, A (N, C, C).
"""
from __future__ import annotations

from losses.guided import GuidedStyleCache, region_mass
from minivgg.backend import get_array_module
from minivgg.fast.arrays import empty
from minivgg.fast.layout import channels_last, flat_spatial
from minivgg.fast.losses import SPAN_BYTES, span_positions
from minivgg.fast.threads import run_split


def guided_style_loss_forward(f, t, target_gram):
    """E_t = m / (4 N^2 M) * sum (G_t - A_t)^2 as ``losses.guided``; f (N, C, H, W), t (H, W) -> (0-d, cache).

    G_t is summed over spans of positions, (F o t) of one span at a time: no temporary the
    size of f.
    """
    xp = get_array_module(f, t, target_gram)
    n, c, h, w = f.shape
    if t.shape != (h, w) or target_gram.shape[-2:] != (c, c):
        raise ValueError(f"guide {tuple(t.shape)} or target {tuple(target_gram.shape)} does not fit "
                         f"features {tuple(f.shape)}")
    fmat, tflat = flat_spatial(f), t.reshape(h * w)                # (N, C, M) view, (M,)
    gram = xp.zeros((n, c, c), dtype=f.dtype)
    span = span_positions(f, SPAN_BYTES)
    for k0 in range(0, h * w, span):
        ft = fmat[:, :, k0:k0 + span] * tflat[k0:k0 + span]        # F o t over one span: (N, C, span)
        gram += ft @ ft.transpose(0, 2, 1)                         # (N, C, C)
    mass = region_mass(t)                                          # m = sum t^2, 0-d
    gram_diff = gram / mass - target_gram                          # G_t - A_t: (N, C, C)
    scale = 1.0 / (float(c) ** 2 * float(h * w))                   # 1 / (N_l^2 M_l)
    loss = 0.25 * scale * mass * xp.vdot(gram_diff, gram_diff)     # 0-d
    return loss, GuidedStyleCache(f, t * t, gram_diff, scale)


def guided_style_loss_backward(caches, dloss=1.0, *, workers: int = 1):
    """dloss * sum_r (G_r - A_r)(F o t_r^2) / (N^2 M) over a layer's regions, unmasked, in F's order.

    caches: the ``GuidedStyleCache`` of each region of one layer (same f, t2 (H, W)), at least one.
    Each span's product is written into the one output and scaled by t^2 over its positions
    (first region), or added to it through a span-sized temporary (the others). ``workers``:
    threads that share the spans, as ``minivgg.fast.losses.style_loss_backward``'s.
    """
    f = caches[0].f
    xp = get_array_module(f)
    df = empty(None, xp, f.shape, f.dtype, channels_last=channels_last(f))   # plain memory: a gradient
    fmat, dfmat = flat_spatial(f), flat_spatial(df)                # (N, C, M) views
    n, c, m = fmat.shape
    span = span_positions(f, SPAN_BYTES)
    t2s = [cache.t2.reshape(m) for cache in caches]                # (M,) each, views
    scaled = [cache.gram_diff * cache.gram_diff.dtype.type(cache.scale * dloss) for cache in caches]
    starts = range(0, m, span)

    def spans(lo, hi):
        for k0 in starts[lo:hi]:
            cols = slice(k0, k0 + span)                            # one span of positions
            out = dfmat[:, :, cols]                                # (N, C, span) view of df
            xp.matmul(scaled[0], fmat[:, :, cols], out=out)        # (C, C) @ (C, span)
            out *= t2s[0][cols]                                    # o t^2 over the span's positions
            for s, t2 in zip(scaled[1:], t2s[1:]):
                part = xp.matmul(s, fmat[:, :, cols])              # (N, C, span) temporary
                part *= t2[cols]
                out += part
    run_split(spans, len(starts), workers)
    assert df.shape == f.shape
    return df
