"""What ``python -m minivgg.transfer`` does once its options are parsed.

Order matters for the user: everything that can be refused (device, weights
file, output folder, images, sizes, memory) is checked before the first
evaluation, and nothing is resized or allocated at the output size before the
size and memory checks pass. Then the settings and the memory estimate are
printed, the optimiser runs with progress, and the best image is written even
when the run is interrupted (SIGINT, SIGTERM) or stopped by a NaN.

Exit status: 0 done; 1 the run could not finish as asked (NaN or Inf, out of
memory, the result could not be written where asked); 2 refused before any
work (``UsageError``); 130 / 143 interrupted by SIGINT / SIGTERM.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minivgg.backend import gpu_status, to_device
from minivgg.image import FRAMED_SAMPLES
from minivgg.image import trim_border as trim_border_of
from minivgg.image import ImageError, load_rgb, net_to_rgb, pixel_bounds, resize_rgb, rgb_to_net, save_rgb
from minivgg.transfer import color, control
from minivgg.transfer.common import INIT_CHOICES, PROG, UsageError, closest, report_error, roles
from minivgg.transfer.stages import Stage, plan_stages, style_hws
from minivgg.transfer.objective import Objective
from minivgg.vgg import VGG19

EXIT_FAILED = 1
STOPS = ("interrupted", "time limit", "not finite")   # why a run ends before its last stage
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


class Signals:
    """SIGINT and SIGTERM as KeyboardInterrupt, remembering which one came (for the exit status).

    ``raising()``: the handlers raise KeyboardInterrupt, which the optimisers
    catch and turn into a clean stop with the best image. ``deferred()``: the
    handlers only remember the signal, so writing the result cannot be cut
    short by a second Ctrl-C. A signal ignored by the parent (SIG_IGN) stays
    ignored; outside the main thread nothing is installed (Python forbids it).
    """

    def __init__(self):
        self.received = None

    def _raise(self, signum, frame):
        self.received = signum
        raise KeyboardInterrupt

    def _remember(self, signum, frame):
        self.received = self.received or signum

    @contextlib.contextmanager
    def _handled_by(self, handler):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in EXIT_SIGNAL}
        previous = {s: old for s, old in previous.items() if old is not signal.SIG_IGN}
        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, old in previous.items():    # None: a handler not set from Python
                signal.signal(s, signal.SIG_DFL if old is None else old)

    def raising(self):
        return self._handled_by(self._raise)

    def deferred(self):
        return self._handled_by(self._remember)

    def name(self) -> str:
        return SIGNAL_NAMES.get(self.received or signal.SIGINT, f"signal {self.received}")

    def exit_code(self) -> int:
        return EXIT_SIGNAL.get(self.received or signal.SIGINT, 128 + int(self.received or 2))


def say(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


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


def engine_label(args) -> str:
    """'fast engine (winograd)' or 'reference engine', for the run's summary line."""
    return f"fast engine ({args.conv})" if args.engine == "fast" else "reference engine"


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


# ---------------------------------------------------------------- the run

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


def rgb_writer(args, content_rgb):
    """Engine x -> (H, W, 3) uint8 RGB as written (the content's colours put back if asked)."""
    def to_rgb(x):
        rgb = net_to_rgb(x, rounded=False)
        if args.preserve_color == "luminance":
            rgb = color.recombine(rgb, content_rgb)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return to_rgb


def run(args, signals=None) -> int:
    """Check everything, optimise stage by stage, write the result; returns the exit status.

    Raises UsageError for anything refused before the work starts, and
    KeyboardInterrupt for a signal that arrives before the optimisation.
    """
    signals = signals or Signals()
    p = plan(args)
    net = VGG19(p.params, pooling=args.pooling, dtype=args.dtype, device=args.device, engine=args.engine,
                conv=args.conv)
    for note in p.notes:
        say(args, f"note: {note}")
    say(args, summary(args, p))
    started = time.monotonic()
    deadline = None if args.time_limit is None else started + args.time_limit
    x, results = None, []
    for k, stage in enumerate(p.stages):
        if net.fast is not None:
            net.fast.lean = stage.lean
        content_x, style_xs, content_rgb = stage_inputs(args, p, stage)
        if x is None:
            x0 = to_device(initial_image(args, content_x, style_xs[0] if style_xs else None, p.init_rgb,
                                         stage.hw, args.dtype), args.device)
        else:
            x0 = to_device(upsampled(x, stage.hw, args.dtype), args.device)
        content_masks, style_masks = stage_masks(args, p, stage)
        objective = Objective(net, content_x, style_xs, alpha=args.alpha, beta=args.beta,
                              content_layers=args.content_layers, style_layers=args.style_layers,
                              style_layer_weights=args.style_layer_weights if style_xs else (),
                              style_blend=args.style_blend, tv_weight=args.tv_weight,
                              content_masks=content_masks, style_masks=style_masks,
                              image_hw=stage.hw if args.style_size else None)   # Grams per position
        to_rgb = rgb_writer(args, content_rgb)
        remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
        results.append(optimise(args, objective, x0, p.out, to_rgb, k, p.stages, remaining))
        del objective, content_x, style_xs
        x = results[-1].x
        if results[-1].stopped in STOPS or not math.isfinite(results[-1].loss):
            break                          # a converged stage goes on to the next; these do not
    result = combined(results)
    if len(results) < len(p.stages) and math.isfinite(result.loss):
        to_rgb = partial_writer(args, p, to_rgb, stage)
    with signals.deferred():               # a second Ctrl-C must not cut the result's write short
        return finish(args, result, p.out, to_rgb, time.monotonic() - started, signals)


def summary(args, p: Plan) -> str:
    """The one line that says what the run will do."""
    has_content, has_style = roles(args)
    stages = " -> ".join(f"{st.hw[1]}x{st.hw[0]} ({st.iterations} it{', lean' if st.lean else ''})"
                         for st in p.stages)
    return (f"{PROG}: {args.mode} {stages if len(p.stages) > 1 else f'{p.hw[1]}x{p.hw[0]} px'}, content "
            f"{args.content if has_content else '-'}, style {' '.join(args.style) if has_style else '-'}; "
            f"content layer {control.content_label(args.content_layers) if has_content else '-'}, "
            f"style layers {','.join(args.style_layers) if has_style else '-'}{control.summary(args)}; "
            f"alpha {args.alpha:g}, "
            f"beta {args.beta:g}; {args.pooling} pooling, {engine_label(args)}; {args.optimizer}, "
            f"{args.iters} iterations; {args.device} {args.dtype}; init {args.init}; estimated peak "
            f"memory {p.estimate / 2**20:.0f} MiB")


def combined(results):
    """One OptimResult for a run of stages: the last stage's image and loss, the counts summed."""
    from optim import OptimResult
    last = results[-1]
    return OptimResult(last.x, last.loss, sum(r.iterations for r in results),
                       sum(r.evaluations for r in results), last.stopped,
                       [h for r in results for h in r.history])


def partial_writer(args, p: Plan, to_rgb, stage: Stage):
    """How an earlier stage's image is written when the run stopped there: at its own size (with a
    note), or upsampled to the output size with --upsample-partial."""
    h, w = stage.hw
    if not args.upsample_partial:
        say(args, f"note: the run stopped at the {w}x{h} stage; its best image is written at that "
                  f"size (--upsample-partial writes it at {p.hw[1]}x{p.hw[0]})")
        return to_rgb
    say(args, f"note: the run stopped at the {w}x{h} stage; its best image is upsampled to "
              f"{p.hw[1]}x{p.hw[0]} (--upsample-partial)")

    def to_rgb_upsampled(x):
        return np.clip(np.rint(resize_rgb(to_rgb(x), *p.hw)), 0, 255).astype(np.uint8)
    return to_rgb_upsampled


def finish(args, result, out, to_rgb, elapsed, signals) -> int:
    """Report the run, write its best image (unless nothing finite was evaluated); the exit status."""
    interrupted = result.stopped == "interrupted"
    not_finite = result.stopped == "not finite"
    last = result.history[-1] if result.history else None
    parts = f"content {last['content']:.4e}, style {last['style']:.4e}, " if last else ""
    say(args, f"{PROG}: {result.stopped} after {result.iterations} iterations, {result.evaluations} "
              f"evaluations, {elapsed:.1f} s; best loss {result.loss:.4e} ({parts}total)")
    if not math.isfinite(result.loss):                    # no evaluation finished with a finite loss
        if not_finite:
            report_error("the loss or its gradient was NaN or Inf at the first evaluation; no image "
                         "written (try --dtype float64, or smaller --ratio/--alpha/--beta weights)")
            return EXIT_FAILED
        if result.stopped == "time limit":
            report_error("the time limit ran out before the first evaluation finished; no image written "
                         "(raise --time-limit)")
            return EXIT_FAILED
        report_error(f"interrupted by {signals.name()} before the first evaluation finished; "
                     f"no image written")
        return signals.exit_code()
    written = write_result(args, to_rgb(result.x), out)
    if written is None:
        return EXIT_FAILED
    print(f"wrote {written}", flush=True)
    if interrupted:
        report_error(f"interrupted by {signals.name()} after {result.iterations} iterations; "
                     f"the best image so far is in {written}")
        return signals.exit_code()
    if not_finite:
        report_error(f"the loss or its gradient became NaN or Inf after {result.iterations} "
                     f"iterations; stopped, and the last good image is in {written} "
                     f"(try --dtype float64, or smaller --ratio/--alpha/--beta weights)")
        return EXIT_FAILED
    return 0


def write_result(args, rgb, out):
    """Write the result to ``out`` (or a free numbered name if it appeared meanwhile); the path or None."""
    if out.exists() and not args.force:
        taken, out = out, free_name(out)
        say(args, f"note: {taken} appeared during the run; writing {out} instead")
    try:
        return save_rgb(rgb, out)
    except OSError as exc:
        problem = f"cannot write {out} ({exc.strerror or exc})"
    try:
        fallback = save_rgb(rgb, free_name(Path(tempfile.gettempdir()) / out.name))
    except OSError:
        report_error(f"{problem}; the image could not be saved anywhere")
        return None
    report_error(f"{problem}; the image was saved to {fallback} instead")
    return None


def optimise(args, objective, x0, out, to_rgb, k: int = 0, stages=None, time_limit=None):
    """Run the chosen optimiser on stage k of ``stages`` with progress and checkpoints; signals stop
    it cleanly. The progress line names the stage and its ETA covers the stages still to come."""
    from optim import Progress, adam, gradient_descent, lbfgs
    stages = stages or [Stage(tuple(x0.shape[2:]), None, args.iters, 0, False, args.maxcor)]
    stage, iterations = stages[k], stages[k].iterations
    pixels = stage.hw[0] * stage.hw[1]
    later = sum(st.iterations * st.hw[0] * st.hw[1] / pixels for st in stages[k + 1:])  # in this stage's iterations
    prefix = f"stage {k + 1}/{len(stages)} {stage.hw[1]}x{stage.hw[0]}: " if len(stages) > 1 else ""
    progress = Progress(iterations, quiet=args.quiet, stream=sys.stderr, prefix=prefix, after=later)
    failed = []
    name = f"{out.stem}.stage{k + 1}" if len(stages) > 1 else out.stem

    def checkpoint(iteration, x):
        if args.save_every and iteration % args.save_every == 0:
            path = out.with_name(f"{name}.iter{iteration:04d}.png")
            try:
                save_rgb(to_rgb(x), path)
            except OSError as exc:              # keep optimising: the final write may still work
                if not failed:
                    print(f"{PROG}: warning: cannot write the checkpoint {path} "
                          f"({exc.strerror or exc}); going on", file=sys.stderr, flush=True)
                failed.append(path)

    common = dict(bounds=pixel_bounds(), progress=progress, time_limit=time_limit,
                  on_iteration=checkpoint)
    if args.optimizer == "lbfgs":
        return lbfgs(objective, x0, iterations, maxcor=stage.maxcor, **common)
    if args.optimizer == "lbfgs-device":
        from optim.lbfgs_device import lbfgs_device
        return lbfgs_device(objective, x0, iterations, maxcor=stage.maxcor, **common)
    if args.optimizer == "adam":
        return adam(objective, x0, iterations, lr=args.lr or 2.0, **common)
    return gradient_descent(objective, x0, iterations, lr=args.lr, **common)
