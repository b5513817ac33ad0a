"""The command line's perceptual controls (Gatys et al. 2017): their parsing, checks and loading.

``cli.py``, ``inputs.py`` and ``run.py`` call these; each refusal is a one-line ``UsageError``
(exit status 2, nothing computed), raised before any work.

    parse_content_layers(["conv4_2", "conv5_2:0.5"]) -> {"conv4_2": 1.0, "conv5_2": 0.5}
    check_controls(args)                 counts and combinations, no file read
    load_masks(paths, target_hws, what)  -> ([mask (H, W) in 0..1], notes)
    resize_mask(mask, h, w)              -> mask (h, w), bilinear, 0..1
    style_size_hw(style_shape, px)       -> (Hs, Ws) with the long side px, aspect kept
    histogram_match(style_rgb, content_rgb)  (``minivgg.transfer.color``)

Masks are greyscale images, white where the region is (1), black where it is not
(0), grey for soft edges. A content mask covers the content image (any size with
its aspect ratio: it is resized with a note), a style mask its style image.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from minivgg.architecture import LAYER_NAMES
from minivgg.image import fit_long_side, load_rgb
from minivgg.transfer.color import histogram_match  # noqa: F401  (the CLI's --preserve-color histogram)
from minivgg.transfer.common import UsageError, closest

PRESERVE_COLOR = ("luminance", "histogram")
#: A --style-masks entry that means "the whole style image" (when no file has that name).
WHOLE_IMAGE = "all"
#: Luminance weights (ITU-R 601, as YIQ's Y) that turn a colour mask into a grey one.
LUMA = np.array([0.299, 0.587, 0.114])


def parse_content_layers(items) -> dict:
    """['conv4_2', 'conv5_2:0.5'] -> {'conv4_2': 1.0, 'conv5_2': 0.5}: each layer's weight k_c,
    1 when not given; weights must be positive, layers known and listed once."""
    layers = {}
    for item in items:
        name, _, weight = item.partition(":")
        if name not in LAYER_NAMES:
            raise UsageError(f"--content-layers: unknown layer {name!r}{closest(name, LAYER_NAMES)}; "
                             f"layers are conv1_1..conv5_4 and pool1..pool5")
        if name in layers:
            raise UsageError(f"--content-layers: {name} is listed twice")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise UsageError(f"--content-layers: the weight {weight!r} of {name} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"--content-layers: the weight of {name} must be positive, got {weight}")
        layers[name] = value
    return layers


def check_controls(args) -> None:
    """Refuse combinations of the control options that cannot work; reads no file.

    Expects ``args`` with mode, style, style_blend, content_masks, style_masks,
    style_size, style_scale (the CLI's names; None where not given).
    """
    content_masks, style_masks = args.content_masks, args.style_masks
    if style_masks is not None and content_masks is None:
        raise UsageError("--style-masks needs --content-masks (give an all-white content mask to "
                         "use the whole content image)")
    if content_masks is not None:
        if args.mode != "transfer":
            raise UsageError("--content-masks applies to --mode transfer only")
        for option, masks in (("--content-masks", content_masks), ("--style-masks", style_masks)):
            if masks is not None and len(masks) != len(args.style):
                raise UsageError(f"{option} has {len(masks)} masks for {len(args.style)} style "
                                 f"images: give one per style image, in the same order")
        if args.style_blend is not None:
            raise UsageError("--style-blend mixes the styles everywhere; with --content-masks each "
                             "style has its own region (drop --style-blend)")
    if args.style_size is not None and args.style_scale != 1.0:
        raise UsageError("give --style-size or --style-scale, not both")


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


def style_size_hw(style_shape, px: int) -> tuple[int, int]:
    """(Hs, Ws) of a style image of shape (H, W, ...) with its long side ``px``, aspect kept."""
    return fit_long_side(style_shape[0], style_shape[1], px)


def content_label(content_layers: dict) -> str:
    """{'conv4_2': 1, 'conv5_2': 0.5} -> 'conv4_2,conv5_2:0.5', for the run's summary line."""
    return ",".join(name if k == 1 else f"{name}:{k:g}" for name, k in content_layers.items())


def summary(args) -> str:
    """The controls in use for the run's summary line, e.g. '; 2 content masks; colours kept
    (histogram)', or '' when none is."""
    parts = []
    if args.content_masks:
        parts.append(f"{len(args.content_masks)} content masks{' and style masks' if args.style_masks else ''}")
    if args.style_size:
        parts.append(f"style images {args.style_size} px on the long side")
    if args.preserve_color:
        parts.append(f"colours kept ({args.preserve_color})")
    return "".join(f"; {part}" for part in parts)
