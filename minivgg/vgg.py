"""VGG-19 without its classifier: 16 convolutions and 5 poolings (PAPER.md), differentiable in its input.

``VGG19`` is what callers build: it checks and places the weights, then hands
forward and backward to one of two engines, chosen here and nowhere else:

* ``engine="reference"``: ``minivgg.network.ReferenceVGG19``, the plain loop
  of layer pairs the notebooks step through (the specification);
* ``engine="fast"`` (the default): ``minivgg.fast.network.FastVGG19``, the same
  function with its transformations (``minivgg.fast.transforms.Transforms``:
  Winograd, channels-last, fused bias and ReLU, an array pool, separable
  pooling, in-place gradients, the lean mode), each one switchable and tested
  against the reference (``tests/test_fast_engine.py``).

Both engines import from the reference tier (``minivgg.network``'s walks and
cache); neither imports this module.

Shape legend: as ``minivgg.network`` (x: (N, 3, H, W); conv{b}_*: (N, C_b, H / 2^(b-1), W / 2^(b-1))).
"""
from __future__ import annotations

from minivgg.architecture import CONV_NAMES, CONV_SHAPES
from minivgg.backend import to_device
from minivgg.fast.network import FastVGG19
from minivgg.fast.transforms import Transforms
from minivgg.network import ReferenceVGG19

ENGINES = ("fast", "reference")


class VGG19:
    """The convolutional part of VGG-19, on the engine of the caller's choice.

    params: {"conv1_1": (w (64, 3, 3, 3), b (64,)), ...} for all 16 convs (OIHW).
    pooling: "avg" (the paper's choice) or "max". dtype: "float32" (default) or
    "float64". device: "cpu" (NumPy) or "gpu" (CuPy); the weights are moved once.
    engine: "fast" (default) or "reference" (module docstring). The fast engine's
    settings: transforms (a ``Transforms``; default: ``Transforms.default(device)``,
    all on on the CPU), or the shorthands conv ("winograd" or "im2col": the
    convolution route) and lean (the memory-lean mode: True, False, or None for
    the route's own), applied on top of it (``Transforms.with_route``).
    """

    def __init__(self, params, pooling: str = "avg", dtype: str = "float32", device: str = "cpu",
                 engine: str = "fast", conv: str | None = None, lean: bool | None = None,
                 transforms: Transforms | None = None):
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', not {pooling!r}")
        if str(dtype) not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be 'fast' or 'reference', not {engine!r}")
        if engine == "reference" and (conv is not None or lean or transforms is not None):
            raise ValueError("conv, lean and transforms are the fast engine's settings; the reference "
                             "engine always unrolls with im2col and keeps every activation")
        self.pooling, self.dtype, self.device, self.engine = pooling, str(dtype), device, engine
        self.params = _placed_params(params, self.dtype, device)
        if engine == "reference":
            self.fast, self.net = None, ReferenceVGG19(self.params, pooling)
        else:
            transforms = (transforms or Transforms.default(device)).with_route(conv, lean)
            self.fast = self.net = FastVGG19(self.params, pooling, device, transforms)

    def forward(self, x, taps=("conv4_2",)):
        """Run the layers up to the deepest tap.

        x: (N, 3, H, W) BGR mean-subtracted -> (feats {tap: (N, C, h, w)}, cache).
        The returned features are the network's own arrays: treat them as read-only.
        """
        return self.net.forward(x.astype(self.dtype, copy=False), taps)

    def backward(self, grads, cache):
        """dx for the loss whose gradient at tap t is ``grads[t]`` (same shape as feats[t]); grads not modified."""
        return self.net.backward(grads, cache)


def _placed_params(params, dtype: str, device: str) -> dict:
    """{name: (w, b)} of the 16 convs on ``device`` in ``dtype``; refuses missing or mis-shaped layers."""
    missing = [name for name in CONV_NAMES if name not in params]
    if missing:
        raise ValueError(f"params lack the layers {', '.join(missing)}")
    placed = {}
    for name in CONV_NAMES:
        w, b = params[name]
        if tuple(w.shape) != CONV_SHAPES[name] or tuple(b.shape) != (CONV_SHAPES[name][0],):
            raise ValueError(f"{name}: expected weight {CONV_SHAPES[name]} and bias "
                             f"({CONV_SHAPES[name][0]},), got {tuple(w.shape)} and {tuple(b.shape)}")
        # copy=False: weights already of this dtype and device are shared, not duplicated
        # (80 MB in float32); the network never writes to them.
        placed[name] = (to_device(w, device).astype(dtype, copy=False),
                        to_device(b, device).astype(dtype, copy=False))
    return placed
