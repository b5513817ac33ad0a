"""Style as a distribution: maximum mean discrepancy (Li, Wang, Liu & Hou 2017, "Demystifying
Neural Style Transfer").

Shapes. Layer features f: (N, C, H, W) post-ReLU, N_l = C filters, M = H * W positions,
F = f as (N, C, M); the style image's s: (1 or N, C, Hs, Ws), M_s = Hs * Ws, any size.
Each position is one sample, the C-vector F_:k, so an image is a set of M points in R^C
and a style is a distribution of such points. Small sets for the exact functions are
written as rows: x (M, C), y (M_s, C); K_xy (M, M_s) kernel matrices.

The (biased, "V-statistic") squared MMD between the sets, all pairs with i = j included:

    MMD^2 = mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j)

It is 0 when the two sets are the same multiset of points, whatever their order: a
shuffled copy of the style has MMD^2 = 0, and so (means being means) has a tiled one.
Three kernels:

- linear, k(x, y) = x^T y: MMD^2 = ||mean_i x_i - mean_j y_j||^2, the channel means only.
- poly (degree 2, no constant), k(x, y) = (x^T y)^2: mean_{i,i'} (x_i^T x_i')^2 =
  ||X^T X||_F^2 / M^2 = ||G / M||_F^2 with G = F F^T the Gram matrix, so
  MMD^2 = ||G/M - A/M_s||_F^2, A the style's Gram. Hence the paper's Gram loss with the
  style's Gram rescaled to M positions (A M / M_s, what ``minivgg.transfer.objective``
  does), E_l = sum (G - A M/M_s)^2 / (4 N_l^2 M^2), is exactly MMD^2_poly / (4 N_l^2):
  matching Gram matrices is matching distributions with this kernel (tested to ~1e-12).
- rbf (Gaussian), k(x, y) = exp(-||x - y||^2 / (2 sigma^2)): all moments at once.

The exact MMD^2 needs the M x M kernel matrix: conv1_1 of a 512 x 384 image has
M = 196608, a 155 GB matrix. So there are two tiers here:

- ``mmd2`` / ``mmd2_backward``: the exact definition on small sets, any kernel, the
  specification the layer losses are tested against (and the thing to read).
- layer losses, linear time in M: linear and poly through their closed forms above
  (exact), rbf through random Fourier features (an approximation, below).

Layer losses, **divided by a per-kernel normaliser Z** (Li et al. also divide each kernel's
MMD^2 by a constant; these Z are this module's choice) so that layers of different widths
are comparable; none grows with M, since every term is a mean over positions:

    mmd-linear:  E = MMD^2_linear / N_l = (1/N_l) sum_c (mu_c - mu^s_c)^2     (the mean part of mean-std)
    mmd-poly:    E = MMD^2_poly / (4 N_l^2) = the Gram loss E_l above, to rounding
    mmd-rbf:     E = (sigma^2 / N_l) ||mean_k phi(F_:k) - mean_k phi(S_:k)||^2  ~  sigma^2 MMD^2_rbf / N_l

(summed over the batch). The poly kernel's Z keeps Gatys et al.'s 4, so that "mmd-poly" and
"gram" are the same loss and one beta serves both. The rbf kernel's Z = N_l / sigma^2 puts
its loss in the linear kernel's units: to first order in 1/sigma^2, k(x, y) =
1 - ||x - y||^2 / (2 sigma^2) + ..., and -||x - y||^2 / 2 = x^T y - ||x||^2/2 - ||y||^2/2 whose
last two terms cancel in MMD^2, so MMD^2_rbf = MMD^2_linear / sigma^2 + O(1/sigma^4) and
E_rbf = E_linear + (the higher moments). Without it the loss is at most 2 (about 0.2 at white
noise) and its gradient below 1e-6 per pixel at 192 px: scipy's L-BFGS-B then stopped after
its first line search, the float32 loss not changing along a first step of unit length
(measured, texture mode, beta = 1).

Random Fourier features (Rahimi & Recht 2007). For the Gaussian kernel,
k(x, y) = E_{w, b}[2 cos(w^T x + b) cos(w^T y + b)] with w ~ N(0, I / sigma^2) and
b ~ U[0, 2 pi]. Draw D pairs once, W = [w_1 .. w_D]: (C, D), b: (D,), and set

    phi(x) = sqrt(2/D) cos(W^T x + b)          (D,),    so phi(x)^T phi(y) ~ k(x, y)

Then MMD^2 with the kernel phi^T phi is ||mean_i phi(x_i) - mean_j phi(y_j)||^2: the style
is D numbers (mean phi over its positions), an evaluation is O(M C D). For fixed (W, b) it
is one fixed smooth function of F (what L-BFGS needs); its mean over draws is the exact
biased MMD^2_rbf, its error shrinks like 1/sqrt(D) (tested). Defaults: D = 128
(N_FEATURES), seed 0, and the bandwidth rule sigma^2 = the mean squared distance between
the style's feature vectors over all ordered pairs (i = j included), which is exactly
2 sum_c var^s_c, computed in O(M_s C) over *all* style positions, no subsample, no
pairwise matrix. Measured: one forward + backward of mmd-rbf at conv1_1 of a 512 x 384
image, f (1, 64, 384, 512) float32, D = 128, one thread (OPENBLAS_NUM_THREADS=1) on this
project's 2-core CPU while other work shared it: 0.40 s at best, 0.75 s at worst, of 12 runs
(0.27 to 0.50 s of CPU time), the sine, the cosine and the two (D or C, .) @ (., M) products
about a quarter each; 0.9 ms on an H200 with CuPy.

All backwards end with the paper's ReLU mask [F > 0] (losses/content.py). ``mmd2`` works on
arbitrary vectors, not on a layer's output, and has no mask.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from losses.style import gram_matrix
from minivgg.backend import get_array_module, host_random

KERNELS = ("linear", "poly", "rbf")
N_FEATURES = 128  # D, the number of random Fourier features of "mmd-rbf"


# ---- the exact definition, for small sets -------------------------------------------------------

def kernel_matrix(x, y, kernel, sigma2=None):
    """K_ij = k(x_i, y_j); x: (M, C), y: (M_s, C) -> (M, M_s); sigma2 = sigma^2, the rbf's bandwidth."""
    xp = get_array_module(x, y)
    inner = x @ y.T                                                # x_i^T y_j: (M, M_s)
    if kernel == "linear":
        return inner
    if kernel == "poly":
        return inner * inner
    if kernel == "rbf":
        if sigma2 is None:
            raise ValueError("the rbf kernel needs its bandwidth sigma2 = sigma^2")
        sq = (x * x).sum(axis=1)[:, None] + (y * y).sum(axis=1)[None, :] - 2.0 * inner  # ||x_i - y_j||^2
        return xp.exp(-xp.maximum(sq, 0.0) / (2.0 * sigma2))       # clamp: rounding can go below 0
    raise ValueError(f"unknown kernel {kernel!r}: choose one of {', '.join(KERNELS)}")


def _kernel_grad_sum(a, b, kab, kernel, sigma2):
    """Row i: sum_j grad_1 k(a_i, b_j), the derivative of k in its first argument; -> like a (rows, C).

    linear: grad_1 k(a, b) = b                       -> sum_j b_j on every row
    poly:   grad_1 k(a, b) = 2 (a^T b) b             -> 2 (a b^T) b
    rbf:    grad_1 k(a, b) = k(a, b) (b - a) / s^2   -> (K b - rowsum(K) a) / s^2
    """
    xp = get_array_module(a, b)
    if kernel == "linear":
        return xp.broadcast_to(b.sum(axis=0), a.shape)
    if kernel == "poly":
        return 2.0 * ((a @ b.T) @ b)                               # (rows, M_b) @ (M_b, C)
    return (kab @ b - kab.sum(axis=1)[:, None] * a) / sigma2


class MMD2Cache(NamedTuple):
    """x, y, the kernel's name and sigma2, and K_xx, K_xy (small sets: kept; poly recomputes x^T y)."""

    x: object
    y: object
    kernel: str
    sigma2: object
    kxx: object
    kxy: object


def mmd2(x, y, kernel, sigma2=None):
    """Exact biased MMD^2 = mean K_xx + mean K_yy - 2 mean K_xy; x: (M, C), y: (M_s, C) -> (0-d, cache).

    O((M + M_s)^2 C): for checks and teaching on small sets, not for a network's layers.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"sets of C-vectors (M, C) and (M_s, C) expected, got {tuple(x.shape)} and {tuple(y.shape)}")
    kxx = kernel_matrix(x, x, kernel, sigma2)                      # (M, M)
    kyy = kernel_matrix(y, y, kernel, sigma2)                      # (M_s, M_s)
    kxy = kernel_matrix(x, y, kernel, sigma2)                      # (M, M_s)
    value = kxx.mean() + kyy.mean() - 2.0 * kxy.mean()             # 0-d
    return value, MMD2Cache(x, y, kernel, sigma2, kxx, kxy)


def mmd2_backward(cache: MMD2Cache, dloss=1.0):
    """dMMD^2/dx_i = (2/M^2) sum_i' grad_1 k(x_i, x_i') - (2/(M M_s)) sum_j grad_1 k(x_i, y_j); -> dx (M, C).

    The first term: x_i appears in row i and in column i of K_xx, and k is symmetric, so
    both give sum_i' grad_1 k(x_i, x_i') / M^2 (the diagonal k(x_i, x_i) counts twice, as it
    should: both of its arguments move). K_yy does not depend on x. No ReLU mask: x is any set.
    """
    x, y, kernel, sigma2, kxx, kxy = cache
    m, ms = x.shape[0], y.shape[0]
    dx = (2.0 / (m * m)) * _kernel_grad_sum(x, x, kxx, kernel, sigma2) \
        - (2.0 / (m * ms)) * _kernel_grad_sum(x, y, kxy, kernel, sigma2)
    dx = dloss * dx
    assert dx.shape == x.shape
    return dx


# ---- layer losses, linear in M ------------------------------------------------------------------

def _check_batch(f, target_batch, target_channels, what):
    n, c = f.shape[:2]
    if target_channels != c or target_batch not in (1, n):
        raise ValueError(f"an {what} target for {target_batch} image(s) of {target_channels} channels does not "
                         f"fit features of shape {tuple(f.shape)} (its batch must be 1 or {n})")


class MMDLinearTarget(NamedTuple):
    """The style's channel means mu^s, (1 or N, C)."""

    mean: object


class MMDLinearCache(NamedTuple):
    """f (its positive entries are the mask) and dmean = mu - mu^s, (N, C)."""

    f: object
    dmean: object


def mmd_linear_target(f_style):
    """Target of "mmd-linear": f_style (Ns, C, Hs, Ws) -> its channel means over positions."""
    ns, c, hs, ws = f_style.shape
    return MMDLinearTarget(f_style.reshape(ns, c, hs * ws).mean(axis=-1))   # (Ns, C)


def mmd_linear_loss_forward(f, target: MMDLinearTarget):
    """E = MMD^2_linear / N_l = (1/N_l) ||mu - mu^s||^2; f: (N, C, H, W) -> (0-d E, cache)."""
    _check_batch(f, *target.mean.shape, "mmd-linear")
    xp = get_array_module(f, target.mean)
    n, c, h, w = f.shape
    dmean = f.reshape(n, c, h * w).mean(axis=-1) - target.mean     # mu - mu^s: (N, C)
    loss = xp.sum(dmean * dmean) / c                               # 0-d
    return loss, MMDLinearCache(f, dmean)


def mmd_linear_loss_backward(cache: MMDLinearCache, dloss=1.0):
    """dE/dF_ck = 2 (mu_c - mu^s_c) / (N_l M) where F > 0, else 0: dmu_c/dF_ck = 1/M, the same at every position."""
    f, dmean = cache
    n, c, h, w = f.shape
    df = (dloss * 2.0 / (c * h * w)) * dmean[..., None, None] * (f > 0)   # (N, C, 1, 1) * (N, C, H, W)
    assert df.shape == f.shape
    return df


class MMDPolyTarget(NamedTuple):
    """The style's Gram matrix divided by its number of positions, A / M_s: (1 or N, C, C)."""

    gram_mean: object


class MMDPolyCache(NamedTuple):
    """f (the mask, and the F of the derivative) and gram_diff = G/M - A/M_s, (N, C, C), symmetric."""

    f: object
    gram_diff: object


def mmd_poly_target(f_style):
    """Target of "mmd-poly": f_style (Ns, C, Hs, Ws) -> A / M_s, the Gram matrix as a mean over positions."""
    hs, ws = f_style.shape[2:]
    return MMDPolyTarget(gram_matrix(f_style) / (hs * ws))


def mmd_poly_loss_forward(f, target: MMDPolyTarget):
    """E = MMD^2_poly / (4 N_l^2) = ||G/M - A/M_s||_F^2 / (4 N_l^2); f: (N, C, H, W) -> (0-d E, cache)."""
    _check_batch(f, *target.gram_mean.shape[:2], "mmd-poly")
    xp = get_array_module(f, target.gram_mean)
    n, c, h, w = f.shape
    gram_diff = gram_matrix(f) / (h * w) - target.gram_mean        # G/M - A/M_s: (N, C, C)
    loss = xp.sum(gram_diff * gram_diff) / (4.0 * c * c)           # 0-d
    return loss, MMDPolyCache(f, gram_diff)


def mmd_poly_loss_backward(cache: MMDPolyCache, dloss=1.0):
    """dE/dF = (G/M - A/M_s) F / (N_l^2 M) where F > 0, else 0.

    dE/d(G/M) = 2 (G/M - A/M_s) / (4 N_l^2); G/M = F F^T / M has dF = (dG + dG^T) F / M
    (losses.style.gram_backward) and the difference is symmetric: 2 * 2 / 4 = 1. With
    G/M - A/M_s = (G - A M/M_s) / M this is style_loss_backward's (G - A) F / (N_l^2 M^2).
    """
    f, gram_diff = cache
    n, c, h, w = f.shape
    df = (dloss / (c * c * h * w)) * (gram_diff @ f.reshape(n, c, h * w))   # (N, C, C) @ (N, C, M)
    df = df.reshape(f.shape) * (f > 0)                             # the paper's mask
    assert df.shape == f.shape
    return df


def rbf_bandwidth(f_style):
    """sigma^2 = mean of ||s_i - s_j||^2 over all ordered pairs (i = j too) = 2 sum_c var_c; f_style -> 0-d.

    The identity: (1/M^2) sum_ij ||s_i - s_j||^2 = (2/M) sum_i ||s_i||^2 - 2 ||mean s||^2,
    written with centred values (two passes, no cancellation). The positions of all Ns
    style images are pooled.
    """
    ns, c, hs, ws = f_style.shape
    pooled = f_style.transpose(1, 0, 2, 3).reshape(c, ns * hs * ws)   # (C, Ns M_s)
    centred = pooled - pooled.mean(axis=1, keepdims=True)          # (C, Ns M_s)
    return 2.0 * (centred * centred).mean(axis=1).sum()            # 0-d


def random_fourier_weights(channels, n_features, seed, sigma2, like):
    """W: (C, D) with entries N(0, 1/sigma^2), b: (D,) U[0, 2 pi), on like's device and dtype.

    Drawn on the host with NumPy's seeded PCG64 generator (then moved), so that a NumPy run
    and a CuPy run of one seed use the same features. sigma2: a float or a 0-d array.
    """
    xp = get_array_module(like)
    rng = host_random(seed)
    w = xp.asarray(rng.standard_normal((channels, n_features)), dtype=like.dtype)   # (C, D), N(0, 1)
    b = xp.asarray(rng.uniform(0.0, 2.0 * math.pi, n_features), dtype=like.dtype)    # (D,)
    return w / xp.sqrt(xp.asarray(sigma2, dtype=like.dtype)), b


def _fourier_angles(f, weights, bias):
    """Z = W^T F + b; f: (N, C, H, W), W: (C, D), b: (D,) -> (N, D, M)."""
    n, c, h, w = f.shape
    z = weights.T @ f.reshape(n, c, h * w)                         # (D, C) @ (N, C, M) -> (N, D, M)
    z += bias[:, None]
    return z


def _mean_features(cos_z):
    """mean_k phi(F_:k) = sqrt(2/D) mean_k cos(Z_:k); cos_z: (N, D, M) -> (N, D)."""
    return math.sqrt(2.0 / cos_z.shape[1]) * cos_z.mean(axis=-1)


class MMDRBFTarget(NamedTuple):
    """The random features (W (C, D), b (D,)), sigma2 (a float), the seed, and the style's mean phi, (1 or N, D)."""

    weights: object
    bias: object
    sigma2: object
    seed: int
    mean_features: object


class MMDRBFCache(NamedTuple):
    """f (the mask), delta = mean phi(F) - mean phi(S), (N, D), sin(Z), (N, D, M), the derivative of cos, and 1/Z.

    sin(Z) is kept (D/C times the size of f: twice at conv1_1 with D = 128, a quarter at
    conv5_1) rather than recomputed, which would cost a second (D, C) @ (C, M) product and
    about a third of the evaluation's time.
    """

    f: object
    weights: object
    delta: object
    sin_z: object
    scale: float    # sigma^2 / N_l, the loss's 1/Z


def mmd_rbf_target(f_style, n_features=N_FEATURES, seed=0, sigma2=None):
    """Target of "mmd-rbf": f_style (Ns, C, Hs, Ws) -> W, b (seeded) and the style's mean phi, (Ns, D).

    sigma2 None: the bandwidth rule ``rbf_bandwidth(f_style)`` (one device sync here, to
    refuse a constant style, whose sigma^2 is 0). The features are drawn once, here: one
    target is one fixed function for a whole L-BFGS run.
    """
    if sigma2 is None:
        sigma2 = rbf_bandwidth(f_style)
    sigma2 = float(sigma2)                                         # a host number: the loss's scale reads it
    if not sigma2 > 0:
        raise ValueError(f"the rbf bandwidth sigma^2 must be > 0, got {sigma2} (a constant style image?)")
    weights, bias = random_fourier_weights(f_style.shape[1], n_features, seed, sigma2, f_style)
    xp = get_array_module(f_style)
    mean_features = _mean_features(xp.cos(_fourier_angles(f_style, weights, bias)))   # (Ns, D)
    return MMDRBFTarget(weights, bias, sigma2, seed, mean_features)


def mmd_rbf_loss_forward(f, target: MMDRBFTarget):
    """E = (sigma^2/N_l) ||mean_k phi(F_:k) - mean_k phi(S_:k)||^2 ~ sigma^2 MMD^2_rbf / N_l; f: (N, C, H, W)
    -> (0-d E, cache). O(M C D)."""
    _check_batch(f, target.mean_features.shape[0], target.weights.shape[0], "mmd-rbf")
    xp = get_array_module(f, target.weights)
    c = f.shape[1]
    z = _fourier_angles(f, target.weights, target.bias)            # Z: (N, D, M)
    sin_z = xp.sin(z)                                              # kept for backward: (N, D, M)
    cos_z = xp.cos(z, out=z)                                       # overwrites Z, not needed again: (N, D, M)
    delta = _mean_features(cos_z) - target.mean_features           # (N, D)
    scale = target.sigma2 / c                                      # 1/Z = sigma^2 / N_l
    loss = scale * xp.sum(delta * delta)                           # 0-d
    return loss, MMDRBFCache(f, target.weights, delta, sin_z, scale)


def mmd_rbf_loss_backward(cache: MMDRBFCache, dloss=1.0):
    """dE/dF_ck = -(sigma^2/N_l) (2 sqrt(2/D) / M) sum_d W_cd delta_d sin(W_:d^T F_:k + b_d) where F > 0, else 0.

    dE/d(mean phi)_d = 2 (sigma^2/N_l) delta_d; d(mean phi)_d / dZ_dk = -sqrt(2/D) sin(Z_dk) / M
    (the mean over M positions of sqrt(2/D) cos); dZ_dk / dF_ck = W_cd. As matrices:
    dF = (W diag(g)) sin(Z), g = -2 (sigma^2/N_l) sqrt(2/D) delta / M: one (C, D) @ (D, M) product.
    """
    f, weights, delta, sin_z, scale = cache
    n, c, h, w = f.shape
    d = weights.shape[1]
    g = (-2.0 * scale * math.sqrt(2.0 / d) / (h * w)) * dloss * delta   # (N, D)
    df = (weights * g[:, None, :]) @ sin_z                         # (N, C, D) @ (N, D, M) -> (N, C, M)
    df = df.reshape(f.shape) * (f > 0)                             # the paper's mask
    assert df.shape == f.shape
    return df


# ---- what the layer losses keep and take (``minivgg.memory``) -----------------------------------

def mmd_linear_target_bytes(style_shape, itemsize: int) -> int:
    """Bytes the "mmd-linear" target keeps for the whole run: mu^s, (Ns, C) -> Ns C s."""
    ns, c = style_shape[:2]
    return ns * c * itemsize


def mmd_linear_workspace_bytes(shape, itemsize: int) -> int:
    """Bytes "mmd-linear"'s forward + backward take at their peak besides f and the returned gradient,
    for f (N, C, H, W), A = N C H W elements, s = itemsize:  A + 2 N C s

    the mask [f > 0] (A bytes, bool) beside the gradient it makes, the cache's mu - mu^s and its
    scaled copy (N C s each).
    """
    n, c, h, w = shape
    a = n * c * h * w
    return a + 2 * n * c * itemsize


def mmd_poly_target_bytes(style_shape, itemsize: int) -> int:
    """Bytes the "mmd-poly" target keeps for the whole run: A / M_s, (Ns, C, C) -> Ns C^2 s."""
    ns, c = style_shape[:2]
    return ns * c * c * itemsize


def mmd_poly_workspace_bytes(shape, itemsize: int) -> int:
    """Bytes "mmd-poly"'s forward + backward take at their peak besides f and the returned gradient
    (the peak of the pair less the gradient's A s), for f (N, C, H, W), A = N C H W elements:

        max(2 N C^2 s - A s,  N C^2 s + A s + A)

    forward: G and G / M, then G / M and the difference (2 N C^2 s); backward: the difference
    kept (N C^2 s), the product with F scaled (in place: NumPy elides the temporary), then it,
    the mask (A bytes, bool) and the gradient (A s + A + A s).
    """
    n, c, h, w = shape
    a, cc = n * c * h * w, n * c * c
    return max(2 * cc * itemsize - a * itemsize, cc * itemsize + a * itemsize + a)


def mmd_rbf_target_bytes(style_shape, itemsize: int, n_features: int = N_FEATURES) -> int:
    """Bytes the "mmd-rbf" target keeps for the whole run: W (C, D), b (D,) and the style's mean phi
    (Ns, D) -> (C + 1 + Ns) D s."""
    ns, c = style_shape[:2]
    return (c + 1 + ns) * n_features * itemsize


def mmd_rbf_workspace_bytes(shape, itemsize: int, n_features: int = N_FEATURES) -> int:
    """Bytes "mmd-rbf"'s forward + backward take at their peak besides f and the returned gradient
    (the peak of the pair less the gradient's A s), for f (N, C, H, W), A = N C H W elements,
    D = n_features, s = itemsize:

        max(2 N D M s - A s,  N D M s + A s + A)

    forward: Z = W^T F + b and sin(Z) (cos(Z) overwrites Z), 2 N D M s; backward: sin(Z) kept in
    the cache (N D M s), the product (W diag(g)) sin(Z) (A s), the mask (A bytes, bool) and the
    gradient. At D = 128 the backward is the larger at C = 64 and the forward from C = 128 on.
    """
    n, c, h, w = shape
    a, dm = n * c * h * w, n * n_features * h * w
    return max(2 * dm * itemsize - a * itemsize, dm * itemsize + a * itemsize + a)
