"""What ``python -m minivgg.transfer`` does once its options are parsed.

Order matters for the user: everything that can be refused (output folder,
device, images, memory) is checked before the first evaluation; then the
settings and a memory estimate are printed, the optimiser runs with progress,
and the best image is written even when the run is interrupted.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from minivgg.backend import gpu_status, to_device
from minivgg.image import (ImageError, fit_long_side, load_rgb, net_to_rgb, pixel_bounds,
                           resize_rgb, rgb_to_net, save_rgb)
from minivgg.transfer import color
from minivgg.transfer.cli import PROG, UsageError, closest
from minivgg.transfer.objective import Objective
from minivgg.vgg import VGG19, layer_index, min_input_size

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
_received = {"signal": signal.SIGINT}   # which signal stopped the run (SIGTERM is turned into Ctrl-C)


def say(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def resolve_image(spec: str, what: str):
    """A path if one exists (or looks like one), else a sample name -> (rgb, label, notes)."""
    path = Path(spec)
    if path.exists() or os.sep in spec or path.suffix:
        rgb, notes = load_rgb(path, what)
        return rgb, path.stem, notes
    from weights import WeightsError, samples
    try:
        names = samples.sample_names()
    except WeightsError:
        names = []
    if names and spec not in names and spec != "leuven":
        raise UsageError(f"{what} {spec!r} is neither a file nor a sample name{closest(spec, names)}")
    rgb, notes = load_rgb(samples.sample_path(spec), what)
    return rgb, spec, notes


def output_path(args, content_label, style_label) -> Path:
    """The path to write, checked now: its folder exists and is writable; never an existing file unless --force."""
    out = Path(args.out) if args.out else Path(f"{content_label}-{style_label}.png")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: the output is a PNG, give a name ending in .png")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"--out {out}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {out}: the folder {folder} is not writable")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory")
    if out.exists() and not args.force:
        k = 1
        while out.with_name(f"{out.stem}-{k}{out.suffix}").exists():
            k += 1
        out = out.with_name(f"{out.stem}-{k}{out.suffix}")
    return out


def prepare_images(args):
    """Load and size the images: (content_rgb or None, [style_rgb], (H, W), labels, notes)."""
    notes = []
    content_rgb, content_label = None, "texture"
    if args.mode != "texture":
        content_rgb, content_label, n = resolve_image(args.content, "content image")
        notes += [f"content: {m}" for m in n]
    styles, style_label = [], "content"
    if args.mode != "content":
        for spec in args.style:
            rgb, label, n = resolve_image(spec, "style image")
            styles.append(rgb)
            notes += [f"style {label}: {m}" for m in n]
        style_label = "+".join(Path(s).stem for s in args.style)
    reference = content_rgb if content_rgb is not None else styles[0]
    h, w = fit_long_side(*reference.shape[:2], args.size)
    if content_rgb is not None:
        content_rgb = resize_rgb(content_rgb, h, w)
    # The paper resizes the style image to the content image's size (times --style-scale).
    sh, sw = max(1, round(h * args.style_scale)), max(1, round(w * args.style_scale))
    styles = [resize_rgb(s, sh, sw) for s in styles]
    return content_rgb, styles, (h, w), (content_label, style_label), notes


def check_sizes(args, hw, style_hw):
    deepest = [args.content_layer] if args.mode != "texture" else []
    deepest += list(args.style_layers) if args.mode != "content" else []
    layer = max(deepest, key=layer_index)
    need = min_input_size(layer)
    for what, (h, w) in (("output", hw), ("style image", style_hw)):
        if min(h, w) < need:
            raise UsageError(f"the {what} would be {h}x{w} pixels, too small for {layer}: it needs "
                             f"at least {need}x{need} (raise --size or --style-scale)")


def check_memory(args, hw):
    """Print the estimate and refuse, before any work, a run that would not fit in memory."""
    from minivgg import memory
    layers = ([args.content_layer] if args.mode != "texture" else []) + \
             (list(args.style_layers) if args.mode != "content" else [])
    estimate = memory.estimate_peak_bytes(hw[0], hw[1], dtype=args.dtype, layers=layers,
                                          maxcor=args.maxcor, device=args.device)
    if args.device == "cpu":
        memory.check_fits(estimate)
    return estimate


def initial_image(args, content_x, style_x, hw, dtype):
    if args.init == "noise":
        rng = np.random.default_rng(args.seed)
        return rng.normal(0.0, 20.0, (1, 3) + hw).astype(dtype)
    if args.init == "content":
        if content_x is None:
            raise UsageError("--init content needs a content image (not --mode texture)")
        return content_x.copy()
    if args.init == "style":
        if style_x is None:
            raise UsageError("--init style needs a style image (not --mode content)")
        return rgb_to_net(resize_rgb(net_to_rgb(style_x, rounded=False), *hw), dtype)
    rgb, _ = load_rgb(args.init, "--init image")
    return rgb_to_net(resize_rgb(rgb, *hw), dtype)


def _raise_interrupt(signum, frame):
    _received["signal"] = signum
    raise KeyboardInterrupt


def run(args) -> int:
    from weights import WeightsError, load_vgg19
    from minivgg.memory import NotEnoughMemory
    try:
        if args.device == "gpu":
            ok, why = gpu_status()
            if not ok:
                raise UsageError(f"--device gpu is not available: {why}")
        if args.weights and not Path(args.weights).is_file():
            raise UsageError(f"--weights {args.weights}: no such file")
        content_rgb, style_rgbs, hw, labels, notes = prepare_images(args)
        out = output_path(args, *labels)
        check_sizes(args, hw, style_rgbs[0].shape[:2] if style_rgbs else hw)
        estimate = check_memory(args, hw)
        if args.preserve_color:
            y_content = color.rgb_to_yiq(content_rgb)[:, :, 0]
            net_content = color.luminance_as_rgb(y_content)
            net_styles = [color.luminance_as_rgb(color.match_luminance(color.rgb_to_yiq(s)[:, :, 0], y_content))
                          for s in style_rgbs]
        else:
            net_content, net_styles = content_rgb, style_rgbs
        params = load_vgg19(normalized=args.normalized, path=args.weights)
    except (ImageError, WeightsError, NotEnoughMemory) as exc:
        raise UsageError(str(exc)) from None

    dtype = args.dtype
    net = VGG19(params, pooling=args.pooling, dtype=dtype, device=args.device)
    content_x = None if net_content is None else to_device(rgb_to_net(net_content, dtype), args.device)
    style_xs = [to_device(rgb_to_net(s, dtype), args.device) for s in net_styles]
    x0 = to_device(initial_image(args, content_x, style_xs[0] if style_xs else None, hw, dtype),
                   args.device)

    for note in notes:
        say(args, f"note: {note}")
    say(args, f"{PROG}: {args.mode} {hw[1]}x{hw[0]} px, content {labels[0]}, style {labels[1]}; "
              f"content layer {args.content_layer if args.mode != 'texture' else '-'}, style layers "
              f"{','.join(args.style_layers) if args.mode != 'content' else '-'}; alpha {args.alpha:g}, "
              f"beta {args.beta:g}; {args.pooling} pooling; {args.optimizer}, {args.iters} iterations; "
              f"{args.device} {dtype}; init {args.init}; estimated peak memory {estimate / 2**20:.0f} MiB")

    started = time.monotonic()
    objective = Objective(net, content_x, style_xs, alpha=args.alpha, beta=args.beta,
                          content_layer=args.content_layer, style_layers=args.style_layers,
                          style_layer_weights=args.style_layer_weights,
                          style_blend=args.style_blend, tv_weight=args.tv_weight)
    result = optimise(args, objective, x0, out)
    elapsed = time.monotonic() - started

    rgb = net_to_rgb(result.x, rounded=False)
    if args.preserve_color:
        rgb = color.recombine(rgb, content_rgb)
    save_rgb(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), out)
    last = result.history[-1] if result.history else None
    parts = (f"content {last['content']:.4e}, style {last['style']:.4e}, " if last else "")
    print(f"{PROG}: {result.stopped} after {result.iterations} iterations, {result.evaluations} "
          f"evaluations, {elapsed:.1f} s; best loss {result.loss:.4e} ({parts}total)", file=sys.stderr)
    print(f"wrote {out}")
    if result.stopped == "interrupted":
        print(f"{PROG}: interrupted; the best image so far is in {out}", file=sys.stderr)
        return EXIT_INTERRUPTED.get(_received["signal"], 130)
    if result.stopped == "not finite":
        print(f"{PROG}: error: the loss or gradient became NaN or Inf; stopped and kept the last "
              f"good image in {out}", file=sys.stderr)
        return 1
    return 0


def optimise(args, objective, x0, out):
    """Run the chosen optimiser with progress, checkpoints, SIGTERM handled like Ctrl-C."""
    from optim import Progress, adam, gradient_descent, lbfgs
    progress = Progress(args.iters, quiet=args.quiet)

    def checkpoint(iteration, x):
        if args.save_every and iteration % args.save_every == 0:
            save_rgb(net_to_rgb(x), out.with_name(f"{out.stem}.iter{iteration:04d}.png"))

    common = dict(bounds=pixel_bounds(), progress=progress, time_limit=args.time_limit,
                  on_iteration=checkpoint)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if args.optimizer == "lbfgs":
            return lbfgs(objective, x0, args.iters, maxcor=args.maxcor, **common)
        if args.optimizer == "adam":
            return adam(objective, x0, args.iters, lr=args.lr or 2.0, **common)
        return gradient_descent(objective, x0, args.iters, lr=args.lr, **common)
    finally:
        signal.signal(signal.SIGTERM, previous)
