"""Images in and out of the network's input space.

    rgb: (H, W, 3) RGB, 0..255 (uint8 or float)
    x:   (1, 3, H, W) BGR, 0..255 scale, MEAN_BGR subtracted (PAPER.md, Caffe VGG)

This is an I/O boundary: it works on NumPy arrays (a CuPy ``x`` is copied to
the host by ``net_to_rgb``).
"""
from __future__ import annotations

import numpy as np

from minivgg.backend import to_numpy
from minivgg.vgg import MEAN_BGR

_MEAN = np.array(MEAN_BGR, dtype=np.float64).reshape(1, 3, 1, 1)


def rgb_to_net(rgb, dtype="float32"):
    """(H, W, 3) RGB 0..255 -> (1, 3, H, W) BGR with the Caffe mean subtracted."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1)[None]                   # (1, 3, H, W)
    return np.ascontiguousarray(bgr - _MEAN, dtype=dtype)


def net_to_rgb(x):
    """(1, 3, H, W) network input -> (H, W, 3) uint8 RGB, rounded and clipped to 0..255."""
    x = to_numpy(x).astype(np.float64)
    bgr = x[0] + _MEAN[0]                                             # (3, H, W)
    rgb = bgr[::-1].transpose(1, 2, 0)                                # (H, W, 3)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def pixel_bounds():
    """Per-channel (low, high) of valid pixels in input space: (-mean_c, 255 - mean_c), BGR order."""
    return tuple((-m, 255.0 - m) for m in MEAN_BGR)
