"""Images in and out of the network's input space, and on and off the disk.

    rgb: (H, W, 3) RGB, 0..255 float64 (or uint8)
    x:   (1, 3, H, W) BGR, 0..255 scale, MEAN_BGR subtracted (PAPER.md, Caffe VGG)

This is an I/O boundary: it works on NumPy arrays (a CuPy ``x`` is copied to
the host by ``net_to_rgb``). Every problem reading a file becomes one
``ImageError`` whose message names the file and the problem.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from minivgg.backend import to_numpy
from minivgg.vgg import MEAN_BGR

_MEAN = np.array(MEAN_BGR, dtype=np.float64).reshape(1, 3, 1, 1)


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and why."""


def rgb_to_net(rgb, dtype="float32"):
    """(H, W, 3) RGB 0..255 -> (1, 3, H, W) BGR with the Caffe mean subtracted."""
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


def _to_rgb_array(img: Image.Image, notes: list) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) float64 RGB in 0..255; ``notes`` says what was changed."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        if a.max() > 255:                                            # 16-bit samples
            a = a / 257.0
            notes.append("16-bit samples scaled to 8-bit range")
        return np.repeat(np.clip(a, 0, 255)[:, :, None], 3, axis=2)
    if img.mode == "F":
        a = np.clip(np.asarray(img, dtype=np.float64), 0, 255)
        return np.repeat(a[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
        notes.append("transparency flattened onto white")
    if img.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if img.mode in ("1", "L"):
        notes.append("grayscale used as RGB")
    return np.asarray(img.convert("RGB"), dtype=np.float64)


def load_rgb(path, what="image") -> tuple[np.ndarray, list]:
    """Read ``path`` as (H, W, 3) float64 RGB 0..255, EXIF orientation applied.

    Returns (rgb, notes). Raises ImageError "<what> 'path': <problem>" for a
    missing file, a directory, no permission, an empty, truncated or non-image file.
    """
    path = Path(path)
    label = f"{what} '{path}'"
    if not path.exists():
        raise ImageError(f"{label}: no such file")
    if path.is_dir():
        raise ImageError(f"{label}: is a directory, not an image file")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{label}: permission denied (cannot read the file)")
    if path.stat().st_size == 0:
        raise ImageError(f"{label}: the file is empty")
    notes = []
    try:
        with Image.open(path) as img:
            img.load()
            oriented = ImageOps.exif_transpose(img)
            if oriented is not img and oriented.size != img.size:
                notes.append("rotated as its EXIF orientation says")
            rgb = _to_rgb_array(oriented, notes)
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file Pillow can read") from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ImageError(f"{label}: permission denied (cannot read the file)") from None
        raise ImageError(f"{label}: the file is truncated or damaged ({exc})") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{label}: cannot decode the image ({exc})") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"{label}: the image has no pixels")
    return rgb, notes


def resize_rgb(rgb, height: int, width: int) -> np.ndarray:
    """Resize (H, W, 3) float RGB to (height, width, 3) with Pillow's bicubic filter, per channel in float."""
    if rgb.shape[:2] == (height, width):
        return np.asarray(rgb, dtype=np.float64)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c], dtype=np.float32))
                           .resize((width, height), Image.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(channels, axis=2).astype(np.float64), 0, 255)


def fit_long_side(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) scaled so that max(h, w) == long_side, aspect kept, each at least 1."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def save_rgb(rgb_uint8, path) -> Path:
    """Write (H, W, 3) uint8 RGB as PNG via a temporary file and an atomic rename; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(np.ascontiguousarray(rgb_uint8, dtype=np.uint8)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
