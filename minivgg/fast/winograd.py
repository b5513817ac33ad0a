"""Winograd's minimal filtering: 3x3, stride-1, padding-1 convolutions with fewer multiplications.

Shape legend
    N batch   C input channels   O output channels   H, W image (and output) size
    m   output tile side (2 or 4)       a = m + 2  input tile side
    TH, TW = ceil(H / m), ceil(W / m)   tiles down and across
    R   tile rows in one band (the unit of work; bounds the temporary memory)
    P   = R * TW tiles in a band

The idea (Lavin & Gray 2016, after Winograd and Toom-Cook). In 1-D, m outputs
of a 3-tap correlation, y[i] = sum_k g[k] d[i + k] for i < m, are the
coefficients of a polynomial product, and a polynomial of degree m + 1 is fixed
by its values at a = m + 2 points. So evaluate both factors at those points
(a multiplications instead of 3m), then interpolate:

    y = AT [ (G g) * (BT d) ]          (* elementwise; AT: (m, a), G: (a, 3), BT: (a, a))

Nesting it on rows and columns gives the 2-D tile, m x m outputs from an a x a
input tile with a*a multiplications instead of 9*m*m (F(2x2,3x3): 16 for 36;
F(4x4,3x3): 36 for 144):

    Y = AT [ (G g GT) * (BT d B) ] A

Summed over input channels, the elementwise products become a matrix product
per position (xi, nu) of the a x a tile, and that is where the time goes:

    U[xi nu] = (G g[o, c] GT)[xi, nu]     (a*a, O, C)   once per weight set (``prepare``)
    V[xi nu] = (BT d[p, c] B)[xi, nu]     (a*a, P, C)   input transform of every tile p
    M[xi nu] = V[xi nu] @ U[xi nu]^T      (a*a, P, O)   a*a GEMMs: the O*C*a*a*P multiply-adds
    Y        = AT M A per tile            (m*m, P, O)   output transform, scattered into the image

(tiles before channels: the layout of channels-last images, see ``conv3x3``).

The transforms are small linear maps on each tile's a*a values, so each is one
matrix product as well, with the Kronecker products BT (x) BT and AT (x) AT
(``WinogradPlan``): every step is GEMM-shaped and runs on the BLAS's threads.
The input transform can also go one axis at a time, BT down the rows and then
BT across the columns (``conv3x3``'s ``separable``): a third of the multiply-adds.
On the CPU those thin products (a small matrix times a long one) go in pieces
that OpenBLAS multiplies without packing (``minivgg.fast.small_products``).
Against im2col (9 multiply-adds per weight and output pixel), F(2x2,3x3)
does 4 and F(4x4,3x3) 2.25, plus the transforms' O(C + O) per pixel.

Backward. dx is the transposed convolution, conv(dout, w_t, padding 1) with
w_t[c, o] = w[o, c] flipped (``minivgg.fast.conv``). Its transformed weights need
no second copy: when the evaluation points are closed under p -> 1/p (with
infinity <-> 0), flipping a kernel permutes and rescales the rows of G g,
G J = F G with F a scaled permutation (``minivgg.fast.toom_cook.flip_map``), so
U_t[k] = s_k U[pi(k)]^T, and the permutation and scales fold into the
transform matrices of a second plan (``backward``). The points used are
(0, 1, -1, infinity) for F(2x2) and (0, 1, -1, 2, 1/2, infinity) for F(4x4).

What VGG puts around each convolution rides along instead of costing passes
over the image of their own: the bias is added to one row of M (the point 1
makes a column of KA all ones, so it reaches every output: m*m times fewer
additions than on Y), and the ReLU is the copy of Y into the image itself
(``max(Y, 0)`` written there). (The backward's ReLU derivative stays a pass
of its own: multiplying by a boolean mask while copying the band in was
measured 3% slower than a copy plus one in-place multiply.)

The matrices are built exactly, in rational arithmetic (``minivgg.fast.toom_cook``), and
checked against the definition before use. Rounding: float32 results differ
from direct convolution by about 1e-7 (F(2x2)) and 1e-5 (F(4x4)) of the
output's scale; ``tests/test_fast_winograd.py`` measures both.
"""
from __future__ import annotations

import threading
from typing import NamedTuple

from minivgg.backend import device_of, get_array_module
from minivgg.fast import small_products as small_products_module
from minivgg.fast.arrays import empty, work
from minivgg.fast.layout import channels_last as layout_channels_last
from minivgg.fast.layout import prefix_view
from minivgg.fast.threads import run_workers
from minivgg.fast.toom_cook import POINTS, plans
from minivgg.fast.winograd_band import input_tiles, products_channels_first, products_tiles_first, write_band

#: Bytes of one band's temporaries together, per device: (floor, cap), as ``minivgg.fast.conv.TILE_BYTES``.
#: On the GPU each band costs a dozen kernel launches, so bands are large: with (64, 256) MiB
#: an evaluation at 1024 x 1024 took 0.089 s on an H200, with (192, 768) MiB 0.048 s. On the CPU
#: the floor sets the early layers' bands (their U is small): with 16 MiB (8 per worker) rather
#: than 8, conv1_2 and conv2_2 run two tile rows a band at 512 x 512 instead of one, and their
#: forwards took 71 and 47 ms instead of 79 and 56 (two workers, separable; ``BAND_BYTES`` is
#: read at each call, so a script can try others).
#: The cap sets the deep layers' (2U is 75 MiB for conv4_x): with 48 MiB rather than 24 and
#: shared products (``shared_products``), conv4_2's forward at 512 x 512 took 32.6 ms instead of 40.5.
BAND_BYTES = {"cpu": (16 * 2**20, 48 * 2**20), "gpu": (192 * 2**20, 768 * 2**20)}


class Transforms(NamedTuple):
    """One direction's transform matrices, as arrays of the weights' dtype and device (from a ``WinogradPlan``)."""

    input: object      # KB (a*a, a*a): V = KB @ D
    output: object     # KA (m*m, a*a): Y = KA @ M
    ones_column: int   # k with KA[:, k] all ones: the bias goes into M[k]
    input_rows: object  # (a, a), KB's factor: KB = input_rows (x) input_rows (``separable``)


class WinogradWeights(NamedTuple):
    """A 3x3 layer's kernels transformed once (``prepare``): what forward and backward multiply by."""

    u: object              # (a*a, O, C): U[xi nu] = (G g GT)[xi, nu] for every (o, c)
    m: int
    forward: Transforms
    backward: Transforms   # the flip folded in (``plans``): the same U serves dx
    u_forward: object = None  # (a*a, C, O), U^T stored in the forward's order, for the thin layers
                              # whose products go in pieces (``small_products.cuts_rows``), else None

    @property
    def nbytes(self) -> int:
        """Bytes these weights keep: U, and ``u_forward`` where there is one (``weights_bytes``)."""
        return self.u.nbytes + (0 if self.u_forward is None else self.u_forward.nbytes)

    @property
    def shape(self) -> tuple[int, int]:
        """(O, C) of the layer."""
        return self.u.shape[1], self.u.shape[2]


#: Bytes of the float64 product U = KG @ w that ``prepare`` makes at a time.
PREPARE_BYTES = 4 * 2**20


def prepare(w, m: int) -> WinogradWeights:
    """Transform w (O, C, 3, 3) for F(m x m, 3 x 3): U = KG @ w as (a*a, O, C), in float64, then w's dtype.

    m: the output tile side, 2 or 4 (the fast network's rule per VGG layer:
    ``minivgg.fast.network.winograd_tile``). Raises ValueError when w is not 3x3 or m is neither.
    The float64 product goes ``PREPARE_BYTES`` of it at a time, straight into U: made whole, it
    was a 75 MB temporary for a 512 x 512 layer (plus a float32 copy), the peak of a 256 x 256
    run's construction. For a layer whose forward products go in pieces
    (``minivgg.fast.small_products.cuts_rows``: at most 64 x 128 channels) U^T is kept a second
    time, in the forward's order (``u_forward``): pieces read a transposed operand slowly.
    """
    xp = get_array_module(w)
    o, c, kh, kw = w.shape
    if (kh, kw) != (3, 3):
        raise ValueError(f"Winograd F(m x m, 3 x 3) needs 3x3 kernels, got {kh}x{kw}")
    if m not in POINTS:
        raise ValueError(f"no Winograd tile of side {m!r}: m must be one of {sorted(POINTS)}")
    forward, backward = plans(m)
    a = m + 2
    kg = xp.asarray(forward.kernel_transform, dtype="float64")               # (a*a, 9)
    u = xp.empty((a * a, o, c), dtype=w.dtype)                               # (a*a, O, C)
    step = max(1, PREPARE_BYTES // (a * a * c * 8))                          # output channels at a time
    for o0 in range(0, o, step):
        part = w[o0:o0 + step].reshape(-1, 9).T.astype("float64")            # (9, step*C)
        u[:, o0:o0 + step] = (kg @ part).reshape(a * a, -1, c)               # rounded to w's dtype once
    mats = lambda plan: Transforms(xp.asarray(plan.input_transform, dtype=w.dtype),    # noqa: E731
                                   xp.asarray(plan.output_transform, dtype=w.dtype), plan.ones_column,
                                   xp.asarray(plan.input_rows, dtype=w.dtype))
    u_forward = xp.ascontiguousarray(u.transpose(0, 2, 1)) if small_products_module.cuts_rows(c, o) else None
    return WinogradWeights(u, m, mats(forward), mats(backward), u_forward)


def weights_bytes(o: int, c: int, m: int, itemsize: int) -> int:
    """Bytes of what ``prepare`` keeps for an O x C layer and tile m (memory model): U's a*a*O*C
    elements, twice for a layer that keeps ``u_forward``."""
    copies = 2 if small_products_module.cuts_rows(c, o) else 1
    return copies * u_bytes(o, c, m, itemsize)


def u_bytes(o: int, c: int, m: int, itemsize: int) -> int:
    """Bytes of one U, (a*a, O, C): what a band's products stream (``band_rows``)."""
    return (m + 2) ** 2 * o * c * itemsize


class BandWork(NamedTuple):
    """One band's work arrays (flat, from ``minivgg.fast.arrays.work``), or their sizes in elements
    (``band_work_sizes``); R tile rows, P = R*TW tiles, C -> O channels."""

    padded: object         # the band's input rows and their zero padding, C*(m*R+2)*WP; with
                           # ``separable`` the rows transformed instead, T (R, a, C, WP): R*a*C*WP
    tiles_then_y: object   # D, the gathered tiles (a*a*P*C), then Y (m*m*P*O) in the same memory:
                           # D is dead once V = KB @ D is made, and Y is made after V
    transformed: object    # V = KB @ D: a*a*P*C
    products: object       # M = V @ U^T, plus the bias: a*a*P*O
    uncropped: object      # Y's m*R x m*TW outputs when the image cuts the band (O*m*R*m*TW), else 0


def conv3x3(x, weights: WinogradWeights, b=None, *, backward: bool = False, relu: bool = False,
            max_band_bytes: int | None = None, channels_last: bool | None = None, pool=None,
            workers: int = 1, separable: bool = False, small_products: bool = False):
    """out = conv(x, w, stride 1, padding 1) (+ b, then ReLU) through Winograd, band by band.

    x: (N, C, H, W) -> out: (N, O, H, W), packed in memory as x is (C order or
    channels-last, ``minivgg.fast.layout``) unless ``channels_last``
    says which. ``backward``: the transposed convolution instead, x = dout
    (N, O, H, W) -> dx (N, C, H, W), with the same U.

    Each band goes in three steps: its tiles' input transform V (``input_tiles``),
    the a*a products M and the output transform Y (``products_tiles_first`` or
    ``products_channels_first``), and Y's copy into the image (``write_band``).
    The copies follow x's order: channels-last, every copy moves whole channel
    vectors and V is (a*a, P, C), tiles before channels; in C order the copies
    move single floats m apart and V is (a*a, C, P). The forward's channels-last
    bands with fewer tiles than channels multiply in the other order
    (``channels_first_products``: U read as stored). On the CPU channels-last
    wins, and ``VGG19`` runs so there (its gain: ``python -m minivgg.bench
    --sizes 256 512 --ablate``, switch ``channels_last``); on the GPU it runs in
    C order (``Transforms.default``).

    ``separable``: the input transform one axis at a time (``minivgg.fast.winograd_band.separable_tiles``):
    KB = BT (x) BT, so V is BT applied down the rows of the image, then across
    the columns of the tiles, a third of the multiply-adds of one product with
    KB (2 * 2a^3 against 2a^4 per tile and channel), and the rows' step reads
    the image itself, so no padded copy of the band is made.

    ``small_products``: the transforms' products, and the a*a products of thin layers, in pieces
    that OpenBLAS multiplies without packing (``minivgg.fast.small_products``); the forward's
    products then read ``u_forward`` where the weights have it.

    A band is R tile rows (m*R output rows); its temporaries (``BandWork``:
    the padded band, the gathered tiles D, V, M; Y reuses D's memory) stay
    within ``max_band_bytes`` together (default: ``BAND_BYTES``, about twice
    U). With ``workers`` > 1 the bands are dealt out to that many threads
    (``minivgg.fast.threads``: the caller has given the BLAS one thread), each
    with work arrays of its own within 1/workers of that bound, and as many
    bands as a multiple of ``workers``, so no thread waits on a last odd band.
    Channels-last bands thinner than their channels go in groups of a band per
    worker that share their products (``shared_products``, ``_shared_bands``).
    With one worker the products run on the BLAS's own threads, the copies
    around them on the calling thread.

    ``pool`` (``minivgg.fast.arrays.ArrayPool`` or None): the band temporaries
    come from its work buffer, and the forward's output (an activation) from
    the pool itself; the backward's dx lives one layer, so it takes a pooled buffer only when
    one of its size is free (``minivgg.fast.arrays.empty``'s ``only_free``), else plain memory.
    """
    xp = get_array_module(x, weights.u)
    n, c, h, wd = x.shape
    m = weights.m
    if backward:                                                             # U^T: (a*a, in, out)
        u_t, transforms = weights.u, weights.backward                        # (a*a, O, C): O in, C out
    else:
        u_t, transforms = weights.u.transpose(0, 2, 1), weights.forward      # (a*a, C, O) view
        if small_products and weights.u_forward is not None:
            u_t = weights.u_forward                                          # the same, stored so
    c_u, o = u_t.shape[1], u_t.shape[2]
    if c != c_u:
        raise ValueError(f"input has {c} channels but the weights expect {c_u}")
    layout = layout_channels_last(x) if channels_last is None else channels_last
    device = device_of(x)
    th, tw = -(-h // m), -(-wd // m)
    rows = band_rows(c, o, h, wd, m, x.dtype.itemsize, weights.u.nbytes, device, max_band_bytes, workers)
    if layout and (backward or not channels_first_products(c, rows * tw)):
        products = products_tiles_first                                     # V (a*a, P, C) @ U^T
    else:
        products = products_channels_first                                  # U @ V^T, or C order's V
    bands = [(img, t0) for img in range(n) for t0 in range(0, th, rows)]
    workers = max(1, min(workers, len(bands)))
    sizes = band_work_sizes(c, o, h, wd, m, rows, separable)
    out = empty(pool, xp, (n, o, h, wd), x.dtype, channels_last=layout, only_free=backward)
    if layout and workers > 1 and shared_products(c, rows * tw):
        _shared_bands(xp, x, out, u_t, transforms, b, m, rows, tw, bands, sizes, pool, workers, relu, separable,
                      small_products)
        return out
    flat = work(pool, xp, list(sizes) * workers, x.dtype)                    # one BandWork per worker

    def run(k, stop):                                                        # worker k: bands k, k+workers, ...
        buffers = BandWork._make(flat[k * len(sizes):(k + 1) * len(sizes)])
        for img, t0 in bands[k::workers]:
            if stop.is_set():
                return
            r = min(rows, th - t0)
            v = input_tiles(xp, x[img], transforms, m, t0, r, tw, buffers, layout, separable, small=small_products)
            y5 = products(xp, v, u_t, transforms, b, m, r, tw, buffers, layout, small_products)  # (m, m, R, TW, O)
            write_band(xp, y5, out[img], m, t0, relu, device, buffers.uncropped, layout)
    run_workers(run, workers)
    return out


def shared_products(c: int, p: int) -> bool:
    """Whether several workers' channels-last bands of P tiles each share their products
    (``_shared_bands``): when P is fewer than the C input channels, the same rule as
    ``channels_first_products`` (VGG's conv3_1 onwards at 256 and 512).

    Why: a thin band's a*a products each stream a whole U[xi nu] (C x O) for few rows of V, so
    with a band per worker every worker streams all of U; sharing the group's products, each
    worker multiplies the whole group's V by half of the a*a matrices. Measured at 512 x 512, two
    workers, separable, ``BAND_BYTES`` (16, 48) MiB, against a band per worker: conv4_2 forward
    39.1 -> 32.6 ms, backward 30.4 -> 30.4; conv4_1 forward 18.5 -> 16.3; conv5_1 forward 13.6 ->
    11.5; conv3_2 38.2 -> 37.7 (P = 64 against C = 256).
    """
    return p < c


def _shared_bands(xp, x, out, u_t, transforms: Transforms, b, m: int, rows: int, tw: int, bands, sizes,
                  pool, workers: int, relu: bool, separable: bool, small: bool = False):
    """``conv3x3``'s bands in groups of ``workers``, for thin channels-last bands (``shared_products``).

    Each group goes in three steps, the workers meeting at a barrier between them: each worker's
    band's V into its rows of the group's V (a*a, P_group, C); the a*a products M = V @ U^T of the
    whole group, dealt out by xi nu (worker k takes a*a*k/workers ..); each worker's band's Y
    from its rows of the group's M, copied into the image. The padded rows, the tiles and Y are
    each worker's own (``BandWork``); V and M the group's, as large as the workers' own would be.
    ``small``: as ``conv3x3``'s ``small_products``.
    """
    n_ch, o = u_t.shape[1], u_t.shape[2]
    a = m + 2
    own = [sizes.padded, sizes.tiles_then_y, sizes.uncropped]
    flat = work(pool, xp, own * workers + [sizes.transformed * workers, sizes.products * workers], x.dtype)
    group_p = rows * tw * workers
    v_all = prefix_view(flat[-2], (a * a, group_p, n_ch))                    # the group's V
    m_all = prefix_view(flat[-1], (a * a, group_p, o))                       # and its M
    th = -(-out.shape[2] // m)
    device = device_of(x)
    barrier = threading.Barrier(workers)
    splits = [a * a * k // workers for k in range(workers + 1)]              # each worker's xi nu

    def run(k, stop):
        mine = BandWork(flat[3 * k], flat[3 * k + 1], None, None, flat[3 * k + 2])
        try:
            for g0 in range(0, len(bands), workers):
                if stop.is_set():
                    return
                group = bands[g0:g0 + workers]
                spans = [min(rows, th - t0) * tw for _, t0 in group]         # P of each band
                starts = [sum(spans[:j]) for j in range(len(group))]
                total = sum(spans)
                if k < len(group):                                           # 1: this band's V
                    img, t0 = group[k]
                    v = v_all[:, starts[k]:starts[k] + spans[k]]
                    input_tiles(xp, x[img], transforms, m, t0, spans[k] // tw, tw, mine, True, separable, v, small)
                barrier.wait()
                lo, hi = splits[k], splits[k + 1]                            # 2: products xi nu = lo .. hi
                small_products_module.rows(xp, v_all[lo:hi, :total], u_t[lo:hi], m_all[lo:hi, :total], small)
                if b is not None and lo <= transforms.ones_column < hi:
                    m_all[transforms.ones_column, :total] += b
                barrier.wait()
                if k < len(group):                                           # 3: this band's Y, written
                    img, t0 = group[k]
                    r = spans[k] // tw
                    mm = m_all[:, starts[k]:starts[k] + spans[k]].reshape(a * a, spans[k] * o)
                    y = prefix_view(mine.tiles_then_y, (m * m, spans[k] * o))
                    small_products_module.columns(xp, transforms.output, mm, y, small)  # (m*m, a*a) @ (a*a, P*O)
                    write_band(xp, y.reshape(m, m, r, tw, o), out[img], m, t0, relu, device,
                                mine.uncropped, True)
        except threading.BrokenBarrierError:                                 # another worker failed:
            return                                                           # its error is raised
        except BaseException:
            barrier.abort()                                                  # free the others from the barrier
            raise
    run_workers(run, workers)


def channels_first_products(c: int, p: int) -> bool:
    """Whether the forward's channels-last band multiplies M^T = U V^T (O, P) rather than M = V U^T (P, O):
    when its P tiles are fewer than its C input channels (VGG's conv2_2 onwards at 256 and 512).

    Why: U is stored (a*a, O, C), the backward's order (``conv3x3``), so the forward's V U^T reads
    each U[xi nu] transposed, and the BLAS re-packs that big transposed operand for every band;
    with thin bands (few tiles P, many channels) that packing is much of the product: two threads
    running (32 x 512) @ (512 x 512) products took 87 ms transposed against 56 ms not. U V^T reads U
    in its own order and transposes the thin V instead, at the price of a transposing scatter of Y
    (P innermost, the image's O innermost), which costs more than it saves when P is large
    (conv1_2: 87 against 80 ms at 512 x 512). Measured per layer, two workers, forward:
    conv4_2 at 64 x 64 (P = 32): 37.0 against 46.9 ms; conv1_2 at 512 x 512 (P = 128): tiles-first.
    With several workers such bands share their products instead (``shared_products``), tiles first:
    this order is then the one-worker route's.
    """
    return p < c


def band_rows(c: int, o: int, h: int, w: int, m: int, itemsize: int, u_bytes: int, device: str = "cpu",
              max_band_bytes: int | None = None, workers: int = 1) -> int:
    """R, tile rows per band: D (or Y), V and M together, (max(a*a*C, m*m*O) + a*a*(C + O)) * R * TW
    elements, within the bound clamp(2 * U's bytes, floor, cap) of ``BAND_BYTES[device]``
    (split among ``workers``, each with a band of its own); at least 1, at most TH. With
    several workers (dealt bands k, k + workers, ...: ``conv3x3``), R is then the largest
    within that bound that gives no worker more than ceil(TH / workers) tile rows."""
    floor, cap = BAND_BYTES[device]
    if max_band_bytes is not None:
        floor, cap = min(floor, max_band_bytes), max_band_bytes
    limit = min(cap, max(floor, 2 * u_bytes)) // max(1, workers)
    a, th, tw = m + 2, -(-h // m), -(-w // m)
    per_row = (max(a * a * c, m * m * o) + a * a * (c + o)) * tw * itemsize
    rows = max(1, min(th, limit // per_row))
    if workers > 1:
        rows = max(r for r in range(1, rows + 1) if worker_rows(th, r, workers) == -(-th // workers))
    return rows


def worker_rows(th: int, rows: int, workers: int) -> int:
    """The most tile rows one worker gets when TH rows go in bands of ``rows``, band i to worker i % workers."""
    bands = [min(rows, th - t0) for t0 in range(0, th, rows)]
    return max(sum(bands[k::workers]) for k in range(workers))


def band_work_sizes(c: int, o: int, h: int, w: int, m: int, rows: int, separable: bool = False) -> BandWork:
    """Elements of ``conv3x3``'s work arrays (``BandWork``) for a band of R = ``rows`` tile rows, C -> O
    channels (``separable``: as ``conv3x3``'s)."""
    a, tw = m + 2, -(-w // m)
    cropped = h % m != 0 or w % m != 0                                       # the image cuts the last bands
    return BandWork(padded=c * (a * rows if separable else m * rows + 2) * (m * tw + 2),
                    tiles_then_y=max(a * a * c, m * m * o) * rows * tw,
                    transformed=a * a * c * rows * tw,
                    products=a * a * o * rows * tw,
                    uncropped=o * m * rows * m * tw if cropped else 0)


def temporary_bytes(c: int, o: int, h: int, w: int, m: int, itemsize: int, device: str = "cpu",
                    workers: int = 1, separable: bool = False) -> int:
    """Bytes ``conv3x3`` allocates besides its output, for C -> O channels at H x W, batch 1 (memory
    model): its work arrays (``band_work_sizes``) at the band height ``band_rows`` picks, one set
    per worker that gets a band (``separable``: as ``conv3x3``'s)."""
    rows = band_rows(c, o, h, w, m, itemsize, u_bytes(o, c, m, itemsize), device, workers=workers)
    th = -(-h // m)
    used = min(workers, -(-th // rows))                                      # workers that get a band
    return sum(band_work_sizes(c, o, h, w, m, rows, separable)) * itemsize * max(1, used)
