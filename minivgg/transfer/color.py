"""Colour preservation: luminance-only transfer (Gatys, Bethge, Hertzmann & Shechtman 2016,
"Preserving Color in Neural Artistic Style Transfer"), and colour histogram matching (Gatys,
Ecker, Bethge, Hertzmann & Shechtman 2017, "Controlling Perceptual Factors in Neural Style
Transfer").

Luminance (``--preserve-color luminance``): transfer runs on luminance images: the content's luminance Y_c, and the
style's luminance Y_s matched to the content's mean and standard deviation
(Y_s' = sigma_c / sigma_s * (Y_s - mu_s) + mu_c). Both are fed to VGG as gray
RGB images. The result's luminance is then recombined with the content's
colour channels (I, Q of YIQ). Peer tools instead run an ordinary transfer
and only swap the chroma afterwards, which keeps the style's colours in the
luminance optimisation.

Histogram matching (``--preserve-color histogram``): before the optimisation, the
style image's pixels x (colour vectors) are mapped linearly, x' = A x + b, so that
their mean and covariance are the content's; the transfer then runs as usual, in
colour, and its result is kept as it is (``histogram_transform`` gives A and states
the choice of matrix square root).

Shapes: rgb (H, W, 3) float 0..255; y (H, W); mean (3,), covariance and A (3, 3).
"""
from __future__ import annotations

import numpy as np

# YIQ (NTSC) transform; rows give Y, I, Q from R, G, B.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.595716, -0.274453, -0.321263],
                       [0.211456, -0.522591, 0.311135]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(rgb):
    """(H, W, 3) RGB -> (H, W, 3) YIQ."""
    return np.asarray(rgb, dtype=np.float64) @ RGB_TO_YIQ.T


def yiq_to_rgb(yiq):
    """(H, W, 3) YIQ -> (H, W, 3) RGB, clipped to 0..255."""
    return np.clip(np.asarray(yiq, dtype=np.float64) @ YIQ_TO_RGB.T, 0, 255)


def luminance_as_rgb(y):
    """(H, W) luminance -> (H, W, 3) gray RGB image for the network."""
    return np.repeat(np.clip(y, 0, 255)[:, :, None], 3, axis=2)


def match_luminance(y_style, y_content):
    """Y_s' = sigma_c / sigma_s * (Y_s - mu_s) + mu_c: the style's luminance with the content's statistics."""
    sigma_s = max(float(y_style.std()), 1e-6)
    return (float(y_content.std()) / sigma_s) * (y_style - float(y_style.mean())) + float(y_content.mean())


def recombine(result_rgb, content_rgb):
    """The result's luminance with the content's I and Q: (H, W, 3) RGB."""
    yiq = rgb_to_yiq(content_rgb)
    yiq[:, :, 0] = rgb_to_yiq(result_rgb)[:, :, 0]
    return yiq_to_rgb(yiq)


# ---------------------------------------------------------------- histogram matching (Gatys et al. 2017)

#: Floor on the style's colour-covariance eigenvalues, in (0..255 levels)^2: one grey level's
#: variance. A style image with no spread along some colour direction (a grey painting) has
#: nothing there to stretch, and the floor keeps its inverse square root finite.
EIGENVALUE_FLOOR = 1.0


def color_statistics(rgb):
    """(mean (3,), covariance (3, 3)) of an (H, W, 3) image's pixels, as colour vectors."""
    pixels = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)     # (H*W, 3)
    mean = pixels.mean(axis=0)
    centred = pixels - mean
    return mean, centred.T @ centred / len(pixels)                 # population covariance


def symmetric_power(cov, power: float, floor: float = 0.0):
    """cov^power for a symmetric positive semi-definite (3, 3) cov: U diag(lambda^power) U^T,
    with the eigenvalues lambda floored at ``floor`` first (the principal, symmetric root)."""
    lam, u = np.linalg.eigh(cov)                                   # cov = U diag(lam) U^T
    return (u * np.maximum(lam, floor) ** power) @ u.T


def histogram_transform(style_rgb, content_rgb):
    """(A (3, 3), b (3,)) of the linear map x' = A x + b that gives the style's pixels the
    content's mean and covariance: A = S_c^(1/2) S_s^(-1/2), b = mu_c - A mu_s.

    Then A S_s A^T = S_c^(1/2) S_s^(-1/2) S_s S_s^(-1/2) S_c^(1/2) = S_c. Any A = S_c^(1/2) Q S_s^(-1/2)
    with Q orthogonal does that. The choice here, Q = I with the *symmetric* (principal) square
    roots from the eigendecomposition, is the "Image Analogies" colour transfer that Gatys et al.
    2017 use (their code's ``mode='pca'``); the other candidates are the Cholesky factors,
    A = L_c L_s^-1, which depend on the order of the colour channels (a rotation R of colour space
    gives R A R^T here, not with Cholesky), and the symmetric optimal-transport map
    S_s^(-1/2) (S_s^(1/2) S_c S_s^(1/2))^(1/2) S_s^(-1/2). The style's eigenvalues are floored at
    ``EIGENVALUE_FLOOR`` before the inverse root.
    """
    mu_s, cov_s = color_statistics(style_rgb)
    mu_c, cov_c = color_statistics(content_rgb)
    a = symmetric_power(cov_c, 0.5) @ symmetric_power(cov_s, -0.5, floor=EIGENVALUE_FLOOR)
    return a, mu_c - a @ mu_s


def histogram_match(style_rgb, content_rgb):
    """The style image (H, W, 3) with the content's colour mean and covariance: A x + b per pixel
    (``histogram_transform``), clipped to 0..255 (which moves the statistics slightly when the
    map sends colours outside the cube)."""
    a, b = histogram_transform(style_rgb, content_rgb)
    return np.clip(np.asarray(style_rgb, dtype=np.float64) @ a.T + b, 0, 255)


# ---------------------------------------------------------------- what a run does with them

def network_images(preserve, content_rgb, style_rgbs):
    """The RGB images the network sees under ``--preserve-color`` -> (content or None, [styles]).

    preserve None: the images as they are; "histogram": each style image given the content's
    colour mean and covariance first; "luminance": the content's luminance and each style's
    luminance matched to it, as grey RGB images (the result is recombined by ``output_rgb``).
    """
    if preserve == "histogram":
        return content_rgb, [histogram_match(s, content_rgb) for s in style_rgbs]
    if preserve == "luminance":
        y_content = rgb_to_yiq(content_rgb)[:, :, 0]
        styles = [luminance_as_rgb(match_luminance(rgb_to_yiq(s)[:, :, 0], y_content)) for s in style_rgbs]
        return luminance_as_rgb(y_content), styles
    return content_rgb, list(style_rgbs)


def initial_rgb(preserve, rgb):
    """An --init image (H, W, 3) as the optimisation starts from it: grey luminance under "luminance"."""
    return luminance_as_rgb(rgb_to_yiq(rgb)[:, :, 0]) if preserve == "luminance" else rgb


def output_rgb(preserve, rgb, content_rgb):
    """The optimised image (H, W, 3) as written: the content's colours put back under "luminance"."""
    return recombine(rgb, content_rgb) if preserve == "luminance" else rgb
