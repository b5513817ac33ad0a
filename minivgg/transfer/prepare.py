"""Each stage's inputs, made from the images as read (``minivgg.transfer.inputs.Plan``) and the
stage's sizes (``minivgg.transfer.stages.Stage``): the network inputs, the masks, the start.

    inputs = stage_inputs(config, plan, stage)     # content_x, style_xs, content_rgb
    content_masks, style_masks = stage_masks(plan, stage)
    x0 = initial_image(config, plan.init_rgb, inputs, stage.hw)   # the first stage's start
    x0 = upsampled(x, stage.hw)                    # every later stage's start

Shapes: rgb (H, W, 3) float64 0..255; x (1, 3, H, W) network input in the run's dtype on its
device (``minivgg.architecture.rgb_to_net``); masks (H, W) float64 in 0..1.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minivgg.backend import get_array_module, to_device, to_numpy
from minivgg.image import pixel_bounds, resize_rgb, rgb_to_net
from minivgg.transfer import color
from minivgg.transfer.control import resize_mask


class StageInputs(NamedTuple):
    content_x: object     # (1, 3, H, W) on the device, or None (texture)
    style_xs: list        # [(1, 3, Hs, Ws)] on the device
    content_rgb: object   # (H, W, 3) the content at the stage's size (for --preserve-color luminance)


def stage_inputs(config, plan, stage) -> StageInputs:
    """The images resized to the stage, coloured as --preserve-color asks, as network inputs."""
    content_rgb = None if plan.content_rgb is None else resize_rgb(plan.content_rgb, *stage.hw)
    style_rgbs = [resize_rgb(s, *hw) for s, hw in zip(plan.stage_style_rgbs(stage), stage.style_hws)]
    content, styles = color.network_images(config.objective.preserve_color, content_rgb, style_rgbs)
    dtype, device = config.network.dtype, config.network.device
    content_x = None if content is None else to_device(rgb_to_net(content, dtype), device)
    return StageInputs(content_x, [to_device(rgb_to_net(s, dtype), device) for s in styles], content_rgb)


def stage_masks(plan, stage):
    """The masks resized to the stage -> (content masks or None, style masks or None)."""
    if plan.content_masks is None:
        return None, None
    content = [resize_mask(m, *stage.hw) for m in plan.content_masks]
    if plan.style_masks is None:
        return content, None
    return content, [None if m is None else resize_mask(m, *hw) for m, hw in zip(plan.style_masks, stage.style_hws)]


def resize_net(x, hw):
    """A network input (1, 3, h, w) resized to hw = (H, W): Pillow's bicubic filter on each channel in
    float, clipped to the valid pixel range; returned in x's dtype on x's device.

    The network's input is an affine, per-channel image of the RGB one, and the bicubic filter
    preserves constants, so this is the RGB image resized, without going to RGB and back."""
    from PIL import Image
    xp = get_array_module(x)
    host = np.asarray(to_numpy(x), dtype=np.float32)[0]                              # (3, h, w)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((hw[1], hw[0]), Image.BICUBIC))
                for c in host]                                                      # 3 x (H, W)
    low, high = pixel_bounds()
    out = np.stack([np.clip(c, lo, hi) for c, lo, hi in zip(channels, low, high)])[None]   # (1, 3, H, W)
    return xp.asarray(out, dtype=x.dtype)


def upsampled(x, hw):
    """A stage's result x (1, 3, h, w) resized to hw as the next stage's start (bicubic)."""
    return resize_net(x, hw)


def initial_image(config, init_rgb, inputs: StageInputs, hw):
    """x0 (1, 3, H, W) on the device: white noise, the content, the (first) style, or an image file."""
    init, dtype, device = config.images.init, config.network.dtype, config.network.device
    if init == "noise":
        rng = np.random.default_rng(config.images.seed)
        return to_device(rng.normal(0.0, 20.0, (1, 3) + tuple(hw)).astype(dtype), device)
    if init == "content":
        return inputs.content_x.copy()
    if init == "style":
        return resize_net(inputs.style_xs[0], hw)
    rgb = color.initial_rgb(config.objective.preserve_color, resize_rgb(init_rgb, *hw))
    return to_device(rgb_to_net(rgb, dtype), device)
