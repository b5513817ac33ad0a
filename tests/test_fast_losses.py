"""The fast engine's losses against their reference twins (``losses``): the same values on C-order and
channels-last features, gradients in the features' order, unmasked as the objective asks, spans."""
from __future__ import annotations

import numpy as np
import pytest

import losses as reference
from gradcheck import channels_last_copy, rel_error
from minivgg.fast import losses as fast
from minivgg.fast.arrays import ArrayPool
from minivgg.fast.layout import channels_last
from minivgg.relu import ReluCache, relu_backward


def _features(xp, rng, shape=(1, 6, 5, 7)):
    """A real post-ReLU map (many exact zeros), a content target and a Gram target."""
    f = xp.maximum(xp.asarray(rng.standard_normal(shape)), 0)
    p = xp.asarray(rng.standard_normal(shape))
    b = rng.standard_normal((1, shape[1], 9))
    return f, p, xp.asarray(b @ b.transpose(0, 2, 1))


def test_unmasked_gradients_become_the_papers_once_relu_masks_them(xp):
    """The fast losses skip the mask [F > 0]: the ReLU below applies it, giving the reference's gradient."""
    rng = np.random.default_rng(5)
    f, p, a = _features(xp, rng)
    _, c_ref = reference.content_loss_forward(f, p)
    _, s_ref = reference.style_loss_forward(f, a)
    _, c_fast = fast.content_loss_forward(f, p)
    _, s_fast = fast.style_loss_forward(f, a)
    plain_content = fast.content_loss_backward(c_fast, 2.0)
    plain_style = fast.style_loss_backward(s_fast, 3.0)
    assert float(abs(plain_content - 2.0 * (f - p)).max()) == 0.0
    assert float((f == 0).mean()) > 0.2 and float((plain_style[f == 0] != 0).mean()) > 0.5  # unmasked there
    relu = ReluCache(f)
    assert rel_error(relu_backward(plain_content, relu), reference.content_loss_backward(c_ref, 2.0)) < 1e-15
    assert rel_error(relu_backward(plain_style, relu), reference.style_loss_backward(s_ref, 3.0)) < 1e-14


@pytest.mark.parametrize("span_bytes", [None, 4 * 6 * 8])
def test_channels_last_features_give_the_reference_values_in_their_own_order(xp, monkeypatch, span_bytes):
    """The fast network's features are channels-last: the losses read them without a copy and answer in
    their order; the style gradient whole or 4 positions per product (``SPAN_BYTES``, CPU)."""
    if span_bytes is not None:
        monkeypatch.setattr(fast, "SPAN_BYTES", span_bytes)
    rng = np.random.default_rng(6)
    f, p, a = _features(xp, rng)
    want_content, c_ref = reference.content_loss_forward(f, p)
    want_style, s_ref = reference.style_loss_forward(f, a)
    for feats, pool in ((f, None), (channels_last_copy(f), None), (channels_last_copy(f), ArrayPool())):
        content, c_cache = fast.content_loss_forward(feats, channels_last_copy(p))
        style, s_cache = fast.style_loss_forward(feats, a)
        grads = (fast.content_loss_backward(c_cache, 2.0, pool=pool), fast.style_loss_backward(s_cache, 3.0))
        assert rel_error(content, want_content) < 1e-14 and rel_error(style, want_style) < 1e-14
        assert rel_error(fast.gram_matrix(feats), reference.gram_matrix(f)) < 1e-14
        one_product = (s_ref.gram_diff * (3.0 * s_ref.scale)) @ f.reshape(1, 6, 35)
        assert rel_error(grads[1], one_product.reshape(f.shape)) < 1e-14
        assert rel_error(grads[0], 2.0 * (f - p)) < 1e-15
        assert all(channels_last(g) == channels_last(feats) for g in grads)
        assert all(g.flags.c_contiguous == feats.flags.c_contiguous for g in grads)


def test_the_forwards_are_the_references_and_read_channels_last_features_without_a_copy(xp, monkeypatch):
    """The fast tier imports the reference's forwards and caches instead of copying them (the style
    forward calls the reference's, handing it G summed by the workers when there are several):
    their reshape of a channels-last map to (N, C, H*W) is a view (H and W stay adjacent in memory)."""
    assert fast.content_loss_forward is reference.content_loss_forward
    assert fast.gram_matrix is reference.gram_matrix
    f, _, a = _features(xp, np.random.default_rng(7))
    f = channels_last_copy(f)
    assert xp.shares_memory(f.reshape(1, 6, 35), f)
    calls = []
    monkeypatch.setattr(fast, "reference_style_loss_forward",
                        lambda *args, **kwargs: calls.append(kwargs) or reference.style_loss_forward(*args, **kwargs))
    want, ref = reference.style_loss_forward(f, a)
    for workers in (1, 3):
        got, cache = fast.style_loss_forward(f, a, workers=workers)
        assert type(cache) is type(ref) and cache.f is f and cache.scale == ref.scale
        assert rel_error(got, want) < 1e-14 and rel_error(cache.gram_diff, ref.gram_diff) < 1e-14
    assert calls[0]["gram"] is None and calls[1]["gram"].shape == (1, 6, 6)


@pytest.mark.parametrize("span_bytes", [None, 4 * 6 * 8])
def test_the_style_gradient_added_into_a_given_one(xp, monkeypatch, span_bytes):
    """``into``: the style gradient added in place to the walk's gradient, span by span through a
    buffer per worker, equals making it whole and adding it, in either memory order."""
    if span_bytes is not None:
        monkeypatch.setattr(fast, "SPAN_BYTES", span_bytes)
    rng = np.random.default_rng(8)
    f, _, a = _features(xp, rng)
    arriving = xp.asarray(rng.standard_normal(f.shape))
    for order in (lambda x: x, channels_last_copy):
        _, cache = fast.style_loss_forward(order(f), a)
        want = fast.style_loss_backward(cache, 3.0) + arriving
        for workers in (1, 2):
            into = order(arriving).copy(order="K")
            got = fast.style_loss_backward(cache, 3.0, workers=workers, into=into)
            assert got is into and rel_error(got, want) < 1e-15


def test_every_worker_gets_a_span_of_a_small_map(monkeypatch):
    """A map smaller than one ``SPAN_BYTES`` span (conv4_1 at 256 x 256) is still cut in as many
    spans as there are workers, and gives the one-worker gradient."""
    rng = np.random.default_rng(9)
    f, _, a = _features(np, rng)
    _, cache = fast.style_loss_forward(f, a)
    assert f[0].nbytes < fast.SPAN_BYTES
    want = fast.style_loss_backward(cache, 3.0)
    dealt = []
    real = fast.run_workers
    monkeypatch.setattr(fast, "run_workers", lambda job, workers: dealt.append(workers) or real(job, workers))
    for workers in (2, 3):
        assert rel_error(fast.style_loss_backward(cache, 3.0, workers=workers), want) < 1e-15
    assert dealt == [2, 3]
