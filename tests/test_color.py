"""Colour control by histogram matching (minivgg/transfer/color.py): the linear map's statistics, its
choice of square root, and a short transfer whose colours stay the content's."""
from __future__ import annotations

import numpy as np

from minivgg.image import net_to_rgb, pixel_bounds, rgb_to_net
from minivgg.transfer.color import (color_statistics, histogram_match, histogram_transform,
                                    symmetric_power)


def _scene(h, w, seed=3):
    """A synthetic photo: shading and a brighter block in one greenish tint (luminance-dominated
    colour covariance, as in most photos), a little noise."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    lum = 0.35 + 0.4 * yy + 0.25 * ((xx > 0.55) & (xx < 0.85) & (yy > 0.3) & (yy < 0.8)) + 0.08 * np.sin(12 * xx)
    noise = np.random.default_rng(seed).normal(0, 6, (h, w, 3))
    return np.clip(lum[:, :, None] * np.array([150.0, 230.0, 170.0]) + noise, 0, 255)


def _painting(h, w, seed=4):
    """A synthetic painting: warm diagonal strokes, red and orange, noisy."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    stripes = (np.sin(xx * 40 + yy * 10) > 0)[:, :, None]
    noise = np.random.default_rng(seed).normal(0, 20, (h, w, 3))
    return np.clip(np.where(stripes, [220.0, 120.0, 40.0], [150.0, 40.0, 30.0]) + noise, 0, 255)


def test_the_map_gives_the_contents_mean_and_covariance():
    """A S_s A^T = S_c and A mu_s + b = mu_c exactly (no pixel clipped here); A is S_c^1/2 S_s^-1/2
    with the symmetric roots."""
    rng = np.random.default_rng(0)
    style = 128 + rng.normal(0, 1, (40, 50, 3)) @ np.array([[20.0, 5, 0], [3, 15, 2], [0, 4, 10]])
    content = 100 + rng.normal(0, 1, (30, 60, 3)) @ np.array([[12.0, 8, 6], [0, 10, 3], [1, 0, 14]])
    a, b = histogram_transform(style, content)
    (mu_s, cov_s), (mu_c, cov_c) = color_statistics(style), color_statistics(content)
    assert np.allclose(a @ cov_s @ a.T, cov_c, rtol=0, atol=1e-9 * np.abs(cov_c).max())
    assert np.allclose(a @ mu_s + b, mu_c, rtol=0, atol=1e-9)
    matched = histogram_match(style, content)
    assert matched.min() > 0 and matched.max() < 255                # nothing clipped
    mu_m, cov_m = color_statistics(matched)
    assert np.abs(mu_m - mu_c).max() < 1e-9 and np.abs(cov_m - cov_c).max() < 1e-9 * np.abs(cov_c).max()
    root = symmetric_power(cov_c, 0.5)
    assert np.allclose(root, root.T) and np.allclose(root @ root, cov_c)   # the symmetric square root
    assert np.allclose(a, root @ symmetric_power(cov_s, -0.5))


def test_the_map_does_not_depend_on_the_order_of_the_channels():
    """Permuting the colour channels (a rotation of colour space) permutes A: P A P^T. Cholesky
    factors would give another map."""
    style, content = _painting(30, 40), _scene(30, 40)
    perm = [2, 0, 1]
    a, _ = histogram_transform(style, content)
    a_perm, _ = histogram_transform(style[:, :, perm], content[:, :, perm])
    assert np.allclose(a_perm, a[np.ix_(perm, perm)], atol=1e-12)
    cov_s, cov_c = color_statistics(style)[1], color_statistics(content)[1]
    cholesky = np.linalg.cholesky(cov_c) @ np.linalg.inv(np.linalg.cholesky(cov_s))
    assert not np.allclose(cholesky, a, atol=1e-3)                 # the choice matters


def test_a_grey_style_image_stays_finite():
    """No spread in the chroma directions: the eigenvalue floor keeps S_s^-1/2 finite, and the
    mean is still the content's."""
    grey = np.repeat(np.random.default_rng(2).uniform(40, 200, (20, 30, 1)), 3, axis=2)
    matched = histogram_match(grey, _scene(20, 30))
    assert np.isfinite(matched).all()
    assert np.abs(color_statistics(matched)[0] - color_statistics(_scene(20, 30))[0]).max() < 5


def test_a_transfer_with_the_matched_style_keeps_the_contents_colours(vgg_params):
    """60 L-BFGS-B iterations at 32 x 48 from white noise, once with the painting as it is and once
    histogram-matched to the photo. Tolerances, in 0..255 levels: the result's mean colour within 15
    of the content's (measured 9; the plain transfer's is 120 away), and its colour covariance
    within 40% of the content's in Frobenius norm (measured 25%; plain 61%)."""
    from minivgg.transfer.objective import Objective
    from minivgg.vgg import VGG19
    from optim import lbfgs
    h, w = 32, 48
    content, painting = _scene(h, w), _painting(h, w)
    mu_c, cov_c = color_statistics(content)
    net = VGG19(vgg_params, dtype="float32")
    x0 = np.random.default_rng(0).normal(0, 20, (1, 3, h, w)).astype(np.float32)
    found = {}
    for label, style in (("plain", painting), ("histogram", histogram_match(painting, content))):
        result = lbfgs(Objective(net, rgb_to_net(content), [rgb_to_net(style)]), x0, 60, bounds=pixel_bounds())
        mu, cov = color_statistics(net_to_rgb(result.x, rounded=False))
        found[label] = (np.linalg.norm(mu - mu_c), np.linalg.norm(cov - cov_c) / np.linalg.norm(cov_c))
    print({k: tuple(round(float(v), 3) for v in d) for k, d in found.items()})
    mean_error, cov_error = found["histogram"]
    assert mean_error < 15 and cov_error < 0.4
    assert found["plain"][0] > 80 and found["plain"][1] > 0.5      # without matching: the painting's colours
