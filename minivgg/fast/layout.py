"""Memory order of activations: channels-last views, and the band and work-array helpers around them.

Every array keeps the logical shape (N, C, H, W). On the CPU the fast engine
stores activations channels-last, (N, H, W, C) in memory, which makes
Winograd's tile copies move whole channel vectors instead of single floats
(``minivgg.fast.winograd`` has the numbers). Indexing, slicing and NumPy's
functions see the same values in either order; only ``reshape`` of such an
array copies, so the helpers here give the flat views without copies.

    channels_last(x)           -> whether an (N, C, H, W) array's memory is (N, H, W, C)
    flat_spatial(x)            -> (N, C, H*W) view of x in either order
    flat_memory(x)             -> 1-D view of x's elements in memory order
    dense(x)                   -> x if its memory is packed in either order, else a C-order copy
    prefix_view(flat, shape)   -> the start of a work array as an array of shape
    padded_rows(x, r0, r1, pw, buf) -> rows of x with zero padding, in buf
"""
from __future__ import annotations

import math

from minivgg.backend import get_array_module


def channels_last(x) -> bool:
    """Whether x (N, C, H, W) is a view of packed (N, H, W, C) memory: channel vectors contiguous.

    Every fast kernel takes arrays of the logical shape (N, C, H, W), whatever
    their memory order, and gives its outputs the order of its input; the fast
    network keeps its activations channels-last on the CPU (module docstring).
    """
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def flat_spatial(x):
    """x (N, C, H, W) as (N, C, H*W), a view for C-order and channels-last memory alike.

    For channels-last x it is the transpose of an (N, H*W, C) matrix, which
    matrix products take as it is (a transposed operand); ``x.reshape`` would copy.
    """
    n, c, h, w = x.shape
    if channels_last(x) and not x.flags.c_contiguous:
        return x.transpose(0, 2, 3, 1).reshape(n, h * w, c).transpose(0, 2, 1)
    return x.reshape(n, c, h * w)


def flat_memory(x):
    """The elements of a ``dense`` x as a 1-D view in memory order (for sums over all of them:
    ``vdot`` of a channels-last array would copy it into C order first)."""
    if channels_last(x) and not x.flags.c_contiguous:
        return x.transpose(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


def dense(x):
    """x itself when its memory is packed in C order or channels-last, else a C-order copy."""
    if x.flags.c_contiguous or channels_last(x):
        return x
    return get_array_module(x).ascontiguousarray(x)


def prefix_view(flat, shape):
    """The first prod(shape) elements of the 1-D array ``flat`` as a C-contiguous array of ``shape``.

    How a work buffer sized for the largest tile serves the smaller ones: a
    prefix of a contiguous buffer reshapes without a copy.
    """
    return flat[:math.prod(shape)].reshape(shape)


def padded_rows(x, r0: int, r1: int, pw: int, buf):
    """Rows r0..r1 of x (N, C, H, W) (rows outside 0..H are zeros), pw zero columns on the left.

    buf: (N, C, r1 - r0, width) with width >= W + 2*pw; every column from
    pw + W on is zero (a wider buffer just has more of them: Winograd's tiles
    can overhang the image). Fully overwritten and returned.
    """
    h, w = x.shape[2:]
    lo = max(r0, 0)                                                 # first row inside the image
    hi = max(min(r1, h), lo)                                        # one past the last (lo if none)
    buf[:, :, :lo - r0] = 0                                         # rows above the image
    buf[:, :, hi - r0:] = 0                                         # rows below it
    buf[:, :, :, :pw] = 0                                           # left padding
    buf[:, :, :, pw + w:] = 0                                       # right padding
    buf[:, :, lo - r0:hi - r0, pw:pw + w] = x[:, :, lo:hi]          # (N, C, hi-lo, W)
    return buf
