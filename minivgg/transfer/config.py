"""A transfer run's settings: parsed once, checked once, then frozen.

    config = from_options(namespace)       # cli.parse_args: argparse's Namespace -> RunConfig
    config.objective.alpha                 # every module reads the settings ...
    config.objective.alpha = 2.0           # ... and none rewrites them: FrozenInstanceError

One record per concern, each a frozen dataclass: what images (``Images``), what
is minimised (``ObjectiveSettings``), which network (``NetworkSettings``), at which
sizes (``StageSettings``), by which optimiser (``OptimiserSettings``), and where
the result goes (``OutputSettings``). The defaults live here, in the fields, and
the command line's ``--help`` shows them from here. ``from_options`` makes every
check that needs no file, no image and no network, and raises ``UsageError`` (one
line, exit status 2) for the first that fails.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from minivgg.architecture import LAYER_NAMES, PAPER_CONTENT_LAYER, PAPER_STYLE_LAYERS
from minivgg.transfer.common import UsageError, closest

#: The paper's ratio alpha/beta (its Fig. 2 and most of Fig. 3).
PAPER_RATIO = 1e-3
#: The long side at which the paper's ratios hold: its images are about 512 pixels
#: (``minivgg.transfer.balance`` keeps that balance at other sizes).
PAPER_SIZE = 512
#: The default ratio of each style statistic (``losses.statistics``): the one that weighs its
#: style term at the white-noise start as the paper's 1e-3 weighs the Gram term, measured at
#: 512 px on the default images (the statistics' scales differ by up to 3e4; --ratio overrides).
STYLE_LOSS_RATIOS = {"gram": PAPER_RATIO, "mean-std": 1e-7, "mmd-linear": 5e-8, "mmd-poly": PAPER_RATIO,
                     "mmd-rbf": 4e-8, "sliced-wasserstein": 1e-7}
#: Iterations of a one-stage run, and of the first stage of a --scales run.
DEFAULT_ITERS = 200
#: The fewest iterations the default --scales schedule gives a later stage.
MIN_STAGE_ITERS = 10


@dataclass(frozen=True)
class Images:
    """The images: names of sample photos or paths, as given."""

    content: str = "leuvenA"
    styles: tuple = ("starry_night",)
    coarse_styles: tuple | None = None    # style images of every stage but the last (--coarse-style)
    style_blend: tuple | None = None      # weights of the styles' Gram targets (default: equal)
    trim_border: bool | None = None       # None: trimmed for the framed samples only
    content_masks: tuple | None = None    # one mask path per style image (spatial control)
    style_masks: tuple | None = None      # one per style image, or "all"
    init: str = "noise"                   # noise, content, style, or an image path
    seed: int = 0                         # of the white-noise start


@dataclass(frozen=True)
class ObjectiveSettings:
    """What is minimised: the layers, the weights of the terms, colour preservation."""

    mode: str = "transfer"                # transfer, content (Fig. 1 content row), texture (style row)
    content_layers: tuple = ((PAPER_CONTENT_LAYER, 1.0),)   # (layer, weight) pairs
    style_layers: tuple = PAPER_STYLE_LAYERS
    style_layer_weights: tuple | None = None                 # None: 1 / len(style_layers) each
    alpha: float = PAPER_RATIO            # content weight
    beta: float = 1.0                     # style weight
    tv_weight: float = 0.0                # total variation (not in the paper)
    preserve_color: str | None = None     # None, "luminance" or "histogram"
    ratio_size: int | None = PAPER_SIZE   # long side the weights are stated at; None: unscaled (transfer mode)
    style_loss: str = "gram"              # the style statistic (losses.statistics)

    @property
    def has_content(self) -> bool:
        return self.mode != "texture"

    @property
    def has_style(self) -> bool:
        return self.mode != "content"

    @property
    def content_weights(self) -> dict:
        """{layer: weight} of the content layers, a fresh dict (``Objective`` takes one)."""
        return dict(self.content_layers)

    def used_layers(self) -> list:
        """The layers the losses read: the content layers (unless texture), the style layers (unless content)."""
        return ([name for name, _ in self.content_layers] if self.has_content else []) + \
            (list(self.style_layers) if self.has_style else [])


@dataclass(frozen=True)
class NetworkSettings:
    """Which network computes the objective, and where."""

    pooling: str = "avg"
    engine: str = "fast"
    conv: str | None = "winograd"         # the fast engine's convolutions; None for the reference engine
    normalized: bool = False
    weights: str | None = None            # a Keras .h5 file; None: the cached default
    lean: str = "auto"                    # the fast engine's memory-lean mode: auto, on, off
    device: str = "cpu"
    dtype: str = "float32"


@dataclass(frozen=True)
class StageSettings:
    """The output's size, and the stages of a coarse-to-fine run (one stage without --scales)."""

    scales: tuple = (256,)                # long side of each stage; the last is the output's
    iterations: tuple = (DEFAULT_ITERS,)  # one per stage
    style_scale: float = 1.0              # style size relative to the content's
    style_size: int | None = None         # long side of the style images at the output size
    upsample_partial: bool = False        # an interrupted early stage is written at the output size

    @property
    def size(self) -> int:
        return self.scales[-1]

    @property
    def total_iterations(self) -> int:
        return sum(self.iterations)


@dataclass(frozen=True)
class OptimiserSettings:
    name: str = "lbfgs"                   # lbfgs, lbfgs-device, adam, gd
    lr: float | None = None               # adam and gd
    maxcor: int = 20                      # L-BFGS correction pairs
    time_limit: float | None = None       # seconds

    @property
    def is_lbfgs(self) -> bool:
        return self.name in ("lbfgs", "lbfgs-device")


@dataclass(frozen=True)
class OutputSettings:
    out: str | None = None                # None: <content>-<style>.png in the working folder
    force: bool = False                   # overwrite an existing file
    save_every: int | None = None         # checkpoints every N iterations
    quiet: bool = False


@dataclass(frozen=True)
class RunConfig:
    images: Images = Images()
    objective: ObjectiveSettings = ObjectiveSettings()
    network: NetworkSettings = NetworkSettings()
    stages: StageSettings = StageSettings()
    optimiser: OptimiserSettings = OptimiserSettings()
    output: OutputSettings = OutputSettings()


def default(record, name: str):
    """The default of field ``name`` of a settings record: what ``--help`` shows."""
    return next(f.default for f in fields(record) if f.name == name)


# ---------------------------------------------------------------- from the command line's options

def check_layer(name: str) -> str:
    if name not in LAYER_NAMES:
        conv = "conv" + name[len("relu"):]
        hint = (f" (did you mean {conv!r}? here convN_M names the rectified output)"
                if name.startswith("relu") and conv in LAYER_NAMES else closest(name, LAYER_NAMES))
        raise UsageError(f"unknown layer {name!r}{hint}; layers are conv1_1..conv5_4 and pool1..pool5")
    return name


def _layer_weight(name: str, weight: str, what: str) -> float:
    """The weight after 'layer:' as a positive finite float, or a UsageError that starts with ``what``."""
    try:
        value = float(weight)
    except ValueError:
        raise UsageError(f"{what} {weight!r} of {name} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{what} of {name} must be positive, got {weight}")
    return value


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
        layers[name] = _layer_weight(name, weight, "--content-layers: the weight") if weight else 1.0
    return layers


def parse_style_layers(items):
    """['conv1_1', 'conv2_1:0.5'] -> (names, weights or None); weights must be positive."""
    names, weights = [], []
    for item in items:
        name, _, weight = item.partition(":")
        names.append(check_layer(name))
        if weight:
            weights.append(_layer_weight(name, weight, "style layer weight"))
    if len(set(names)) != len(names):
        raise UsageError("a style layer is listed twice")
    if weights and len(weights) != len(names):
        raise UsageError("give a weight to every style layer or to none")
    return tuple(names), (tuple(weights) if weights else None)


def stage_iterations(scales, iters) -> tuple:
    """Iterations per stage: one --iters value for all, one per stage, or the default schedule
    (DEFAULT_ITERS, then half the previous at each later stage, at least MIN_STAGE_ITERS: the
    upsampled start is already close, and each stage costs 4x the previous per iteration)."""
    if iters is None:
        return tuple(max(MIN_STAGE_ITERS, DEFAULT_ITERS >> k) for k in range(len(scales)))
    if len(iters) == 1:
        return tuple(iters) * len(scales)
    if len(iters) != len(scales):
        raise UsageError(f"--iters has {len(iters)} values for {len(scales)} stages of --scales "
                         f"(give one for all stages, or one per stage)")
    return tuple(iters)


def stage_settings(o) -> StageSettings:
    """--scales, --size and --iters made consistent, and the style's size options."""
    if o.scales is None:
        if o.iters is not None and len(o.iters) > 1:
            raise UsageError("--iters takes one number (several only with --scales, one per stage)")
        if o.upsample_partial:
            raise UsageError("--upsample-partial applies to --scales runs only")
        scales = (o.size or default(StageSettings, "scales")[-1],)
    else:
        scales = tuple(o.scales)
        if any(b <= a for a, b in zip(scales, scales[1:])):
            raise UsageError(f"--scales must increase from stage to stage, got {' '.join(map(str, scales))}")
        if o.size is not None and o.size != scales[-1]:
            raise UsageError(f"--size {o.size} disagrees with the last of --scales ({scales[-1]}), "
                             f"which is the output size: drop --size or make them equal")
    if o.style_size is not None and o.style_scale is not None:
        raise UsageError("give --style-size or --style-scale, not both")
    return StageSettings(scales, stage_iterations(scales, o.iters),
                         1.0 if o.style_scale is None else o.style_scale, o.style_size, o.upsample_partial)


def term_weights(o) -> tuple:
    """(alpha, beta): the mode's own for content and texture, else --alpha and --beta or --ratio."""
    explicit = [name for name, value in (("--ratio", o.ratio), ("--alpha", o.alpha), ("--beta", o.beta))
                if value is not None]
    if o.mode != "transfer":
        if explicit:
            raise UsageError(f"--mode {o.mode} optimises the {'content' if o.mode == 'content' else 'style'} "
                             f"loss alone: {' and '.join(explicit)} do not apply")
        return (1.0, 0.0) if o.mode == "content" else (0.0, 1.0)
    if (o.alpha is None) != (o.beta is None):
        raise UsageError("give --alpha and --beta together (or use --ratio)")
    if o.alpha is not None:
        if o.ratio is not None:
            raise UsageError("give --ratio or --alpha and --beta, not both")
        return o.alpha, o.beta
    style_loss = getattr(o, "style_loss", None) or "gram"
    return (STYLE_LOSS_RATIOS[style_loss] if o.ratio is None else o.ratio), 1.0


def objective_settings(o) -> ObjectiveSettings:
    if o.content_layer is not None and o.content_layers is not None:
        raise UsageError("give --content-layer or --content-layers, not both")
    content = (parse_content_layers(o.content_layers) if o.content_layers
               else {check_layer(o.content_layer or PAPER_CONTENT_LAYER): 1.0})
    style_layers, style_weights = parse_style_layers(o.style_layers)
    if o.preserve_color and o.mode != "transfer":
        raise UsageError("--preserve-color applies to --mode transfer only")
    alpha, beta = term_weights(o)
    style_loss = getattr(o, "style_loss", None) or default(ObjectiveSettings, "style_loss")
    if style_loss != "gram":
        if o.mode == "content":
            raise UsageError(f"--style-loss {style_loss}: --mode content has no style term")
        if o.content_masks is not None:
            raise UsageError(f"--content-masks match guided Gram matrices: not with --style-loss {style_loss}")
    return ObjectiveSettings(o.mode, tuple(content.items()), style_layers, style_weights, alpha, beta,
                             o.tv_weight, o.preserve_color, ratio_size(o), style_loss)


def ratio_size(o):
    """--ratio-size: a long side in pixels (default PAPER_SIZE), or None for 'paper' (no rescaling)."""
    value = getattr(o, "ratio_size", None)
    if value is None:
        return default(ObjectiveSettings, "ratio_size")
    if o.mode != "transfer":
        raise UsageError(f"--ratio-size weighs content against style: it does not apply to --mode {o.mode}")
    if value == "paper":
        return None
    try:
        size = int(value)
    except ValueError:
        raise UsageError(f"--ratio-size takes a long side in pixels or 'paper', got {value!r}") from None
    if size < 1:
        raise UsageError(f"--ratio-size must be a positive number of pixels, got {value}")
    return size


def image_settings(o) -> Images:
    """The images, and the checks of the control options that need no file: counts, combinations."""
    if o.style_blend is not None and len(o.style_blend) != len(o.style):
        raise UsageError(f"--style-blend has {len(o.style_blend)} weights for {len(o.style)} style images")
    if o.style_masks is not None and o.content_masks is None:
        raise UsageError("--style-masks needs --content-masks (give an all-white content mask to "
                         "use the whole content image)")
    if o.content_masks is not None:
        if o.mode != "transfer":
            raise UsageError("--content-masks applies to --mode transfer only")
        for option, masks in (("--content-masks", o.content_masks), ("--style-masks", o.style_masks)):
            if masks is not None and len(masks) != len(o.style):
                raise UsageError(f"{option} has {len(masks)} masks for {len(o.style)} style "
                                 f"images: give one per style image, in the same order")
        if o.style_blend is not None:
            raise UsageError("--style-blend mixes the styles everywhere; with --content-masks each "
                             "style has its own region (drop --style-blend)")
    if o.init == "content" and o.mode == "texture":
        raise UsageError("--init content needs a content image: not with --mode texture")
    if o.init == "style" and o.mode == "content":
        raise UsageError("--init style needs a style image: not with --mode content")
    coarse = getattr(o, "coarse_style", None)
    if coarse is not None:
        if o.mode == "content":
            raise UsageError("--coarse-style needs a style term: not with --mode content")
        if o.scales is None or len(o.scales) < 2:
            raise UsageError("--coarse-style styles the early stages of a coarse-to-fine run: give "
                             "--scales with two or more sizes (the last stage uses --style)")
        if o.content_masks is not None:
            raise UsageError("--coarse-style and --content-masks do not combine (each mask belongs to "
                             "one --style image)")
    as_tuple = lambda v: None if v is None else tuple(v)   # noqa: E731
    return Images(o.content, tuple(o.style), as_tuple(coarse), as_tuple(o.style_blend), o.trim_border,
                  as_tuple(o.content_masks), as_tuple(o.style_masks), o.init, o.seed)


def network_settings(o) -> NetworkSettings:
    if o.conv is not None and o.engine == "reference":
        raise UsageError("--conv chooses the fast engine's convolutions; the reference engine "
                         "always uses plain im2col (drop --conv, or use --engine fast)")
    conv = None if o.engine == "reference" else (o.conv or default(NetworkSettings, "conv"))
    return NetworkSettings(o.pooling, o.engine, conv, o.normalized, o.weights, o.lean, o.device, o.dtype)


def optimizer_name(o) -> str:
    """--optimizer, or the device's default: scipy's L-BFGS-B on the CPU (the paper's), the on-device
    L-BFGS on the GPU (scipy's iterations there cost 13x an evaluation at 512 px; README, GPU)."""
    if o.optimizer is not None:
        return o.optimizer
    return "lbfgs-device" if o.device == "gpu" else default(OptimiserSettings, "name")


def from_options(o) -> RunConfig:
    """The argparse Namespace of ``cli.build_parser`` -> the frozen RunConfig; UsageError if refused."""
    objective = objective_settings(o)
    return RunConfig(
        images=image_settings(o),
        objective=objective,
        network=network_settings(o),
        stages=stage_settings(o),
        optimiser=OptimiserSettings(optimizer_name(o), o.lr, o.maxcor, o.time_limit),
        output=OutputSettings(o.out, o.force, o.save_every, o.quiet))

