"""The reference network: VGG-19's layers as forward/backward pairs, walked in a plain loop.

Shape legend (the layer table is ``minivgg.architecture``)
    x, dx: (N, 3, H, W), BGR, mean-subtracted, 0..255 scale (``minivgg.image``).
    conv{b}_*: (N, C_b, H / 2^(b-1), W / 2^(b-1))   pool{b}: (N, C_b, H / 2^b, W / 2^b)
    with C = 64, 128, 256, 512, 512 for blocks 1..5 and every "/" a floor.

``ReferenceVGG19`` is the specification: each layer a forward/backward pair
(``minivgg.conv``, ``minivgg.relu``, ``minivgg.pool``), caches kept in a list,
and the walk down adding the gradients of the taps where they join. The network
is only ever differentiated with respect to its input: no weight gradient.

The two walks (``forward_walk``, ``backward_walk``) take the layer step as an
argument, so the fast engine (``minivgg.fast.network``) walks the same loops with
its own steps. Which engine runs is chosen by ``minivgg.vgg.VGG19``, not here.
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.architecture import LAYER_NAMES, layer_index, tap_depth
from minivgg.conv import conv2d_backward, conv2d_forward
from minivgg.pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from minivgg.relu import relu_backward, relu_forward


class VGGCache(NamedTuple):
    """Per-layer caches of the layers run (conv: (conv cache, relu cache); pool: its cache)."""

    layers: tuple
    depth: int  # number of layers run: index of the deepest tap + 1


def forward_walk(x, taps, layer_forward):
    """Run ``layer_forward(name, out) -> (out, cache)`` over the layers up to the deepest tap.

    x: (N, 3, H, W) -> (feats {tap: (N, C, h, w)}, VGGCache).
    """
    depth = tap_depth(x.shape, taps)
    out, feats, caches = x, {}, []
    for name in LAYER_NAMES[:depth]:
        out, cache = layer_forward(name, out)
        caches.append(cache)
        if name in taps:
            feats[name] = out
    return feats, VGGCache(tuple(caches), depth)


def backward_walk(grads, cache: VGGCache, layer_backward, join):
    """dx: walk down once from the deepest tap, ``layer_backward(name, dout, layer_cache) -> dout``.

    The gradient arriving at a tap joins the one coming from the layers above
    it, ``join(dout, grads[tap])`` (a fork in the forward pass is a sum in the
    backward). grads: {tap: (N, C, h, w)}, each read once, when the walk reaches its tap.
    """
    for name in grads:
        if layer_index(name) >= cache.depth:
            raise ValueError(f"no forward ran as deep as {name!r}")
    dout = None
    for index in range(cache.depth - 1, -1, -1):
        name = LAYER_NAMES[index]
        if name in grads:
            dout = grads[name] if dout is None else join(dout, grads[name])
        if dout is not None:                               # else nothing flows down from above yet
            dout = layer_backward(name, dout, cache.layers[index])
    if dout is None:
        raise ValueError("backward needs a gradient for at least one tap")
    return dout


class ReferenceVGG19:
    """The reference engine behind ``minivgg.VGG19(..., engine="reference")``.

    params: {"conv1_1": (w (64, 3, 3, 3), b (64,)), ...}, all 16 convs (OIHW), on
    the device and in the dtype the network runs in. pooling: "avg" or "max".
    """

    def __init__(self, params, pooling: str):
        self.params, self.pooling = params, pooling

    def forward(self, x, taps=("conv4_2",)):
        """x: (N, 3, H, W) -> (feats {tap: (N, C, h, w)}, cache); the features are the network's own."""
        return forward_walk(x, taps, self.layer_forward)

    def backward(self, grads, cache: VGGCache):
        """dx for the loss whose gradient at tap t is ``grads[t]`` (shaped as feats[t]); grads not modified."""
        return backward_walk(grads, cache, self.layer_backward, lambda dout, g: dout + g)

    def layer_forward(self, name: str, x):
        """One layer: conv then ReLU, or a pooling. -> (out, cache)."""
        if name.startswith("conv"):
            w, b = self.params[name]
            out, conv_cache = conv2d_forward(x, w, b, stride=1, pad=1)
            out, relu_cache = relu_forward(out)
            return out, (conv_cache, relu_cache)
        if self.pooling == "avg":
            return avg_pool2d_forward(x, 2, 2)
        return max_pool2d_forward(x, 2, 2)

    def layer_backward(self, name: str, dout, cache):
        """dx of one layer from its output's gradient dout and its cache."""
        if name.startswith("conv"):
            conv_cache, relu_cache = cache
            dout = relu_backward(dout, relu_cache)
            return conv2d_backward(dout, conv_cache)[0]
        if self.pooling == "avg":
            return avg_pool2d_backward(dout, cache)
        return max_pool2d_backward(dout, cache)
