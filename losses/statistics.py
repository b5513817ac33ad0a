"""What style is: the style statistics by name, one interface for all (``--style-loss``).

Shapes: f: (N, C, H, W) post-ReLU features of one layer of the generated image, M = H * W
positions; f_style: (1 or N, C, Hs, Ws), the style image's features at that layer, any size
(M_s = Hs * Ws). Every statistic is three functions:

    target(f_style, **options) -> target      once per run and layer, from the style image
    forward(f, target)         -> (0-d E, cache)
    backward(cache, dloss=1.0) -> df, like f   (ends with the paper's ReLU mask [f > 0])

Each E is summed over the batch and is normalised so that it does not grow with M; each is
0 for a spatially rearranged copy of the style. The statistics:

    "gram"               the paper's E_l = sum (G - A)^2 / (4 N_l^2 M^2), A the style's Gram
                         rescaled to M positions (losses/style.py); target A / M_s
    "mean-std"           (1/N_l) sum_c (mu_c - mu^s_c)^2 + (sigma_c - sigma^s_c)^2 (losses/mean_std.py)
    "mmd-linear"         MMD^2, k(x, y) = x^T y, over N_l: channel means only (losses/mmd.py)
    "mmd-poly"           MMD^2, k(x, y) = (x^T y)^2, over 4 N_l^2: equal to "gram", to rounding
    "mmd-rbf"            MMD^2, Gaussian kernel, by D = 128 random Fourier features (seeded), times
                         sigma^2 / N_l: mmd-linear's units, to which it reduces to first order
    "sliced-wasserstein" mean squared difference of sorted projections on K = C random
                         directions (seeded; losses/sliced_wasserstein.py)

Memory (``minivgg.memory`` asks each statistic, as it asks the kernels): every statistic also
reports, in bytes, at itemsize s,

    target_bytes(style_shape, s)            what its target keeps for the whole run, per layer
    workspace_bytes(shape, s, style_shape)  what forward + backward take at their peak besides f
                                            and the returned gradient (its workspace: caches,
                                            projections, indices, sin(Z)...); style_shape: the
                                            style's features (None: f's), for sliced Wasserstein's
                                            resampling

each at the default options (the formulas: in each module's ``*_bytes`` functions).

Options of target: mean-std: eps; mmd-rbf: n_features, seed, sigma2; sliced-wasserstein:
n_directions, seed, directions. The scales differ ("gram" and "mmd-poly" are in the fourth
power of the features, "mean-std", "mmd-linear", "mmd-rbf" and "sliced-wasserstein" in the
second), so beta is the caller's to retune when the statistic changes.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from losses.mean_std import (mean_std_loss_backward, mean_std_loss_forward, mean_std_target,
                             mean_std_target_bytes, mean_std_workspace_bytes)
from losses.mmd import (mmd_linear_loss_backward, mmd_linear_loss_forward, mmd_linear_target,
                        mmd_linear_target_bytes, mmd_linear_workspace_bytes,
                        mmd_poly_loss_backward, mmd_poly_loss_forward, mmd_poly_target,
                        mmd_poly_target_bytes, mmd_poly_workspace_bytes,
                        mmd_rbf_loss_backward, mmd_rbf_loss_forward, mmd_rbf_target,
                        mmd_rbf_target_bytes, mmd_rbf_workspace_bytes)
from losses.sliced_wasserstein import (sliced_wasserstein_loss_backward, sliced_wasserstein_loss_forward,
                                       sliced_wasserstein_target, sliced_wasserstein_target_bytes,
                                       sliced_wasserstein_workspace_bytes)
from losses.style import (gram_matrix, gram_target_bytes, gram_workspace_bytes, style_loss_backward,
                          style_loss_forward)


class StyleStatistic(NamedTuple):
    """One style statistic: target(f_style, **options), forward(f, target), backward(cache, dloss=1.0),
    and its bytes: target_bytes(style_shape, itemsize), workspace_bytes(shape, itemsize, style_shape=None)."""

    target: Callable
    forward: Callable
    backward: Callable
    target_bytes: Callable
    workspace_bytes: Callable


def _ignoring_style(report):
    """report(shape, itemsize) as workspace_bytes(shape, itemsize, style_shape=None): a statistic whose
    workspace does not depend on the style's size."""
    def workspace_bytes(shape, itemsize, style_shape=None):
        return report(shape, itemsize)
    workspace_bytes.__doc__ = report.__doc__
    return workspace_bytes


def _sliced_wasserstein_workspace(shape, itemsize, style_shape=None):
    """sliced_wasserstein_workspace_bytes with M_s read from style_shape (None: M_s = M)."""
    positions = None if style_shape is None else style_shape[2] * style_shape[3]
    return sliced_wasserstein_workspace_bytes(shape, itemsize, style_positions=positions)


def gram_target(f_style):
    """The style's Gram matrix as a mean over its positions, A / M_s: f_style (Ns, C, Hs, Ws) -> (Ns, C, C)."""
    hs, ws = f_style.shape[2:]
    return gram_matrix(f_style) / (hs * ws)


def gram_forward(f, target):
    """style_loss_forward(f, (A / M_s) M): the paper's E_l with the style's Gram rescaled to f's M positions."""
    h, w = f.shape[2:]
    return style_loss_forward(f, target * (h * w))


STYLE_STATISTICS: dict[str, StyleStatistic] = {
    "gram": StyleStatistic(gram_target, gram_forward, style_loss_backward,
                           gram_target_bytes, _ignoring_style(gram_workspace_bytes)),
    "mean-std": StyleStatistic(mean_std_target, mean_std_loss_forward, mean_std_loss_backward,
                               mean_std_target_bytes, _ignoring_style(mean_std_workspace_bytes)),
    "mmd-linear": StyleStatistic(mmd_linear_target, mmd_linear_loss_forward, mmd_linear_loss_backward,
                                 mmd_linear_target_bytes, _ignoring_style(mmd_linear_workspace_bytes)),
    "mmd-poly": StyleStatistic(mmd_poly_target, mmd_poly_loss_forward, mmd_poly_loss_backward,
                               mmd_poly_target_bytes, _ignoring_style(mmd_poly_workspace_bytes)),
    "mmd-rbf": StyleStatistic(mmd_rbf_target, mmd_rbf_loss_forward, mmd_rbf_loss_backward,
                              mmd_rbf_target_bytes, _ignoring_style(mmd_rbf_workspace_bytes)),
    "sliced-wasserstein": StyleStatistic(sliced_wasserstein_target, sliced_wasserstein_loss_forward,
                                         sliced_wasserstein_loss_backward, sliced_wasserstein_target_bytes,
                                         _sliced_wasserstein_workspace),
}


def style_statistic(name: str) -> StyleStatistic:
    """The statistic called name; ValueError naming the choices for any other name."""
    try:
        return STYLE_STATISTICS[name]
    except KeyError:
        raise ValueError(f"unknown style loss {name!r}: choose one of {', '.join(STYLE_STATISTICS)}") from None
