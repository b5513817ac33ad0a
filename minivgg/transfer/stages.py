"""The stages of a run, planned before any work: the sizes of every image at every stage, and
the memory settings that make each stage fit.

The one place where sizes are decided: each stage's output size (``--scales``, or
``--size`` for a one-stage run) and its style images' sizes (resized to the
content's size as the paper does, times ``--style-scale``; or ``--style-size``,
their long side at the output size, each keeping its aspect ratio). Each stage is
checked against the deepest layer used, then its peak memory is estimated
(``minivgg.memory``); a stage that would not fit tries the fast engine's lean mode
and fewer L-BFGS pairs (each with a note) and is otherwise refused with the largest
scale that would fit. ``minivgg/transfer/run.py`` runs the stages.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minivgg.architecture import layer_index, min_input_size
from minivgg.image import fit_long_side
from minivgg.transfer.common import UsageError


def smallest_size(height: int, width: int, need: int) -> int:
    """The smallest --size whose output of a height x width image has both sides >= need."""
    short, long = min(height, width), max(height, width)
    size = max(need, math.floor((need - 0.5) * long / short))
    while min(fit_long_side(height, width, size)) < need:
        size += 1
    return size


class Stage(NamedTuple):
    """One resolution of a run (``--scales``; a run without it is one stage), as planned."""

    hw: tuple               # (H, W) of the image optimised at this stage
    style_hws: tuple        # ((Hs, Ws), ...) of each style image at this stage
    iterations: int
    estimate: int           # peak memory, bytes, with the settings below
    lean: bool              # the fast engine's memory-lean mode
    maxcor: int             # L-BFGS correction pairs
    coarse: bool = False    # styled by --coarse-style (every stage but the last, when given)


def style_size_hw(style_shape, px: int) -> tuple[int, int]:
    """(Hs, Ws) of a style image of shape (H, W, ...) with its long side ``px``, aspect kept."""
    return fit_long_side(style_shape[0], style_shape[1], px)


def style_hws(config, hw, size: int, style_shapes) -> tuple:
    """((Hs, Ws), ...) of the style images (shapes (H0, W0, ...)) at a stage of long side ``size``
    and output size hw: the content's size times --style-scale (the paper: the content's size), or
    --style-size (at the output size, scaled with the stage) on each one's long side, aspect kept."""
    sizes = config.stages
    if sizes.style_size:
        side = max(1, round(sizes.style_size * size / sizes.size))
        return tuple(style_size_hw(shape, side) for shape in style_shapes)
    one = max(1, round(hw[0] * sizes.style_scale)), max(1, round(hw[1] * sizes.style_scale))
    return (one,) * len(style_shapes)


def _too_small(config, hw, size, reference_hw, layer, need) -> UsageError:
    smallest = smallest_size(*reference_hw, need)
    crop = (f"; at {max(reference_hw) // max(1, min(reference_hw))}:1, cropping the image is the "
            f"better fix" if smallest > 4096 else "")
    several = len(config.stages.scales) > 1
    return UsageError(
        f"the {'stage at ' + str(size) if several else 'output'} would be "
        f"{hw[1]}x{hw[0]} pixels (width x height), too small for {layer}, which needs at least "
        f"{need} pixels on each side: {'start --scales at' if several else 'use --size'} {smallest} or more "
        f"for this {reference_hw[1]}x{reference_hw[0]} image{crop}")


def stage_sizes(config, reference_hw, size: int, style_shapes):
    """(output (h, w), style sizes) at long side ``size``, refused now if too small for the deepest layer."""
    hw = fit_long_side(*reference_hw, size)
    hws = style_hws(config, hw, size, style_shapes)
    layer = max(config.objective.used_layers(), key=layer_index)
    need = min_input_size(layer)
    if min(hw) < need:
        raise _too_small(config, hw, size, reference_hw, layer, need)
    sizes = config.stages
    for k, (hs, ws) in enumerate(hws if config.objective.has_style else (), 1):
        if min(hs, ws) >= need:
            continue
        if sizes.style_size:
            raise UsageError(f"style image {k} would be {ws}x{hs} pixels, too small for {layer}, which "
                             f"needs at least {need} pixels on each side: raise --style-size "
                             f"(now {sizes.style_size})")
        raise UsageError(
            f"the style image would be {ws}x{hs} pixels, too small for {layer}, "
            f"which needs at least {need} pixels on each side: raise --style-scale "
            f"(now {sizes.style_scale:g}) or {'--scales' if len(sizes.scales) > 1 else '--size'}")
    return hw, hws


#: The smallest first stage (long side, px) of a coarse-to-fine transfer that still carries the
#: content: below it conv4_2 has under 32x24 positions, each seeing 84 px, and a first stage at
#: 128 px left the houses faint (issue 23's hand-scaled run); smaller starts get a note.
MIN_CONTENT_STAGE = 256

#: The fewest correction pairs ``--maxcor`` is lowered to, automatically, to make a stage fit.
MIN_AUTO_MAXCOR = 3


def estimate_bytes(config, hw, style_hws, lean: bool, maxcor: int, iterations: int) -> int:
    """The peak memory estimate (``minivgg.memory``) of one stage with these settings; the style
    targets counted at the largest style image's size."""
    from minivgg import memory
    objective, network = config.objective, config.network
    largest = max(style_hws, key=lambda hw: hw[0] * hw[1]) if style_hws else None
    return memory.estimate_peak_bytes(
        hw[0], hw[1], network.dtype,
        content_layer=(max((name for name, _ in objective.content_layers), key=layer_index)
                       if objective.has_content else None),
        style_layers=tuple(objective.style_layers) if objective.has_style else (), pooling=network.pooling,
        style_size=largest if objective.has_style else None,
        optimizer=config.optimiser.name if config.optimiser.is_lbfgs else None,
        maxcor=maxcor, iterations=iterations, device=network.device, conv=network.conv or "winograd",
        engine=network.engine, lean=lean,
        style_loss=objective.style_loss if objective.has_style else "gram")


def stage_settings(config):
    """The (lean, maxcor) settings to try, in order of preference: the asked ones first, then,
    where --lean auto allows, the lean mode, then fewer correction pairs down to MIN_AUTO_MAXCOR.
    --lean auto on the CPU is the lean mode from the start: it is the CPU's default route
    (``Transforms.default``), as fast as keeping every activation."""
    auto = [True] if config.network.device == "cpu" else [False, True]
    lean_choices = {"on": [True], "off": [False], "auto": auto}[config.network.lean]
    if config.network.engine == "reference":
        lean_choices = [False]
    asked = config.optimiser.maxcor
    pairs = [asked] + ([m for m in (10, 5, MIN_AUTO_MAXCOR) if m < asked] if config.optimiser.is_lbfgs else [])
    return [(lean, pairs[0]) for lean in lean_choices] + [(lean_choices[-1], m) for m in pairs[1:]]


def fit_stage(config, hw, style_hws, iterations, available):
    """The Stage with the first settings (``stage_settings``) whose estimate fits ``available``
    bytes (None: unknown, the asked settings), and the notes that say what was changed; or None."""
    for lean, maxcor in stage_settings(config):
        needed = estimate_bytes(config, hw, style_hws, lean, maxcor, iterations)
        if available is None or needed <= available:
            notes = []
            if lean and config.network.lean == "auto" and config.network.device != "cpu":
                notes.append(f"the {hw[1]}x{hw[0]} stage runs in the memory-lean mode to fit "
                             f"(--lean on/off decides)")
            if maxcor != config.optimiser.maxcor:
                notes.append(f"--maxcor lowered from {config.optimiser.maxcor} to {maxcor} for the "
                             f"{hw[1]}x{hw[0]} stage to fit in memory")
            return Stage(hw, style_hws, iterations, needed, lean, maxcor), notes
    return None, []


def largest_fitting_scale(config, reference_hw, style_shapes, available) -> int | None:
    """The largest long side (at most the output's) at which the last stage fits, or None."""
    lo, hi, best = 1, config.stages.size, None
    while lo <= hi:
        mid = (lo + hi) // 2
        hw = fit_long_side(*reference_hw, mid)
        hws = style_hws(config, hw, mid, style_shapes)
        if fit_stage(config, hw, hws, config.stages.iterations[-1], available)[0] is not None:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def plan_stages(config, reference_hw, style_shapes=None, coarse_shapes=None):
    """Every stage's sizes and memory settings, checked before any work -> ([Stage], notes).

    reference_hw: (H, W) of the content image (of the first style image in texture mode);
    style_shapes: each style image's shape (H0, W0, ...), default: the reference's, once per style;
    coarse_shapes: the --coarse-style images' shapes, which style every stage but the last (None: none).
    Raises UsageError for a stage too small for the network, and NotEnoughMemory (one line, with the
    largest scale that would fit) for one that does not fit even lean and with fewer pairs.
    """
    from minivgg import memory
    if style_shapes is None:
        style_shapes = [tuple(reference_hw)] * len(config.images.styles)
    scales = config.stages.scales
    coarse = [coarse_shapes is not None and k < len(scales) - 1 for k in range(len(scales))]
    sizes = [stage_sizes(config, reference_hw, size, coarse_shapes if c else style_shapes)
             for size, c in zip(scales, coarse)]
    available = memory.available_memory_bytes(config.network.device)
    stages, notes = [], []
    for (hw, hws), iterations, c in zip(sizes, config.stages.iterations, coarse):
        stage, stage_notes = fit_stage(config, hw, hws, iterations, available)
        stage = stage if stage is None else stage._replace(coarse=c)
        if stage is None:
            needed = min(estimate_bytes(config, hw, hws, lean, maxcor, iterations)
                         for lean, maxcor in stage_settings(config))
            best = largest_fitting_scale(config, reference_hw, style_shapes, available)
            hint = (f"; the largest scale that fits is {best}" if best else "")
            raise memory.NotEnoughMemory(
                memory.refusal_message(needed, available, config.network.device, f"a {hw[1]}x{hw[0]} run") + hint)
        stages.append(stage)
        notes += stage_notes
    first = scales[0]
    if len(scales) > 1 and config.objective.mode == "transfer" and first < MIN_CONTENT_STAGE:
        notes.append(f"the first stage ({first} px) is small for the content: the photo's layout may "
                     f"barely show and later stages cannot bring it back; start --scales at "
                     f"{MIN_CONTENT_STAGE} or more")
    return stages, notes
