"""The fast engine's VGG-19: the reference walk of ``minivgg.vgg`` with its transformations applied.

Same function as the reference network (``tests/test_fast_engine.py`` holds
them together in float64); what changes is how each step runs:

* convolutions through Winograd's minimal filtering (``minivgg.fast.winograd``;
  kernels transformed once, on a layer's first use; ``winograd_tile`` says
  which tile each layer uses) except conv1_1, whose 3 input channels suit
  tiled im2col (``minivgg.fast.conv``) better; ``conv="im2col"`` runs every
  layer through tiled im2col;
* bias and ReLU fused into each convolution's output copy (no ``relu_forward``
  pass: the conv's output *is* the ReLU's, and its cache is that output);
* channels-last activations on the CPU (``minivgg.fast.layout``);
* average pooling summed separably (``minivgg.fast.pooling``);
* an explicit ``ArrayPool`` (``minivgg.fast.arrays``) for activations and work
  buffers, when the caller passes one;
* in the backward, gradients the walk owns are updated in place, and a
  gradient given as a function is made only when the walk reaches its tap;
* ``lean=True``: the memory-lean mode (``minivgg.fast.lean``): of the layers
  that are not taps only the ReLU masks are kept, as bits.

Memory order. Every array has the logical shape (N, C, H, W), but on the CPU
with Winograd the activations (and so the gradients of the walk down) are
stored channels-last, (N, H, W, C) in memory: conv1_1 writes its output that
way and every later layer keeps its input's order. The im2col route keeps C
order, which its unrolling copies suit, and so does the GPU: CuPy's
elementwise kernels walk an array in its logical order, so every ReLU mask,
sum and pooling over channels-last memory reads with a stride of C floats
(measured on an H200: evaluations twice as slow, 0.105 s instead of 0.05 s at
1024 x 1024).
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.architecture import LAYER_NAMES, layer_index, tap_depth
from minivgg.fast.conv import conv2d_backward, conv2d_forward, uses_transposed_conv
from minivgg.fast.conv import workspace_bytes as im2col_workspace_bytes
from minivgg.fast.lean import PackedReluCache, pack_relu, packed_relu_backward
from minivgg.fast.objective import FastEvaluator
from minivgg.fast.pooling import avg_pool2d_backward, avg_pool2d_forward
from minivgg.fast.winograd import prepare as winograd_prepare
from minivgg.fast.winograd import temporary_bytes as winograd_temporary_bytes
from minivgg.pool import max_pool2d_backward, max_pool2d_forward
from minivgg.relu import ReluCache, relu_backward


def winograd_tile(name: str) -> int | None:
    """m of conv ``name``'s Winograd F(m x m, 3 x 3), or None where it runs on im2col.

    None for conv1_1: 3 input channels, so its im2col matrix has only 27 rows, cheaper than any
    transform. 2 for conv5_*: their maps are 16 times smaller than the image, and F(4x4)'s 4x
    fewer tiles make its GEMMs too thin (conv5_1 at a 256 x 256 input: 15 ms with F(4x4), 8 ms
    with F(2x2)). 4 elsewhere: 2.25 multiplies per output and weight, against F(2x2)'s 4.
    """
    layer_index(name)
    if name == "conv1_1":
        return None
    return 2 if name.startswith("conv5") else 4


def conv_route(name: str, conv: str) -> int | None:
    """The Winograd tile conv ``name`` runs with under the ``conv`` setting, or None for tiled im2col."""
    return winograd_tile(name) if conv == "winograd" else None


def conv_workspace_bytes(name: str, cin: int, cout: int, h: int, w: int, itemsize: int, device: str,
                         conv: str = "winograd", backward: bool = False) -> int:
    """Bytes conv ``name`` allocates besides its output, forward or backward, on an h x w map (batch 1).

    Asks the kernel that runs the layer: Winograd's band temporaries (the backward is
    the same transform from C_out to C_in channels) or tiled im2col's tile, its
    padded rows and, on the transposed-conv route, the flipped weights. The memory model
    (``minivgg.memory``) calls this instead of re-deriving tile sizes.
    """
    m = conv_route(name, conv)
    if m is not None:
        cin, cout = (cout, cin) if backward else (cin, cout)
        return winograd_temporary_bytes(cin, cout, h, w, m, itemsize, device)
    return im2col_workspace_bytes(cin, cout, h, w, itemsize, device, backward=backward)


def pooled_workspace_bytes(name: str, cin: int, cout: int, h: int, w: int, itemsize: int, device: str,
                           conv: str = "winograd", backward: bool = False) -> int:
    """The part of ``conv_workspace_bytes`` that comes from an ``ArrayPool``'s one work buffer (the
    tiles and bands; not the transposed route's flipped weights, which are plain memory)."""
    total = conv_workspace_bytes(name, cin, cout, h, w, itemsize, device, conv, backward)
    if backward and conv_route(name, conv) is None and uses_transposed_conv(cin, cout, 3, 3, 1, 1):
        total -= cin * cout * 9 * itemsize
    return total


class FastVGGCache(NamedTuple):
    """Per-layer caches of the layers run (conv: (Conv2dCache, ReluCache); pool: its cache)."""

    layers: tuple
    depth: int  # number of layers run: index of the deepest tap + 1


class FastVGG19:
    """The fast engine behind ``minivgg.VGG19(..., engine="fast")``; the weights are the VGG19's own.

    params: {name: (w, b)} already on the device and in the network's dtype.
    conv: "winograd" (default) or "im2col". lean: keep bit masks instead of the
    activations that are not taps (``minivgg.fast.lean``); may be switched at any
    time between a forward and the next.
    """

    def __init__(self, params, pooling: str, device: str, conv: str = "winograd", lean: bool = False):
        if conv not in ("winograd", "im2col"):
            raise ValueError(f"conv must be 'winograd' or 'im2col', not {conv!r}")
        self.params = params
        self.pooling = pooling
        self.device = device
        self.conv = conv
        self.lean = lean
        self.channels_last = conv == "winograd" and device == "cpu"   # memory order: module docstring
        self._winograd = {}                # layer name -> WinogradWeights (or None), made on first use

    def winograd_weights(self, name: str):
        """The transformed kernels of conv ``name`` (made once, then kept), or None where im2col runs it."""
        if name not in self._winograd:
            m = conv_route(name, self.conv)
            self._winograd[name] = None if m is None else winograd_prepare(self.params[name][0], m)
        return self._winograd[name]

    def evaluator(self, objective):
        """A ``FastEvaluator`` for ``objective`` (an ``Objective`` built on this network)."""
        return FastEvaluator(objective)

    def forward(self, x, taps=("conv4_2",), pool=None):
        """Run the layers up to the deepest tap; as ``minivgg.VGG19.forward``.

        x: (N, 3, H, W) in the network's dtype -> (feats {tap: (N, C, h, w)}, cache).
        The features are the network's own arrays: treat them as read-only (on
        the CPU their memory is channels-last). ``pool``: an ``ArrayPool`` the
        activations come from (then they live until the pool's ``recycle``), or None.
        """
        taps = tuple(taps)
        depth = tap_depth(x.shape, taps)
        if self.lean:
            pool = None                    # a pool would keep every activation the lean mode lets go
        out = x
        feats, caches = {}, []
        for name in LAYER_NAMES[:depth]:
            if name.startswith("conv"):
                w, b = self.params[name]
                # bias and ReLU fused into the conv's tiles; out is the ReLU's mask too
                out, conv_cache = conv2d_forward(out, w, b, stride=1, pad=1, relu=True,
                                                 winograd=self.winograd_weights(name),
                                                 channels_last=self.channels_last, pool=pool)
                if not self.lean:
                    caches.append((conv_cache, ReluCache(out)))
                else:                      # the input's memory goes with the next layer; bits for the mask
                    relu_cache = ReluCache(out) if name in taps else pack_relu(out)
                    caches.append((conv_cache.without_input(), relu_cache))
            elif self.pooling == "avg":
                out, pool_cache = avg_pool2d_forward(out, 2, 2, pool=pool)
                caches.append(pool_cache)
            else:
                out, pool_cache = max_pool2d_forward(out, 2, 2)
                caches.append(pool_cache)
            if name in taps:
                feats[name] = out
        return feats, FastVGGCache(tuple(caches), depth)

    def backward(self, grads, cache: FastVGGCache, pool=None):
        """dx for the loss whose gradient at tap t is ``grads[t]``; as ``minivgg.VGG19.backward``.

        A ``grads[t]`` may also be a function of no arguments that returns it:
        it is called when the walk reaches t, so that gradient only exists from
        then on (the fast objective passes its style gradients so: at 512 x 512
        that keeps conv1_1's and conv2_1's, 100 MB, out of the walk's peak).
        grads are not modified; gradients the walk made itself are updated in
        place (``owned``), which saves a full-size temporary per ReLU and per
        tap. ``pool``: the tiles come from its work buffer.
        """
        for name in grads:
            if layer_index(name) >= cache.depth:
                raise ValueError(f"no forward ran as deep as {name!r}")
        dout, owned = None, False          # owned: dout is ours to overwrite (not one of grads)
        for index in range(cache.depth - 1, -1, -1):
            name = LAYER_NAMES[index]
            if name in grads:
                dout, owned = _add_tap_gradient(dout, owned, grads[name])
            if dout is None:
                continue
            layer_cache = cache.layers[index]
            if name.startswith("conv"):
                conv_cache, relu_cache = layer_cache
                relu_back = packed_relu_backward if isinstance(relu_cache, PackedReluCache) else relu_backward
                dout = relu_back(dout, relu_cache, out=dout if owned else None)
                dout, _, _ = conv2d_backward(dout, conv_cache, pool=pool)
            elif self.pooling == "avg":
                dout = avg_pool2d_backward(dout, layer_cache, pool=pool)
            else:
                dout = max_pool2d_backward(dout, layer_cache)
            owned = True
        if dout is None:
            raise ValueError("backward needs a gradient for at least one tap")
        return dout


def _add_tap_gradient(dout, owned: bool, g):
    """(dout + g, owned) with the fewest copies: g may be a function making a fresh array (ours)."""
    fresh = callable(g)
    if fresh:
        g = g()                                    # made now: ours to overwrite
    if dout is None:
        return g, fresh
    if owned:
        dout += g
        return dout, True
    if fresh:
        g += dout
        return g, True
    return dout + g, True
