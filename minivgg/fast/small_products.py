"""Matrix products cut to the size where OpenBLAS multiplies without packing.

OpenBLAS (0.3, x86-64) multiplies a product of at most 100^3 multiply-adds
(M*N*K) with a "small-matrix" kernel that reads its operands where they lie and
writes the result once. A larger product first copies its operands into
cache-sized panels and zeroes the result before adding into it: more passes
over memory. Winograd's transforms multiply a small matrix (KA, 16 x 36; BT,
6 x 6) by a long one, and for them those passes are most of the time; cut into
pieces of at most 100^3 / (m k) columns (``columns``), each piece is one
small-matrix call, and NumPy's ``matmul`` loops over a stacked view of the
pieces in C. Measured on one core (AVX-512, NumPy's OpenBLAS 0.3.31), pieces
just under the bound against just over it: KA @ M, 16 x 36 x 1736, 19.9
against 31.2 us; BT @ D, 6 x 6 x 27777, 56 against 108 us.

The products of thin layers gain too when their P tiles are cut (``rows``):
36 products (512 x 64) @ (64 x 64) took 1.79 ms whole against 1.10 ms in pieces
of 240 rows; (512 x 64) @ (64 x 128), 3.05 against 2.19 ms in pieces of 112. From 128 x 128
channels the bound allows only 61 rows, and pieces that thin lose (5.6 ms
whole against 5.9 ms), so ``rows`` cuts only where the bound is at least
``MIN_ROWS``. The right operand must be stored as it is read (not a transposed
view): read transposed, the pieces were slower than the whole (7.7 against 5.4 ms
at 128 x 128), which is why Winograd keeps its thin layers' forward kernels
in the forward's order as well (``minivgg.fast.winograd.prepare``).

Its gain in the network is the switch ``Transforms.small_products``
(``python -m minivgg.bench --sizes 256 512 --ablate``). Off NumPy (CuPy: one
launch per product matters more), or off, every product is one call.
"""
from __future__ import annotations

from minivgg.backend import device_of

#: The largest product (M*N*K multiply-adds) OpenBLAS hands to its small-matrix kernel.
SMALL_PRODUCT = 100 ** 3
#: ``rows`` cuts a product only when the bound allows pieces of at least this many rows.
MIN_ROWS = 96


def columns(xp, a, b, out, enabled: bool = True):
    """out = a @ b for a small a (m, k) and b (..., k, N) -> out (..., m, N), N cut into pieces of at
    most SMALL_PRODUCT / (m k) columns, one BLAS call each (module docstring). b's and out's last
    axes must be contiguous to be cut (the pieces are views of them); otherwise, with ``enabled``
    false, or off NumPy, one product. Returns out."""
    m, k = a.shape[-2:]
    n = b.shape[-1]
    piece = _piece(n, SMALL_PRODUCT // (m * k))
    if not (enabled and device_of(out) == "cpu" and piece < n and _unit_last(b) and _unit_last(out)):
        xp.matmul(a, b, out=out)
        return out
    whole = n // piece * piece
    xp.matmul(a, _split_last(b[..., :whole], piece), out=_split_last(out[..., :whole], piece))
    if whole < n:
        xp.matmul(a, b[..., whole:], out=out[..., whole:])
    return out


def rows(xp, a, b, out, enabled: bool = True):
    """out = a @ b for a (..., P, C) and b (..., C, O) -> out (..., P, O), P cut into pieces of at most
    SMALL_PRODUCT / (C O) rows where ``cuts_rows(C, O)`` (module docstring). a and out must have
    rows of contiguous elements, and b be stored as read (C-contiguous matrices); otherwise, with
    ``enabled`` false, or off NumPy, one product. Returns out."""
    p, c = a.shape[-2:]
    o = b.shape[-1]
    piece = _piece(p, SMALL_PRODUCT // (c * o))
    if not (enabled and device_of(out) == "cpu" and cuts_rows(c, o) and piece < p and _unit_last(a)
            and _unit_last(out) and b.strides[-2:] == (o * b.itemsize, b.itemsize)):
        xp.matmul(a, b, out=out)
        return out
    whole = p // piece * piece
    lead = a.shape[:-2]
    pieces = lambda x, width: _view(x[..., :whole, :], lead + (whole // piece, piece, width))  # noqa: E731
    xp.matmul(pieces(a, c), b[..., None, :, :], out=pieces(out, o))
    if whole < p:
        xp.matmul(a[..., whole:, :], b, out=out[..., whole:, :])
    return out


def cuts_rows(c: int, o: int) -> bool:
    """Whether ``rows`` cuts the products of a C -> O layer: its bound allows ``MIN_ROWS`` rows or more
    (VGG's 64 x 64, 64 x 128 and 128 x 64)."""
    return SMALL_PRODUCT // (c * o) >= MIN_ROWS


def _piece(n: int, limit: int) -> int:
    """The length of the pieces that cut n into as few as the bound ``limit`` allows, about equal (a
    multiple of 16 where that stays within the limit; the last piece, shorter, takes the rest)."""
    if limit <= 0:
        return n
    count = -(-n // limit)
    piece = -(-n // count)
    rounded = -(-piece // 16) * 16
    return rounded if rounded <= limit else piece


def _unit_last(x) -> bool:
    """Whether x's last axis is contiguous (a piece of it is a BLAS operand)."""
    return x.shape[-1] <= 1 or x.strides[-1] == x.itemsize


def _split_last(x, piece: int):
    """x (..., K, N) as the view (..., N / piece, K, piece): its last axis cut into pieces."""
    lead, n = x.shape[:-1], x.shape[-1]
    return _view(x, lead + (n // piece, piece)).swapaxes(-3, -2)


def _view(x, shape):
    """x reshaped to ``shape`` as a view; raises rather than copy (a product writes through it)."""
    view = x.view()
    view.shape = shape
    return view
