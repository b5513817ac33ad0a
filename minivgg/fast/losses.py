"""The fast engine's content and style gradients: the reference's losses (``losses``) on channels-last features.

The forwards *are* the reference's (``losses.content.content_loss_forward``,
``losses.style.style_loss_forward``, ``losses.style.gram_matrix``; their
``reshape`` of a channels-last map is a view, not a copy), and so are their
caches; with band workers (``minivgg.fast.threads``) the Gram matrix is summed
from each worker's share of the positions (``style_loss_forward``). The
backwards are transformed three ways:

* **memory order**: features may be channels-last (``minivgg.fast.layout``);
  each gradient comes out in the features' own order, its products reading
  them through ``flat_spatial`` views;
* **no mask**: the gradients are the unmasked dL/dF. Every tap is a ReLU's
  output, and the network's walk applies that ReLU's mask [F > 0] anyway
  (``losses/content.py`` has the argument), so the losses skip their copy;
* **spanned style gradient**: (G - A) F is computed ``SPAN_BYTES`` of F at a
  time on the CPU, the scale applied to the small (C, C) factor; with band
  workers (``minivgg.fast.threads``) each takes a run of spans.

Shapes as in ``losses``: f, p (N, C, H, W); G, A (N, C, C); losses 0-d arrays.
"""
from __future__ import annotations

from losses.content import ContentCache, content_loss_forward
from losses.style import StyleCache, gram_matrix
from losses.style import style_loss_forward as reference_style_loss_forward
from minivgg.backend import device_of, get_array_module
from minivgg.fast.arrays import empty
from minivgg.fast.layout import channels_last, flat_spatial
from minivgg.fast.threads import run_workers

__all__ = ["SPAN_BYTES", "content_loss_forward", "content_loss_backward", "gram_matrix",
           "style_loss_forward", "style_loss_backward", "span_positions"]

#: Bytes of F one product of ``style_loss_backward`` reads (see there).
SPAN_BYTES = 2 * 2**20


def content_loss_backward(cache: ContentCache, dloss=1.0, *, pool=None):
    """dloss * (F - P), unmasked (module docstring); in F's memory order, from ``pool`` if given."""
    diff = cache.diff
    xp = get_array_module(diff)
    df = empty(pool, xp, diff.shape, diff.dtype, channels_last(diff))
    xp.multiply(diff, diff.dtype.type(dloss), out=df)
    return df


def style_loss_forward(f, target_gram, *, workers: int = 1):
    """The reference's ``losses.style.style_loss_forward``; with ``workers`` > 1 its G = F F^T is the sum
    of the workers' F_k F_k^T, each over its own run of positions (NumPy's BLAS on one thread each:
    ``minivgg.fast.threads``)."""
    gram = None if workers == 1 else _shared_gram(f, workers)
    return reference_style_loss_forward(f, target_gram, gram=gram)


def _shared_gram(f, workers: int):
    """G = F F^T of f (N, C, H, W) as sum_k F_k F_k^T, F_k worker k's run of positions: (N, C, C)."""
    xp = get_array_module(f)
    fmat = flat_spatial(f)                                           # (N, C, M) view
    n, c, positions = fmat.shape
    workers = max(1, min(workers, positions))
    cuts = [positions * k // workers for k in range(workers + 1)]
    parts = xp.empty((workers, n, c, c), dtype=f.dtype)              # worker k's F_k F_k^T

    def part(k, stop):
        fk = fmat[:, :, cuts[k]:cuts[k + 1]]                         # (N, C, M_k)
        xp.matmul(fk, fk.transpose(0, 2, 1), out=parts[k])
    run_workers(part, workers)
    return parts.sum(axis=0)


def span_positions(f, span_bytes: int) -> int:
    """Positions of f (N, C, H, W) per product: ``span_bytes`` of F on the CPU, all H * W on the GPU
    (one launch)."""
    n, c, h, w = f.shape
    return max(1, span_bytes // (c * f.dtype.itemsize)) if device_of(f) == "cpu" else h * w


def style_loss_backward(cache: StyleCache, dloss=1.0, *, workers: int = 1, into=None):
    """dloss * (G - A) F / (N_l^2 M_l^2), unmasked, in F's memory order (plain memory: a gradient).

    cache: the reference's (``losses.style.style_loss_forward``). Channels-last,
    each product writes an (M, C) matrix, which the BLAS computes with M as its
    long side and packs M-long panels into each thread's buffer; on the CPU the
    product goes ``SPAN_BYTES`` of F at a time so those buffers stay small (with
    OpenBLAS at 512 x 512, whole, the two threads' buffers held 33 MB more at the
    evaluation's peak). On the GPU it is one product, one launch. ``workers``: threads
    that share the spans (``minivgg.fast.threads``; the caller gave the BLAS one thread).
    ``into``: a gradient of f's shape to add this one to, in place (and return): each
    span's product then goes through a span-sized buffer per worker, in cache, instead
    of a whole new gradient that the caller adds in a pass of its own. Spans are at most
    1/workers of the positions, so a small map still gives every worker one (conv4_1 at
    256 x 256 is 1024 positions of 512 channels: one span of ``SPAN_BYTES``, one thread).
    """
    f, gram_diff, scale = cache
    xp = get_array_module(f)
    scaled = gram_diff * gram_diff.dtype.type(scale * dloss)       # (N, C, C)
    fmat = flat_spatial(f)                                          # (N, C, M) view
    n, c, m = fmat.shape
    span = min(span_positions(f, SPAN_BYTES), -(-m // max(1, workers)))  # a span for every worker
    starts = range(0, m, span)
    workers = max(1, min(workers, len(starts)))
    if into is None:
        df = empty(None, xp, f.shape, scaled.dtype, channels_last=channels_last(f))  # f's order
        spans = [None] * workers
    else:
        df = into
        spans = [flat_spatial(empty(None, xp, (n, c, 1, min(span, m)), scaled.dtype,
                                    channels_last=channels_last(f))) for _ in range(workers)]  # (N, C, span)
    dfmat = flat_spatial(df)                                        # (N, C, M) view

    def run(k, stop):
        for k0 in starts[k::workers]:
            if stop.is_set():
                return
            cols = slice(k0, k0 + span)
            if spans[k] is None:
                xp.matmul(scaled, fmat[:, :, cols], out=dfmat[:, :, cols])  # (C, C) @ (C, span)
            else:
                part = spans[k][:, :, :min(span, m - k0)]
                xp.matmul(scaled, fmat[:, :, cols], out=part)
                dfmat[:, :, cols] += part
    run_workers(run, workers)
    assert df.shape == f.shape
    return df
