"""Style as a distribution, compared along random lines: the sliced Wasserstein loss (Heitz,
Vanhoey, Chambon & Belcour 2021, "A Sliced Wasserstein Loss for Neural Texture Synthesis").

Shapes: f: (N, C, H, W) post-ReLU features of one layer; N_l = C filters, M = H * W positions,
F = f as (N, C, M): M points in R^C per image. The style's s: (1 or N, C, Hs, Ws), M_s = Hs * Ws,
any size. V: (C, K) unit directions, one per column, K = C by default. P = V^T F: (N, K, M),
the projections of every point on every direction.

In one dimension the optimal transport between two sets of M points pairs them in sorted
order, so the squared 2-Wasserstein distance is the mean squared difference of the sorted
values. Sliced: do that along K directions and average:

    E = (1 / (K M)) sum_k sum_i (sort(P_k)_i - T_ki)^2          (summed over the batch)

with T_k: the style's projections on the same direction, sorted. **A mean over directions and
positions**: E does not grow with M, and is in the squared units of the features. It is 0
for any rearrangement of the style's positions (sorting forgets the order).

Different position counts (M != M_s): T_k is the style's quantile function read at the
generated image's quantile levels. The i-th of M sorted values sits at level (i + 1/2)/M;
the style's j-th of M_s at (j + 1/2)/M_s; T_ki interpolates the style's sorted values linearly
between those levels, and holds the end values beyond the first and the last
(``resample_sorted``). With M = M_s it is the style's sorted values themselves, exactly.
The resampling is recomputed at each evaluation (an O(K M) gather, small beside the sort).

Directions and L-BFGS. The loss is a fixed function only for fixed directions: L-BFGS's line
search compares values of one function, and its curvature pairs (s, y) assume one gradient
field. So the directions are drawn once per run, in ``sliced_wasserstein_target``, from a
seed (default 0), and every evaluation reuses them: repeated evaluations give identical
values (tested). Heitz et al. redraw at every step of a first-order optimiser, which averages
over directions; with L-BFGS a new set is a new run: a new stage (another image size, a
restart) may call ``sliced_wasserstein_target(f_style, seed=...)`` with a new seed (another
seed: other directions and another value, tested). The draw is made on the host with NumPy's
seeded PCG64 generator, so NumPy and CuPy runs of one seed use the same directions.

Cost at conv1_1 of a 512 x 384 image (C = K = 64, M = 196608, float32, one thread on this
project's 2-core CPU, shared with other work): 1.8 to 2.5 s for one forward + backward (1.2 to
1.7 s of CPU time), most of it the argsort of 64 rows of 196608 values; 6.8 ms on an H200 with CuPy.

Derivative (in full in ``sliced_wasserstein_loss_backward``): back through the sort (each
sorted slot's gradient goes to the position it came from), then through the projection:

    dE/dF = V dP,   dP_k[order_k[i]] = 2 (sort(P_k)_i - T_ki) / (K M)

then the paper's ReLU mask [F > 0] (losses/content.py).
"""
from __future__ import annotations

from typing import NamedTuple


from minivgg.backend import get_array_module, host_random


def random_directions(channels, n_directions, seed, like):
    """V: (C, K), columns drawn from N(0, I) scaled to unit length (uniform on the sphere); dtype and device of like."""
    xp = get_array_module(like)
    v = xp.asarray(host_random(seed).standard_normal((channels, n_directions)), dtype=like.dtype)
    return v / xp.sqrt((v * v).sum(axis=0))                        # (C, K) / (K,)


def resample_sorted(values, m):
    """The sorted values (..., M_s) read at the levels (i + 1/2)/m of m sorted values -> (..., m).

    Value j of M_s sits at level (j + 1/2)/M_s, so level u is at index t = u M_s - 1/2 on the
    style's axis; t is clipped to [0, M_s - 1] (flat beyond the ends) and interpolated
    linearly between its two neighbours. m = M_s returns values itself.
    """
    ms = values.shape[-1]
    if m == ms:
        return values
    xp = get_array_module(values)
    t = (xp.arange(m) + 0.5) * (ms / m) - 0.5                      # (m,), float64 whatever the dtype
    t = xp.clip(t, 0.0, ms - 1.0)
    j0 = xp.floor(t).astype(xp.int64)                              # left neighbour: (m,)
    j1 = xp.minimum(j0 + 1, ms - 1)                                # right neighbour: (m,)
    frac = (t - j0).astype(values.dtype)                           # weight of the right one: (m,)
    return values[..., j0] * (1 - frac) + values[..., j1] * frac   # gathers: (..., m)


def _project(f, directions):
    """P = V^T F; f: (N, C, H, W), V: (C, K) -> (N, K, M)."""
    n, c, h, w = f.shape
    return directions.T @ f.reshape(n, c, h * w)                   # (K, C) @ (N, C, M)


class SlicedWassersteinTarget(NamedTuple):
    """V (C, K), the seed it was drawn from (None: given), and the style's sorted projections (1 or N, K, M_s)."""

    directions: object
    seed: object
    sorted_style: object


def sliced_wasserstein_target(f_style, n_directions=None, seed=0, directions=None):
    """Target of "sliced-wasserstein": f_style (Ns, C, Hs, Ws) -> K directions (default K = C), sorted projections.

    directions: a (C, K) array to use instead of a seeded draw (its columns are scaled to
    unit length); then n_directions and seed are ignored.
    """
    xp = get_array_module(f_style)
    c = f_style.shape[1]
    if directions is None:
        directions = random_directions(c, c if n_directions is None else n_directions, seed, f_style)
    else:
        directions = xp.asarray(directions, dtype=f_style.dtype)
        if directions.ndim != 2 or directions.shape[0] != c:
            raise ValueError(f"directions of shape {tuple(directions.shape)} do not fit {c} channels: (C, K) expected")
        directions = directions / xp.sqrt((directions * directions).sum(axis=0))
        seed = None
    sorted_style = xp.sort(_project(f_style, directions), axis=-1)    # (Ns, K, M_s)
    return SlicedWassersteinTarget(directions, seed, sorted_style)


class SlicedWassersteinCache(NamedTuple):
    """f (the mask), V (C, K), order (N, K, M) the sorting permutation, diff = sort(P) - T (N, K, M).

    order and diff are each as big as f when K = C (order in int64: twice); both are needed,
    there is nothing cheaper to recompute them from than the sort itself.
    """

    f: object
    directions: object
    order: object
    diff: object


def sliced_wasserstein_loss_forward(f, target: SlicedWassersteinTarget):
    """E = mean over directions k and sorted slots i of (sort(P_k)_i - T_ki)^2; f: (N, C, H, W) -> (0-d E, cache)."""
    xp = get_array_module(f, target.directions)
    n, c, h, w = f.shape
    ns, k, _ = target.sorted_style.shape
    if target.directions.shape[0] != c or ns not in (1, n):
        raise ValueError(f"a sliced-wasserstein target for {ns} image(s) of {target.directions.shape[0]} channels "
                         f"does not fit features of shape {tuple(f.shape)} (its batch must be 1 or {n})")
    proj = _project(f, target.directions)                          # P: (N, K, M)
    order = xp.argsort(proj, axis=-1)                              # (N, K, M): slot i holds position order[i]
    diff = xp.take_along_axis(proj, order, axis=-1) - resample_sorted(target.sorted_style, h * w)   # (N, K, M)
    loss = xp.sum(diff * diff) / (k * h * w)                       # 0-d
    return loss, SlicedWassersteinCache(f, target.directions, order, diff)


def sliced_wasserstein_loss_backward(cache: SlicedWassersteinCache, dloss=1.0):
    """dE/dF = V dP where F > 0, else 0, with dP_k[order_k[i]] = 2 (sort(P_k)_i - T_ki) / (K M).

    Sorting is a permutation that is locally constant (away from ties, where E is not
    differentiable and any order gives a subgradient): sort(P_k)_i = P_k[order_k[i]], so the
    derivative in sorted slot i belongs to position order_k[i]; scattering the sorted-order
    gradient through order is applying the inverse permutation. Each position receives
    exactly one value per direction: the scatter is a plain assignment, with no repeated
    index (safe on CuPy, unlike an accumulating ``+=``). T is constant. Then P = V^T F gives
    dF = V dP, a (C, K) @ (K, M) product, and the paper's mask.
    """
    f, directions, order, diff = cache
    xp = get_array_module(f)
    n, c, h, w = f.shape
    k = directions.shape[1]
    dsorted = (dloss * 2.0 / (k * h * w)) * diff                   # dE/d sort(P): (N, K, M)
    dproj = xp.empty_like(dsorted)                                 # dE/dP: (N, K, M)
    rows = xp.arange(n * k)[:, None]                               # (N K, 1)
    dproj.reshape(n * k, h * w)[rows, order.reshape(n * k, h * w)] = dsorted.reshape(n * k, h * w)
    df = (directions @ dproj).reshape(f.shape) * (f > 0)          # (C, K) @ (N, K, M); the paper's mask
    assert df.shape == f.shape
    return df


def sliced_wasserstein_target_bytes(style_shape, itemsize: int, n_directions=None) -> int:
    """Bytes the target keeps for the whole run: V (C, K) and the style's sorted projections
    (Ns, K, M_s), K = n_directions (default C) -> (C + Ns M_s) K s."""
    ns, c, hs, ws = style_shape
    k = c if n_directions is None else n_directions
    return (c + ns * hs * ws) * k * itemsize


def sliced_wasserstein_workspace_bytes(shape, itemsize: int, n_directions=None, style_positions=None) -> int:
    """Bytes forward + backward take at their peak besides f and the returned gradient (the peak of the
    pair less the gradient's A s), for f (N, C, H, W), M = H W, A = N C M elements, K = n_directions
    (default C), s = itemsize, P = N K M, int64 argsort indices (8 bytes):

        max(forward - A s,  8 P + 3 P s + A s + A)
        forward = 8 P + 3 P s                           (M_s = M: the style's values themselves)
                = 8 P + 5 P s + 24 M + M s              (M_s != M: ``resample_sorted``)

    forward: the projections, the order, the sorted projections and sort(P) - T (or, resampling,
    the projections, the order, the sorted ones and resample's three (N K M) products, beside
    its float64/int64 levels and indices); backward: order and diff kept in the cache (8 P + P s),
    the scaled diff and the scattered dE/dP (2 P s), then V dP (A s), the mask (A bytes, bool)
    and the gradient. style_positions: M_s (None: M).
    """
    n, c, h, w = shape
    m = h * w
    k = c if n_directions is None else n_directions
    a, p = n * c * m, n * k * m
    if style_positions is None or style_positions == m:
        forward = 8 * p + 3 * p * itemsize
    else:
        forward = 8 * p + 5 * p * itemsize + 24 * m + m * itemsize
    return max(forward - a * itemsize, 8 * p + 3 * p * itemsize + a * itemsize + a)
