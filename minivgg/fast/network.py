"""The fast engine's VGG-19: the reference walk of ``minivgg.network`` with its transformations applied.

Same function as the reference network (``tests/test_fast_engine.py`` and
``tests/test_fast_transforms.py`` hold them together in float64, with every
combination of switches); it walks the reference's own loops
(``minivgg.network.forward_walk``, ``backward_walk``) and keeps the reference's
cache (``VGGCache``). What changes is how each step runs, one switch of
``minivgg.fast.transforms.Transforms`` each:

* ``winograd``: 3x3 convolutions through Winograd's minimal filtering
  (``minivgg.fast.winograd``; kernels transformed once, on a layer's first use;
  ``winograd_tile`` says which tile each layer uses) except conv1_1, whose 3
  input channels suit tiled im2col (``minivgg.fast.conv``) better; off: every
  layer through tiled im2col;
* ``separable_winograd``: Winograd's input transform one axis at a time, the
  rows' step straight from the image (``minivgg.fast.winograd.conv3x3``'s ``separable``);
* ``small_products``: Winograd's products cut into pieces OpenBLAS multiplies
  without packing (``minivgg.fast.small_products``);
* ``fused_relu``: bias and ReLU fused into each convolution's output copy (no
  ``relu_forward`` pass: the conv's output *is* the ReLU's, and its cache is
  that output); off: ``minivgg.relu.relu_forward`` after the conv;
* ``channels_last``: activations stored channels-last (``minivgg.fast.layout``);
* ``separable_pool``: average pooling summed separably (``minivgg.fast.pooling``);
  off: ``minivgg.pool``;
* ``array_pool``: activations and work buffers from the ``ArrayPool``
  (``minivgg.fast.arrays``) the caller passes (the evaluator passes none when off);
* ``inplace``: in the backward, gradients the walk owns are updated in place;
* ``deferred``: a gradient given as a function is made only when the walk
  reaches its tap (the evaluator gives functions only when on);
* ``threads``: on the CPU, each Winograd convolution's bands (and conv1_1's im2col tiles) shared among
  worker threads, NumPy's BLAS on one thread for the evaluation
  (``minivgg.fast.threads``; ``workers`` opens that setting);
* ``lean``: the memory-lean mode (``minivgg.fast.lean``): of the layers that
  are not taps only the ReLU masks are kept, as bits.

Each one's measured gain: ``python -m minivgg.bench --sizes 256 512 --ablate``.

Memory order. Every array has the logical shape (N, C, H, W). With
``channels_last`` the activations (and so the gradients of the walk down) are
stored (N, H, W, C) in memory: conv1_1 writes its output that way and every
later layer keeps its input's order. The default route turns it on only on the
CPU (``Transforms.default``): CuPy's elementwise kernels walk an array in its
logical order, so on the GPU every ReLU mask, sum and pooling over
channels-last memory reads with a stride of C floats.
"""
from __future__ import annotations

from minivgg import pool as reference_pool
from minivgg.architecture import layer_index
from minivgg.backend import get_array_module
from minivgg.fast.arrays import release
from minivgg.fast import conv_backward as fast_conv_backward
from minivgg.fast import winograd as fast_winograd
from minivgg.fast.conv import conv2d_forward, uses_transposed_conv
from minivgg.fast.conv_backward import conv2d_backward, transposed_weights
from minivgg.fast.conv import workspace_bytes as im2col_workspace_bytes
from minivgg.fast.lean import PackedReluCache, pack_relu, packed_relu_backward
from minivgg.fast.objective import FastEvaluator
from minivgg.fast.pooling import avg_pool2d_backward, avg_pool2d_forward
from minivgg.fast.threads import blas_thread_count, one_blas_thread, run_split
from minivgg.fast.transforms import Transforms
from minivgg.fast.winograd import prepare as winograd_prepare
from minivgg.fast.winograd import temporary_bytes as winograd_temporary_bytes
from minivgg.network import VGGCache, backward_walk, forward_walk
from minivgg.relu import ReluCache, relu_backward, relu_forward


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


def kept_weights_bytes(name: str, cin: int, cout: int, itemsize: int, conv: str = "winograd") -> int:
    """Bytes the fast network keeps for conv ``name`` besides its weights, once it has run (memory
    model): Winograd's transformed kernels (``minivgg.fast.winograd.weights_bytes``), or on the
    im2col route the transposed convolution's flipped matrix (``minivgg.fast.conv_backward.transposed_weights``),
    or nothing (col2im's layers: conv1_1)."""
    m = conv_route(name, conv)
    if m is not None:
        return fast_winograd.weights_bytes(cout, cin, m, itemsize)    # the kernels' own reports
    if uses_transposed_conv(cin, cout, 3, 3, 1, 1):
        return fast_conv_backward.transposed_weights_bytes(cin, cout, 3, 3, itemsize)
    return 0


def conv_workspace_bytes(name: str, cin: int, cout: int, h: int, w: int, itemsize: int, device: str,
                         conv: str = "winograd", backward: bool = False, workers: int = 1,
                         separable: bool = False) -> int:
    """Bytes conv ``name`` allocates besides its output, forward or backward, on an h x w map (batch 1).

    Asks the kernel that runs the layer: Winograd's band temporaries, one set per band
    worker (the backward is the same transform from C_out to C_in channels) or tiled im2col's tile and
    its padded rows, one set per worker (the transposed route's flipped weights are kept:
    ``kept_weights_bytes``), all of it from an ``ArrayPool``'s work buffer when there is one. The memory model
    (``minivgg.memory``) calls this instead of re-deriving tile sizes. ``separable``: Winograd's input
    transform one axis at a time (``Transforms.separable_winograd``), whose transformed rows take more room.
    """
    m = conv_route(name, conv)
    if m is not None:
        cin, cout = (cout, cin) if backward else (cin, cout)
        return winograd_temporary_bytes(cin, cout, h, w, m, itemsize, device, workers, separable)
    return im2col_workspace_bytes(cin, cout, h, w, itemsize, device, backward=backward, workers=workers,
                                  transposed_given=True)


class FastVGG19:
    """The fast engine behind ``minivgg.VGG19(..., engine="fast")``; the weights are the VGG19's own.

    params: {name: (w, b)} already on the device and in the network's dtype.
    transforms: which transformations run (``Transforms``; default: ``Transforms.default(device)``).
    """

    def __init__(self, params, pooling: str, device: str, transforms: Transforms | None = None):
        self.params = params
        self.pooling = pooling
        self.device = device
        self.transforms = Transforms.default(device) if transforms is None else transforms
        self._winograd = {}                # layer name -> WinogradWeights (or None), made on first use
        self._transposed = {}              # layer name -> im2col's transposed-conv matrix, made on first use

    @property
    def conv(self) -> str:
        """The convolution route: "winograd" or "im2col" (``Transforms.winograd``)."""
        return "winograd" if self.transforms.winograd else "im2col"

    @property
    def lean(self) -> bool:
        """Whether the memory-lean mode is on (``Transforms.lean``)."""
        return self.transforms.lean

    @property
    def dtype(self):
        """The dtype of the weights, which is the network's."""
        return self.params["conv1_1"][0].dtype

    def with_transforms(self, transforms: Transforms) -> "FastVGG19":
        """This network under other switches: the same weights, and the kernels it has transformed
        for Winograd shared, not redone (they depend on the weights and the tile alone)."""
        other = FastVGG19(self.params, self.pooling, self.device, transforms)
        other._winograd, other._transposed = self._winograd, self._transposed
        return other

    def winograd_weights(self, name: str):
        """The transformed kernels of conv ``name`` (made once, then kept), or None where im2col runs it."""
        if name not in self._winograd:
            m = conv_route(name, self.conv)
            self._winograd[name] = None if m is None else winograd_prepare(self.params[name][0], m)
        return self._winograd[name]

    def transposed_weights(self, name: str):
        """The flipped weight matrix of conv ``name``'s transposed convolution (``minivgg.fast.conv_backward``),
        made once, then kept, where im2col runs the layer by that route; else None."""
        if name not in self._transposed:
            w = self.params[name][0]
            o, c = w.shape[:2]
            im2col = self.winograd_weights(name) is None and uses_transposed_conv(c, o, 3, 3, 1, 1)
            self._transposed[name] = transposed_weights(w) if im2col else None
        return self._transposed[name]

    @property
    def band_workers(self) -> int:
        """Threads the Winograd bands (and conv1_1's im2col tiles) would go to in an evaluation now
        (``workers``; the memory model's)."""
        return blas_thread_count() if self._threaded else 1

    def workers(self):
        """A context manager: within it NumPy's BLAS has one thread and the Winograd bands go to the
        number of workers it yields (``minivgg.fast.threads``), and so do the im2col tiles of a conv
        Winograd does not take (conv1_1); 1, and no change, with ``threads``
        off or on the GPU. ``forward`` and ``backward`` enter it; the evaluator holds it around a
        whole evaluation, so the losses between them run on one BLAS thread too. Without Winograd
        there are no bands to share: 1, and the BLAS keeps its threads for im2col's products."""
        return one_blas_thread(self._threaded)

    @property
    def _threaded(self) -> bool:
        """Bands on workers: ``threads`` on the CPU, with Winograd (im2col's tiles keep the BLAS's threads)."""
        return self.transforms.threads and self.transforms.winograd and self.device == "cpu"

    def evaluator(self, targets):
        """A ``FastEvaluator`` of the objective whose targets are ``targets`` (``minivgg.evaluation``)."""
        return FastEvaluator(self, targets)

    def forward(self, x, taps=("conv4_2",), pool=None):
        """Run the layers up to the deepest tap; as ``minivgg.network.ReferenceVGG19.forward``.

        x: (N, 3, H, W) in the network's dtype -> (feats {tap: (N, C, h, w)}, cache).
        The features are the network's own arrays: treat them as read-only (with
        ``channels_last`` their memory is (N, H, W, C)). ``pool``: an ``ArrayPool`` the
        activations come from (then they live until the pool's ``recycle``), or None.
        """
        taps = tuple(taps)
        with self.workers() as workers:
            return self._forward(x, taps, pool, workers)

    def _forward(self, x, taps: tuple, pool, workers: int):
        if not self.transforms.lean:
            return forward_walk(x, taps, lambda name, out: self._layer_forward(name, out, taps, pool, workers))
        previous = None                    # the layer whose output is the next one's input

        def step(name, inp):
            nonlocal previous
            out, cache = self._layer_forward(name, inp, taps, pool, workers)
            if previous is not None and previous not in taps:
                release(pool, inp)         # lean: nothing keeps a non-tap activation once read
            previous = name
            return out, cache
        feats, cache = forward_walk(x, taps, step)
        if pool is not None:
            pool.trim()                    # the walk down's gradients come in other sizes: let them go
        return feats, cache

    def _layer_forward(self, name: str, x, taps: tuple, pool, workers: int = 1):
        """One layer, transformed as ``self.transforms`` says: -> (out, cache) as the reference's."""
        t = self.transforms
        if name.startswith("conv"):
            w, b = self.params[name]
            out, conv_cache = conv2d_forward(x, w, b, stride=1, pad=1, relu=t.fused_relu,
                                             winograd=self.winograd_weights(name),
                                             channels_last=t.channels_last, pool=pool, workers=workers,
                                             separable=t.separable_winograd, small_products=t.small_products)
            if t.fused_relu:
                relu_cache = ReluCache(out)            # the conv's output is the ReLU's, and its mask
            else:
                conv_out = out
                out, relu_cache = relu_forward(conv_out)
                release(pool, conv_out)                # read once: nothing keeps it
            if t.lean:                     # the input's memory goes with the next layer; bits for the mask
                conv_cache = conv_cache.without_input()
                relu_cache = relu_cache if name in taps else pack_relu(out, workers=workers)
            return out, (conv_cache, relu_cache)
        if self.pooling == "max":
            return reference_pool.max_pool2d_forward(x, 2, 2)
        if t.separable_pool:
            return avg_pool2d_forward(x, 2, 2, pool=pool, workers=workers)
        return reference_pool.avg_pool2d_forward(x, 2, 2)

    def backward(self, grads, cache: VGGCache, pool=None):
        """dx for the loss whose gradient at tap t is ``grads[t]``; as ``ReferenceVGG19.backward``.

        A ``grads[t]`` may also be a function ``make(into=None)`` that returns a fresh
        array: it is called when the walk reaches t, so that gradient only exists
        from then on (the evaluator passes its style gradients so, with ``deferred``:
        at 512 x 512 that keeps conv1_1's and conv2_1's out of the walk's peak); with
        ``inplace``, where the walk's gradient arriving at t is its own, it is called
        with ``into=`` that gradient and adds to it in place instead (no full-size array
        made at all). grads' arrays are not modified; with ``inplace``, gradients the
        walk made itself (or a function made) are updated in place, which saves a
        full-size temporary per ReLU and per tap. ``pool``: the tiles come from its work buffer.
        """
        inplace = self.transforms.inplace
        given = [g for g in grads.values() if not callable(g)]     # the caller's: read, never written

        def ours(a) -> bool:
            return all(a is not g for g in given)

        def owned(a) -> bool:                                      # ours to overwrite
            return inplace and ours(a)

        def join(dout, g):                                         # dout + g, in place where one is ours
            if callable(g):                                        # a gradient not made yet
                if owned(dout):
                    return g(into=dout)
                g = g()
            if owned(dout):
                dout += g
                return dout
            if owned(g):
                g += dout
                return g
            return dout + g

        def layer_backward(name, dout, layer_cache):
            dout = dout() if callable(dout) else dout              # the deepest tap's, made now
            dx = self._layer_backward(name, dout, layer_cache, owned(dout), pool, workers)
            if ours(dout):
                release(pool, dout)                                # the walk's own, and read
            return dx

        with self.workers() as workers:
            dx = backward_walk(grads, cache, layer_backward, join)
        return dx.copy() if pool is not None and pool.owns(dx) else dx

    def _layer_backward(self, name: str, dout, cache, owned: bool, pool, workers: int = 1):
        """dx of one layer; ``owned``: dout may be overwritten (it is the walk's own)."""
        if name.startswith("conv"):
            conv_cache, relu_cache = cache
            if isinstance(relu_cache, PackedReluCache):
                dout = packed_relu_backward(dout, relu_cache, out=dout if owned else None, workers=workers)
            else:
                dout = _relu_backward(dout, relu_cache, dout if owned else None, workers)
            return conv2d_backward(dout, conv_cache, pool=pool, workers=workers,
                                   separable=self.transforms.separable_winograd,
                                   small_products=self.transforms.small_products,
                                   transposed=self.transposed_weights(name))[0]
        if self.pooling == "max":
            return reference_pool.max_pool2d_backward(dout, cache)
        if self.transforms.separable_pool:
            return avg_pool2d_backward(dout, cache, pool=pool, workers=workers)
        return reference_pool.avg_pool2d_backward(dout, cache)


def _relu_backward(dout, cache: ReluCache, out, workers: int):
    """``minivgg.relu.relu_backward``, its rows shared among ``workers`` threads (one call each, on
    its own rows of dout, the mask and out: views, so each writes its part of the one result)."""
    if workers == 1:
        return relu_backward(dout, cache, out=out)
    out = get_array_module(dout).empty_like(dout) if out is None else out     # dout's memory order
    run_split(lambda lo, hi: relu_backward(dout[:, :, lo:hi], ReluCache(cache.out[:, :, lo:hi]),
                                           out=out[:, :, lo:hi]), dout.shape[2], workers)
    return out
