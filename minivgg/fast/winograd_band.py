"""One band of Winograd's convolution (``minivgg.fast.winograd.conv3x3``), step by step.

A band is R tile rows of one image; ``conv3x3`` deals the bands out and hands
each step its work arrays (``minivgg.fast.winograd.BandWork``). The steps, in
the notation of ``minivgg.fast.winograd``'s docstring:

* ``input_tiles``: V = KB @ D, the band's a x a tiles D gathered from a padded
  copy of its rows and transformed in one product, or, separable, BT down the
  image's rows and then across the tiles' columns (``separable_tiles``);
* ``products_tiles_first`` / ``products_channels_first``: the a*a products
  M = V U^T, the bias, and the output transform Y = KA @ M, in one of two orders;
* ``write_band``: Y copied into the image's rows (the ReLU in the copy).

Channels-last images (the CPU's) keep V as (a*a, P, C), tiles before channels;
C-order ones as (a*a, C, P).
"""
from __future__ import annotations

from minivgg.conv import windows
from minivgg.fast import small_products
from minivgg.fast.layout import padded_rows, prefix_view


def input_tiles(xp, x, transforms, m: int, t0: int, r: int, tw: int, buffers, layout: bool,
                separable: bool, v=None, small: bool = False):
    """V = KB @ D for tile rows t0 .. t0 + R of the image x (C, H, W): (a*a, P, C) channels-last
    (tiles first), (a*a, C, P) in C order. D, the a x a tiles (stride m) of the zero-padded image,
    is gathered from a padded copy of the band's rows, or, ``separable``, from those rows
    already transformed (``separable_tiles``). V goes into ``buffers.transformed``, or, given, into
    ``v`` (channels-last: rows of a larger V whose P and C merge, ``minivgg.fast.winograd._shared_bands``).
    ``small``: the separable transform's products in pieces (``minivgg.fast.small_products.columns``)."""
    a, c, p = m + 2, x.shape[0], r * tw
    if v is None:
        v = prefix_view(buffers.transformed, (a * a, p, c) if layout else (a * a, c, p))
    if separable:
        return separable_tiles(xp, x, transforms.input_rows, m, t0, r, tw, buffers, layout, v, small)
    wp = m * tw + 2
    if layout:                                                               # (1, C, m*R+2, WP) in either order
        buf = prefix_view(buffers.padded, (1, m * r + 2, wp, c)).transpose(0, 3, 1, 2)
    else:
        buf = prefix_view(buffers.padded, (1, c, m * r + 2, wp))
    xb = padded_rows(x[None], m * t0 - 1, m * t0 - 1 + m * r + 2, 1, buf)[0]  # (C, m*R+2, WP)
    tiles = windows(xb, (a, a), (m, m), (r, tw))                            # (a, a, C, R, TW) view
    if layout:
        d = prefix_view(buffers.tiles_then_y, (a, a, r, tw, c))              # D, tiles before channels
        d[...] = tiles.transpose(0, 1, 3, 4, 2)
    else:
        d = prefix_view(buffers.tiles_then_y, (a, a, c, r, tw))              # D, channels before tiles
        d[...] = tiles
    xp.matmul(transforms.input, d.reshape(a * a, p * c), out=_merged(v, (a * a, p * c)))  # KB @ D
    return v


def _merged(v, shape):
    """v reshaped to ``shape`` as a view (a product writes through it), never a copy."""
    if v.flags.c_contiguous:
        return v.reshape(shape)
    view = v.view()
    view.shape = shape                                                       # raises rather than copy
    return view


def separable_tiles(xp, x, bt, m: int, t0: int, r: int, tw: int, buffers, layout: bool, v, small: bool = False):
    """``input_tiles`` one axis at a time (``minivgg.fast.winograd.conv3x3``'s ``separable``), bt (a, a)
    being KB's factor.

    Rows: for each tile row i, T[i, xi] = sum_alpha bt[xi, alpha] x[:, m*(t0 + i) - 1 + alpha, :],
    one product straight from the image rows (rows above or below the image are zeros: their
    columns of bt are left out), written between T's zero columns 0 and W + 1 .. WP - 1.
    Columns: the a x a tiles of T, D[xi, beta, .., i, j] = T[i, xi, :, m*j + beta], gathered as
    ``input_tiles`` gathers the image's, then V[xi, nu] = sum_beta bt[nu, beta] D[xi, beta]: a
    product per xi. T lives in ``buffers.padded``, stored (R, a, WP, C) channels-last and
    (R, C, a, WP) in C order. ``small``: each product in pieces (``minivgg.fast.small_products.columns``).
    """
    a, p = m + 2, r * tw
    c, h, wd = x.shape
    wp = m * tw + 2
    if layout:
        t = prefix_view(buffers.padded, (r, a, wp, c))                       # (R, a, WP, C)
        t[:, :, 0] = 0
        t[:, :, wd + 1:] = 0
        image_rows = x.transpose(1, 2, 0).reshape(h, wd * c)                  # x's memory: (H, W*C)
    else:
        t = prefix_view(buffers.padded, (r, c, a, wp))                       # (R, C, a, WP)
        t[..., 0] = 0
        t[..., wd + 1:] = 0
    for i in range(r):
        y0 = m * (t0 + i) - 1                                                # the tile row's first image row
        lo, hi = max(y0, 0), min(y0 + a, h)
        cols = bt[:, lo - y0:hi - y0]                                        # (a, rows inside the image)
        if layout:                                                           # (a, k) @ (k, W*C) -> (a, W*C)
            small_products.columns(xp, cols, image_rows[lo:hi], t[i, :, 1:wd + 1].reshape(a, wd * c), small)
        else:                                                                # per channel: (a, k) @ (k, W)
            small_products.columns(xp, cols, x[:, lo:hi], t[i, :, :, 1:wd + 1], small)
    logical = t.transpose(3, 0, 1, 2) if layout else t.transpose(1, 0, 2, 3)   # (C, R, a, WP) view
    tiles = windows(logical, (1, a), (1, m), (a, tw))[0]                     # (a beta, C, R, a xi, TW)
    if layout:
        d = prefix_view(buffers.tiles_then_y, (a, a, r, tw, c))              # (xi, beta, R, TW, C)
        d[...] = tiles.transpose(3, 0, 2, 4, 1)
    else:
        d = prefix_view(buffers.tiles_then_y, (a, a, c, r, tw))              # (xi, beta, C, R, TW)
        d[...] = tiles.transpose(3, 0, 1, 2, 4)
    small_products.columns(xp, bt, d.reshape(a, a, p * c), _merged(v, (a, a, p * c)), small)  # per xi: BT @ D[xi]
    return v


def products_tiles_first(xp, v, u_t, transforms, b, m: int, r: int, tw: int, buffers, layout: bool,
                         small: bool = False):
    """Y of a channels-last band from V (a*a, P, C): M = V @ U^T (a*a, P, O) (u_t: (a*a, C, O)),
    the bias into M's ones row, Y = KA @ M, returned as the view (m, m, R, TW, O) of
    ``buffers.tiles_then_y`` (D's memory: V is made, D is dead). ``small``: both products in pieces
    (``minivgg.fast.small_products``: the a*a products by rows of P, Y's by columns)."""
    a, p, o = m + 2, r * tw, u_t.shape[2]
    mm = prefix_view(buffers.products, (a * a, p, o))
    small_products.rows(xp, v, u_t, mm, small)                               # (a*a, P, C) @ (a*a, C, O)
    if b is not None:                                                        # KA[:, ones] is all ones, so
        mm[transforms.ones_column] += b                                      # this adds b to all m*m outputs
    y = prefix_view(buffers.tiles_then_y, (m * m, p * o))
    small_products.columns(xp, transforms.output, mm.reshape(a * a, p * o), y, small)  # (m*m, a*a) @ (a*a, P*O)
    return y.reshape(m, m, r, tw, o)


def products_channels_first(xp, v, u_t, transforms, b, m: int, r: int, tw: int, buffers, layout: bool,
                            small: bool = False):
    """Y from V, channels before tiles: M = U @ V (a*a, O, P) with V (a*a, C, P) (C order's own, or a
    channels-last band's (a*a, P, C) read transposed: ``channels_first_products``), the bias down
    M's ones row, Y = KA @ M (m*m, O, P), returned as the view (m, m, R, TW, O). ``small``: Y's
    product in pieces (``minivgg.fast.small_products.columns``)."""
    a, p, o = m + 2, r * tw, u_t.shape[2]
    if layout:
        v = v.transpose(0, 2, 1)                                             # (a*a, C, P) view
    mm = prefix_view(buffers.products, (a * a, o, p))
    xp.matmul(u_t.transpose(0, 2, 1), v, out=mm)                             # (a*a, O, C) @ (a*a, C, P)
    if b is not None:                                                        # as above, down M's columns
        mm[transforms.ones_column] += b.reshape(o, 1)
    y = prefix_view(buffers.tiles_then_y, (m * m, p * o))                    # D's memory: V is made, D is dead
    small_products.columns(xp, transforms.output, mm.reshape(a * a, p * o), y, small)  # (m*m, a*a) @ (a*a, O*P)
    return y.reshape(m, m, o, r, tw).transpose(0, 1, 3, 4, 2)                # (m, m, R, TW, O) view


def write_band(xp, y5, out, m: int, t0: int, relu: bool, device: str, uncropped, layout: bool):
    """Copy the band's tiles y5 (m, m, R, TW, O) to their rows of out (O, H, W) (with ``relu``, max(Y, 0)):
    straight in, or through ``uncropped`` (flat work memory) when the image's edge cuts the tiles."""
    r, tw, o = y5.shape[2:]
    h, wd = out.shape[1:]
    rows_out = min(m * r, h - m * t0)
    band = out[:, m * t0:m * t0 + rows_out]                                  # (O, rows_out, W) view
    if rows_out == m * r and wd == m * tw:
        _scatter(xp, y5, _tile_view(band, m, r, tw), relu, device)
        return
    full = prefix_view(uncropped, (m * r, m * tw, o)).transpose(2, 0, 1) if layout \
        else prefix_view(uncropped, (o, m * r, m * tw))                      # (O, m*R, m*TW)
    _scatter(xp, y5, _tile_view(full, m, r, tw), relu, device)
    band[...] = full[:, :rows_out, :wd]


def _tile_view(band, m: int, r: int, tw: int):
    """Writable view (m, m, R, TW, O) of band (O, m*R, m*TW): view[a, b, i, j, o] = band[o, m*i + a, m*j + b]."""
    return windows(band, (m, m), (m, m), (r, tw)).transpose(0, 1, 3, 4, 2)


def _scatter(xp, y5, tiles, relu: bool, device: str):
    """tiles[...] = y5, or max(y5, 0) with ``relu``: the ReLU rides in the copy, no pass of its own.

    y5, tiles: (m, m, R, TW, O). On the CPU into a C-order output the plain
    copy goes one tile position (R, TW, O) at a time: given the whole 5-D
    view, NumPy's copy loops innermost over the destination's smallest stride,
    the m columns of a tile, whose sources lie P*O apart, and ran twice as
    slow. Into a channels-last output (the CPU's default) the innermost run is
    O contiguous floats on both sides, and the whole view is the faster copy
    (conv1_2's 512 x 512 map: 11 ms against 14 ms one position at a time).
    For the ReLU's ``maximum`` the whole view measured faster than m*m calls,
    so it stays whole. On the GPU one kernel does it all.
    """
    if relu:
        xp.maximum(y5, 0, out=tiles)
    elif device == "cpu" and tiles.strides[-1] != tiles.itemsize:        # C order: O is not innermost
        for alpha in range(y5.shape[0]):
            for beta in range(y5.shape[1]):
                tiles[alpha, beta] = y5[alpha, beta]
    else:
        tiles[...] = y5
