"""What a transfer run reads and checks before the first evaluation, and each stage's inputs.

Everything that can be refused is refused here, cheapest first, with a one-line
``UsageError``: the device, the weights file, the output's folder, the images
(a path, a sample name, or one of the optional paintings), the masks, the
stage sizes and the memory they need (``minivgg.transfer.stages``). ``plan``
returns a ``Plan`` with the images still at their own sizes; ``stage_inputs``,
``stage_masks`` and ``upsampled`` then make each stage's network inputs, masks
and starting image. ``minivgg.transfer.run`` does the work.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minivgg.backend import gpu_status, to_device
from minivgg.image import FRAMED_SAMPLES
from minivgg.image import trim_border as trim_border_of
from minivgg.image import ImageError, load_rgb, net_to_rgb, resize_rgb, rgb_to_net
from minivgg.transfer import color, control
from minivgg.transfer.common import INIT_CHOICES, UsageError, closest, roles
from minivgg.transfer.stages import Stage, plan_stages, style_hws


# ---------------------------------------------------------------- checks that need no image

def check_device(args):
    if args.device == "gpu":
        ok, why = gpu_status()
        if not ok:
            raise UsageError(f"--device gpu is not available: {why} (use --device cpu)")


def check_weights_path(args):
    if args.weights:
        path = Path(args.weights)
        if not path.exists():
            raise UsageError(f"--weights '{path}': no such file")
        if path.is_dir():
            raise UsageError(f"--weights '{path}': is a directory, not a weights file")
        if not os.access(path, os.R_OK):
            raise UsageError(f"--weights '{path}': permission denied (cannot read the file)")


def default_labels(args) -> tuple[str, str]:
    """(content, style) labels of the default output name, from the options alone."""
    has_content, has_style = roles(args)
    content = Path(args.content).stem if has_content else "texture"
    style = "+".join(Path(s).stem for s in args.style) if has_style else "content"
    return content, style


def free_name(out: Path) -> Path:
    """``out`` if it does not exist, else the first free out-1.png, out-2.png, ..."""
    k = 0
    candidate = out
    while candidate.exists():
        k += 1
        candidate = out.with_name(f"{out.stem}-{k}{out.suffix}")
    return candidate


def output_path(args, content_label, style_label) -> tuple[Path, list]:
    """(path to write, notes), checked now: its folder exists and is writable; never an
    existing file unless --force (then the first free numbered name, and a note saying so)."""
    out = Path(args.out) if args.out else Path(f"{content_label}-{style_label}.png")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out '{out}': the output is a PNG, give a name ending in .png")
    folder = out.parent
    if not folder.exists():
        raise UsageError(f"--out '{out}': the folder '{folder}' does not exist")
    if not folder.is_dir():
        raise UsageError(f"--out '{out}': '{folder}' is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out '{out}': the folder '{folder}' is not writable")
    try:                                        # what os.access cannot see (root squash, ACLs)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"--out '{out}': cannot create files in '{folder}' "
                         f"({exc.strerror or exc})") from None
    if out.is_dir():
        raise UsageError(f"--out '{out}': is a directory")
    if out.exists() and not args.force:
        taken, out = out, free_name(out)
        return out, [f"{taken} exists; writing {out} instead (--force overwrites)"]
    return out, []



# ---------------------------------------------------------------- images and sizes

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


def load_inputs(args):
    """Read every image named on the command line, at its own size: (content, [styles], init, notes)."""
    notes = []
    has_content, has_style = roles(args)
    content = None
    if has_content:
        content, n = resolve_image(args.content, "content image", args.trim_border)
        notes += [f"content: {m}" for m in n]
    styles = []
    if has_style:
        for spec in args.style:
            rgb, n = resolve_image(spec, "style image", args.trim_border)
            styles.append(rgb)
            notes += [f"style {Path(spec).stem}: {m}" for m in n]
    init = None
    if args.init not in INIT_CHOICES:
        try:
            init, n = load_rgb(args.init, "--init image")
        except ImageError as exc:
            hint = "" if Path(args.init).exists() else closest(args.init, INIT_CHOICES)
            raise ImageError(f"{exc}{hint}") from None
        notes += [f"--init: {m}" for m in n]
    return content, styles, init, notes


def load_masks(args, content_rgb, style_rgbs):
    """--content-masks and --style-masks, read and fitted to their images' own sizes ->
    (content masks or None, style masks or None, notes); one-line errors (``control.load_masks``)."""
    if args.content_masks is None:
        return None, None, []
    content_masks, notes = control.load_masks(args.content_masks, content_rgb.shape[:2], "content mask")
    style_masks = None
    if args.style_masks is not None:
        style_masks, more = control.load_masks(args.style_masks, [s.shape[:2] for s in style_rgbs],
                                               "style mask")
        notes += more
    return content_masks, style_masks, notes


def initial_image(args, content_x, style_x, init_rgb, hw, dtype):
    """x0 (1, 3, H, W): white noise, the content, the style, or an image file (a checkpoint)."""
    if args.init == "noise":
        rng = np.random.default_rng(args.seed)
        return rng.normal(0.0, 20.0, (1, 3) + hw).astype(dtype)
    if args.init == "content":
        return content_x.copy()
    if args.init == "style":
        return rgb_to_net(resize_rgb(net_to_rgb(style_x, rounded=False), *hw), dtype)
    rgb = resize_rgb(init_rgb, *hw)
    if args.preserve_color == "luminance":        # the optimisation runs on luminance images
        rgb = color.luminance_as_rgb(color.rgb_to_yiq(rgb)[:, :, 0])
    return rgb_to_net(rgb, dtype)



# ---------------------------------------------------------------- the plan, and each stage's inputs

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

    @property
    def hw(self) -> tuple:
        """(H, W) of the output."""
        return self.stages[-1].hw

    @property
    def estimate(self) -> int:
        """Peak memory of the run, bytes: its largest stage's."""
        return max(stage.estimate for stage in self.stages)


def plan(args) -> Plan:
    """All the checks, cheapest first; raises UsageError before any work if one fails."""
    from minivgg.memory import NotEnoughMemory
    from weights import WeightsError, load_vgg19
    check_device(args)
    check_weights_path(args)
    out, out_notes = output_path(args, *default_labels(args))
    try:
        content_rgb, style_rgbs, init_rgb, notes = load_inputs(args)
        reference = content_rgb if content_rgb is not None else style_rgbs[0]
        content_masks, style_masks, mask_notes = load_masks(args, content_rgb, style_rgbs)
        stages, stage_notes = plan_stages(args, reference.shape[:2], [s.shape for s in style_rgbs])
        params = load_vgg19(normalized=args.normalized, path=args.weights)
    except (ImageError, WeightsError, NotEnoughMemory) as exc:
        raise UsageError(str(exc)) from None
    return Plan(out, content_rgb, style_rgbs, init_rgb, out_notes + notes + mask_notes + stage_notes, stages, params,
                content_masks, style_masks)


def stage_inputs(args, p: Plan, stage: Stage):
    """The images resized to a stage -> (content_x or None, [style_x], content_rgb at size), on the device."""
    content_rgb = None if p.content_rgb is None else resize_rgb(p.content_rgb, *stage.hw)
    hws = style_hws(args, stage, [s.shape for s in p.style_rgbs])
    style_rgbs = [resize_rgb(s, *hw) for s, hw in zip(p.style_rgbs, hws)]
    if args.preserve_color == "histogram":        # the content's colour statistics (Gatys et al. 2017)
        style_rgbs = [control.histogram_match(s, content_rgb) for s in style_rgbs]
    if args.preserve_color == "luminance":        # luminance-only transfer (Gatys et al. 2016)
        y_content = color.rgb_to_yiq(content_rgb)[:, :, 0]
        net_content = color.luminance_as_rgb(y_content)
        net_styles = [color.luminance_as_rgb(color.match_luminance(color.rgb_to_yiq(s)[:, :, 0], y_content))
                      for s in style_rgbs]
    else:
        net_content, net_styles = content_rgb, style_rgbs
    dtype, device = args.dtype, args.device
    content_x = None if net_content is None else to_device(rgb_to_net(net_content, dtype), device)
    style_xs = [to_device(rgb_to_net(s, dtype), device) for s in net_styles]
    return content_x, style_xs, content_rgb


def stage_masks(args, p: Plan, stage: Stage):
    """The masks resized to a stage -> (content masks or None, style masks or None)."""
    if p.content_masks is None:
        return None, None
    content = [control.resize_mask(m, *stage.hw) for m in p.content_masks]
    if p.style_masks is None:
        return content, None
    hws = style_hws(args, stage, [s.shape for s in p.style_rgbs])
    return content, [None if m is None else control.resize_mask(m, *hw) for m, hw in zip(p.style_masks, hws)]


def upsampled(x, hw, dtype):
    """A stage's result x (1, 3, h, w) resized to hw, as the next stage's start (bilinear, in RGB)."""
    return rgb_to_net(resize_rgb(net_to_rgb(x, rounded=False), *hw), dtype)
