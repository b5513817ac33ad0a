"""One stage's optimisation: the optimiser the run asked for, with progress and checkpoints."""
from __future__ import annotations

import sys

from minivgg.image import pixel_bounds, save_rgb
from minivgg.transfer.common import report_warning


def progress_for(config, stages, k: int):
    """The progress line of stage k: it names the stage, and its ETA covers the stages still to come."""
    from optim import Progress
    stage = stages[k]
    pixels = stage.hw[0] * stage.hw[1]
    later = sum(st.iterations * st.hw[0] * st.hw[1] / pixels for st in stages[k + 1:])  # in this stage's iterations
    prefix = f"stage {k + 1}/{len(stages)} {stage.hw[1]}x{stage.hw[0]}: " if len(stages) > 1 else ""
    return Progress(stage.iterations, quiet=config.output.quiet, stream=sys.stderr, prefix=prefix, after=later)


def checkpointer(config, out, to_rgb, name: str):
    """on_iteration(iteration, x): writes <name>.iterNNNN.png every --save-every iterations; a
    failed write is one warning, and the run goes on (the final write may still work)."""
    every, failed = config.output.save_every, []

    def checkpoint(iteration, x):
        if every and iteration % every == 0:
            path = out.with_name(f"{name}.iter{iteration:04d}.png")
            try:
                save_rgb(to_rgb(x), path)
            except OSError as exc:
                if not failed:
                    report_warning(f"cannot write the checkpoint {path} ({exc.strerror or exc}); going on")
                failed.append(path)
    return checkpoint


def optimise(config, objective, x0, out, to_rgb, k: int, stages, time_limit=None):
    """Run the chosen optimiser on stage k of ``stages`` (with its iterations and maxcor); signals
    stop it cleanly. Returns the optimiser's ``OptimResult``."""
    from optim import adam, gradient_descent, lbfgs, lbfgs_device
    stage = stages[k]
    name = f"{out.stem}.stage{k + 1}" if len(stages) > 1 else out.stem
    common = dict(bounds=pixel_bounds(), progress=progress_for(config, stages, k), time_limit=time_limit,
                  on_iteration=checkpointer(config, out, to_rgb, name))
    chosen = config.optimiser
    if chosen.name == "lbfgs":
        return lbfgs(objective, x0, stage.iterations, maxcor=stage.maxcor, **common)
    if chosen.name == "lbfgs-device":
        return lbfgs_device(objective, x0, stage.iterations, maxcor=stage.maxcor, **common)
    if chosen.name == "adam":
        return adam(objective, x0, stage.iterations, lr=chosen.lr or 2.0, **common)
    return gradient_descent(objective, x0, stage.iterations, lr=chosen.lr, **common)
