"""Style as per-channel means and standard deviations (the statistics of instance normalisation).

Shapes: f: (N, C, H, W) post-ReLU features of one layer of the generated image; N_l = C
filters, M = H * W positions, F = f as (N, C, M). The style image's features s:
(1 or N, C, Hs, Ws), with M_s = Hs * Ws positions, any size: only their per-channel
statistics are kept (the target), so M_s need not equal M.

Statistics over positions, per image and channel, (N, C) each:

    mu_c    = (1/M) sum_k F_ck
    sigma_c = sqrt(var_c + eps),   var_c = (1/M) sum_k (F_ck - mu_c)^2      (biased: 1/M, not 1/(M-1))

eps = EPS = 1e-5 (in the squared units of the features; VGG's post-ReLU variances are
O(1) to O(1e4), so it changes sigma only for a channel that is nearly constant). It keeps
sigma > 0, so that d sigma / dF below never divides by 0 on a dead channel, and bounds
that factor by 1/sqrt(eps). The target's sigma^s uses the same eps.

Loss of one layer, **a mean over channels of squared differences of means over positions**:

    E = (1/N_l) sum_c [(mu_c - mu^s_c)^2 + (sigma_c - sigma^s_c)^2]          (summed over the batch)

mu and sigma are averages over positions, so E does not grow with M (the role of the
Gram loss's 1/M^2); the 1/N_l makes it a per-channel mean (the role of its 1/N_l^2).
It is 0 whenever the two images' channels have the same means and spreads, whatever the
arrangement of positions (a shuffled copy of the style, a tiled one). Layer weights w_l
and beta are the caller's; E is in the squared units of the features, the Gram loss in
their fourth power, so beta needs retuning when switching (``losses.statistics``).

Derivative (derived in full in ``mean_std_loss_backward``):

    dE/dF_ck = (2 / (N_l M)) [(mu_c - mu^s_c) + (sigma_c - sigma^s_c) (F_ck - mu_c) / sigma_c]

then the paper's ReLU mask [F > 0] (see losses/content.py: it is ReLU's own backward).
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import get_array_module

EPS = 1e-5  # added to each variance before the square root (module docstring)


def channel_mean_std(f, eps=EPS):
    """(mu, sigma) over positions, each (N, C); f: (N, C, H, W); sigma = sqrt(var + eps), var biased (1/M)."""
    xp = get_array_module(f)
    n, c, h, w = f.shape
    fmat = f.reshape(n, c, h * w)                                  # F: (N, C, M)
    mu = fmat.mean(axis=-1)                                        # (N, C)
    centred = fmat - mu[..., None]                                 # F - mu: (N, C, M)
    var = (centred * centred).mean(axis=-1)                        # (N, C), two passes: no cancellation
    return mu, xp.sqrt(var + eps)


class MeanStdTarget(NamedTuple):
    """The style image's per-channel mu^s and sigma^s, each (1 or N, C), and the eps they were taken with."""

    mean: object
    std: object
    eps: float


def mean_std_target(f_style, eps=EPS):
    """Target of the mean-std loss from the style image's features f_style: (Ns, C, Hs, Ws).

    eps >= 0; eps = 0 (the textbook sigma, for hand checks) divides by 0 in the derivative
    wherever a channel of f is constant.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    mean, std = channel_mean_std(f_style, eps)
    return MeanStdTarget(mean, std, float(eps))


class MeanStdCache(NamedTuple):
    """f (its positive entries are the mask), mu (N, C), and the two differences the derivative needs.

    dmean = mu - mu^s, (N, C); dstd_ratio = (sigma - sigma^s) / sigma, (N, C). The centred
    features F - mu are not kept (they are as big as f); backward recomputes them, one
    subtraction.
    """

    f: object
    mean: object
    dmean: object
    dstd_ratio: object


def _check_target(f, target):
    n, c = f.shape[:2]
    ns, cs = target.mean.shape
    if cs != c or ns not in (1, n):
        raise ValueError(f"a mean-std target for {ns} image(s) of {cs} channels does not fit features "
                         f"of shape {tuple(f.shape)} (its batch must be 1 or {n})")


def mean_std_loss_forward(f, target: MeanStdTarget):
    """E = (1/N_l) sum_c [(mu_c - mu^s_c)^2 + (sigma_c - sigma^s_c)^2]; f: (N, C, H, W) -> (0-d E, cache)."""
    _check_target(f, target)
    xp = get_array_module(f, target.mean)
    c = f.shape[1]
    mean, std = channel_mean_std(f, target.eps)                    # (N, C) each
    dmean = mean - target.mean                                     # mu - mu^s: (N, C)
    dstd = std - target.std                                        # sigma - sigma^s: (N, C)
    loss = (xp.sum(dmean * dmean) + xp.sum(dstd * dstd)) / c       # 0-d
    return loss, MeanStdCache(f, mean, dmean, dstd / std)


def mean_std_loss_backward(cache: MeanStdCache, dloss=1.0):
    """dE/dF_ck = (2 / (N_l M)) [(mu_c - mu^s_c) + (sigma_c - sigma^s_c)(F_ck - mu_c) / sigma_c] where F > 0, else 0.

    Derivation. dmu_c / dF_ck = 1/M. For sigma_c = sqrt(var_c + eps):
    dvar_c / dF_ck = (2/M) (F_ck - mu_c) - (2/M) sum_j (F_cj - mu_c) (1/M) = (2/M)(F_ck - mu_c),
    since the centred values sum to 0 (moving F_ck moves mu_c, but var_c is stationary in
    mu_c). So dsigma_c / dF_ck = (F_ck - mu_c) / (M sigma_c), exactly, eps included. The
    loss brings down 2 (mu_c - mu^s_c) / N_l and 2 (sigma_c - sigma^s_c) / N_l. Then the
    paper's mask [F > 0] (losses/content.py). Every position gets a gradient of size 1/M.
    """
    f, mean, dmean, dstd_ratio = cache
    n, c, h, w = f.shape
    m = h * w
    centred = f.reshape(n, c, m) - mean[..., None]                 # F - mu: (N, C, M)
    df = dmean[..., None] + dstd_ratio[..., None] * centred        # (N, C, M)
    df = (dloss * 2.0 / (c * m)) * df.reshape(f.shape) * (f > 0)   # the paper's mask
    assert df.shape == f.shape
    return df


def mean_std_target_bytes(style_shape, itemsize: int) -> int:
    """Bytes the target keeps for the whole run: mu^s and sigma^s, (Ns, C) each -> 2 Ns C s."""
    ns, c = style_shape[:2]
    return 2 * ns * c * itemsize


#: NumPy computes ``a + b`` into a or b when that operand is a temporary of at least this many bytes
#: (its "temporary elision"; NPY_MIN_ELIDE_BYTES), instead of allocating the result.
ELIDE_BYTES = 256 * 1024


def mean_std_workspace_bytes(shape, itemsize: int) -> int:
    """Bytes forward + backward take at their peak besides f and the returned gradient, for f
    (N, C, H, W), A = N C H W elements, s = itemsize:

        2 A s + A + 3 N C s      (A s >= ELIDE_BYTES, NumPy)
        3 A s + A + 3 N C s      (smaller arrays)

    forward: F - mu and its square (2 A s), freed on return; the cache keeps mu, mu - mu^s and
    (sigma - sigma^s) / sigma (3 N C s). backward, at the mask: F - mu recomputed and the sum
    dmean + ratio (F - mu) (2 A s; NumPy writes the sum into the product's temporary), the
    mask [f > 0] (A bytes, bool) and the gradient (the scaled sum, which the mask then
    multiplies in place, NumPy eliding that temporary too). Below ELIDE_BYTES (and on CuPy,
    which elides nothing) the scaled sum is one more array of A s beside those.
    """
    n, c, h, w = shape
    a = n * c * h * w
    arrays = 2 if a * itemsize >= ELIDE_BYTES else 3
    return arrays * a * itemsize + a + 3 * n * c * itemsize
