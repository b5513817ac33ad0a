"""The style statistics beside the Gram loss (losses.statistics): values by hand, derivatives by
centred differences (and shown rejecting wrong ones), the identities that tie them to the Gram
loss, indifference to where things are, and the fixed random draws L-BFGS needs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gradcheck import channels_last_copy, directional_check, rel_error, to_np
from losses.mean_std import channel_mean_std, mean_std_loss_forward, mean_std_target
from losses.mmd import (kernel_matrix, mmd2, mmd2_backward, mmd_linear_loss_backward, mmd_linear_loss_forward,
                        mmd_linear_target, mmd_poly_loss_backward, mmd_poly_loss_forward, mmd_poly_target,
                        mmd_rbf_loss_forward, mmd_rbf_target, rbf_bandwidth)
from losses.sliced_wasserstein import (resample_sorted, sliced_wasserstein_loss_backward,
                                       sliced_wasserstein_loss_forward, sliced_wasserstein_target)
from losses.statistics import STYLE_STATISTICS, style_statistic
from losses.style import gram_matrix, style_loss_backward, style_loss_forward

NAMES = ["gram", "mean-std", "mmd-linear", "mmd-poly", "mmd-rbf", "sliced-wasserstein"]

# (f's shape, the style's shape): equal and different position counts, a batch, and f in
# channels-last memory (a non-contiguous (N, C, H, W) view).
CASES = {
    "equal": ((1, 4, 5, 3), (1, 4, 5, 3)),
    "different": ((1, 4, 5, 3), (1, 4, 7, 2)),
    "batch": ((2, 4, 5, 3), (1, 4, 6, 3)),
    "channels-last": ((1, 4, 3, 6), (1, 4, 4, 4)),
}


def _positive(rng, shape, margin=0.1):
    """Post-ReLU-like features kept away from 0 (no kink within a finite-difference step), as in test_losses."""
    return np.abs(rng.standard_normal(shape)) + margin


def _as_set(f):
    """A layer's features (1, C, H, W) as the set of its M position vectors, (M, C)."""
    return f.reshape(f.shape[1], -1).T


# ---- derivatives ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", NAMES)
def test_finite_differences(xp, name, case):
    """Every statistic, every input layout, a random upstream dloss: centred differences agree to 1e-7."""
    rng = np.random.default_rng(10)
    shape, style_shape = CASES[case]
    stat = STYLE_STATISTICS[name]
    f = xp.asarray(_positive(rng, shape))
    if case == "channels-last":
        f = channels_last_copy(f)
        assert not f.flags.c_contiguous
    target = stat.target(xp.asarray(_positive(rng, style_shape) * 1.3))
    dloss = 0.37
    grad = stat.backward(stat.forward(f, target)[1], dloss)
    assert grad.shape == f.shape
    assert directional_check(lambda v: dloss * stat.forward(v, target)[0], f, grad, rng) < 1e-7


@pytest.mark.parametrize("name", NAMES)
def test_mask_is_relus_backward(xp, name):
    """Through a ReLU (f = max(x, 0), with many zeros), the masked derivative is the derivative in x."""
    rng = np.random.default_rng(11)
    z = rng.standard_normal((1, 4, 6, 5))
    x = xp.asarray(np.sign(z) * (np.abs(z) + 0.1))                 # x away from ReLU's kink
    stat = STYLE_STATISTICS[name]
    target = stat.target(xp.asarray(_positive(rng, (1, 4, 5, 5))))
    grad = stat.backward(stat.forward(xp.maximum(x, 0), target)[1])
    assert float((x < 0).mean()) > 0.3                             # the mask really bites
    assert float(abs(grad * (x < 0)).max()) == 0.0
    assert directional_check(lambda v: stat.forward(xp.maximum(v, 0), target)[0], x, grad, rng) < 1e-7


@pytest.mark.parametrize("kernel", ["linear", "poly", "rbf"])
def test_exact_mmd2_finite_differences(xp, kernel):
    rng = np.random.default_rng(12)
    x = xp.asarray(rng.standard_normal((7, 3)))
    y = xp.asarray(rng.standard_normal((5, 3)) + 0.5)
    _, cache = mmd2(x, y, kernel, sigma2=2.0)
    dx = mmd2_backward(cache, 0.37)
    assert dx.shape == x.shape
    assert directional_check(lambda v: 0.37 * mmd2(v, y, kernel, sigma2=2.0)[0], x, dx, rng) < 1e-7


# Mistakes learners make, one per loss: each wrong backward must fail the check that the right one passes.
# mistake: (name, inputs, wrong(stat, cache, right, xp) -> the wrong df); inputs "positive": f > 0, checked
# in f; "relu": f = max(x, 0), checked in x, where only the mask tells the two apart. "no mask" for
# mmd-linear, mmd-rbf and sliced-wasserstein: their backward with a cache whose f is all ones (they read f
# for its shape and its mask only).
WRONG = {
    "gram: the 4 not cancelled": (
        "gram", "positive", lambda stat, cache, right, xp: right / 4),
    "gram: no mask": (
        "gram", "relu",
        lambda stat, cache, right, xp: cache.scale * (cache.gram_diff @ cache.f.reshape(1, 4, -1)).reshape(
            cache.f.shape)),
    "mean-std: dsigma/dF without 1/sigma": (
        "mean-std", "positive",
        lambda stat, cache, right, xp: right + (2.0 / (cache.f.shape[1] * cache.f[0, 0].size)) * (
            cache.dstd_ratio[..., None, None] * (channel_mean_std(cache.f)[1][..., None, None] - 1.0)
            * (cache.f - cache.mean[..., None, None]))),
    "mean-std: no mask": (
        "mean-std", "relu",
        lambda stat, cache, right, xp: right + (2.0 / (cache.f.shape[1] * cache.f[0, 0].size)) * (
            cache.dmean[..., None, None] + cache.dstd_ratio[..., None, None]
            * (cache.f - cache.mean[..., None, None])) * (cache.f <= 0)),
    "mmd-linear: dropped 2": (
        "mmd-linear", "positive", lambda stat, cache, right, xp: 0.5 * right),
    "mmd-linear: no mask": (
        "mmd-linear", "relu", lambda stat, cache, right, xp: stat.backward(cache._replace(f=xp.ones_like(cache.f)))),
    "mmd-poly: the Gram loss's 1/M^2 kept": (
        "mmd-poly", "positive", lambda stat, cache, right, xp: right / cache.f[0, 0].size),
    "mmd-rbf: d cos = +sin": (
        "mmd-rbf", "positive", lambda stat, cache, right, xp: -right),
    "mmd-rbf: no 1/M of the mean": (
        "mmd-rbf", "positive", lambda stat, cache, right, xp: right * cache.f[0, 0].size),
    "mmd-rbf: no mask": (
        "mmd-rbf", "relu", lambda stat, cache, right, xp: stat.backward(cache._replace(f=xp.ones_like(cache.f)))),
    "sliced-wasserstein: not un-sorted": (
        "sliced-wasserstein", "positive",
        lambda stat, cache, right, xp: (cache.directions @ (2.0 * cache.diff / cache.diff[0].size)).reshape(
            cache.f.shape) * (cache.f > 0)),
    "sliced-wasserstein: no mask": (
        "sliced-wasserstein", "relu",
        lambda stat, cache, right, xp: stat.backward(cache._replace(f=xp.ones_like(cache.f)))),
}


@pytest.mark.parametrize("mistake", list(WRONG))
def test_check_rejects_wrong_backwards(xp, mistake):
    name, inputs, wrong = WRONG[mistake]
    rng = np.random.default_rng(13)
    stat = STYLE_STATISTICS[name]
    target = stat.target(xp.asarray(_positive(rng, (1, 4, 7, 2)) * 1.3))
    if inputs == "positive":
        x = xp.asarray(_positive(rng, (1, 4, 5, 3)))
        act = lambda v: v                                          # noqa: E731
    else:
        z = rng.standard_normal((1, 4, 5, 3))
        x = xp.asarray(np.sign(z) * (np.abs(z) + 0.1))
        act = lambda v: xp.maximum(v, 0)                           # noqa: E731
    loss = lambda v: stat.forward(act(v), target)[0]               # noqa: E731
    cache = stat.forward(act(x), target)[1]
    right = stat.backward(cache)
    assert directional_check(loss, x, right, rng) < 1e-7
    assert directional_check(loss, x, wrong(stat, cache, right, xp), rng) > 1e-2


# ---- values by hand ---------------------------------------------------------------------------

def test_mean_std_hand_value(xp):
    # channel 0: f (1, 3) mu 2 sigma 1; style (0, 0, 6, 6) mu 3 sigma 3 -> 1 + 4
    # channel 1: f (2, 4) mu 3 sigma 1; style (0, 0, 4, 4) mu 2 sigma 2 -> 1 + 1
    f = xp.asarray([[[[1.0, 3.0]], [[2.0, 4.0]]]])                 # (1, 2, 1, 2)
    s = xp.asarray([[[[0.0, 0.0], [6.0, 6.0]], [[0.0, 0.0], [4.0, 4.0]]]])   # (1, 2, 2, 2)
    loss, _ = mean_std_loss_forward(f, mean_std_target(s, eps=0.0))
    assert float(loss) == (5 + 2) / 2                              # mean over the 2 channels
    loss_eps, _ = mean_std_loss_forward(f, mean_std_target(s))     # the default eps = 1e-5
    expected = ((2 - 3) ** 2 + (math.sqrt(1 + 1e-5) - math.sqrt(9 + 1e-5)) ** 2
                + (3 - 2) ** 2 + (math.sqrt(1 + 1e-5) - math.sqrt(4 + 1e-5)) ** 2) / 2
    assert abs(float(loss_eps) - expected) < 1e-14


def test_mmd2_hand_values(xp):
    x = xp.asarray([[1.0, 2.0], [3.0, 4.0]])
    # linear: ||mean x - mean y||^2 = ||(2, 3) - 0||^2
    assert float(mmd2(x, xp.asarray([[0.0, 0.0]]), "linear")[0]) == 13.0
    # poly: K_xx = [[25, 121], [121, 625]] (mean 223), K_yy = 1, K_xy = [1, 9] (mean 5)
    assert float(mmd2(x, xp.asarray([[1.0, 0.0]]), "poly")[0]) == 223 + 1 - 2 * 5
    # rbf with 2 sigma^2 = 1, x = {0, 1}, y = {0}: (1 + 1/e)/2 + 1 - (1 + 1/e) = (1 - 1/e)/2
    value = mmd2(xp.asarray([[0.0], [1.0]]), xp.asarray([[0.0]]), "rbf", sigma2=0.5)[0]
    assert abs(float(value) - (1 - math.exp(-1)) / 2) < 1e-15
    with pytest.raises(ValueError, match="unknown kernel 'cubic'"):
        mmd2(x, x, "cubic")


def test_kernel_matrix_matches_loops(xp):
    rng = np.random.default_rng(14)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    loops = {
        "linear": lambda a, b: a @ b,
        "poly": lambda a, b: (a @ b) ** 2,
        "rbf": lambda a, b: math.exp(-sum((a - b) ** 2) / (2 * 1.7)),
    }
    for kernel, k in loops.items():
        naive = np.array([[k(x[i], y[j]) for j in range(5)] for i in range(4)])
        assert rel_error(kernel_matrix(xp.asarray(x), xp.asarray(y), kernel, sigma2=1.7), naive) < 1e-14


def test_rff_value_matches_loops(xp):
    """mmd-rbf is (sigma^2/N_l) ||mean phi(F) - mean phi(S)||^2, phi(x)_d = sqrt(2/D) cos(w_d^T x + b_d), written out."""
    rng = np.random.default_rng(15)
    f, s = _positive(rng, (1, 3, 2, 3)), _positive(rng, (1, 3, 2, 2))
    target = mmd_rbf_target(xp.asarray(s), n_features=5, seed=3)
    w, b = to_np(target.weights), to_np(target.bias)
    x, y = _as_set(f), _as_set(s)
    naive = 0.0
    for d in range(5):
        phi_x = sum(math.sqrt(2 / 5) * math.cos(sum(w[c, d] * x[k, c] for c in range(3)) + b[d]) for k in range(6)) / 6
        phi_y = sum(math.sqrt(2 / 5) * math.cos(sum(w[c, d] * y[k, c] for c in range(3)) + b[d]) for k in range(4)) / 4
        naive += (phi_x - phi_y) ** 2
    naive *= float(target.sigma2) / 3                                  # the normaliser: sigma^2 / N_l
    assert abs(float(mmd_rbf_loss_forward(xp.asarray(f), target)[0]) - naive) < 1e-14
    # the draw: W ~ N(0, 1/sigma^2) with the bandwidth rule, b in [0, 2 pi)
    assert float(target.sigma2) == pytest.approx(float(rbf_bandwidth(xp.asarray(s))), rel=1e-15)
    assert b.min() >= 0 and b.max() < 2 * math.pi


def test_bandwidth_rule_is_mean_squared_pair_distance(xp):
    rng = np.random.default_rng(16)
    s = _positive(rng, (1, 3, 4, 5))
    y = _as_set(s)
    naive = np.mean([np.sum((y[i] - y[j]) ** 2) for i in range(20) for j in range(20)])   # i = j included
    assert abs(float(rbf_bandwidth(xp.asarray(s))) - naive) / naive < 1e-13


def test_sliced_wasserstein_hand_values(xp):
    # one channel: the only unit directions are +1 and -1, and both give the same value
    f = xp.asarray([[[[3.0, 1.0, 2.0]]]])                          # sorted 1 2 3
    s = xp.asarray([[[[0.0, 5.0, 1.0]]]])                          # sorted 0 1 5
    for direction in (1.0, -1.0):
        target = sliced_wasserstein_target(s, directions=xp.asarray([[direction]]))
        assert float(sliced_wasserstein_loss_forward(f, target)[0]) == (1 + 1 + 4) / 3
    # M = 4 against M_s = 2: the style's (0, 4) read at levels 1/8, 3/8, 5/8, 7/8 is (0, 1, 3, 4)
    f = xp.asarray([[[[4.0, 1.0, 3.0, 2.0]]]])                     # sorted 1 2 3 4
    target = sliced_wasserstein_target(xp.asarray([[[[4.0, 0.0]]]]), directions=xp.asarray([[1.0]]))
    assert float(sliced_wasserstein_loss_forward(f, target)[0]) == (1 + 1 + 0 + 0) / 4
    # two channels, the axes as directions: the mean of the channels' 1-D values
    f = xp.asarray([[[[1.0, 2.0]], [[0.0, 4.0]]]])                 # (1, 2, 1, 2)
    s = xp.asarray([[[[2.0, 1.0]], [[1.0, 1.0]]]])
    target = sliced_wasserstein_target(s, directions=xp.asarray([[1.0, 0.0], [0.0, 1.0]]))
    assert float(sliced_wasserstein_loss_forward(f, target)[0]) == (0 + 0 + 1 + 9) / 4


def test_resample_sorted(xp):
    v = xp.asarray([[0.0, 4.0, 10.0]])
    assert resample_sorted(v, 3) is v                              # equal counts: the values themselves
    # levels (i + 1/2)/6 -> style indices t = 3 (i + 1/2)/6 - 1/2 = -0.25, 0.25, 0.75, 1.25, 1.75, 2.25
    assert to_np(resample_sorted(v, 6)).tolist() == [[0.0, 1.0, 3.0, 5.5, 8.5, 10.0]]
    assert to_np(resample_sorted(v, 1)).tolist() == [[4.0]]        # the median
    assert to_np(resample_sorted(xp.asarray([[7.0]]), 4)).tolist() == [[7.0] * 4]


def test_gram_statistic_is_the_paper_loss(xp):
    """"gram" is style_loss_forward with the style's Gram scaled to f's positions, A M / M_s."""
    rng = np.random.default_rng(17)
    f, s = xp.asarray(_positive(rng, (1, 4, 5, 3))), xp.asarray(_positive(rng, (1, 4, 7, 2)))
    stat = style_statistic("gram")
    loss, cache = stat.forward(f, stat.target(s))
    paper, paper_cache = style_loss_forward(f, gram_matrix(s) * (15 / 14))
    assert abs(float(loss) - float(paper)) / float(paper) < 1e-14
    assert rel_error(stat.backward(cache), style_loss_backward(paper_cache)) < 1e-14


# ---- identities -------------------------------------------------------------------------------

def test_poly_mmd_is_four_n2_times_gram_loss(xp):
    """MMD^2 with k = (x^T y)^2 = 4 N_l^2 E_l (A rescaled to M positions): to rounding, by a different route."""
    rng = np.random.default_rng(18)
    c = 4
    f, s = _positive(rng, (1, c, 5, 3)), _positive(rng, (1, c, 7, 2)) * 1.5
    exact, _ = mmd2(xp.asarray(_as_set(f)), xp.asarray(_as_set(s)), "poly")   # O(M^2) kernel sums
    e_l, _ = style_loss_forward(xp.asarray(f), gram_matrix(xp.asarray(s)) * (15 / 14))
    assert abs(float(exact) - 4 * c**2 * float(e_l)) / float(exact) < 1e-12
    layer, _ = mmd_poly_loss_forward(xp.asarray(f), mmd_poly_target(xp.asarray(s)))
    assert abs(float(layer) - float(e_l)) / float(e_l) < 1e-12


def test_linear_mmd_is_squared_mean_difference(xp):
    rng = np.random.default_rng(19)
    f, s = _positive(rng, (1, 4, 5, 3)), _positive(rng, (1, 4, 7, 2)) * 1.5
    x, y = _as_set(f), _as_set(s)
    squared = float(np.sum((x.mean(axis=0) - y.mean(axis=0)) ** 2))
    exact, _ = mmd2(xp.asarray(x), xp.asarray(y), "linear")
    assert abs(float(exact) - squared) / squared < 1e-12
    layer, _ = mmd_linear_loss_forward(xp.asarray(f), mmd_linear_target(xp.asarray(s)))
    assert abs(4 * float(layer) - squared) / squared < 1e-12       # over N_l = 4


@pytest.mark.parametrize("kernel", ["linear", "poly"])
def test_layer_mmd_gradients_match_exact_sets(xp, kernel):
    """The closed-form layer gradients are the exact MMD^2's (times 1/Z), position by position."""
    rng = np.random.default_rng(20)
    f, s = _positive(rng, (1, 4, 5, 3)), _positive(rng, (1, 4, 7, 2))
    _, cache = mmd2(xp.asarray(_as_set(f)), xp.asarray(_as_set(s)), kernel)
    exact = to_np(mmd2_backward(cache)).T.reshape(f.shape)         # (M, C) -> (1, C, H, W)
    if kernel == "linear":
        layer = mmd_linear_loss_backward(mmd_linear_loss_forward(xp.asarray(f), mmd_linear_target(xp.asarray(s)))[1])
        z = 4
    else:
        layer = mmd_poly_loss_backward(mmd_poly_loss_forward(xp.asarray(f), mmd_poly_target(xp.asarray(s)))[1])
        z = 4 * 4**2
    assert rel_error(z * to_np(layer), exact) < 1e-12


def test_rff_approaches_exact_mmd(xp):
    """The random-feature value tends to the exact Gaussian MMD^2 as D grows (mean error over 8 seeds)."""
    rng = np.random.default_rng(5)
    f, s = _positive(rng, (1, 3, 5, 8)), _positive(rng, (1, 3, 6, 5)) * 1.5
    sigma2 = rbf_bandwidth(xp.asarray(s))
    exact = float(mmd2(xp.asarray(_as_set(f)), xp.asarray(_as_set(s)), "rbf", sigma2)[0]) * float(sigma2) / 3
    errors = []
    for d in (16, 256, 4096, 65536):
        values = [float(mmd_rbf_loss_forward(xp.asarray(f), mmd_rbf_target(xp.asarray(s), d, seed, sigma2))[0])
                  for seed in range(8)]
        errors.append(np.mean([abs(v - exact) for v in values]) / exact)
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 0.01 and errors[0] / errors[3] > 16         # 1/sqrt(D) predicts 64 from 16 to 65536


# ---- what style is not: positions ---------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_zero_at_style_and_at_a_shuffled_style(xp, name):
    """E = 0 at the style's own features, and (to rounding) at its positions shuffled into another shape."""
    rng = np.random.default_rng(21)
    s = _positive(rng, (1, 4, 4, 6))
    stat = STYLE_STATISTICS[name]
    target = stat.target(xp.asarray(s))
    other = float(stat.forward(xp.asarray(_positive(rng, (1, 4, 4, 6))), target)[0])
    assert other > 1e-4
    assert float(stat.forward(xp.asarray(s), target)[0]) <= 1e-24 * other
    shuffled = s.reshape(1, 4, 24)[:, :, rng.permutation(24)].reshape(1, 4, 3, 8)
    assert float(stat.forward(xp.asarray(shuffled), target)[0]) <= 1e-24 * other


@pytest.mark.parametrize("name", [n for n in NAMES if n != "sliced-wasserstein"])
def test_zero_at_a_tiled_style(xp, name):
    """Twice the positions, the same distribution: E = 0 at any M (the normalisations are means over positions).

    Not sliced-wasserstein: its linear interpolation of the style's quantile function reads
    (s_0, s_0, s_1, s_1, ...) at the tiled image's levels as (s_0, 3/4 s_0 + 1/4 s_1, ...).
    """
    rng = np.random.default_rng(22)
    s = _positive(rng, (1, 4, 3, 5))
    stat = STYLE_STATISTICS[name]
    target = stat.target(xp.asarray(s))
    other = float(stat.forward(xp.asarray(_positive(rng, (1, 4, 6, 5))), target)[0])
    tiled = np.concatenate([s, s[:, :, ::-1]], axis=2)             # (1, 4, 6, 5): each position twice
    assert float(stat.forward(xp.asarray(tiled), target)[0]) <= 1e-24 * other


# ---- batches, dtypes, targets -------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_batch_is_the_sum_of_its_images(xp, name):
    rng = np.random.default_rng(23)
    f = xp.asarray(_positive(rng, (2, 4, 5, 3)))
    stat = STYLE_STATISTICS[name]
    target = stat.target(xp.asarray(_positive(rng, (1, 4, 6, 3))))
    loss, cache = stat.forward(f, target)
    parts = [stat.forward(f[i:i + 1], target) for i in range(2)]
    assert abs(float(loss) - sum(float(p[0]) for p in parts)) / float(loss) < 1e-13
    assert rel_error(stat.backward(cache), xp.concatenate([stat.backward(p[1]) for p in parts])) < 1e-13
    with pytest.raises(ValueError):                                # 2 style images for 3 generated ones
        stat.forward(xp.asarray(_positive(rng, (3, 4, 5, 3))), stat.target(xp.asarray(_positive(rng, (2, 4, 6, 3)))))


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(xp, name):
    rng = np.random.default_rng(24)
    stat = STYLE_STATISTICS[name]
    target = stat.target(xp.asarray(_positive(rng, (1, 4, 6, 3)), dtype="float32"))
    loss, cache = stat.forward(xp.asarray(_positive(rng, (1, 4, 5, 3)), dtype="float32"), target)
    assert loss.dtype == "float32" and loss.shape == ()
    assert stat.backward(cache).dtype == "float32"


def test_sliced_wasserstein_directions_are_fixed_per_run(xp):
    """One target is one function (L-BFGS's line search and curvature pairs need that); a new seed is another."""
    rng = np.random.default_rng(25)
    f, s = xp.asarray(_positive(rng, (1, 6, 5, 3))), xp.asarray(_positive(rng, (1, 6, 7, 2)))
    target = sliced_wasserstein_target(s)                          # seed 0, K = C = 6
    assert target.directions.shape == (6, 6) and target.seed == 0
    assert float(abs((target.directions ** 2).sum(axis=0) - 1).max()) < 1e-15   # unit directions
    (first, c1), (again, c2) = sliced_wasserstein_loss_forward(f, target), sliced_wasserstein_loss_forward(f, target)
    assert float(first) == float(again)                            # repeated evaluation: identical
    assert float(abs(sliced_wasserstein_loss_backward(c1) - sliced_wasserstein_loss_backward(c2)).max()) == 0.0
    redrawn = sliced_wasserstein_target(s, seed=0)                 # the same seed in a new run: the same function
    assert float(abs(redrawn.directions - target.directions).max()) == 0.0
    assert float(sliced_wasserstein_loss_forward(f, redrawn)[0]) == float(first)
    new = sliced_wasserstein_target(s, seed=1)                     # a new seed: new directions, a new value
    assert float(abs(new.directions - target.directions).min()) > 0.0
    assert abs(float(sliced_wasserstein_loss_forward(f, new)[0]) - float(first)) > 1e-6 * float(first)
    assert sliced_wasserstein_target(s, n_directions=10).directions.shape == (6, 10)


def test_rbf_features_are_fixed_per_run(xp):
    rng = np.random.default_rng(26)
    f, s = xp.asarray(_positive(rng, (1, 4, 5, 3))), xp.asarray(_positive(rng, (1, 4, 7, 2)))
    a, b, other = mmd_rbf_target(s), mmd_rbf_target(s), mmd_rbf_target(s, seed=1)
    assert a.weights.shape == (4, 128)                             # D = 128 by default
    assert float(mmd_rbf_loss_forward(f, a)[0]) == float(mmd_rbf_loss_forward(f, b)[0])
    assert float(mmd_rbf_loss_forward(f, a)[0]) != float(mmd_rbf_loss_forward(f, other)[0])
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf_target(xp.ones((1, 4, 3, 3)))                      # a constant style: sigma^2 = 0


def test_registry():
    assert list(STYLE_STATISTICS) == NAMES
    assert style_statistic("mmd-rbf") is STYLE_STATISTICS["mmd-rbf"]
    with pytest.raises(ValueError) as info:
        style_statistic("x")
    assert str(info.value) == ("unknown style loss 'x': choose one of gram, mean-std, mmd-linear, mmd-poly, "
                               "mmd-rbf, sliced-wasserstein")
