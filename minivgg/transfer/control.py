"""Mask files for spatial control (Gatys et al. 2017): read, checked against their images, resized.

    load_masks(paths, target_hws, what)  -> ([mask (H, W) in 0..1, or None for "all"], notes)
    resize_mask(mask, h, w)              -> mask (h, w), bilinear, 0..1

Masks are greyscale images, white where the region is (1), black where it is not
(0), grey for soft edges. A content mask covers the content image (any size with
its aspect ratio: it is resized with a note), a style mask its style image. Each
refusal is one line naming the file (``UsageError``, or ``minivgg.image.ImageError``
for a file that is no image), raised before any work.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from minivgg.image import fit_long_side, load_rgb
from minivgg.transfer.common import UsageError

#: A --style-masks entry that means "the whole style image" (when no file has that name).
WHOLE_IMAGE = "all"
#: Luminance weights (ITU-R 601, as YIQ's Y) that turn a colour mask into a grey one.
LUMA = np.array([0.299, 0.587, 0.114])


def mask_from_rgb(rgb, label: str):
    """(H, W, 3) 0..255 -> (mask (H, W) in 0..1, notes); refuses an all-black mask."""
    notes = []
    if not (np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2])):
        notes.append("a colour image: its luminance is the mask")
    mask = np.clip(rgb @ LUMA / 255.0, 0.0, 1.0)                   # (H, W)
    if not mask.max() > 0:
        raise UsageError(f"{label}: the mask is empty (all black): it must be white where its "
                         f"style applies")
    return mask, notes


def aspect_matches(hw, target_hw) -> bool:
    """Whether an hw image scaled to target_hw's long side is target_hw within a pixel per side."""
    scaled = fit_long_side(hw[0], hw[1], max(target_hw))
    return abs(scaled[0] - target_hw[0]) <= 1 and abs(scaled[1] - target_hw[1]) <= 1


def resize_mask(mask, height: int, width: int):
    """mask (H, W) -> (height, width), bilinear (no overshoot past 0..1), in float."""
    if mask.shape == (height, width):
        return np.asarray(mask, dtype=np.float64)
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32))   # mode "F"
    resized = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float64)
    return np.clip(resized, 0.0, 1.0)


def fit_mask(mask, target_hw, label: str):
    """mask at target_hw = (H, W) of its image -> (mask, notes): resized with a note if only its
    size differs, refused if its aspect ratio does."""
    hw = tuple(mask.shape)
    if hw == tuple(target_hw):
        return mask, []
    if not aspect_matches(hw, target_hw):
        raise UsageError(f"{label}: the mask is {hw[1]}x{hw[0]} pixels, its image {target_hw[1]}x"
                         f"{target_hw[0]}: the shapes differ (a mask must have its image's aspect ratio)")
    note = f"resized from {hw[1]}x{hw[0]} to its image's {target_hw[1]}x{target_hw[0]} pixels"
    return resize_mask(mask, *target_hw), [note]


def load_masks(paths, target_hws, what: str):
    """Read one mask per path, fitted to its image -> ([mask (H, W) float64 in 0..1 or None], notes).

    target_hws: one (H, W) for all masks, or one per path (each style image has its own size).
    what: "content mask" or "style mask". A path ``WHOLE_IMAGE`` that is no file gives None (the
    whole image). Raises ``minivgg.image.ImageError`` (unreadable, not an image) or UsageError
    (empty, aspect ratio of another shape), each one line naming the file.
    """
    if target_hws and isinstance(target_hws[0], int):
        target_hws = [tuple(target_hws)] * len(paths)
    masks, notes = [], []
    for k, (path, target_hw) in enumerate(zip(paths, target_hws), 1):
        if path == WHOLE_IMAGE and not Path(path).exists():
            masks.append(None)
            continue
        label = f"{what} {k} '{path}'"
        rgb, loaded = load_rgb(path, f"{what} {k}")
        loaded = [m for m in loaded if "used as RGB" not in m]   # a grey mask is what is asked for
        mask, grey = mask_from_rgb(rgb, label)
        mask, fitted = fit_mask(mask, target_hw, label)
        masks.append(mask)
        notes += [f"{label}: {m}" for m in loaded + grey + fitted]
    return masks, notes

