"""The fast engine's memory-lean mode: ReLU masks kept as bits instead of whole activations.

What the walk down needs of a conv layer is only the ReLU's mask [out > 0]:
the input-gradient of a convolution needs the weights and the input's *shape*
(``Conv2dCache.without_input``), and average pooling needs nothing but shapes.
So in lean mode the network keeps, of every layer that is not a tap of the
losses, one bit per activation (``numpy.packbits``) instead of a float32 (1/32
of the memory), and lets the activation itself go as soon as the next layer
has read it. The taps' features stay whole: the losses read them. Exact: the
gradient is bit for bit the normal mode's (``tests/test_fast_lean.py``).

At 2048 x 1536 with the paper's layers, the float activations kept fall from
323 to 130 values per input pixel (the taps: conv1_1 alone is 64) plus 193
bits; ``minivgg.memory`` models it. The price: one pack per layer forward and
one unpack per layer backward. With the objective's ``ArrayPool`` the walk up
gives each dropped activation's buffer back to it (``ArrayPool.release``), so a
later layer of the same size takes it again, and at the end of the forward the
pool lets the free ones go (``ArrayPool.trim``): the walk down's gradients are
of other sizes, and a pool holding them idle would keep what the lean mode
saves (at 512 x 512, 183 MB less at the peak than the normal mode with the
trim, 80 MB less without it).

Shapes: out, dout (N, C, H, W) in either memory order (``minivgg.fast.layout``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minivgg.backend import get_array_module
from minivgg.fast.layout import channels_last, flat_memory


class PackedReluCache(NamedTuple):
    """The mask [out > 0] as bits, in out's memory order, and how to unfold it."""

    bits: object            # (ceil(size / 8),) uint8
    shape: tuple            # out's logical shape (N, C, H, W)
    channels_last: bool     # whether out's memory was (N, H, W, C)


def pack_relu(out) -> PackedReluCache:
    """The ReLU's cache for out = max(x, 0), one bit per element (out itself can then be freed)."""
    xp = get_array_module(out)
    bits = xp.packbits(flat_memory(out) > 0)                        # memory order, 8 per byte
    return PackedReluCache(bits, tuple(out.shape), channels_last(out) and not out.flags.c_contiguous)


def unpack_mask(cache: PackedReluCache):
    """The mask back as a 0/1 uint8 array of the logical shape, in the packed memory order."""
    xp = get_array_module(cache.bits)
    n, c, h, w = cache.shape
    flat = xp.unpackbits(cache.bits)[:n * c * h * w]                 # (size,) uint8
    if cache.channels_last:
        return flat.reshape(n, h, w, c).transpose(0, 3, 1, 2)        # (N, C, H, W) view of (N, H, W, C)
    return flat.reshape(n, c, h, w)


def packed_relu_backward(dout, cache: PackedReluCache, *, out=None):
    """dx = dout * [x > 0], the mask unpacked from bits; ``out`` as in ``minivgg.relu.relu_backward``."""
    xp = get_array_module(dout)
    if out is None:                  # dout's memory order: NumPy's ufuncs keep it, CuPy's make C order
        out = xp.empty_like(dout)
    dx = xp.multiply(dout, unpack_mask(cache), out=out, dtype=dout.dtype)
    assert dx.shape == cache.shape
    return dx


def packed_bytes(shape) -> int:
    """Bytes ``pack_relu`` keeps for an output of ``shape`` (N, C, H, W): one bit per element, ceil(size / 8)."""
    return -(-math.prod(shape) // 8)


def workspace_bytes(shape, *, backward: bool = False) -> int:
    """Bytes ``pack_relu`` (the boolean mask [out > 0], one byte per element) or, backward,
    ``packed_relu_backward`` (the unpacked 0/1 mask, 8 bytes per packed byte) takes besides its
    input, output and bits, for an output of ``shape`` (N, C, H, W) (the memory model asks)."""
    return 8 * packed_bytes(shape) if backward else math.prod(shape)
