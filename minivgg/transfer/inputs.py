"""What a transfer run reads and checks before the first evaluation: the plan of the run.

Everything that can be refused is refused here, cheapest first, with a one-line
``UsageError``: the device, the weights file, the output's folder
(``minivgg.transfer.output``), the images (a path, a sample name, or one of the
optional paintings), the masks (``minivgg.transfer.control``), the stage sizes and
the memory they need (``minivgg.transfer.stages``). ``plan(config)`` returns a
``Plan`` with the images still at their own sizes; ``minivgg.transfer.prepare``
makes each stage's inputs from it and ``minivgg.transfer.run`` does the work.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from minivgg.backend import gpu_status
from minivgg.image import FRAMED_SAMPLES
from minivgg.image import trim_border as trim_border_of
from minivgg.image import ImageError, load_rgb
from minivgg.transfer import control
from minivgg.transfer.common import INIT_CHOICES, UsageError, closest
from minivgg.transfer.output import output_path
from minivgg.transfer.stages import plan_stages


# ---------------------------------------------------------------- checks that need no image

def check_device(config):
    if config.network.device == "gpu":
        ok, why = gpu_status()
        if not ok:
            raise UsageError(f"--device gpu is not available: {why} (use --device cpu)")


def check_weights_path(config):
    if config.network.weights:
        path = Path(config.network.weights)
        if not path.exists():
            raise UsageError(f"--weights '{path}': no such file")
        if path.is_dir():
            raise UsageError(f"--weights '{path}': is a directory, not a weights file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"--weights '{path}': permission denied (cannot read the file)")


# ---------------------------------------------------------------- images

def _sample(spec: str, what: str):
    """A sample photo's path for ``spec``, or a UsageError that says why not (and the closest name)."""
    from weights import WeightsError, paintings, samples
    if spec in paintings.PAINTINGS:                 # the extra paintings (python -m weights --paintings)
        try:
            return paintings.painting_path(spec)
        except WeightsError as exc:
            raise UsageError(f"{what} '{spec}': {exc}") from None
    try:
        names = samples.sample_names()
    except WeightsError as exc:
        raise UsageError(f"{what} '{spec}': not a file here, and the sample images cannot be "
                         f"fetched to look for it ({exc})") from None
    known = set(names) | set(samples.ALIASES) | {f"{n}{ext}" for n in names for ext in (".jpg", ".png")}
    if spec not in known:
        problem = "no such file" if Path(spec).suffix else "neither a file nor a sample name"
        choices = names + paintings.painting_names()
        raise UsageError(f"{what} '{spec}': {problem}{closest(spec, choices)}")
    return samples.sample_path(spec)


def resolve_image(spec: str, what: str, trim_border=None):
    """A path if one exists (or looks like one), else a sample name -> (rgb, notes).

    trim_border: True cuts a dark frame (``minivgg.image.trim_border``), False never does, None
    (the default) does for the framed samples (``FRAMED_SAMPLES``) and not for the user's files.
    """
    path = Path(spec)
    if path.exists() or os.sep in spec or (os.altsep and os.altsep in spec):
        rgb, notes = load_rgb(path, what)
        framed = False
    else:
        sample = _sample(spec, what)
        rgb, notes = load_rgb(sample, what)
        framed = Path(sample).stem in FRAMED_SAMPLES
    if trim_border or (trim_border is None and framed):
        rgb, (top, bottom, left, right) = trim_border_of(rgb)
        if top or bottom or left or right:
            notes.append(f"frame cut: {top}, {bottom}, {left}, {right} px off top, bottom, left, right "
                         f"(--no-trim-border keeps it)")
    return rgb, notes


def load_inputs(config):
    """Read every image named on the command line, at its own size:
    (content, [styles], [coarse styles], init, notes)."""
    images, objective = config.images, config.objective
    notes = []
    content = None
    if objective.has_content:
        content, n = resolve_image(images.content, "content image", images.trim_border)
        notes += [f"content: {m}" for m in n]
    styles = []
    if objective.has_style:
        for spec in images.styles:
            rgb, n = resolve_image(spec, "style image", images.trim_border)
            styles.append(rgb)
            notes += [f"style {Path(spec).stem}: {m}" for m in n]
    coarse = []
    if objective.has_style and images.coarse_styles:
        for spec in images.coarse_styles:
            rgb, n = resolve_image(spec, "coarse style image", images.trim_border)
            coarse.append(rgb)
            notes += [f"coarse style {Path(spec).stem}: {m}" for m in n]
    init = None
    if images.init not in INIT_CHOICES:
        try:
            init, n = load_rgb(images.init, "--init image")
        except ImageError as exc:
            hint = "" if Path(images.init).exists() else closest(images.init, INIT_CHOICES)
            raise ImageError(f"{exc}{hint}") from None
        notes += [f"--init: {m}" for m in n]
    return content, styles, coarse, init, notes


def load_masks(config, content_rgb, style_rgbs):
    """--content-masks and --style-masks, read and fitted to their images' own sizes ->
    (content masks or None, style masks or None, notes); one-line errors (``control.load_masks``)."""
    images = config.images
    if images.content_masks is None:
        return None, None, []
    content_masks, notes = control.load_masks(images.content_masks, content_rgb.shape[:2], "content mask")
    style_masks = None
    if images.style_masks is not None:
        style_masks, more = control.load_masks(images.style_masks, [s.shape[:2] for s in style_rgbs],
                                               "style mask")
        notes += more
    return content_masks, style_masks, notes


# ---------------------------------------------------------------- the plan

class Plan(NamedTuple):
    """Everything checked before the work starts; the images still at their own sizes."""

    out: Path
    content_rgb: object     # (H0, W0, 3) float64, or None (texture)
    style_rgbs: list        # [(Hs0, Ws0, 3) float64]
    init_rgb: object        # (Hi, Wi, 3) float64 for --init PATH, else None
    notes: list
    stages: list            # [Stage], the last at the output's size
    params: dict            # VGG-19 weights
    content_masks: list = None   # [(H0, W0) float64 0..1] per style image (--content-masks), or None
    style_masks: list = None     # [(Hs0, Ws0) float64 0..1 or None] per style image, or None
    coarse_style_rgbs: list = None   # [(Hs0, Ws0, 3) float64] of the stages before the last (--coarse-style)

    def stage_style_rgbs(self, stage) -> list:
        """The style images of ``stage``: the coarse ones for a coarse stage, else --style's."""
        return self.coarse_style_rgbs if stage.coarse else self.style_rgbs

    @property
    def hw(self) -> tuple:
        """(H, W) of the output."""
        return self.stages[-1].hw

    @property
    def estimate(self) -> int:
        """Peak memory of the run, bytes: its largest stage's."""
        return max(stage.estimate for stage in self.stages)


def plan(config) -> Plan:
    """All the checks, cheapest first; raises UsageError before any work if one fails."""
    from minivgg.memory import NotEnoughMemory
    from weights import WeightsError, load_vgg19
    check_device(config)
    check_weights_path(config)
    out, out_notes = output_path(config)
    try:
        content_rgb, style_rgbs, coarse_rgbs, init_rgb, notes = load_inputs(config)
        reference = content_rgb if content_rgb is not None else style_rgbs[0]
        content_masks, style_masks, mask_notes = load_masks(config, content_rgb, style_rgbs)
        stages, stage_notes = plan_stages(config, reference.shape[:2], [s.shape for s in style_rgbs],
                                          [s.shape for s in coarse_rgbs] or None)
        params = load_vgg19(normalized=config.network.normalized, path=config.network.weights)
    except (ImageError, WeightsError, NotEnoughMemory) as exc:
        raise UsageError(str(exc)) from None
    return Plan(out, content_rgb, style_rgbs, init_rgb, out_notes + notes + mask_notes + stage_notes,
                stages, params, content_masks, style_masks, coarse_rgbs or None)
