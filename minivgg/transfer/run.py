"""What ``python -m minivgg.transfer`` does once its settings are parsed: the run, as data.

    outcome = run(config, signals, say)    # config: minivgg.transfer.config.RunConfig
    outcome.written.path, outcome.loss, outcome.stages, outcome.seconds

Order matters for the user: everything that can be refused (device, weights
file, output folder, images, sizes, memory) is checked before the first
evaluation (``minivgg.transfer.inputs.plan``), and nothing is resized or
allocated at the output size before the size and memory checks pass. Then the
summary line and then the notes are said, each stage is optimised with progress
(``minivgg.transfer.optimise``), and the best image is written even when the run
is interrupted (SIGINT, SIGTERM) or stopped by a NaN (``minivgg.transfer.output``).
The outcome is returned; ``minivgg.transfer.report.finish`` says it and gives the
exit status.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from minivgg.image import net_to_rgb, resize_rgb
from minivgg.transfer import color
from minivgg.transfer.balance import stage_weights
from minivgg.transfer.inputs import plan as make_plan
from minivgg.transfer.optimise import optimise
from minivgg.transfer.output import Written, write_result
from minivgg.transfer.prepare import initial_image, stage_inputs, stage_masks, upsampled
from minivgg.transfer.report import summary
from minivgg.transfer.signals import Signals
from minivgg.transfer.objective import Objective
from minivgg.vgg import VGG19

STOPS = ("interrupted", "time limit", "not finite")   # why a run ends before its last stage


@dataclass(frozen=True)
class StageOutcome:
    hw: tuple               # (H, W) optimised
    iterations: int
    evaluations: int
    loss: float             # the stage's best total loss
    stopped: str            # "done", "interrupted", "time limit", "not finite", or scipy's message


@dataclass(frozen=True)
class Outcome:
    """How a run went: what every stage did, the best loss, the time, and where the image went."""

    stages: tuple           # (StageOutcome, ...), one per stage that ran
    stopped: str            # the last stage's reason
    iterations: int         # over all stages
    evaluations: int
    loss: float             # the last stage's best total loss (inf: nothing finite was evaluated)
    history: list           # one dict per iteration (optim.Progress)
    seconds: float
    written: Written | None  # None: nothing was written (no finite evaluation)
    image: object = None    # the (H, W, 3) uint8 result, as written


def networks(config, params):
    """network(lean) -> the VGG19 for a stage, built once per lean setting (most runs need one)."""
    built = {}

    def network(lean: bool):
        if lean not in built:
            n = config.network
            built[lean] = VGG19(params, pooling=n.pooling, dtype=n.dtype, device=n.device, engine=n.engine,
                                conv=n.conv, lean=lean)
        return built[lean]
    return network


def rgb_writer(config, content_rgb, size_hw=None):
    """Engine x -> (H, W, 3) uint8 RGB as written: the content's colours put back if asked, and
    resized to ``size_hw`` (the output's size, for --upsample-partial) if given."""
    def to_rgb(x):
        rgb = color.output_rgb(config.objective.preserve_color, net_to_rgb(x, rounded=False), content_rgb)
        if size_hw is not None:
            rgb = resize_rgb(rgb, *size_hw)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return to_rgb


def run_stage(config, plan, k, network, x, deadline):
    """Stage k from x (None: the run's start) -> (OptimResult, the content at the stage's size)."""
    stage = plan.stages[k]
    inputs = stage_inputs(config, plan, stage)
    x0 = initial_image(config, plan.init_rgb, inputs, stage.hw) if x is None else upsampled(x, stage.hw)
    content_masks, style_masks = stage_masks(plan, stage)
    o = config.objective
    content_weights, tv_weight = stage_weights(o, stage.hw)   # the ratio's balance at this size
    objective = Objective(network(stage.lean), inputs.content_x, inputs.style_xs, alpha=o.alpha, beta=o.beta,
                          content_layers=content_weights, style_layers=o.style_layers,
                          style_layer_weights=o.style_layer_weights if inputs.style_xs else (),
                          style_blend=None if stage.coarse else config.images.style_blend, tv_weight=tv_weight,
                          content_masks=content_masks, style_masks=style_masks,
                          image_hw=stage.hw if config.stages.style_size else None,   # Grams per position
                          style_loss=o.style_loss)
    remaining = None if deadline is None else max(deadline - time.monotonic(), 1e-3)
    result = optimise(config, objective, x0, plan.out, rgb_writer(config, inputs.content_rgb), k, plan.stages,
                      remaining)
    return result, inputs.content_rgb


def run(config, signals=None, say=None) -> Outcome:
    """Check everything, optimise stage by stage, write the result; returns the Outcome.

    Raises UsageError for anything refused before the work starts, and KeyboardInterrupt for a
    signal that arrives before the optimisation. say(line): where notes and the summary go.
    """
    signals, say = signals or Signals(), say or (lambda line: None)
    plan = make_plan(config)
    network = networks(config, plan.params)
    network(plan.stages[0].lean)           # built before anything is said: it is the last thing that can fail
    say(summary(config, plan))             # the first line: what the run will do
    for note in plan.notes:
        say(f"note: {note}")
    started = time.monotonic()
    deadline = None if config.optimiser.time_limit is None else started + config.optimiser.time_limit
    x, results, content_rgb = None, [], None
    for k in range(len(plan.stages)):
        result, content_rgb = run_stage(config, plan, k, network, x, deadline)
        results.append(result)
        x = result.x
        if result.stopped in STOPS or not math.isfinite(result.loss):
            break                          # a converged stage goes on to the next; these do not
    with signals.deferred():               # a second Ctrl-C must not cut the result's write short
        return conclude(config, plan, results, content_rgb, time.monotonic() - started, say)


def conclude(config, plan, results, content_rgb, seconds, say) -> Outcome:
    """The stages' results as one Outcome, with the best image written (if anything finite was found)."""
    last = results[-1]
    stages = tuple(StageOutcome(st.hw, r.iterations, r.evaluations, r.loss, r.stopped)
                   for st, r in zip(plan.stages, results))
    written = image = None
    if math.isfinite(last.loss):
        size_hw = None
        if len(results) < len(plan.stages):
            size_hw = partial_size(config, plan, plan.stages[len(results) - 1], say)
        image = rgb_writer(config, content_rgb, size_hw)(last.x)
        written = write_result(image, plan.out, config.output.force)
    return Outcome(stages, last.stopped, sum(r.iterations for r in results), sum(r.evaluations for r in results),
                   last.loss, [h for r in results for h in r.history], seconds, written, image)


def partial_size(config, plan, stage, say):
    """The size an earlier stage's image is written at when the run stopped there: its own (with a
    note), or the output's with --upsample-partial."""
    h, w = stage.hw
    if not config.stages.upsample_partial:
        say(f"note: the run stopped at the {w}x{h} stage; its best image is written at that "
            f"size (--upsample-partial writes it at {plan.hw[1]}x{plan.hw[0]})")
        return None
    say(f"note: the run stopped at the {w}x{h} stage; its best image is upsampled to "
        f"{plan.hw[1]}x{plan.hw[0]} (--upsample-partial)")
    return plan.hw
