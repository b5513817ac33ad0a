"""What ``python -m minivgg.transfer`` does once its options are parsed.

Order matters for the user: everything that can be refused (device, weights
file, output folder, images, sizes, memory) is checked before the first
evaluation (``minivgg.transfer.inputs.plan``), and nothing is resized or
allocated at the output size before the size and memory checks pass. Then the settings and the memory estimate are
printed, the optimiser runs with progress, and the best image is written even
when the run is interrupted (SIGINT, SIGTERM) or stopped by a NaN.

Exit status: 0 done; 1 the run could not finish as asked (NaN or Inf, out of
memory, the result could not be written where asked); 2 refused before any
work (``UsageError``); 130 / 143 interrupted by SIGINT / SIGTERM.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from minivgg.backend import to_device
from minivgg.image import net_to_rgb, pixel_bounds, resize_rgb, save_rgb
from minivgg.transfer import color, control
from minivgg.transfer.common import PROG, report_error, roles
from minivgg.transfer.inputs import (Plan, free_name, initial_image, plan, stage_inputs, stage_masks,
                                     upsampled)
from minivgg.transfer.objective import Objective
from minivgg.transfer.stages import Stage
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


def engine_label(args) -> str:
    """'fast engine (winograd)' or 'reference engine', for the run's summary line."""
    return f"fast engine ({args.conv})" if args.engine == "fast" else "reference engine"


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
