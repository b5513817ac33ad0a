"""Products in pieces OpenBLAS multiplies without packing (``minivgg.fast.small_products``): the same
numbers as one product, every piece within the bound, written through views, and Winograd's layers
through it equal to the plain route."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import channels_last_copy, rel_error
from minivgg.fast import small_products, winograd
from minivgg.fast.arrays import ArrayPool


@pytest.fixture
def calls(monkeypatch):
    """The (a, b) shapes of every numpy.matmul call the test makes."""
    seen = []
    real = np.matmul

    def spy(a, b, *args, **kwargs):
        seen.append((a.shape, b.shape))
        return real(a, b, *args, **kwargs)
    monkeypatch.setattr(np, "matmul", spy)
    return seen


def _within_bound(seen):
    """Every call's matrices (the last two axes) multiply at most SMALL_PRODUCT times."""
    return all(a[-2] * a[-1] * b[-1] <= small_products.SMALL_PRODUCT for a, b in seen)


@pytest.mark.parametrize("m,k,n", [(16, 36, 5000), (6, 6, 27777 * 2 + 5), (6, 4, 100000), (16, 36, 1737)])
def test_columns_equal_one_product_in_pieces_within_the_bound(calls, m, k, n):
    """Long b cut into pieces (the last one shorter, or none left over), batch axes broadcast: float64
    equal to a @ b to rounding (measured: 0, the same sums), and each piece under 100^3."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((3, k, n))
    out = np.empty((3, m, n))
    got = small_products.columns(np, a, b, out)
    assert got is out and rel_error(out, a @ b) < 1e-15
    assert len(calls) >= 1 and _within_bound(calls)
    pieces, piece = calls[0][1][-3], calls[0][1][-1]                          # (3, pieces, k, piece)
    assert pieces * piece + sum(b[-1] for a, b in calls[1:]) == n and len(calls) <= 2
    assert -(-n // (small_products.SMALL_PRODUCT // (m * k))) == pieces + len(calls) - 1   # as few as allowed


def test_columns_write_through_strided_views(calls):
    """out a strided view (a band's columns inside a wider buffer): its elements are the product's, the
    rest of the buffer is untouched; a last axis that is not contiguous gets one product."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((5, 40000))
    buffer = np.zeros((6, 41000))
    small_products.columns(np, a, b, buffer[:, 500:40500])
    assert rel_error(buffer[:, 500:40500], a @ b) < 1e-15
    assert not buffer[:, :500].any() and not buffer[:, 40500:].any()
    assert calls == [((6, 5), (2, 5, 20000))] and _within_bound(calls)        # two equal pieces
    calls.clear()
    out = np.empty((40000, 6)).T                                             # columns 6 floats apart
    small_products.columns(np, a, b, out)
    assert calls == [((6, 5), (5, 40000))] and rel_error(out, a @ b) < 1e-15


@pytest.mark.parametrize("c,o,cut", [(64, 64, True), (64, 128, True), (128, 128, False)])
def test_rows_cut_only_thin_layers_and_equal_one_product(calls, c, o, cut):
    """(a*a, P, C) @ (a*a, C, O): P cut where the bound allows at least MIN_ROWS rows (64 x 64 and
    64 x 128, not 128 x 128); float64 equal to the whole product (measured: 0)."""
    rng = np.random.default_rng(2)
    v, u = rng.standard_normal((4, 700, c)), rng.standard_normal((4, c, o))
    out = np.empty((4, 700, o))
    small_products.rows(np, v, u, out)
    assert rel_error(out, v @ u) < 1e-15
    assert small_products.cuts_rows(c, o) == cut and (len(calls) > 1) == cut
    assert _within_bound(calls) == cut


def test_rows_leave_a_transposed_operand_whole(calls):
    """A right operand read transposed (a view of (O, C) memory) is one product: pieces of it measured slower."""
    rng = np.random.default_rng(3)
    v, u_t = rng.standard_normal((4, 700, 64)), rng.standard_normal((4, 64, 64)).transpose(0, 2, 1)
    out = np.empty((4, 700, 64))
    small_products.rows(np, v, u_t, out)
    assert len(calls) == 1 and rel_error(out, v @ u_t) < 1e-15


def test_disabled_means_one_product(calls):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((16, 36)), rng.standard_normal((36, 9000))
    small_products.columns(np, a, b, np.empty((16, 9000)), enabled=False)
    small_products.rows(np, rng.standard_normal((700, 64)), rng.standard_normal((64, 64)), np.empty((700, 64)),
                        enabled=False)
    assert len(calls) == 2


@pytest.mark.parametrize("c,o", [(64, 64), (64, 128)])
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_winograd_in_small_products_equals_the_plain_route(monkeypatch, calls, c, o, separable, workers):
    """conv3x3 forward (with ReLU), backward, channels-last and C order, one or two workers: the same
    numbers with ``small_products`` as without (float64; measured: at most 2e-16), and the pieces were
    cut: channels-last, the a*a products by rows (the forward through ``u_forward``, U^T stored in
    its order); in either order the output transform by columns."""
    monkeypatch.setitem(winograd.BAND_BYTES, "cpu", (64 * 2**20, 64 * 2**20))  # whole bands of > 244 tiles
    rng = np.random.default_rng(5)
    h, w, m = 152, 72, 4                                 # 38 x 18 tiles: bands of 19 rows, P = 342 > 244
    weights = winograd.prepare(rng.standard_normal((o, c, 3, 3)), m)
    assert weights.u_forward is not None and weights.u_forward.flags.c_contiguous
    b = rng.standard_normal(o)
    for order in (channels_last_copy, lambda a: a):
        x, dout = order(rng.standard_normal((1, c, h, w))), order(rng.standard_normal((1, o, h, w)))
        for kwargs in (dict(b=b, relu=True), dict(backward=True)):
            inp = dout if kwargs.get("backward") else x
            plain = winograd.conv3x3(inp, weights, separable=separable, workers=workers, pool=ArrayPool(), **kwargs)
            calls.clear()
            small = winograd.conv3x3(inp, weights, separable=separable, workers=workers, pool=ArrayPool(),
                                     small_products=True, **kwargs)
            assert rel_error(small, plain) < 1e-15, (order, kwargs)
            rows = [a for a, b in calls if len(a) == 4 and a[0] == (m + 2) ** 2]       # (a*a, pieces, P', C)
            columns = [b for a, b in calls if a == (m * m, (m + 2) ** 2) and len(b) == 3]  # KA @ (pieces, a*a, N')
            assert columns, (order, kwargs)
            assert bool(rows) == (order is channels_last_copy), (order, kwargs)
