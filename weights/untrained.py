"""Untrained VGG-19 weights: the same shapes as the ImageNet network, random values.

    params = weights.untrained_vgg19(seed=0)      # {"conv1_1": (w, b), ...} float32, OIHW

Each kernel w of layer l is drawn from a normal distribution with mean 0 and
standard deviation sqrt(2 / (C_in * 3 * 3)) (He et al. 2015, "Delving deep into
rectifiers": the scale at which a ReLU network's activations neither grow nor
shrink with depth), each bias is 0. Used where the question is what training
gave the network (the notebooks' trained-against-untrained experiment) and by
the benchmark on machines that cannot fetch the real weights (speed and memory
do not depend on the values).
"""
from __future__ import annotations

import numpy

from minivgg.architecture import CONV_SHAPES


def untrained_vgg19(seed: int = 0, dtype="float32") -> dict:
    """{"conv1_1": (w (64, 3, 3, 3), b (64,)), ...}: He-normal kernels, zero biases, seeded."""
    rng = numpy.random.default_rng(seed)
    params = {}
    for name, (cout, cin, kh, kw) in CONV_SHAPES.items():
        std = (2.0 / (cin * kh * kw)) ** 0.5
        w = (rng.standard_normal((cout, cin, kh, kw)) * std).astype(dtype)   # (O, C, 3, 3)
        params[name] = (w, numpy.zeros(cout, dtype))                          # (O,)
    return params
