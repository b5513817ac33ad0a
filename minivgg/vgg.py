"""VGG-19 without its classifier: 16 convolutions and 5 poolings (PAPER.md), differentiable in its input.

Shape legend (the layer table is ``minivgg.architecture``)
    x, dx: (N, 3, H, W), BGR, mean-subtracted, 0..255 scale (``minivgg.image``).
    conv{b}_*: (N, C_b, H / 2^(b-1), W / 2^(b-1))   pool{b}: (N, C_b, H / 2^b, W / 2^b)
    with C = 64, 128, 256, 512, 512 for blocks 1..5 and every "/" a floor.

The reference engine is the plain loop in ``VGG19.forward`` and
``VGG19.backward``: each layer a forward/backward pair (``minivgg.conv``,
``minivgg.relu``, ``minivgg.pool``), caches kept in a list, and the walk down
adding the gradients of the taps where they join. The network is only ever
differentiated with respect to its input: no weight gradient is computed.

``engine="fast"`` (the default) hands forward and backward to
``minivgg.fast.network.FastVGG19``: the same function, transformed for
speed and memory (Winograd, channels-last, fused bias and ReLU, an array
pool), tested against this loop.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.architecture import CONV_NAMES, CONV_SHAPES, LAYER_NAMES, layer_index, tap_depth
from minivgg.backend import to_device
from minivgg.conv import conv2d_backward, conv2d_forward
from minivgg.fast.network import FastVGG19
from minivgg.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from minivgg.relu import relu_backward, relu_forward

ENGINES = ("fast", "reference")


class VGGCache(NamedTuple):
    """Per-layer caches of the layers run (conv: (Conv2dCache, ReluCache); pool: its cache)."""

    layers: tuple
    depth: int  # number of layers run: index of the deepest tap + 1


class VGG19:
    """The convolutional part of VGG-19 as a table of layers.

    params: {"conv1_1": (w (64, 3, 3, 3), b (64,)), ...} for all 16 convs (OIHW).
    pooling: "avg" (the paper's choice) or "max". dtype: "float32" (default) or
    "float64". device: "cpu" (NumPy) or "gpu" (CuPy); the weights are moved once.
    engine: "fast" (default) or "reference" (module docstring). conv: the fast
    engine's convolution route, "winograd" (default) or "im2col". lean: the fast
    engine's memory-lean mode (``minivgg.fast.lean``), for large images.
    """

    def __init__(self, params, pooling: str = "avg", dtype: str = "float32", device: str = "cpu",
                 engine: str = "fast", conv: str | None = None, lean: bool = False):
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', not {pooling!r}")
        if str(dtype) not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be 'fast' or 'reference', not {engine!r}")
        if engine == "reference" and (conv is not None or lean):
            raise ValueError("conv and lean are the fast engine's settings; the reference "
                             "engine always unrolls with im2col and keeps every activation")
        missing = [name for name in CONV_NAMES if name not in params]
        if missing:
            raise ValueError(f"params lack the layers {', '.join(missing)}")
        self.pooling, self.dtype, self.device, self.engine = pooling, str(dtype), device, engine
        self.params = {}
        for name in CONV_NAMES:
            w, b = params[name]
            if tuple(w.shape) != CONV_SHAPES[name] or tuple(b.shape) != (CONV_SHAPES[name][0],):
                raise ValueError(f"{name}: expected weight {CONV_SHAPES[name]} and bias "
                                 f"({CONV_SHAPES[name][0]},), got {tuple(w.shape)} and {tuple(b.shape)}")
            # copy=False: weights already of this dtype and device are shared, not duplicated
            # (80 MB in float32); the network never writes to them.
            self.params[name] = (to_device(w, device).astype(self.dtype, copy=False),
                                 to_device(b, device).astype(self.dtype, copy=False))
        self.fast = (None if engine == "reference"
                     else FastVGG19(self.params, pooling, device, conv or "winograd", lean=lean))

    def forward(self, x, taps=("conv4_2",)):
        """Run the layers up to the deepest tap.

        x: (N, 3, H, W) BGR mean-subtracted -> (feats {tap: (N, C, h, w)}, cache).
        The returned features are the network's own arrays: treat them as read-only.
        """
        x = x.astype(self.dtype, copy=False)
        if self.fast is not None:
            return self.fast.forward(x, taps)
        depth = tap_depth(x.shape, taps)
        out, feats, caches = x, {}, []
        for name in LAYER_NAMES[:depth]:
            if name.startswith("conv"):
                w, b = self.params[name]
                out, conv_cache = conv2d_forward(out, w, b, stride=1, pad=1)
                out, relu_cache = relu_forward(out)
                caches.append((conv_cache, relu_cache))
            elif self.pooling == "avg":
                out, pool_cache = avg_pool2d_forward(out, 2, 2)
                caches.append(pool_cache)
            else:
                out, pool_cache = max_pool2d_forward(out, 2, 2)
                caches.append(pool_cache)
            if name in taps:
                feats[name] = out
        return feats, VGGCache(tuple(caches), depth)

    def backward(self, grads, cache):
        """dx for the loss whose gradient at tap t is ``grads[t]`` (same shape as feats[t]).

        Walks down once from the deepest tap: the gradient arriving at a tap is
        added to the one coming from the layers above it (a fork in the forward
        pass is a sum in the backward). grads are not modified.
        """
        if self.fast is not None:
            return self.fast.backward(grads, cache)
        for name in grads:
            if layer_index(name) >= cache.depth:
                raise ValueError(f"no forward ran as deep as {name!r}")
        dout = None
        for index in range(cache.depth - 1, -1, -1):
            name = LAYER_NAMES[index]
            if name in grads:
                dout = grads[name] if dout is None else dout + grads[name]
            if dout is None:
                continue                                   # nothing flows down from above yet
            if name.startswith("conv"):
                conv_cache, relu_cache = cache.layers[index]
                dout = relu_backward(dout, relu_cache)
                dout, _, _ = conv2d_backward(dout, conv_cache)
            elif self.pooling == "avg":
                dout = avg_pool2d_backward(dout, cache.layers[index])
            else:
                dout = max_pool2d_backward(dout, cache.layers[index])
        if dout is None:
            raise ValueError("backward needs a gradient for at least one tap")
        return dout
