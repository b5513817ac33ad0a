"""VGG-19 without its classifier: 16 convolutions and 5 poolings (PAPER.md).

Shape legend
    N batch, H, W image size; layer ``conv{b}_{k}`` / ``pool{b}`` of block b:
    conv{b}_*: (N, C_b, H / 2^(b-1), W / 2^(b-1))   pool{b}: (N, C_b, H / 2^b, W / 2^b)
    with C = 64, 128, 256, 512, 512 for blocks 1..5 and every "/" a floor.
    x, dx: (N, 3, H, W), BGR, mean-subtracted, 0..255 scale (``minivgg.image``).

Every conv is 3x3, stride 1, padding 1, and is followed by ReLU; "conv4_2"
names the rectified output. The network is only ever differentiated with
respect to its input: ``backward`` returns dx and computes no weight gradient.

Convolutions run through Winograd's algorithm (``minivgg.winograd``; the
kernels are transformed once, on a layer's first use; ``winograd_tile`` says
which tile each layer uses) except conv1_1, whose 3 input channels suit im2col
better; ``conv="im2col"`` runs every layer through im2col (``minivgg.conv``),
the plainer and slower route to the same numbers.

Memory order. Every array here has the logical shape (N, C, H, W), but on the
CPU with Winograd the activations (and so the gradients of the walk down) are
stored channels-last, (N, H, W, C) in memory (``minivgg.backend.channels_last``):
conv1_1 writes its output that way and every later layer keeps its input's
order. Winograd's tile copies then move whole channel vectors (its docstring
has the numbers). Indexing, slicing and NumPy's functions see the same values
either way; only ``reshape`` of such an array copies. The im2col route keeps
C order, which its unrolling copies suit, and so does the GPU: CuPy's
elementwise kernels walk an array in its logical order, so every ReLU mask,
sum and pooling over channels-last memory reads with a stride of C floats
(measured on an H200: evaluations twice as slow, 0.105 s instead of 0.05 s at
1024 x 1024).
"""
from __future__ import annotations

from typing import NamedTuple

from minivgg.backend import to_device
from minivgg.conv import conv2d_backward, conv2d_forward
from minivgg.pool import (avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward,
                          max_pool2d_forward)
from minivgg.relu import ReluCache, relu_backward
from minivgg.winograd import prepare as winograd_prepare

# The 21 layers in order: (name, input channels, output channels); pools keep channels.
LAYERS = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64), ("pool1", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128), ("pool2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("pool3", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("pool4", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512),
    ("pool5", 512, 512),
)
LAYER_NAMES = tuple(name for name, _, _ in LAYERS)
CONV_NAMES = tuple(name for name in LAYER_NAMES if name.startswith("conv"))
CONV_SHAPES = {name: (cout, cin, 3, 3) for name, cin, cout in LAYERS if name.startswith("conv")}

# BGR means of the Caffe VGG training set, subtracted from 0..255 pixels.
MEAN_BGR = (103.939, 116.779, 123.68)


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


def layer_index(name: str) -> int:
    """Position of ``name`` in ``LAYER_NAMES``; a clear error for unknown names."""
    try:
        return LAYER_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown VGG-19 layer {name!r}; layers are {', '.join(LAYER_NAMES)}") from None


def min_input_size(name: str) -> int:
    """Smallest height/width an input may have so that layer ``name`` is not empty.

    Each pool before (and including) the layer halves the size with floor, so a
    layer after k pools needs 2^k pixels.
    """
    pools = sum(1 for n in LAYER_NAMES[:layer_index(name) + 1] if n.startswith("pool"))
    return 2 ** pools


class VGGCache(NamedTuple):
    """Per-layer caches of the layers run (conv: (Conv2dCache, ReluCache); pool: its cache)."""

    layers: tuple
    depth: int  # number of layers run: index of the deepest tap + 1


class VGG19:
    """The convolutional part of VGG-19 as a table of layers, differentiable in its input.

    params: {"conv1_1": (w (64, 3, 3, 3), b (64,)), ...} for all 16 convs (OIHW).
    pooling: "avg" (the paper's choice) or "max". dtype: "float32" (default) or
    "float64". device: "cpu" (NumPy) or "gpu" (CuPy); the weights are moved once.
    conv: "winograd" (default) or "im2col", how the convolutions are computed.
    """

    def __init__(self, params, pooling: str = "avg", dtype: str = "float32", device: str = "cpu",
                 conv: str = "winograd"):
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', not {pooling!r}")
        if conv not in ("winograd", "im2col"):
            raise ValueError(f"conv must be 'winograd' or 'im2col', not {conv!r}")
        if str(dtype) not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        missing = [name for name in CONV_NAMES if name not in params]
        if missing:
            raise ValueError(f"params lack the layers {', '.join(missing)}")
        self.pooling = pooling
        self.dtype = str(dtype)
        self.device = device
        self.conv = conv
        self.channels_last = conv == "winograd" and device == "cpu"   # memory order: module docstring
        self.params = {}
        self._winograd = {}                # layer name -> WinogradWeights (or None), made on first use
        for name in CONV_NAMES:
            w, b = params[name]
            if tuple(w.shape) != CONV_SHAPES[name] or tuple(b.shape) != (CONV_SHAPES[name][0],):
                raise ValueError(f"{name}: expected weight {CONV_SHAPES[name]} and bias "
                                 f"({CONV_SHAPES[name][0]},), got {tuple(w.shape)} and {tuple(b.shape)}")
            # copy=False: weights already of this dtype and device are shared, not duplicated
            # (80 MB in float32); the network never writes to them.
            self.params[name] = (to_device(w, device).astype(self.dtype, copy=False),
                                 to_device(b, device).astype(self.dtype, copy=False))
        self._pool_forward = avg_pool2d_forward if pooling == "avg" else max_pool2d_forward
        self._pool_backward = avg_pool2d_backward if pooling == "avg" else max_pool2d_backward

    def winograd_weights(self, name: str):
        """The transformed kernels of conv ``name`` (made once, then kept), or None where im2col runs it."""
        if name not in self._winograd:
            m = winograd_tile(name) if self.conv == "winograd" else None
            self._winograd[name] = None if m is None else winograd_prepare(self.params[name][0], m)
        return self._winograd[name]

    def forward(self, x, taps=("conv4_2",)):
        """Run the layers up to the deepest tap.

        x: (N, 3, H, W) BGR mean-subtracted -> (feats {tap: (N, C, h, w)}, cache).
        The returned features are the network's own arrays: treat them as read-only
        (on the CPU their memory is channels-last: module docstring).
        """
        taps = tuple(taps)
        if not taps:
            raise ValueError("forward needs at least one tap")
        depth = max(layer_index(t) for t in taps) + 1
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) image batch, got shape {tuple(x.shape)}")
        need = min_input_size(LAYER_NAMES[depth - 1])
        if min(x.shape[2:]) < need:
            raise ValueError(f"a {x.shape[2]}x{x.shape[3]} image is too small for "
                             f"{LAYER_NAMES[depth - 1]}: it needs at least {need}x{need} pixels")
        out = x.astype(self.dtype, copy=False)
        feats, caches = {}, []
        for name in LAYER_NAMES[:depth]:
            if name.startswith("conv"):
                w, b = self.params[name]
                # bias and ReLU fused into the conv's tiles; out is the ReLU's mask too
                out, conv_cache = conv2d_forward(out, w, b, stride=1, pad=1, relu=True,
                                                 winograd=self.winograd_weights(name),
                                                 channels_last=self.channels_last)
                caches.append((conv_cache, ReluCache(out)))
            else:
                out, pool_cache = self._pool_forward(out, 2, 2)
                caches.append(pool_cache)
            if name in taps:
                feats[name] = out
        return feats, VGGCache(tuple(caches), depth)

    def backward(self, grads, cache: VGGCache):
        """dx for the loss whose gradient at tap t is ``grads[t]`` (same shape as feats[t]).

        Walks down once from the deepest tap: the gradient arriving at a tap is
        added to the one coming from the layers above it. A ``grads[t]`` may
        also be a function of no arguments that returns it: it is called when
        the walk reaches t, so that gradient only exists from then on (the
        objective passes its style gradients so: at 512 x 512 that keeps
        conv1_1's and conv2_1's, 100 MB, out of the walk's peak). grads are not
        modified; gradients the walk made itself are updated in place
        (``owned``), which saves a full-size temporary per ReLU and per tap.
        """
        for name in grads:
            if layer_index(name) >= cache.depth:
                raise ValueError(f"no forward ran as deep as {name!r}")
        dout, owned = None, False          # owned: dout is ours to overwrite (not one of grads)
        for index in range(cache.depth - 1, -1, -1):
            name = LAYER_NAMES[index]
            if name in grads:
                g, fresh = grads[name], False
                if callable(g):
                    g, fresh = g(), True                   # made now: ours to overwrite
                if dout is None:
                    dout, owned = g, fresh
                elif owned:
                    dout += g
                elif fresh:
                    g += dout
                    dout, owned = g, True
                else:
                    dout, owned = dout + g, True
            if dout is None:
                continue
            layer_cache = cache.layers[index]
            if name.startswith("conv"):
                conv_cache, relu_cache = layer_cache
                dout = relu_backward(dout, relu_cache, out=dout if owned else None)
                dout, _, _ = conv2d_backward(dout, conv_cache)
            else:
                dout = self._pool_backward(dout, layer_cache)
            owned = True
        if dout is None:
            raise ValueError("backward needs a gradient for at least one tap")
        return dout
