"""The stages of a run, planned before any work: sizes per --scales stage, and memory settings.

Each stage's image and style sizes are checked against the deepest layer used,
then its peak memory is estimated (``minivgg.memory``); a stage that would not
fit tries the fast engine's lean mode and fewer L-BFGS pairs (each with a
note) and is otherwise refused with the largest scale that would fit.
``minivgg/transfer/run.py`` runs the stages.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minivgg.architecture import layer_index, min_input_size
from minivgg.image import fit_long_side
from minivgg.transfer import control
from minivgg.transfer.common import UsageError, roles


def used_layers(args) -> list:
    has_content, has_style = roles(args)
    return (list(args.content_layers) if has_content else []) + (list(args.style_layers) if has_style else [])


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
    style_hw: tuple         # (Hs, Ws) of every style image at this stage
    iterations: int
    estimate: int           # peak memory, bytes, with the settings below
    lean: bool              # the fast engine's memory-lean mode
    maxcor: int             # L-BFGS correction pairs


def stage_style_hw(args, hw, size: int) -> tuple:
    """(Hs, Ws) of the style images at a stage of long side ``size``: the paper resizes them to the
    content image's size (times --style-scale); --style-size gives their long side instead (at the
    output size, scaled with the stage), each keeping its aspect inside this square."""
    if args.style_size:
        side = max(1, round(args.style_size * size / args.scales[-1]))
        return side, side
    return max(1, round(hw[0] * args.style_scale)), max(1, round(hw[1] * args.style_scale))


def style_hws(args, stage, style_shapes) -> list:
    """(Hs, Ws) of each style image (shape (H0, W0, ...)) at ``stage``."""
    if not args.style_size:
        return [stage.style_hw] * len(style_shapes)
    return [control.style_size_hw(shape, max(stage.style_hw)) for shape in style_shapes]


def stage_sizes(args, reference_hw, size: int, style_shapes=()):
    """(output (h, w), style (h, w)) at long side ``size``, refused now if too small for the deepest layer."""
    hw = fit_long_side(*reference_hw, size)
    style_hw = stage_style_hw(args, hw, size)
    layer = max(used_layers(args), key=layer_index)
    need = min_input_size(layer)
    what = "start --scales at" if len(args.scales) > 1 else "use --size"
    if min(hw) < need:
        smallest = smallest_size(*reference_hw, need)
        crop = (f"; at {max(reference_hw) // max(1, min(reference_hw))}:1, cropping the image is the "
                f"better fix" if smallest > 4096 else "")
        raise UsageError(
            f"the {'stage at ' + str(size) if len(args.scales) > 1 else 'output'} would be "
            f"{hw[1]}x{hw[0]} pixels (width x height), too small for {layer}, which needs at least "
            f"{need} pixels on each side: {what} {smallest} or more "
            f"for this {reference_hw[1]}x{reference_hw[0]} image{crop}")
    if min(style_hw) < need and not args.style_size:
        raise UsageError(
            f"the style image would be {style_hw[1]}x{style_hw[0]} pixels, too small for {layer}, "
            f"which needs at least {need} pixels on each side: raise --style-scale "
            f"(now {args.style_scale:g}) or {'--scales' if len(args.scales) > 1 else '--size'}")
    for k, shape in enumerate(style_shapes if args.style_size else (), 1):
        hs, ws = control.style_size_hw(shape, max(style_hw))
        if min(hs, ws) < need:
            raise UsageError(f"style image {k} would be {ws}x{hs} pixels, too small for {layer}, which "
                             f"needs at least {need} pixels on each side: raise --style-size "
                             f"(now {args.style_size})")
    return hw, style_hw


#: The fewest correction pairs ``--maxcor`` is lowered to, automatically, to make a stage fit.
MIN_AUTO_MAXCOR = 3


def estimate_bytes(args, hw, style_hw, lean: bool, maxcor: int, iterations: int) -> int:
    """The peak memory estimate (``minivgg.memory``) of one stage with these settings."""
    from minivgg import memory
    has_content, has_style = roles(args)
    return memory.estimate_peak_bytes(
        hw[0], hw[1], args.dtype,
        content_layer=max(args.content_layers, key=layer_index) if has_content else None,
        style_layers=tuple(args.style_layers) if has_style else (), pooling=args.pooling,
        style_size=style_hw if has_style else None,
        optimizer=args.optimizer if args.optimizer in ("lbfgs", "lbfgs-device") else None,
        maxcor=maxcor, iterations=iterations, device=args.device, conv=args.conv or "winograd",
        engine=args.engine, lean=lean)


def stage_settings(args):
    """The (lean, maxcor) settings to try, in order of preference: the asked ones first, then,
    where --lean auto allows, the lean mode, then fewer correction pairs down to MIN_AUTO_MAXCOR."""
    lean_choices = {"on": [True], "off": [False], "auto": [False, True]}[args.lean]
    if args.engine == "reference":
        lean_choices = [False]
    lbfgs = args.optimizer in ("lbfgs", "lbfgs-device")
    pairs = [args.maxcor] + ([m for m in (10, 5, MIN_AUTO_MAXCOR) if m < args.maxcor] if lbfgs else [])
    return [(lean, pairs[0]) for lean in lean_choices] + [(lean_choices[-1], m) for m in pairs[1:]]


def fit_stage(args, hw, style_hw, iterations, available):
    """The Stage with the first settings (``stage_settings``) whose estimate fits ``available``
    bytes (None: unknown, the asked settings), and the notes that say what was changed; or None."""
    for lean, maxcor in stage_settings(args):
        needed = estimate_bytes(args, hw, style_hw, lean, maxcor, iterations)
        if available is None or needed <= available:
            notes = []
            if lean and args.lean == "auto":
                notes.append(f"the {hw[1]}x{hw[0]} stage runs in the memory-lean mode to fit "
                             f"(--lean on/off decides)")
            if maxcor != args.maxcor:
                notes.append(f"--maxcor lowered from {args.maxcor} to {maxcor} for the {hw[1]}x{hw[0]} "
                             f"stage to fit in memory")
            return Stage(hw, style_hw, iterations, needed, lean, maxcor), notes
    return None, []


def largest_fitting_scale(args, reference_hw, available) -> int | None:
    """The largest long side (at most the last of --scales) at which a stage fits, or None."""
    lo, hi, best = 1, args.scales[-1], None
    while lo <= hi:
        mid = (lo + hi) // 2
        hw = fit_long_side(*reference_hw, mid)
        style_hw = stage_style_hw(args, hw, mid)
        if fit_stage(args, hw, style_hw, args.stage_iters[-1], available)[0] is not None:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def plan_stages(args, reference_hw, style_shapes=()):
    """Every stage's sizes and memory settings, checked before any work -> ([Stage], notes).

    Raises UsageError for a stage too small for the network, and NotEnoughMemory (one line, with the
    largest scale that would fit) for one that does not fit even lean and with fewer pairs.
    """
    from minivgg import memory
    sizes = [stage_sizes(args, reference_hw, size, style_shapes) for size in args.scales]
    available = memory.available_memory_bytes(args.device)
    stages, notes = [], []
    for (hw, style_hw), iterations in zip(sizes, args.stage_iters):
        stage, stage_notes = fit_stage(args, hw, style_hw, iterations, available)
        if stage is None:
            needed = min(estimate_bytes(args, hw, style_hw, lean, maxcor, iterations)
                         for lean, maxcor in stage_settings(args))
            best = largest_fitting_scale(args, reference_hw, available)
            hint = (f"; the largest scale that fits is {best}" if best else "")
            raise memory.NotEnoughMemory(
                memory.refusal_message(needed, available, args.device, f"a {hw[1]}x{hw[0]} run") + hint)
        stages.append(stage)
        notes += stage_notes
    return stages, notes
