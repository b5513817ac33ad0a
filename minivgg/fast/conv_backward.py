"""The fast engine's convolution backward: the input gradient by two tiled routes, and the weights'.

The forward's tiles (``minivgg.fast.conv``) serve both routes; the shape
legend is that module's. Which route a layer takes and how tall col2im's tiles
are is decided there (``uses_transposed_conv``, ``col2im_rows``), where the
memory model asks for the tiles' bytes (``workspace_bytes``).

Backward (input gradient), two exact routes, both tiled the same way:

* **Transposed convolution** (stride 1, p <= KH-1 and p <= KW-1): substituting
  u' = KH-1-u, v' = KW-1-v in dx[n,c,y,z] = sum_{o,u,v} w[o,c,u,v] dout[n,o,y+p-u,z+p-v]
  gives dx = conv(dout, w_t, padding (KH-1-p, KW-1-p)) with
  w_t[c, o, u', v'] = w[o, c, KH-1-u', KW-1-v'] (swap in/out channels, flip
  the kernel), and output size OH + 2(KH-1-p) - KH + 1 = H. So dx is one more
  forward convolution, reusing the tiled forward: slice *copies*, and every
  GEMM writes its rows of dx directly. Its unrolled matrix has O*KH*KW rows.
* **Tiled col2im** (any stride and padding): per tile of *dx's* rows,
  dcols = w.reshape(O, K).T @ dout_tile over the rows of dout whose windows
  touch them, folded onto a zeroed padded buffer by KH*KW slice additions
  (each offset's slices are disjoint: no fancy-index scatter), whose rows the
  tile owns are then assigned to dx. Neighbouring tiles read about KH/s rows
  of dout twice, and no two write one row of dx. Its unrolled matrix has
  C*KH*KW rows.

With Winograd weights in the cache (3x3, stride 1, pad 1) dx is the transposed
convolution by Winograd instead (``minivgg.fast.winograd.conv3x3``'s ``backward``).
Derivations: ``notebooks/01_layers.ipynb``.
"""
from __future__ import annotations

from minivgg.backend import device_of, get_array_module
from minivgg.conv import windows
from minivgg.fast.arrays import work
from minivgg.fast.conv import (Conv2dCache, col2im_rows, conv_tiled, dealt, row_blocks, tile_rows, tile_work_sizes,
                               unrolled_tiles, uses_transposed_conv)
from minivgg.fast.layout import dense, flat_spatial, prefix_view
from minivgg.fast.winograd import conv3x3 as winograd_conv3x3


def transposed_weights(w):
    """w_t as the matrix (C, O*KH*KW) the transposed convolution multiplies by, w_t[c, o, u, v] =
    w[o, c, KH-1-u, KW-1-v] (a copy of w (O, C, KH, KW), swapped and flipped). Made in every
    backward unless the caller keeps it (``conv2d_backward``'s ``transposed``): for VGG's conv4
    layers in float64 that copy was 5 ms of each backward."""
    xp = get_array_module(w)
    o, c, kh, kw = w.shape
    return xp.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]).reshape(c, o * kh * kw)


def transposed_weights_bytes(cin: int, cout: int, kh: int, kw: int, itemsize: int) -> int:
    """Bytes of ``transposed_weights`` for a C_in -> C_out layer: as many as its weights."""
    return cin * cout * kh * kw * itemsize


def _dx_transposed_conv(dout, w, pad: int, max_tile_bytes: int | None = None, pool=None, workers: int = 1,
                        w_t2=None):
    """dx = conv(dout, w_t, padding (KH-1-p, KW-1-p)), w_t[c,o,u,v] = w[o,c,KH-1-u,KW-1-v]; stride 1 only.

    dout: (N, O, OH, OW) contiguous, w: (O, C, KH, KW) -> dx: (N, C, H, W) with
    H = OH + KH - 1 - 2p. Requires p <= KH-1 and p <= KW-1 (non-negative padding).
    w_t2: ``transposed_weights(w)``, made here when None.
    """
    xp = get_array_module(dout, w)
    n, o, oh, ow = dout.shape
    _, c, kh, kw = w.shape
    assert pad <= kh - 1 and pad <= kw - 1
    h, wd = oh + kh - 1 - 2 * pad, ow + kw - 1 - 2 * pad
    w_t2 = transposed_weights(w) if w_t2 is None else w_t2         # (C, O*KH*KW), flipped
    dx = xp.empty((n, c, h, wd), dtype=dout.dtype)                  # (N, C, H, W)
    conv_tiled(dout, w_t2, kh, kw, 1, kh - 1 - pad, kw - 1 - pad, flat_spatial(dx),
                max_tile_bytes=max_tile_bytes, pool=pool, workers=workers)
    return dx


def _dx_col2im(dout, w, x_shape, stride: int, pad: int, max_tile_bytes: int | None = None, pool=None,
               workers: int = 1):
    """dx = col2im(w.reshape(O, K).T @ dout), RY rows of dx at a time; any stride and padding.

    dout: (N, O, OH, OW) contiguous, w: (O, C, KH, KW) -> dx: x_shape (N, C, H, W).
    Each tile owns its rows of dx: it multiplies the rows of dout whose windows
    touch them (``col2im_rows``: the tiles' reads overlap by about KH/s rows,
    under 2% more product at conv1_1), folds them onto a zeroed padded buffer
    and *assigns* its rows. So no two tiles write one row, and ``workers``
    threads can share the tiles (``minivgg.fast.threads``), each with buffers of its own.
    """
    xp = get_array_module(dout, w)
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    oh, ow = dout.shape[2:]
    k = c * kh * kw
    w2t = w.reshape(o, k).T                                         # (K, O)
    dout3 = flat_spatial(dout)                                      # (N, O, OH*OW), either order
    rows = tile_rows(n, k, oh, ow, dout.dtype.itemsize, w2t.nbytes, device_of(dout), max_tile_bytes, workers)
    ry, ro = col2im_rows(stride, kh, rows)
    tiles = row_blocks(h, ry)
    workers = max(1, min(workers, len(tiles)))
    wp = wd + 2 * pad
    flat = work(pool, xp, tile_work_sizes(n, c, kh, kw, stride, ro, ow, wp) * workers, dout.dtype)
    dx = xp.empty(x_shape, dtype=dout.dtype)                        # (N, C, H, W): every row assigned

    def tile(k_worker, rows_y):
        y0, y1 = rows_y
        i0 = max(0, -(-(y0 + pad - kh + 1) // stride))              # the output rows whose windows
        i1 = min(oh, (y1 - 1 + pad) // stride + 1)                  # touch rows y0..y1 of x
        if i1 <= i0:                                                # none (rows the floor dropped)
            dx[:, :, y0:y1] = 0
            return
        dcols_flat, dxt_flat = flat[2 * k_worker:2 * k_worker + 2]
        r, ri = i1 - i0, stride * (i1 - i0 - 1) + kh
        dcols = prefix_view(dcols_flat, (n, k, r * ow))             # (N, K, R*OW)
        xp.matmul(w2t, dout3[:, :, i0 * ow:i1 * ow], out=dcols)     # (K, O) @ (N, O, R*OW)
        dcols = dcols.reshape(n, c, kh, kw, r, ow)                  # (N, C, KH, KW, R, OW)
        dxt = prefix_view(dxt_flat, (n, c, ri, wp))                 # (N, C, RI, WP): padded rows r0..r0+RI
        dxt[...] = 0
        fields = windows(dxt, (kh, kw), (stride, stride), (r, ow))  # (KH, KW, N, C, R, OW) view
        for u in range(kh):
            for v in range(kw):
                fields[u, v] += dcols[:, :, u, v]                   # (N, C, R, OW), one offset at a time
        r0 = stride * i0 - pad                                      # dxt's first row, in x's rows
        lo, hi = max(y0, r0), min(y1, r0 + ri)                      # y0 <= lo < hi <= y1
        dx[:, :, y0:lo] = 0
        dx[:, :, lo:hi] = dxt[:, :, lo - r0:hi - r0, pad:pad + wd]  # (N, C, hi-lo, W)
        dx[:, :, hi:y1] = 0
    dealt(tiles, workers, tile)
    return dx


def _dw_tiled(dout, x, kh: int, kw: int, stride: int, pad: int, max_tile_bytes: int | None = None):
    """dw = sum over tiles and images of dout_tile @ cols_tile^T; dout (N, O, OH, OW) contiguous -> (O, K)."""
    xp = get_array_module(dout, x)
    n, c = x.shape[:2]
    o, oh, ow = dout.shape[1:]
    k = c * kh * kw
    dout3 = flat_spatial(dout)                                      # (N, O, OH*OW)
    rows = tile_rows(n, k, oh, ow, x.dtype.itemsize, o * k * x.dtype.itemsize, device_of(x), max_tile_bytes)
    dw2 = xp.zeros((o, k), dtype=dout.dtype)                        # (O, K)
    for i0, i1, cols in unrolled_tiles(x, kh, kw, stride, pad, pad, rows):
        cols_t = cols.transpose(0, 2, 1)                            # (N, R*OW, K)
        dw2 += (dout3[:, :, i0 * ow:i1 * ow] @ cols_t).sum(axis=0)  # (N, O, K) -> (O, K)
    return dw2


def conv2d_backward(dout, cache: Conv2dCache, weight_grads: bool = False, *,
                    max_tile_bytes: int | None = None, pool=None, workers: int = 1, separable: bool = False,
                    small_products: bool = False, transposed=None):
    """Gradients of a scalar loss through ``out = w * x + b``.

    Local derivatives: dx = w^T * dout (the transposed convolution),
    dw[o,c,u,v] = sum_{n,i,j} dout[n,o,i,j] xpad[n,c,s*i+u,s*j+v], db[o] = sum_{n,i,j} dout[n,o,i,j].
    Derived in notebooks/01_layers.ipynb.

    dout: (N, O, OH, OW) -> (dx (N, C, H, W), dw (O, C, KH, KW) or None, db (O,) or None);
    dw and db only when ``weight_grads`` is true (style transfer needs dx alone).
    dx is computed tile by tile (see the module docstring for the two routes);
    no full-size unrolled matrix is ever formed. ``pool``: the tiles come from
    its work buffer; dx itself is plain memory (a gradient lives one layer).
    ``workers``, ``separable``, ``small_products``: as ``conv2d_forward``'s. ``transposed``: the
    transposed route's ``transposed_weights(w)``, kept by the caller (made here when None).
    """
    x, w, stride, pad, winograd, x_shape = cache
    x_shape = tuple(x.shape) if x is not None else x_shape
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    dout = dense(dout)                                              # (N, O, OH, OW), packed either way
    if winograd is not None:                                        # the transposed conv, by Winograd
        dx = winograd_conv3x3(dout, winograd, backward=True, max_band_bytes=max_tile_bytes, pool=pool,
                              workers=workers, separable=separable, small_products=small_products)
    elif uses_transposed_conv(c, o, kh, kw, stride, pad):
        dx = _dx_transposed_conv(dout, w, pad, max_tile_bytes, pool, workers, transposed)
    else:
        dx = _dx_col2im(dout, w, x_shape, stride, pad, max_tile_bytes, pool, workers)
    assert dx.shape == x_shape
    if not weight_grads:
        return dx, None, None
    if x is None:
        raise ValueError("weight gradients need the layer's input, which this cache dropped")
    dw = _dw_tiled(dout, x, kh, kw, stride, pad, max_tile_bytes).reshape(w.shape)  # (O, C, KH, KW)
    db = dout.sum(axis=(0, 2, 3))                                   # (O,)
    assert dw.shape == w.shape and db.shape == (o,)
    return dx, dw, db
