"""Colour preservation by luminance-only transfer (Gatys, Bethge, Hertzmann & Shechtman 2016,
"Preserving Color in Neural Artistic Style Transfer").

Transfer runs on luminance images: the content's luminance Y_c, and the
style's luminance Y_s matched to the content's mean and standard deviation
(Y_s' = sigma_c / sigma_s * (Y_s - mu_s) + mu_c). Both are fed to VGG as gray
RGB images. The result's luminance is then recombined with the content's
colour channels (I, Q of YIQ). Peer tools instead run an ordinary transfer
and only swap the chroma afterwards, which keeps the style's colours in the
luminance optimisation.

Shapes: rgb (H, W, 3) float 0..255; y (H, W).
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
