"""How much memory a style-transfer run needs, and whether this machine has it.

    estimate_peak_bytes(height, width, ...)  -> predicted peak RSS of a run (bytes)
    estimate(height, width, ...)             -> the same, term by term (MemoryEstimate)
    available_memory_bytes(device)           -> what the machine can still give (bytes, or None)
    refusal_message(needed, available, ...)  -> the one line a refusal prints (``NotEnoughMemory``)

The model walks the VGG-19 layer table (``minivgg.architecture.LAYERS``) at the given
image size and adds up the arrays the code keeps alive at its two high-water
marks. Shape legend: H, W image size; layer l's output (C_l, h_l, w_l) with
A_l = C_l * h_l * w_l elements; s = bytes per element of the network's dtype;
n = 3 * H * W pixels.

One evaluation (forward to the deepest layer, losses, backward to the pixels):

* **baseline**: the interpreter and its libraries (``INTERPRETER_BYTES``;
  ``SCIPY_BYTES`` more when the optimiser runs), all 16 convolutions' weights
  and biases (s * 20,024,384 bytes), the objective's targets (content features
  and, per style layer, what the style statistic's target keeps, as the statistic
  reports it: ``target_bytes`` of ``losses.statistics``; C_l^2 s for the Gram
  matrices, C_l s to a few C_l s for the means and spreads, the random features
  and their mean, (C_l + M^s_l) C_l s for sliced Wasserstein's sorted projections
  of the style, at the style's size), and the images (content, style, x).
* **activations** kept for backward: every layer's output up to the deepest
  tap, sum_l A_l * s (the conv's input *is* the layer below's output, the
  ReLU's mask *is* its output, average pooling keeps only a shape, max pooling
  one int8 per output; in lean mode a layer that is no tap keeps its mask's
  bits, ``minivgg.fast.lean.packed_bytes``). The objective's ``ArrayPool``
  keeps their memory between evaluations; it is all in use at the peak anyway.
* **gradients** the objective holds while the network runs backward: the
  content loss's gradient and difference (2 A_content s). The Gram loss's style
  gradients are made by the walk when it reaches their layer (``VGG19.backward``).
  Any other statistic (``style_loss``) runs its forward and backward at every
  style layer, in order, before the walk (``minivgg.evaluation.style_term``):
  each such step is a mark of its own, the gradients made so far held, plus the
  statistic's work arrays as it reports them (``workspace_bytes``: its caches,
  projections, argsort indices, sin(Z)...) and the new gradient (A_l s); all
  sum_l A_l s of them are then held through the walk, where the fast engine adds
  each to the upstream gradient in place.
* **transient**, the largest over the layers of the walk down: the upstream
  gradient (A_l s), the gradient it produces (A_{l-1} s) and the layer's
  work arrays as the kernel that runs it reports them. A convolution:
  ``minivgg.fast.network.conv_workspace_bytes`` (Winograd's band
  temporaries, or tiled im2col's tile and its padded rows),
  ``minivgg.conv.workspace_bytes`` for the reference
  engine's whole unrolled matrix. A pooling: ``minivgg.fast.pooling``'s
  ``workspace_bytes`` (the fast average pooling's block of row sums) or
  ``minivgg.pool.workspace_bytes`` (the reference average pooling's
  dout / k^2, max pooling's 0/1 weights). In lean mode a
  ReLU's unpacked mask too (``minivgg.fast.lean.workspace_bytes``). At a
  style layer also the moment its gradient is made: the upstream gradient
  and the new one (2 A_l s; the fast engine asks for it unmasked, so no mask
  array exists beside them). On the CPU the fast engine's tiles, bands and
  row sums share its pool's one work buffer
  (``minivgg.fast.arrays.ArrayPool``), which keeps the largest of them for
  good: every mark counts that largest one instead of its own layer's.
* **transformed weights** (the fast engine with ``conv="winograd"``, the
  default): each Winograd layer up to the deepest tap keeps U
  (``minivgg.fast.winograd.weights_bytes``: a*a*O*C elements, a = 6 for
  F(4x4), 4 for F(2x2); ``minivgg.fast.network.winograd_tile``; twice for the
  thin layers conv1_2 and conv2_1, whose forward keeps U^T as well), in the
  baseline: 188 MB for conv1_2 .. conv5_1 in float32. On the im2col route the
  transposed convolution's flipped weights instead, as many bytes as the
  weights (``minivgg.fast.network.kept_weights_bytes`` says which).

Construction of the objective runs two forward passes, one after the other
(the content pass's activations are freed before the style pass starts), so
its mark is baseline + the larger pass's activations + the widest layer's
forward work arrays. The peak is the larger of the two marks.

* **optimiser** (``optimizer="lbfgs"``): scipy's L-BFGS-B keeps ``maxcor``
  correction pairs (s_k, y_k) of float64 images, 2 * maxcor * n * 8 bytes, in
  a workspace of (2 maxcor + 5) n float64, plus about eight more float64 and
  four int32/float32 vectors of n (x, g, bounds, the scipy wrapper's copies,
  the engine/float64 conversions at the boundary): (2 maxcor + 13) * 8n + 16n.

Against measured peak RSS (``python -m minivgg.bench``, float32, paper
settings, one process per case, Winograd) the estimate was -10% at 256, -11% at
512 and -7% at 1024 (what the model leaves out, the fixed costs of libraries
and memory the allocator keeps after frees, matters most at small sizes); see
the bench's ``estimate_error`` column. With the other statistics (``--style-loss``;
their reports are held to what they allocate in ``tests/test_statistic_bytes.py``)
it was -5%, -4%, -5%, -3% at 256 and -6%, -6%, -4%, -1% at 512 for mean-std,
mmd-linear, mmd-rbf and sliced-wasserstein (-11% to -37% when it counted only the
Gram loss's needs).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy

from losses.statistics import style_statistic
from minivgg.architecture import CONV_SHAPES, PAPER_STYLE_LAYERS, layer_index, layer_outputs
from minivgg import pool as reference_pool
from minivgg.conv import workspace_bytes as reference_workspace_bytes
from minivgg.fast import lean as fast_lean
from minivgg.fast import pooling as fast_pooling
from minivgg.fast.network import conv_workspace_bytes, kept_weights_bytes
from minivgg.fast.transforms import Transforms

#: RSS of the interpreter with NumPy, h5py (the weights loader) and minivgg
#: imported (measured: 38 MB), with a little room for the caller's own modules.
INTERPRETER_BYTES = 40 * 2**20
#: What importing ``scipy.optimize`` adds to the RSS (measured: 45 MB).
SCIPY_BYTES = 45 * 2**20
#: Number of weights and biases of VGG-19's 16 convolutions.
WEIGHT_COUNT = sum(o * c * kh * kw + o for o, c, kh, kw in CONV_SHAPES.values())


class NotEnoughMemory(MemoryError, ValueError):
    """A run would need more memory than the machine has available (raised before it starts)."""


class MemoryEstimate(NamedTuple):
    """Predicted peak memory of a run, in bytes, term by term (see the module docstring)."""

    baseline: int      # interpreter, libraries, weights, targets, images
    activations: int   # layer outputs kept for backward (at the peak's phase)
    gradients: int     # per-tap gradients held by the objective (0 in construction)
    transient: int     # the largest short-lived arrays at the peak
    optimizer: int     # L-BFGS-B state (0 without optimiser)
    phase: str         # "evaluation" or "construction": where the peak is

    @property
    def total(self) -> int:
        return self.baseline + self.activations + self.gradients + self.transient + self.optimizer


def _conv_work(name: str, cin: int, cout: int, h: int, w: int, s: int, device: str, conv: str,
               engine: str, backward: bool, workers: int = 1, separable: bool = False) -> int:
    """Bytes of conv ``name``'s work arrays, as the engine that runs it reports them."""
    if engine == "reference":
        return reference_workspace_bytes(cin, cout, h, w, s)
    return conv_workspace_bytes(name, cin, cout, h, w, s, device, conv, backward, workers, separable)


def _pool_work(x_shape, s: int, pooling_kind: str, engine: str, backward: bool, workers: int = 1) -> int:
    """Bytes of a 2x2, stride-2 pooling's work arrays on an input of ``x_shape``, as its kernel reports
    them: the fast engine's average pooling (``minivgg.fast.pooling``) or ``minivgg.pool``'s."""
    if engine == "fast" and pooling_kind == "avg":
        return fast_pooling.workspace_bytes(x_shape, 2, 2, s, backward=backward, workers=workers)
    return reference_pool.workspace_bytes(pooling_kind, x_shape, 2, 2, s, backward=backward)


def _optimizer_bytes(pixels: int, maxcor: int, optimizer: str | None, itemsize: int, device: str,
                     iterations: int | None = None) -> int:
    """The optimiser's state for ``pixels`` unknowns (module docstring).

    "lbfgs" (scipy's L-BFGS-B, host memory, float64): (2 maxcor + 13) * 8n + 16n.
    "lbfgs-device" (``optim.lbfgs_device``, on the image's device, in its dtype): the
    2 (maxcor + 1) history vectors (one spare slot) and six more of n (x, g, the direction,
    the trial point and its gradient, the best point), plus a boolean mask of the held
    variables: (2 maxcor + 8) * itemsize * n + n. Its history starts as ``zeros``, whose pages
    NumPy leaves untouched until written, and each iteration writes one slot of S and of Y: a
    CPU run of k iterations holds min(k, maxcor + 1) of them (``iterations``; None: all).
    None: no optimiser. The GPU estimate counts only device memory.
    """
    if optimizer == "lbfgs":
        return (2 * maxcor + 13) * 8 * pixels + 16 * pixels if device == "cpu" else 0
    if optimizer == "lbfgs-device":
        slots = maxcor + 1
        if iterations is not None and device == "cpu":
            slots = min(slots, max(iterations, 1))
        return (2 * slots + 6) * itemsize * pixels + pixels
    return 0


def estimate(height: int, width: int, dtype: str = "float32", **kwargs) -> MemoryEstimate:
    """Predicted peak memory of a run at ``height`` x ``width``, term by term: the larger phase.

    Keyword arguments as ``estimate_phases``.
    """
    return max(estimate_phases(height, width, dtype, **kwargs), key=lambda e: e.total)


def estimate_phases(height: int, width: int, dtype: str = "float32", *, content_layer: str | None = "conv4_2",
                    style_layers=PAPER_STYLE_LAYERS, layers=None, pooling: str = "avg", style_size=None,
                    optimizer: str | None = "lbfgs", maxcor: int = 20, iterations: int | None = None,
                    device: str = "cpu", conv: str = "winograd",
                    engine: str = "fast", lean: bool = False,
                    style_loss: str = "gram", workers: int = 1,
                    separable: bool | None = None) -> tuple[MemoryEstimate, MemoryEstimate]:
    """(evaluation, construction): the two high-water marks of a run, term by term.

    content_layer: None for texture synthesis; style_layers: () for content
    reconstruction; layers: instead of those two, every layer the losses use
    when the caller does not say which is which (modelled conservatively: all
    as style layers, the largest also as the content layer); style_size:
    (Hs, Ws) of the style image (default: the content size, as the paper
    resizes it); optimizer: "lbfgs" (a run: scipy L-BFGS-B with ``maxcor``
    pairs; "lbfgs-device" the device optimiser, whose CPU history grows with the
    ``iterations`` of the run, None: as many as it can hold) or None
    (evaluations only, as the benchmark runs). device "gpu":
    the CuPy pool's bytes, without the interpreter or the optimiser (both live
    in host memory). engine: the network's engine ("fast" or "reference");
    conv: the fast engine's ``conv`` ("winograd" or "im2col"); lean: the fast
    engine's lean mode (``minivgg.fast.lean``: layers that are not taps keep
    one bit per activation, and the array pool lets the others go after the forward);
    style_loss: the style statistic
    (``losses.statistics``), whose own reports give its targets and its forward + backward's
    work arrays. workers: the fast engine's Winograd band workers (``FastVGG19.band_workers``;
    they split one band's bound among them, so 1 gives an upper bound). separable: the fast engine's
    ``separable_winograd`` switch (None: the device's default route, ``Transforms.default``).
    """
    s = numpy.dtype(dtype).itemsize
    if separable is None:
        separable = Transforms.default(device).separable_winograd
    if layers is not None:
        style_layers = tuple(dict.fromkeys(layers))
        if style_layers:                     # the largest layer as content: the costliest assignment
            last = max(style_layers, key=layer_index)
            largest = {name: cout * h * w for name, _, cout, h, w in layer_outputs(height, width, last)}
            content_layer = max(style_layers, key=largest.__getitem__)
        else:
            content_layer = None
    style_layers = tuple(style_layers)
    taps = tuple(dict.fromkeys(style_layers + ((content_layer,) if content_layer else ())))
    if not taps:
        raise ValueError("a run needs a content layer, style layers, or both")
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', not {pooling!r}")
    statistic = style_statistic(style_loss)
    deepest = max(taps, key=layer_index)
    table = layer_outputs(height, width, deepest)
    size = {name: cout * h * w for name, _, cout, h, w in table}   # A_l, elements
    pixels = 3 * height * width

    def kept(last, h0, w0, pass_taps):
        """Bytes of the activations a forward pass to ``last`` keeps, on an h0 x w0 input."""
        total = 3 * h0 * w0 * s
        for name, _, cout, h, w in layer_outputs(h0, w0, last):
            if not lean or name in pass_taps:
                total += cout * h * w * s
            elif name.startswith("conv"):
                total += fast_lean.packed_bytes((1, cout, h, w))          # the lean mode's bit mask
            if pooling == "max" and name.startswith("pool"):
                total += cout * h * w                                # int8 winning offsets
        return total

    hs, ws = style_size or (height, width)
    style_shape = {name: (1, cout, h, w) for name, _, cout, h, w in
                   (layer_outputs(hs, ws, max(style_layers, key=layer_index)) if style_layers else ())}
    style_kept = sum(statistic.target_bytes(style_shape[name], s) for name in style_layers)
    targets = (size[content_layer] * s if content_layer else 0) + style_kept
    images = 3 * pixels * s                                          # content, style, x
    transformed = sum(kept_weights_bytes(name, cin, cout, s, conv) for name, cin, cout, _, _ in table
                      if name.startswith("conv") and engine == "fast")
    baseline = ((INTERPRETER_BYTES if device == "cpu" else 0) + WEIGHT_COUNT * s + transformed + targets
                + images)
    if optimizer is not None and device == "cpu":
        baseline += SCIPY_BYTES
    opt = _optimizer_bytes(pixels, maxcor, optimizer, s, device, iterations)

    # Evaluation: activations of the whole forward pass.
    activations = kept(deepest, height, width, taps)
    content_diff = size[content_layer] * s if content_layer else 0
    held = 2 * content_diff                                          # content gradient and diff
    shape = {name: (1, cout, h, w) for name, _, cout, h, w in table}
    # Marks as (gradients held, transient), one per layer of the walk down: upstream
    # gradient, produced gradient, one tile; at a style layer, the making of its gradient.
    below = dict(zip([row[0] for row in table], [("input", 3, 3, height, width)] + table[:-1]))

    def work(name, cin, cout, h, w, backward):
        """Bytes of layer ``name``'s work arrays, as its kernel reports them."""
        if name.startswith("conv"):
            return _conv_work(name, cin, cout, h, w, s, device, conv, engine, backward, workers, separable)
        _, _, cprev, hprev, wprev = below[name]
        return _pool_work((1, cprev, hprev, wprev), s, pooling, engine, backward, workers)

    def pooled_work(name, cin, cout, h, w, backward):
        """The part of ``work`` that comes from the ArrayPool's one work buffer (the fast engine's
        tiles, bands and row sums, on the CPU: 0 otherwise)."""
        if device != "cpu" or engine != "fast":
            return 0
        if name.startswith("conv"):                                 # all of a fast conv's work is pooled
            return conv_workspace_bytes(name, cin, cout, h, w, s, device, conv, backward, workers, separable)
        return work(name, cin, cout, h, w, backward) if pooling == "avg" else 0

    kept_work = max(pooled_work(*row, backward) for row in table for backward in (False, True))
    marks = [(held, kept_work)]                                      # the work buffer is kept for good
    if style_loss != "gram":
        # Another statistic: every style layer's loss and gradient, one after the other, before the
        # walk (``minivgg.evaluation.style_term``); each gradient is held to the end of the evaluation.
        for name in style_layers:
            # its gradient (A_l s); at the content layer also its sum with the content's gradient,
            # counted as held from then on (conservative: the content's own is freed)
            made = size[name] * s * (2 if name == content_layer else 1)
            marks.append((held, kept_work + statistic.workspace_bytes(shape[name], s, style_shape[name]) + made))
            held += made
    for name, cin, cout, h, w in table:
        _, _, cprev, hprev, wprev = below[name]
        mark = size[name] * s + cprev * hprev * wprev * s + kept_work
        mark += work(name, cin, cout, h, w, True) - pooled_work(name, cin, cout, h, w, True)
        if lean and name.startswith("conv") and name not in taps:
            mark += fast_lean.workspace_bytes((1, cout, h, w), backward=True, device=device,
                                                workers=workers)  # a span of the mask unpacked
        if name in style_layers and (style_loss == "gram" or engine == "reference"):
            mark = max(mark, 2 * size[name] * s)                     # dout and the new gradient (or the sum)
        marks.append((held, mark))
        if lean and name.startswith("conv"):                         # its forward: in, out, mask, tiles
            marks.append((0, cprev * hprev * wprev * s + size[name] * s
                          + fast_lean.workspace_bytes((1, cout, h, w), device=device, workers=workers)
                          + work(name, cin, cout, h, w, False)))
    held, transient = max(marks, key=sum)
    evaluation = MemoryEstimate(baseline, activations, held, transient, opt, "evaluation")

    # Construction: the content pass, then the style pass, each freed before the next.
    first = kept(content_layer, height, width, (content_layer,)) if content_layer else 0
    second = kept(max(style_layers, key=layer_index), hs, ws, style_layers) if style_layers else 0
    widest = max(work(*row, False) for row in table)
    construction = MemoryEstimate(baseline, max(first, second), 0, widest, opt, "construction")
    return evaluation, construction


def estimate_peak_bytes(height: int, width: int, dtype: str = "float32", **kwargs) -> int:
    """Predicted peak memory (bytes) of a run; keyword arguments as ``estimate``."""
    return estimate(height, width, dtype, **kwargs).total


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


#: Where Linux says how much memory is available (a module constant so that tests can point it elsewhere).
MEMINFO_PATH = "/proc/meminfo"


def _meminfo_available() -> int | None:
    """MemAvailable of ``MEMINFO_PATH`` in bytes (the file counts kB), or None where it is missing."""
    try:
        with open(MEMINFO_PATH) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available_memory_bytes(device: str = "cpu") -> int | None:
    """Bytes this process can still allocate, or None where the system does not say.

    cpu: the smaller of /proc/meminfo's MemAvailable and the cgroup's room
    (v2 memory.max - memory.current, or v1 limit_in_bytes - usage_in_bytes).
    gpu: free device memory plus the CuPy pool's cached free blocks.
    """
    if device == "gpu":
        from minivgg.backend import get_array_module, to_device
        xp = get_array_module(to_device(numpy.zeros(1), "gpu"))
        free, _ = xp.cuda.runtime.memGetInfo()
        return int(free) + int(xp.get_default_memory_pool().free_bytes())
    candidates = [_meminfo_available()]
    for folder, limit_name, usage_name in _cgroup_folders():
        limit, usage = _read_int(f"{folder}/{limit_name}"), _read_int(f"{folder}/{usage_name}")
        if limit is not None and usage is not None and limit < 2**60:   # "max" or v1's huge "no limit"
            candidates.append(max(0, limit - usage))
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def _cgroup_folders(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup"):
    """(folder, limit file, usage file) of this process's memory cgroup and each of its ancestors.

    /proc/self/cgroup names the process's own cgroup ("0::/path" on v2, "N:memory:/path" on v1);
    a limit set on any ancestor applies too, so every folder up to the root is listed.
    """
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, names = root, ("memory.max", "memory.current")                      # v2
        elif "memory" in controllers.split(","):
            base, names = f"{root}/memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")  # v1
        else:
            continue
        parts = [p for p in path.split("/") if p]
        found += [("/".join([base, *parts[:k]]), *names) for k in range(len(parts), -1, -1)]
    return found or [(root, "memory.max", "memory.current"),
                     (f"{root}/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def refusal_message(needed: int, available: int, device: str = "cpu", what: str = "this run") -> str:
    """The one-line reason a run is refused: what, where, the estimate and what is available."""
    return (f"not enough memory for {what} on {device}: estimated peak {_gb(needed)}, "
            f"available {_gb(available)}; use a smaller size")
