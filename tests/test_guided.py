"""Spatial control: the guided Gram and guided style loss (losses/guided.py) against naive sums and
finite differences with soft-edged masks, its normalisation, the fast twin (minivgg/fast/guided.py),
masks down to every layer (minivgg/masks.py), and the whole guided objective's gradient on both
engines."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import channels_last_copy, directional_check, rel_error
from losses import (gram_matrix, guided_gram, guided_gram_backward, guided_style_loss_backward,
                    guided_style_loss_forward, region_mass, style_loss_backward, style_loss_forward)
from minivgg.architecture import LAYER_NAMES, layer_outputs
from minivgg.fast import guided as fast_guided
from minivgg.masks import layer_masks


def _positive(rng, shape, margin=0.1):
    """Post-ReLU-like features kept away from 0 (no kink within a finite-difference step)."""
    return np.abs(rng.standard_normal(shape)) + margin


def _soft_edge(h, w, centre, width=2.0, horizontal=True):
    """(h, w) mask: 1 left of (or above) ``centre``, 0 beyond, a logistic edge ``width`` wide."""
    coord = np.arange(w)[None, :] if horizontal else np.arange(h)[:, None]
    return np.broadcast_to(1 / (1 + np.exp((coord - centre) / width)), (h, w)).copy()


def _gram_target(rng, c):
    b = rng.standard_normal((1, c, 2 * c))
    return b @ b.transpose(0, 2, 1) / (2 * c)                      # symmetric, like a mean Gram


def test_guided_gram_matches_naive_sum(xp):
    rng = np.random.default_rng(0)
    f, t = rng.standard_normal((2, 3, 4, 5)), rng.random((4, 5))
    fm, tt = f.reshape(2, 3, 20), t.reshape(20)
    naive = np.zeros((2, 3, 3))
    for n in range(2):
        for i in range(3):
            for j in range(3):
                naive[n, i, j] = sum(tt[k] ** 2 * fm[n, i, k] * fm[n, j, k] for k in range(20)) / (tt ** 2).sum()
    assert rel_error(guided_gram(xp.asarray(f), xp.asarray(t)), naive) < 1e-14


def test_guided_gram_backward_finite_differences(xp):
    """<dG, G_t(f)> differentiated along random directions: the staged local derivative, soft mask."""
    rng = np.random.default_rng(1)
    f = xp.asarray(rng.standard_normal((1, 4, 6, 7)))
    t = xp.asarray(_soft_edge(6, 7, 3.3, 1.5))
    dgram = xp.asarray(rng.standard_normal((1, 4, 4)))              # random upstream, not symmetric
    df = guided_gram_backward(dgram, f, t)
    err = directional_check(lambda v: xp.vdot(dgram, guided_gram(v, t)), f, df, rng, h=1e-5, directions=4)
    assert err < 1e-8, err                                          # measured 1e-9 .. 3e-9


@pytest.mark.parametrize("mask", ["soft_edge", "random", "binary_half"])
def test_guided_style_loss_gradient(xp, mask):
    """dE_t/dF: float64 centred differences along random unit directions, random dloss, soft masks."""
    rng = np.random.default_rng(2)
    f = xp.asarray(_positive(rng, (1, 5, 6, 8)))                   # the paper's mask [F > 0] is all ones
    t = {"soft_edge": _soft_edge(6, 8, 3.7, 1.2), "random": rng.random((6, 8)),
         "binary_half": (np.arange(8)[None, :] < 4) * np.ones((6, 1))}[mask]
    t, target = xp.asarray(t), xp.asarray(_gram_target(rng, 5))
    dloss = float(rng.uniform(0.5, 2.0))
    _, cache = guided_style_loss_forward(f, t, target)
    df = guided_style_loss_backward(cache, dloss)
    loss = lambda v: dloss * guided_style_loss_forward(v, t, target)[0]   # noqa: E731
    err = directional_check(loss, f, df, rng, h=1e-5, directions=4)
    assert err < 1e-8, err                                          # measured 1e-9 .. 3e-9
    # the closed form (G_t - A_t)(F o t^2) / (N^2 M) equals the chain through guided_gram_backward
    n, c, h, w = f.shape
    m = region_mass(t)
    dgram = dloss * m / (2 * c * c * h * w) * (guided_gram(f, t) - target)   # dE/dG_t
    assert rel_error(df, guided_gram_backward(dgram, f, t)) < 1e-13


def test_guided_backward_applies_the_papers_mask(xp):
    rng = np.random.default_rng(3)
    f = xp.maximum(xp.asarray(rng.standard_normal((1, 4, 5, 6))), 0)    # zeros present
    t = xp.asarray(rng.random((5, 6)))
    _, cache = guided_style_loss_forward(f, t, xp.asarray(_gram_target(rng, 4)))
    df = guided_style_loss_backward(cache)
    assert float(abs(df[f == 0]).max()) == 0.0 and float(abs(df).max()) > 0


def test_an_all_ones_guide_is_the_papers_style_loss(xp):
    """t = 1 everywhere and A_t = A / M: E_t is E_l = sum (G - A)^2 / (4 N^2 M^2), same gradient."""
    rng = np.random.default_rng(4)
    f = xp.asarray(np.maximum(rng.standard_normal((1, 6, 5, 7)), 0))
    a = _gram_target(rng, 6) * 35                                   # a raw Gram for M = 35
    e, cache = style_loss_forward(f, xp.asarray(a))
    e_t, g_cache = guided_style_loss_forward(f, xp.ones((5, 7)), xp.asarray(a / 35))
    assert abs(float(e_t) / float(e) - 1) < 1e-13
    assert rel_error(guided_style_loss_backward(g_cache, 0.7), style_loss_backward(cache, 0.7)) < 1e-13


def test_guided_gram_normalisation_makes_regions_comparable():
    """G_t is a weighted mean: scaling the mask leaves it alone; on stationary features a half-image
    region, a quarter and the whole image give the same Gram (to sampling noise), and E_t weighs
    each region by its share m / M, so a partition's per-position gradients keep the paper's scale."""
    rng = np.random.default_rng(5)
    f = np.abs(rng.standard_normal((1, 8, 64, 96))) + 0.2           # stationary "features"
    whole = gram_matrix(f) / (64 * 96)                             # mean Gram: (1, 8, 8)
    left = (np.arange(96)[None, :] < 48) * np.ones((64, 1))
    quarter = left * (np.arange(64)[:, None] < 32)
    for t in (left, quarter, _soft_edge(64, 96, 40.0, 4.0)):
        assert rel_error(guided_gram(f, t), whole) < 0.05           # sampling noise: measured 0.008 .. 0.019
        assert rel_error(guided_gram(f, 0.3 * t), guided_gram(f, t)) < 1e-14
    # a region's loss is its share of the whole image's loss for the same mismatch
    target = whole * 2.0
    e_whole = float(guided_style_loss_forward(f, np.ones((64, 96)), target)[0])
    e_left = float(guided_style_loss_forward(f, left, target)[0])
    assert abs(e_left / e_whole - 0.5) < 0.02                       # m / M = 1/2, G_t ~ whole: 0.496
    # gradient inside the left half: the whole-image gradient there (same per-position scale)
    _, c_whole = guided_style_loss_forward(f, np.ones((64, 96)), target)
    _, c_left = guided_style_loss_forward(f, left, target)
    d_left, d_whole = guided_style_loss_backward(c_left), guided_style_loss_backward(c_whole)
    assert rel_error(d_left[..., :48], d_whole[..., :48]) < 0.05   # measured 6e-3
    assert float(np.abs(d_left[..., 48:]).max()) == 0.0


@pytest.mark.parametrize("layout", ["c_order", "channels_last"])
def test_fast_guided_loss_matches_reference(xp, layout, monkeypatch):
    """Fast twin: same E_t per region; its one unmasked gradient, once masked by [F > 0], equals
    the sum of the reference's; spans smaller than M (several products) on the CPU."""
    monkeypatch.setattr(fast_guided, "SPAN_BYTES", 8 * 5 * 13)     # 13 positions per span: uneven
    rng = np.random.default_rng(6)
    f = xp.asarray(np.maximum(rng.standard_normal((1, 5, 9, 11)), 0))
    f = channels_last_copy(f) if layout == "channels_last" else f
    guides = [xp.asarray(_soft_edge(9, 11, 5.0, 1.0)), xp.asarray(1 - _soft_edge(9, 11, 5.0, 1.0)),
              xp.asarray(rng.random((9, 11)))]
    targets = [xp.asarray(_gram_target(rng, 5)) for _ in guides]
    want, caches = 0.0, []
    for t, a in zip(guides, targets):
        e_ref, ref_cache = guided_style_loss_forward(f, t, a)
        e_fast, fast_cache = fast_guided.guided_style_loss_forward(f, t, a)
        assert abs(float(e_fast) / float(e_ref) - 1) < 1e-13
        want = want + guided_style_loss_backward(ref_cache, 0.3)
        caches.append(fast_cache)
    got = fast_guided.guided_style_loss_backward(caches, 0.3)
    assert got.shape == f.shape and (layout == "c_order" or got.strides == f.strides)   # f's memory order
    assert rel_error(got * (f > 0), want) < 1e-13


def test_layer_masks_follow_the_networks_grid():
    """Shapes are every layer's feature shapes (odd sizes: floor); each pool is a 2x2 mean; a
    partition of unity stays one at every layer."""
    h, w = 45, 70                                                  # odd, and not a multiple of 16
    left = _soft_edge(h, w, 30.0, 3.0)
    layers = ("conv1_1", "conv1_2", "pool1", "conv2_1", "conv3_2", "pool3", "conv4_2", "conv5_1")
    a, b = layer_masks(left, layers), layer_masks(1 - left, layers)
    shapes = {name: (lh, lw) for name, _, _, lh, lw in layer_outputs(h, w, "conv5_1")}
    for name in layers:
        assert a[name].shape == shapes[name]
        assert float(np.abs(a[name] + b[name] - 1).max()) < 1e-14
    assert np.array_equal(a["conv1_1"], left) and np.array_equal(a["conv1_2"], left)
    p = left[:44, :70].reshape(22, 2, 35, 2).mean(axis=(1, 3))     # pool1 by hand: drop the odd row
    assert float(np.abs(a["pool1"] - p).max()) < 1e-15 and np.array_equal(a["conv2_1"], a["pool1"])
    assert set(a) == set(layers) and LAYER_NAMES.index("conv5_1") > 0


@pytest.fixture(scope="module")
def guided_setting():
    """Small float64 images, two styles of other sizes, soft-edged content masks, one style mask,
    two weighted content layers: every new feature of the objective at once. x is the content
    plus noise, a point in the middle of an optimisation."""
    rng = np.random.default_rng(7)
    h, w = 32, 40
    content = rng.normal(0, 40, (1, 3, h, w))
    x = content + rng.normal(0, 5, (1, 3, h, w))
    styles = [rng.normal(0, 40, (1, 3, 36, 32)), rng.normal(0, 40, (1, 3, 40, 48))]
    left = _soft_edge(h, w, 18.0, 2.5)
    style_mask = _soft_edge(40, 48, 20.0, 3.0, horizontal=False)
    kwargs = dict(alpha=1e-3, beta=1.0, content_layers={"conv4_2": 1.0, "conv2_2": 0.25}, tv_weight=1e-2,
                  content_masks=[left, 1 - left], style_masks=[None, style_mask])
    return x, content, styles, kwargs


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_guided_objective_directional_derivative(vgg_params, guided_setting, engine):
    """The whole guided objective (image -> VGG-19 -> guided style + content + TV) against centred
    differences along random unit directions, float64, real weights.

    Through the whole network the window for the step is narrow: at h = 1e-3 a direction now and
    then moves some ReLU across its kink within the step (one in eight gave 5e-3 in a sweep), and
    below 3e-4 rounding of the ~1e7 loss dominates (~1e-7). So each direction is checked at both
    steps and its smaller error counts: a wrong gradient is wrong at every step.
    """
    from minivgg.transfer.objective import Objective
    from minivgg.vgg import VGG19
    x, content, styles, kwargs = guided_setting
    objective = Objective(VGG19(vgg_params, dtype="float64", engine=engine), content, styles, **kwargs)
    grad = objective(x).grad
    total = lambda v: objective(v).total_loss                      # noqa: E731
    errors = [min(directional_check(total, x, grad, np.random.default_rng(seed), h=h, directions=1)
                  for h in (1e-3, 3e-4)) for seed in range(4)]
    print(f"{engine}: directional errors {['%.1e' % e for e in errors]}")
    # measured: reference 7e-10 .. 5e-9; fast 3e-9 .. 2.1e-7. The fast engine's floor is its float64
    # Winograd rounding: its losses differ from the reference's by ~2e-15 of ~1e7, which over
    # a step of 2h = 6e-4 is ~1e-7 of these derivatives (it moved 1e-9 -> 2e-7 on seed 0 when the
    # input transform went one axis at a time). A wrong gradient is off by 1e-3 and more.
    assert max(errors) < (1e-8 if engine == "reference" else 5e-7), errors
