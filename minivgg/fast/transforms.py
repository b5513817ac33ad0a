"""The fast engine's transformations of the reference network, each one a switch.

``Transforms`` holds one bool per transformation; ``FastVGG19`` and its
evaluator (``minivgg.fast.objective``) read it and nothing else decides their
route. With every switch off the fast engine runs the reference's own layers
(``minivgg.conv`` through tiled im2col, ``minivgg.relu``, ``minivgg.pool``) in
the reference's walk. Every one of the 2^11 combinations is held to the
reference engine in float64 (``tests/test_fast_transforms.py``), and each one's
gain in time and peak memory is measured, one switch off at a time, by

    python -m minivgg.bench --sizes 256 512 --ablate

(``minivgg.bench``): the docstrings cite that command rather than numbers.
"""
from __future__ import annotations

import dataclasses
import itertools


@dataclasses.dataclass(frozen=True)
class Transforms:
    """One switch per transformation of the fast engine; True = applied. Defaults: the default route.

    winograd         3x3 convs by Winograd's F(m x m, 3 x 3) (``minivgg.fast.winograd``; tile per
                     layer: ``minivgg.fast.network.winograd_tile``); off: tiled im2col for every layer
    separable_winograd  Winograd's input transform one axis at a time, its rows' step read
                     straight from the image (``minivgg.fast.winograd.conv3x3``'s ``separable``);
                     off: one product with the Kronecker square, from a padded copy of the band
    small_products   on the CPU, Winograd's transform products (and the a*a products of layers of
                     at most 64 x 128 channels) cut into pieces OpenBLAS multiplies without
                     packing (``minivgg.fast.small_products``); off: one product each
    channels_last    activations stored (N, H, W, C) in memory (``minivgg.fast.layout``); off: C order
    fused_relu       bias and ReLU applied inside the conv's output tiles; off: the conv, then
                     ``minivgg.relu.relu_forward``
    array_pool       an ``ArrayPool`` (``minivgg.fast.arrays``) for activations and work buffers,
                     reused evaluation after evaluation; off: plain allocation
    separable_pool   average pooling summed separably in row blocks (``minivgg.fast.pooling``);
                     off: ``minivgg.pool``'s k*k strided window sums
    inplace          the walk down updates the gradients it owns in place (ReLU masks, tap
                     joins); off: a new array per step, as the reference
    deferred         each style gradient made only when the walk down reaches its tap; off: all
                     made before the walk starts
    threads          on the CPU, each Winograd conv's bands shared among as many threads as NumPy's
                     BLAS had, the BLAS on one thread for the evaluation (``minivgg.fast.threads``);
                     off (and with winograd off): one band after another, the products on
                     the BLAS's threads
    lean             of layers that are not taps keep the ReLU mask as bits, and no conv input
                     (``minivgg.fast.lean``); off (the GPU's default): every activation kept
    """

    winograd: bool = True
    separable_winograd: bool = True
    small_products: bool = True
    channels_last: bool = True
    fused_relu: bool = True
    array_pool: bool = True
    separable_pool: bool = True
    inplace: bool = True
    deferred: bool = True
    threads: bool = True
    lean: bool = True

    @classmethod
    def default(cls, device: str = "cpu") -> "Transforms":
        """The default route on ``device``: all on on the CPU (``Transforms()``); on the GPU
        channels-last, threads, lean, separable_winograd and small_products off.

        On the GPU CuPy's elementwise kernels walk an array in its logical order, so every ReLU
        mask, sum and pooling over channels-last memory reads with a stride of C floats (an
        H200 ran evaluations twice as slow: 0.105 s instead of 0.05 s at 1024 x 1024). The lean
        mode is on by default on the CPU only: there, with the bands on workers, it measured as
        fast as keeping every activation (``python -m minivgg.bench --sizes 256 512 --ablate``)
        with 40-180 MB less at the peak; on the GPU it has not been measured since the pool kept it.
        The separable input transform has been measured on the CPU only (where it is faster on
        every VGG layer with tiles of 4); on the GPU, where the transform is one batched
        kernel either way, the Kronecker product stays until a GPU says otherwise. Small products
        are OpenBLAS's (CuPy runs one launch per product either way).
        """
        cpu = device == "cpu"
        return cls(channels_last=cpu, threads=cpu, lean=cpu, separable_winograd=cpu, small_products=cpu)

    def with_route(self, conv: str | None = None, lean: bool | None = None) -> "Transforms":
        """These switches with ``minivgg.VGG19``'s shorthands applied: conv="im2col" turns winograd
        and channels_last off (im2col's unrolling copies suit C order), conv="winograd" turns
        winograd on; lean=True / False turns lean on / off. conv=None, lean=None: unchanged."""
        if conv not in (None, "winograd", "im2col"):
            raise ValueError(f"conv must be 'winograd' or 'im2col', not {conv!r}")
        changed = self
        if conv == "im2col":
            changed = dataclasses.replace(changed, winograd=False, channels_last=False)
        elif conv == "winograd":
            changed = dataclasses.replace(changed, winograd=True)
        return changed if lean is None else dataclasses.replace(changed, lean=bool(lean))

    def off(self, name: str) -> "Transforms":
        """These switches with transformation ``name`` off."""
        return dataclasses.replace(self, **{name: False})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The switches, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def every_combination(cls):
        """All 2^k settings of the switches."""
        for values in itertools.product((False, True), repeat=len(cls.names())):
            yield cls(*values)
