"""The network's input convention: what an image must look like to VGG-19, and back.

    x = rgb_to_net(rgb)          # (H, W, 3) RGB 0..255 -> (1, 3, H, W) network input
    rgb = net_to_rgb(x)          # and back (uint8, or float64 with rounded=False)
    low, high = pixel_bounds()   # the valid pixels' box in input space, per channel

The Caffe VGG-19 was trained on images in BGR channel order, on the 0..255 scale, with the
ImageNet training set's mean colour (``minivgg.architecture.MEAN_BGR``) subtracted, so every
input to the network is prepared this way. This is an I/O boundary (NumPy by name; a CuPy
``x`` is copied to the host by ``net_to_rgb``). ``minivgg.image`` reads and writes files;
``weights.normalize`` prepares its image set here too.
"""
from __future__ import annotations

import numpy as np

from minivgg.architecture import MEAN_BGR
from minivgg.backend import to_numpy

_MEAN = np.array(MEAN_BGR, dtype=np.float64).reshape(1, 3, 1, 1)


def rgb_to_net(rgb, dtype="float32"):
    """(H, W, 3) RGB 0..255 -> (1, 3, H, W) BGR with the Caffe mean subtracted: the network's input."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1)[None]                   # (1, 3, H, W)
    return np.ascontiguousarray(bgr - _MEAN, dtype=dtype)


def net_to_rgb(x, rounded=True):
    """(1, 3, H, W) network input -> (H, W, 3) RGB: uint8 rounded and clipped, or float64 if not ``rounded``."""
    x = to_numpy(x).astype(np.float64)
    bgr = x[0] + _MEAN[0]                                             # (3, H, W)
    rgb = bgr[::-1].transpose(1, 2, 0)                                # (H, W, 3)
    if not rounded:
        return np.ascontiguousarray(rgb)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def pixel_bounds():
    """(low, high), each 3 per-channel values (BGR) of valid pixels in input space: (-mean_c, 255 - mean_c)."""
    return tuple(-m for m in MEAN_BGR), tuple(255.0 - m for m in MEAN_BGR)
