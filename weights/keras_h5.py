"""Reader for Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``.

That file (Keras applications, the Caffe VGG-19 weights converted for
TensorFlow) holds, for each conv layer L = block1_conv1 .. block5_conv4:

    /L/L_W_1:0   (3, 3, I, O)  float32   kernel, HWIO ("tf dim ordering")
    /L/L_b_1:0   (O,)          float32   bias

plus empty groups for the layers without weights (input, pools). The kernel
is a cross-correlation kernel with input channels in BGR order, exactly as in
Caffe, so the only conversion needed is the axis order, done in one place:
``hwio_to_oihw``. Any other dataset, a missing one, or a shape that is not
the table's is refused; a transpose is never guessed from shapes.
"""
from __future__ import annotations

import numpy as np

from weights.errors import WeightsError
from weights.table import VGG19_TABLE, check_params


def hwio_to_oihw(kernel):
    """(KH, KW, I, O) Keras/TensorFlow kernel -> (O, I, KH, KW): ``transpose(3, 2, 0, 1)``.

    out[o, i, u, v] = kernel[u, v, i, o]; a pure relabelling of axes (no flip),
    because both layouts describe a cross-correlation.
    """
    return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))


def keras_dataset_names(entry) -> tuple:
    """("block1_conv1/block1_conv1_W_1:0", "block1_conv1/block1_conv1_b_1:0") for one table row."""
    layer = entry.keras_name
    return f"{layer}/{layer}_W_1:0", f"{layer}/{layer}_b_1:0"


def _all_datasets(handle) -> set:
    """Paths of every dataset in the file."""
    import h5py

    found = set()
    handle.visititems(lambda name, obj: found.add(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def read_keras_h5(path, table=VGG19_TABLE) -> dict:
    """Read the Keras VGG-19 notop file -> {"conv1_1": (w (64, 3, 3, 3), b (64,)), ...} float32 OIHW."""
    import h5py

    where = str(path)
    expected = {name: entry for entry in table for name in keras_dataset_names(entry)}
    try:
        with h5py.File(path, "r") as handle:
            found = _all_datasets(handle)
            missing = sorted(set(expected) - found)
            extra = sorted(found - set(expected))
            if missing or extra:
                raise WeightsError(f"{where}: datasets do not match the Keras VGG-19 notop layout"
                                   + (f"; missing {', '.join(missing)}" if missing else "")
                                   + (f"; unexpected {', '.join(extra)}" if extra else ""))
            params = {}
            for entry in table:
                kernel_name, bias_name = keras_dataset_names(entry)
                hwio = entry.shape[2:] + entry.shape[1::-1]        # (KH, KW, I, O)
                kernel, bias = handle[kernel_name], handle[bias_name]
                if kernel.shape != hwio or bias.shape != entry.bias_shape:
                    raise WeightsError(f"{where}: {kernel_name} should be {hwio} and {bias_name} "
                                       f"{entry.bias_shape}, found {kernel.shape} and {bias.shape}")
                if kernel.dtype.kind != "f" or bias.dtype.kind != "f":
                    raise WeightsError(f"{where}: {entry.keras_name} should hold floats, "
                                       f"found {kernel.dtype} and {bias.dtype}")
                params[entry.name] = (hwio_to_oihw(kernel[()]), bias[()])
    except WeightsError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ... on damaged files
        raise WeightsError(f"{where}: cannot read HDF5 file ({type(exc).__name__}: {exc})") from None
    return check_params(params, where, table)
