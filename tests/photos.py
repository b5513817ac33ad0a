"""Small synthetic photos for the command-line tests."""
from __future__ import annotations

import numpy as np
from PIL import Image


def write_photo(path, width=40, height=30, seed=0):
    """A seeded random RGB image of width x height saved at ``path``; returns the path."""
    rgb = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path
