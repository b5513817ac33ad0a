"""The explicit table of VGG-19's 16 convolutions and the check every loader runs.

Shape legend: weights are OIHW, w (O, I, 3, 3); biases b (O,).

    paper name   Keras name      w shape (OIHW)
    conv1_1      block1_conv1    (64, 3, 3, 3)
    conv1_2      block1_conv2    (64, 64, 3, 3)
    conv2_1      block2_conv1    (128, 64, 3, 3)
    ...          ...             ...
    conv5_4      block5_conv4    (512, 512, 3, 3)

The paper names and shapes come from ``minivgg.architecture`` (``CONV_NAMES``,
``CONV_SHAPES``) so the network and its weights cannot disagree. Nothing here
guesses: a tensor is accepted only under its own name, with exactly its
expected shape; anything missing, extra or mis-shaped is a ``WeightsError``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minivgg.architecture import CONV_NAMES, CONV_SHAPES
from weights.errors import WeightsError


class ConvEntry(NamedTuple):
    """One row of the table: the paper's name, the Keras name and the OIHW weight shape."""

    name: str           # "conv4_2"
    keras_name: str     # "block4_conv2"
    shape: tuple        # (O, I, KH, KW)

    @property
    def bias_shape(self) -> tuple:
        """(O,)"""
        return (self.shape[0],)


def keras_name(name: str) -> str:
    """"conv4_2" -> "block4_conv2" (Keras applications' naming of the same layer)."""
    block, index = name[len("conv"):].split("_")
    return f"block{block}_conv{index}"


VGG19_TABLE = tuple(ConvEntry(name, keras_name(name), tuple(CONV_SHAPES[name])) for name in CONV_NAMES)


def check_params(params, source: str, table=VGG19_TABLE) -> dict:
    """Validate ``{name: (w, b)}`` against ``table`` and return it as float32 NumPy, in table order.

    params: {"conv1_1": (w (64, 3, 3, 3), b (64,)), ...}. ``source`` names the
    file in error messages. Raises ``WeightsError`` on a missing or extra layer,
    a wrong shape, or a non-finite value.
    """
    expected = [entry.name for entry in table]
    missing = [name for name in expected if name not in params]
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise WeightsError(f"{source}: layers do not match VGG-19's table"
                           + (f"; missing {', '.join(missing)}" if missing else "")
                           + (f"; unexpected {', '.join(map(str, extra))}" if extra else ""))
    checked = {}
    for entry in table:
        w, b = params[entry.name]
        w, b = np.asarray(w), np.asarray(b)
        if w.shape != entry.shape or b.shape != entry.bias_shape:
            raise WeightsError(f"{source}: {entry.name} should have weight {entry.shape} and bias "
                               f"{entry.bias_shape}, found {w.shape} and {b.shape}")
        if not (np.issubdtype(w.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
            raise WeightsError(f"{source}: {entry.name} should hold floats, found {w.dtype} and {b.dtype}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise WeightsError(f"{source}: {entry.name} holds non-finite values (NaN or inf)")
        checked[entry.name] = (np.ascontiguousarray(w, dtype=np.float32),
                               np.ascontiguousarray(b, dtype=np.float32))
    return checked
