"""How styled and how faithful a result is, in two numbers that do not depend on its size.

    python -m minivgg.transfer.indices RESULT.png [the run's own options: --content, --style, ...]

- the style index SI = E_style(result) / E_style(content photo): 0 is as styled as the
  painting, 1 as unstyled as the photo;
- the content index CI = L_content(result) / L_content(painting): 0 is the photo's
  content, 1 as far from it as the painting.

Both are ratios of one term of the paper's objective at the result's own size, with
the images prepared as the run prepared them (``minivgg.transfer.inputs.plan``: the
frame trimmed, ``--style-size`` honoured) and the painting resized to the result's
size for CI; so the constants of each term cancel, and a 256 px and a 1024 px
result can be compared. Used to check that ``--ratio`` means one look at every
size (``minivgg.transfer.balance``; notebooks/06_tradeoffs.ipynb).
"""
from __future__ import annotations

import sys

from minivgg.image import ImageError, load_rgb, resize_rgb, rgb_to_net
from minivgg.backend import to_device
from minivgg.transfer.cli import parse_args
from minivgg.transfer.common import UsageError
from minivgg.transfer.inputs import plan as make_plan
from minivgg.transfer.objective import Objective
from minivgg.transfer.prepare import stage_inputs
from minivgg.transfer.run import networks


def indices(config, result_rgb) -> tuple[float, float]:
    """(SI, CI) of ``result_rgb`` (H, W, 3) for the run described by ``config`` (a RunConfig)."""
    plan = make_plan(config)
    stage = plan.stages[-1]
    if tuple(result_rgb.shape[:2]) != tuple(stage.hw):
        raise UsageError(f"the result is {result_rgb.shape[1]}x{result_rgb.shape[0]} px but these options "
                         f"make a {stage.hw[1]}x{stage.hw[0]} output (give the run's --size or --scales)")
    net = networks(config, plan.params)(stage.lean)
    inputs = stage_inputs(config, plan, stage)
    n = config.network

    def as_x(rgb):
        return to_device(rgb_to_net(rgb, n.dtype), n.device)

    o = config.objective
    style_only = Objective(net, None, inputs.style_xs, style_layers=o.style_layers,
                           style_layer_weights=o.style_layer_weights, style_blend=config.images.style_blend,
                           image_hw=stage.hw if config.stages.style_size else None)
    content_only = Objective(net, inputs.content_x, (), content_layers=o.content_weights)
    result, photo = as_x(result_rgb), inputs.content_x
    painting = as_x(resize_rgb(plan.style_rgbs[0], *stage.hw))
    si = float(style_only(result).style_loss) / float(style_only(photo).style_loss)
    ci = float(content_only(result).content_loss) / float(content_only(painting).content_loss)
    return si, ci


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        rgb, _ = load_rgb(argv[0], "result")
        si, ci = indices(parse_args(argv[1:]), rgb)
    except (UsageError, ImageError) as exc:
        print(f"python -m minivgg.transfer.indices: error: {exc}", file=sys.stderr)
        return 2
    print(f"{argv[0]}: SI {si:.4f} CI {ci:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
