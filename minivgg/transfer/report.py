"""What a transfer run says: the line before the work, and the last lines from its outcome.

The run itself returns data (``minivgg.transfer.run.Outcome``); this module turns a
plan and an outcome into text, and only ``say`` and the two error helpers print.
"""
from __future__ import annotations

import sys

from minivgg.transfer.balance import balance_label
from minivgg.transfer.common import PROG, report_error

EXIT_FAILED = 1


def sayer(quiet: bool):
    """say(message): a progress or note line on stderr, or nothing with --quiet."""
    def say(message):
        if not quiet:
            print(message, file=sys.stderr, flush=True)
    return say


def engine_label(network) -> str:
    """'fast engine (winograd)' or 'reference engine', for the run's summary line."""
    return f"fast engine ({network.conv})" if network.engine == "fast" else "reference engine"


def content_label(content_layers) -> str:
    """(('conv4_2', 1.0), ('conv5_2', 0.5)) -> 'conv4_2,conv5_2:0.5'."""
    return ",".join(name if k == 1 else f"{name}:{k:g}" for name, k in content_layers)


def controls_label(config) -> str:
    """The controls in use, e.g. '; 2 content masks; colours kept (histogram)', or ''."""
    images, parts = config.images, []
    if images.content_masks:
        parts.append(f"{len(images.content_masks)} content masks{' and style masks' if images.style_masks else ''}")
    if config.stages.style_size:
        parts.append(f"style images {config.stages.style_size} px on the long side")
    if config.objective.preserve_color:
        parts.append(f"colours kept ({config.objective.preserve_color})")
    return "".join(f"; {part}" for part in parts)


def styles_label(images) -> str:
    """'starry_night', or 'starry_night (great_wave in the stages before the last)' with --coarse-style."""
    label = " ".join(images.styles)
    if images.coarse_styles:
        label += f" ({' '.join(images.coarse_styles)} in the stages before the last)"
    return label


def weights_label(objective, stage_hws) -> str:
    """'alpha 0.001, beta 1' and, in transfer mode, at which size that balance holds (``balance``)."""
    label = f"alpha {objective.alpha:g}, beta {objective.beta:g}"
    balance = balance_label(objective, stage_hws)
    return f"{label} ({balance})" if balance else label


def summary(config, plan) -> str:
    """The one line that says what the run will do."""
    objective, network, images = config.objective, config.network, config.images
    usual = network.device == "cpu" and network.engine == "fast"    # the lean mode of the default route
    stages = " -> ".join(f"{st.hw[1]}x{st.hw[0]} ({st.iterations} it"
                         f"{'' if st.lean == usual else ', lean' if st.lean else ', not lean'})"
                         for st in plan.stages)
    return (f"{PROG}: {objective.mode} {stages if len(plan.stages) > 1 else f'{plan.hw[1]}x{plan.hw[0]} px'}, "
            f"content {images.content if objective.has_content else '-'}, "
            f"style {styles_label(images) if objective.has_style else '-'}; "
            f"content layer {content_label(objective.content_layers) if objective.has_content else '-'}, "
            f"style layers {','.join(objective.style_layers) if objective.has_style else '-'}"
            f"{'' if objective.style_loss == 'gram' else f' matched by {objective.style_loss}'}"
            f"{controls_label(config)}; {weights_label(objective, [st.hw for st in plan.stages])}; "
            f"{network.pooling} pooling, {engine_label(network)}; {config.optimiser.name}, "
            f"{config.stages.total_iterations} iterations; {network.device} {network.dtype}; "
            f"init {images.init}; estimated peak memory {plan.estimate / 2**20:.0f} MiB")


def ending(outcome) -> str:
    """'... done after N iterations, E evaluations, T s; best loss ...': the run's last progress line."""
    last = outcome.history[-1] if outcome.history else None
    parts = f"content {last['content']:.4e}, style {last['style']:.4e}, " if last else ""
    return (f"{PROG}: {outcome.stopped} after {outcome.iterations} iterations, {outcome.evaluations} "
            f"evaluations, {outcome.seconds:.1f} s; best loss {outcome.loss:.4e} ({parts}total)")


def _nothing_written(outcome, signals) -> int:
    if outcome.stopped == "not finite":
        report_error("the loss or its gradient was NaN or Inf at the first evaluation; no image "
                     "written (try --dtype float64, or smaller --ratio/--alpha/--beta weights)")
        return EXIT_FAILED
    if outcome.stopped == "time limit":
        report_error("the time limit ran out before the first evaluation finished; no image written "
                     "(raise --time-limit)")
        return EXIT_FAILED
    report_error(f"interrupted by {signals.name()} before the first evaluation finished; no image written")
    return signals.exit_code()


def finish(outcome, signals, say) -> int:
    """Print how the run ended and where its image went; the exit status."""
    say(ending(outcome))
    if outcome.written is None:                      # no evaluation finished with a finite loss
        return _nothing_written(outcome, signals)
    written = outcome.written
    if written.note:
        say(f"note: {written.note}")
    if written.path is None:
        report_error(f"{written.problem}; " + (f"the image was saved to {written.fallback} instead"
                                               if written.fallback else "the image could not be saved anywhere"))
        return EXIT_FAILED
    print(f"wrote {written.path}", flush=True)
    if outcome.stopped == "interrupted":
        report_error(f"interrupted by {signals.name()} after {outcome.iterations} iterations; "
                     f"the best image so far is in {written.path}")
        return signals.exit_code()
    if outcome.stopped == "not finite":
        report_error(f"the loss or its gradient became NaN or Inf after {outcome.iterations} "
                     f"iterations; stopped, and the last good image is in {written.path} "
                     f"(try --dtype float64, or smaller --ratio/--alpha/--beta weights)")
        return EXIT_FAILED
    return 0
