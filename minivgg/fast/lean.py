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
one unpack per layer backward, each ``MASK_SPAN`` elements at a time, on the
band workers (``minivgg.fast.threads``). With the objective's ``ArrayPool`` the walk up
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

from minivgg.backend import device_of, get_array_module
from minivgg.fast.layout import channels_last, flat_memory
from minivgg.fast.threads import run_split

#: Elements of out (a multiple of 8) packed or unpacked at a time on the CPU: the mask of a
#: span (one byte per element) is a temporary of 256 KiB that stays in cache, instead of a
#: whole layer's (16 MB at conv1_2 on 512 x 512), and ``workers`` threads share the spans.
#: Measured at conv1_2 on 512 x 512 (64 x 512 x 512 floats), pack / unpack-and-multiply: whole
#: 5.4 / 7.8 ms, in spans on one thread 3.5 / 6.2 ms, on two 2.4 / 3.2 ms. On the GPU: one span.
MASK_SPAN = 2**18


class PackedReluCache(NamedTuple):
    """The mask [out > 0] as bits, in out's memory order, and how to unfold it."""

    bits: object            # (ceil(size / 8),) uint8
    shape: tuple            # out's logical shape (N, C, H, W)
    channels_last: bool     # whether out's memory was (N, H, W, C)


def pack_relu(out, *, workers: int = 1) -> PackedReluCache:
    """The ReLU's cache for out = max(x, 0), one bit per element (out itself can then be freed),
    packed ``MASK_SPAN`` elements at a time, the spans shared among ``workers`` threads."""
    xp = get_array_module(out)
    flat = flat_memory(out)                                          # memory order
    bits = xp.empty(-(-flat.size // 8), dtype=xp.uint8)              # 8 per byte

    def pack(lo, hi):
        bits[lo // 8:-(-hi // 8)] = xp.packbits(flat[lo:hi] > 0)
    _spans(flat.size, device_of(out), workers, pack)
    return PackedReluCache(bits, tuple(out.shape), channels_last(out) and not out.flags.c_contiguous)


def unpack_mask(cache: PackedReluCache):
    """The mask back as a 0/1 uint8 array of the logical shape, in the packed memory order."""
    xp = get_array_module(cache.bits)
    n, c, h, w = cache.shape
    flat = xp.unpackbits(cache.bits)[:n * c * h * w]                 # (size,) uint8
    if cache.channels_last:
        return flat.reshape(n, h, w, c).transpose(0, 3, 1, 2)        # (N, C, H, W) view of (N, H, W, C)
    return flat.reshape(n, c, h, w)


def packed_relu_backward(dout, cache: PackedReluCache, *, out=None, workers: int = 1):
    """dx = dout * [x > 0], the mask unpacked from bits ``MASK_SPAN`` elements at a time (the spans
    shared among ``workers`` threads); ``out`` as in ``minivgg.relu.relu_backward``."""
    xp = get_array_module(dout)
    if dout.shape != cache.shape:
        raise ValueError(f"a gradient of shape {tuple(dout.shape)} for a mask of shape {cache.shape}")
    out = xp.empty_like(dout) if out is None else out                  # dout's memory order
    layout = cache.channels_last
    memory = (lambda a: a.transpose(0, 2, 3, 1)) if layout else (lambda a: a)   # the mask's memory order
    dmem = memory(dout) if _packed_as(dout, layout) else xp.ascontiguousarray(memory(dout))
    omem = memory(out) if _packed_as(out, layout) else xp.empty(dmem.shape, dtype=dout.dtype)
    dflat, oflat = dmem.reshape(-1), omem.reshape(-1)                    # views

    def unpack(lo, hi):
        mask = xp.unpackbits(cache.bits[lo // 8:-(-hi // 8)])[:hi - lo]   # 0/1 uint8
        xp.multiply(dflat[lo:hi], mask, out=oflat[lo:hi], dtype=dout.dtype)
    _spans(dflat.size, device_of(dout), workers, unpack)
    if not _packed_as(out, layout):                                      # out's memory is in another order
        out[...] = omem.transpose(0, 3, 1, 2) if layout else omem
    return out


def _packed_as(x, layout: bool) -> bool:
    """Whether x's (N, C, H, W) memory is packed in the mask's order: (N, H, W, C) when ``layout``, else C order."""
    return (x.transpose(0, 2, 3, 1) if layout else x).flags.c_contiguous


def _spans(size: int, device: str, workers: int, job) -> None:
    """job(lo, hi) for consecutive spans of ``MASK_SPAN`` elements of 0..size (one span on the GPU),
    the spans shared among ``workers`` threads (``minivgg.fast.threads``), contiguous runs each."""
    span = MASK_SPAN if device == "cpu" else max(8, size)
    starts = range(0, size, span)

    def run(a, b):
        for lo in starts[a:b]:
            job(lo, min(size, lo + span))
    run_split(run, len(starts), workers)


def packed_bytes(shape) -> int:
    """Bytes ``pack_relu`` keeps for an output of ``shape`` (N, C, H, W): one bit per element, ceil(size / 8)."""
    return -(-math.prod(shape) // 8)


def workspace_bytes(shape, *, backward: bool = False, device: str = "cpu", workers: int = 1) -> int:
    """Bytes ``pack_relu`` (a span's boolean mask [out > 0], one byte per element, and its bits) or,
    backward, ``packed_relu_backward`` (a span's unpacked 0/1 mask) takes besides its input, output
    and bits, for an output of ``shape`` (N, C, H, W), per worker that gets a span (the memory model asks)."""
    size = math.prod(shape)
    span = min(size, MASK_SPAN) if device == "cpu" else size
    used = max(1, min(workers, -(-size // span)))
    per_span = 8 * packed_bytes((span,)) if backward else span + packed_bytes((span,))
    return per_span * used
