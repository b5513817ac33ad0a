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
from minivgg.image import (ImageError, fit_long_side, load_rgb, net_to_rgb, pixel_bounds,
                           resize_rgb, rgb_to_net, save_rgb)
from minivgg.transfer import color
from minivgg.architecture import layer_index, min_input_size
from minivgg.transfer.common import INIT_CHOICES, PROG, UsageError, closest, report_error
from minivgg.transfer.objective import Objective
from minivgg.vgg import VGG19

EXIT_FAILED = 1
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


def roles(args) -> tuple[bool, bool]:
    """(has_content, has_style): --mode transfer uses both, content only the first, texture the second."""
    return args.mode != "texture", args.mode != "content"


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
    from weights import WeightsError, samples
    try:
        names = samples.sample_names()
    except WeightsError as exc:
        raise UsageError(f"{what} '{spec}': not a file here, and the sample images cannot be "
                         f"fetched to look for it ({exc})") from None
    known = set(names) | set(samples.ALIASES) | {f"{n}{ext}" for n in names for ext in (".jpg", ".png")}
    if spec not in known:
        problem = "no such file" if Path(spec).suffix else "neither a file nor a sample name"
        raise UsageError(f"{what} '{spec}': {problem}{closest(spec, names)}")
    return samples.sample_path(spec)


def resolve_image(spec: str, what: str):
    """A path if one exists (or looks like one), else a sample name -> (rgb, notes)."""
    path = Path(spec)
    if path.exists() or os.sep in spec or (os.altsep and os.altsep in spec):
        return load_rgb(path, what)
    return load_rgb(_sample(spec, what), what)


def used_layers(args) -> list:
    has_content, has_style = roles(args)
    return ([args.content_layer] if has_content else []) + (list(args.style_layers) if has_style else [])


def smallest_size(height: int, width: int, need: int) -> int:
    """The smallest --size whose output of a height x width image has both sides >= need."""
    short, long = min(height, width), max(height, width)
    size = max(need, math.floor((need - 0.5) * long / short))
    while min(fit_long_side(height, width, size)) < need:
        size += 1
    return size


def plan_sizes(args, reference_hw):
    """(output (h, w), style (h, w)), refused now if too small for the deepest layer used."""
    hw = fit_long_side(*reference_hw, args.size)
    # The paper resizes the style image to the content image's size (times --style-scale).
    style_hw = (max(1, round(hw[0] * args.style_scale)), max(1, round(hw[1] * args.style_scale)))
    layer = max(used_layers(args), key=layer_index)
    need = min_input_size(layer)
    if min(hw) < need:
        raise UsageError(
            f"the output would be {hw[1]}x{hw[0]} pixels (width x height), too small for {layer}, "
            f"which needs at least {need} pixels on each side: use --size "
            f"{smallest_size(*reference_hw, need)} or more for this "
            f"{reference_hw[1]}x{reference_hw[0]} image")
    if min(style_hw) < need:
        raise UsageError(
            f"the style image would be {style_hw[1]}x{style_hw[0]} pixels, too small for {layer}, "
            f"which needs at least {need} pixels on each side: raise --style-scale "
            f"(now {args.style_scale:g}) or --size")
    return hw, style_hw


def check_memory(args, hw, style_hw):
    """The peak memory estimate in bytes; refuses, before any work, a run that would not fit.

    Raises ``minivgg.memory.NotEnoughMemory`` (one line: the estimate and what is available).
    """
    from minivgg import memory
    has_content, has_style = roles(args)
    needed = memory.estimate_peak_bytes(
        hw[0], hw[1], args.dtype, content_layer=args.content_layer if has_content else None,
        style_layers=tuple(args.style_layers) if has_style else (), pooling=args.pooling,
        style_size=style_hw if has_style else None,
        optimizer="lbfgs" if args.optimizer == "lbfgs" else None, maxcor=args.maxcor,
        device=args.device, conv=args.conv or "winograd", engine=args.engine)
    memory.check_fits(needed, device=args.device, what=f"a {hw[1]}x{hw[0]} run")
    return needed


def load_inputs(args):
    """Read every image named on the command line, at its own size: (content, [styles], init, notes)."""
    notes = []
    has_content, has_style = roles(args)
    content = None
    if has_content:
        content, n = resolve_image(args.content, "content image")
        notes += [f"content: {m}" for m in n]
    styles = []
    if has_style:
        for spec in args.style:
            rgb, n = resolve_image(spec, "style image")
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
    if args.preserve_color:                       # the optimisation runs on luminance images
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
    hw: tuple               # (H, W) of the output
    style_hw: tuple         # (Hs, Ws) of every style image
    estimate: int           # peak memory, bytes
    params: dict            # VGG-19 weights


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
        hw, style_hw = plan_sizes(args, reference.shape[:2])
        estimate = check_memory(args, hw, style_hw)
        params = load_vgg19(normalized=args.normalized, path=args.weights)
    except (ImageError, WeightsError, NotEnoughMemory) as exc:
        raise UsageError(str(exc)) from None
    return Plan(out, content_rgb, style_rgbs, init_rgb, out_notes + notes, hw, style_hw, estimate, params)


def network_inputs(args, p: Plan):
    """Resize to the planned sizes -> (net, content_x or None, [style_x], x0, content_rgb at size)."""
    content_rgb = None if p.content_rgb is None else resize_rgb(p.content_rgb, *p.hw)
    style_rgbs = [resize_rgb(s, *p.style_hw) for s in p.style_rgbs]
    if args.preserve_color:                       # luminance-only transfer (Gatys et al. 2016)
        y_content = color.rgb_to_yiq(content_rgb)[:, :, 0]
        net_content = color.luminance_as_rgb(y_content)
        net_styles = [color.luminance_as_rgb(color.match_luminance(color.rgb_to_yiq(s)[:, :, 0], y_content))
                      for s in style_rgbs]
    else:
        net_content, net_styles = content_rgb, style_rgbs
    dtype, device = args.dtype, args.device
    net = VGG19(p.params, pooling=args.pooling, dtype=dtype, device=device, engine=args.engine,
                conv=args.conv)
    content_x = None if net_content is None else to_device(rgb_to_net(net_content, dtype), device)
    style_xs = [to_device(rgb_to_net(s, dtype), device) for s in net_styles]
    x0 = initial_image(args, content_x, style_xs[0] if style_xs else None, p.init_rgb, p.hw, dtype)
    return net, content_x, style_xs, to_device(x0, device), content_rgb


def run(args, signals=None) -> int:
    """Check everything, optimise, write the result; returns the exit status.

    Raises UsageError for anything refused before the work starts, and
    KeyboardInterrupt for a signal that arrives before the optimisation.
    """
    signals = signals or Signals()
    p = plan(args)
    net, content_x, style_xs, x0, content_rgb = network_inputs(args, p)
    for note in p.notes:
        say(args, f"note: {note}")
    has_content, has_style = roles(args)
    say(args, f"{PROG}: {args.mode} {p.hw[1]}x{p.hw[0]} px, content "
              f"{args.content if has_content else '-'}, style {' '.join(args.style) if has_style else '-'}; "
              f"content layer {args.content_layer if has_content else '-'}, style layers "
              f"{','.join(args.style_layers) if has_style else '-'}; alpha {args.alpha:g}, "
              f"beta {args.beta:g}; {args.pooling} pooling, {engine_label(args)}; {args.optimizer}, "
              f"{args.iters} iterations; "
              f"{args.device} {args.dtype}; init {args.init}; estimated peak memory "
              f"{p.estimate / 2**20:.0f} MiB")

    started = time.monotonic()
    objective = Objective(net, content_x, style_xs, alpha=args.alpha, beta=args.beta,
                          content_layer=args.content_layer, style_layers=args.style_layers,
                          style_layer_weights=args.style_layer_weights if style_xs else (),
                          style_blend=args.style_blend, tv_weight=args.tv_weight)

    def to_rgb(x):
        """Engine x -> (H, W, 3) uint8 RGB as written (the content's colours put back if asked)."""
        rgb = net_to_rgb(x, rounded=False)
        if args.preserve_color:
            rgb = color.recombine(rgb, content_rgb)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    result = optimise(args, objective, x0, p.out, to_rgb)
    with signals.deferred():               # a second Ctrl-C must not cut the result's write short
        return finish(args, result, p.out, to_rgb, time.monotonic() - started, signals)


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


def optimise(args, objective, x0, out, to_rgb):
    """Run the chosen optimiser with progress and checkpoints; signals stop it cleanly."""
    from optim import Progress, adam, gradient_descent, lbfgs
    progress = Progress(args.iters, quiet=args.quiet, stream=sys.stderr)   # stderr as it is now
    failed = []

    def checkpoint(iteration, x):
        if args.save_every and iteration % args.save_every == 0:
            path = out.with_name(f"{out.stem}.iter{iteration:04d}.png")
            try:
                save_rgb(to_rgb(x), path)
            except OSError as exc:              # keep optimising: the final write may still work
                if not failed:
                    print(f"{PROG}: warning: cannot write the checkpoint {path} "
                          f"({exc.strerror or exc}); going on", file=sys.stderr, flush=True)
                failed.append(path)

    common = dict(bounds=pixel_bounds(), progress=progress, time_limit=args.time_limit,
                  on_iteration=checkpoint)
    if args.optimizer == "lbfgs":
        return lbfgs(objective, x0, args.iters, maxcor=args.maxcor, **common)
    if args.optimizer == "adam":
        return adam(objective, x0, args.iters, lr=args.lr or 2.0, **common)
    return gradient_descent(objective, x0, args.iters, lr=args.lr, **common)
