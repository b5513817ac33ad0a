"""The real VGG-19 on both engines: activations against the oracle, gradients through the whole network."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import directional_check, rel_error
from minivgg import LAYER_NAMES, VGG19
from minivgg.architecture import min_input_size


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("pooling", ["avg", "max"])
# The oracle's activations are stored in float32, so float64 agrees to their rounding: measured 2.65e-8;
# float32: 3.4e-7 (reference), 4.2e-6 (fast: Winograd's transforms round more).
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-7), ("float32", 1e-5)])
def test_all_21_layers_match_the_oracle(reference_dir, vgg_params, pooling, dtype, tol, engine):
    ref = np.load(reference_dir / "vgg19_activations.npz")
    net = VGG19(vgg_params, pooling=pooling, dtype=dtype, engine=engine)
    feats, _ = net.forward(ref["input"], taps=LAYER_NAMES)
    errors = {name: rel_error(feats[name], ref[f"{pooling}/{name}"]) for name in LAYER_NAMES}
    worst = max(errors, key=errors.get)
    print(f"{engine} {pooling} {dtype}: worst layer {worst}, relative error {errors[worst]:.2e}")
    assert feats[worst].dtype == dtype
    assert errors[worst] < tol


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_diamond_directional_derivative(vgg_params, pooling, engine):
    """Losses on conv1_1, conv3_1 and conv4_2 at once: gradients from three taps meet on the way down."""
    rng = np.random.default_rng(7)
    net = VGG19(vgg_params, pooling=pooling, dtype="float64", engine=engine)
    x = rng.normal(0, 30, (1, 3, 36, 44))
    taps = ("conv1_1", "conv3_1", "conv4_2")
    feats, cache = net.forward(x, taps=taps)
    upstream = {t: rng.standard_normal(feats[t].shape) for t in taps}  # random, never ones

    def loss(v):
        f, _ = net.forward(v, taps=taps)
        return sum(np.vdot(f[t], upstream[t]) for t in taps)

    dx = net.backward(upstream, cache)
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert directional_check(loss, x, dx, rng, h=1e-4, directions=4) < 1e-6   # measured 1.1e-8 .. 1.1e-7


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_backward_sums_the_gradients_of_all_taps(vgg_params, engine):
    rng = np.random.default_rng(8)
    net = VGG19(vgg_params, dtype="float64", engine=engine)
    x = rng.normal(0, 30, (1, 3, 32, 32))
    feats, cache = net.forward(x, taps=("conv2_1", "conv3_2"))
    g1 = rng.standard_normal(feats["conv2_1"].shape)
    g2 = rng.standard_normal(feats["conv3_2"].shape)
    both = net.backward({"conv2_1": g1, "conv3_2": g2}, cache)
    apart = net.backward({"conv2_1": g1}, cache) + net.backward({"conv3_2": g2}, cache)
    assert rel_error(both, apart) < 1e-12
    if engine == "reference":
        return
    # the fast engine: gradients given as functions make(into=None) are made when the walk reaches their
    # tap, deepest first, once each (added into the walk's own gradient where one arrives there), and the
    # caller's arrays are never modified
    made = []

    def lazy(name, g):
        def make(into=None):
            made.append((name, into is not None))
            if into is None:
                return g.copy()
            into += g
            return into
        return make

    g1_before = g1.copy()
    for grads in ({"conv2_1": lazy("conv2_1", g1), "conv3_2": lazy("conv3_2", g2)},
                  {"conv2_1": g1, "conv3_2": lazy("conv3_2", g2)},
                  {"conv2_1": lazy("conv2_1", g1), "conv3_2": g2}):
        made.clear()
        assert rel_error(net.backward(grads, cache), both) < 1e-12
        assert made == [(n, n == "conv2_1") for n in ("conv3_2", "conv2_1") if callable(grads[n])]
    assert np.array_equal(g1, g1_before)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_forward_stops_at_the_deepest_tap_and_checks_size(vgg_params, engine):
    net = VGG19(vgg_params, dtype="float32", engine=engine)
    _, cache = net.forward(np.zeros((1, 3, 16, 16), np.float32), taps=("conv2_1",))
    assert cache.depth == LAYER_NAMES.index("conv2_1") + 1
    assert min_input_size("conv5_1") == 16 and min_input_size("pool5") == 32
    with pytest.raises(ValueError, match="at least 32x32"):
        net.forward(np.zeros((1, 3, 31, 40), np.float32), taps=("pool5",))
    with pytest.raises(ValueError, match="unknown VGG-19 layer 'conv6_1'"):
        net.forward(np.zeros((1, 3, 16, 16), np.float32), taps=("conv6_1",))


def test_engine_and_conv_are_checked(vgg_params):
    with pytest.raises(ValueError, match="engine must be"):
        VGG19(vgg_params, engine="turbo")
    with pytest.raises(ValueError, match="the fast engine.s settings"):
        VGG19(vgg_params, engine="reference", conv="winograd")
    assert VGG19(vgg_params, engine="reference").fast is None
    assert VGG19(vgg_params).engine == "fast" and VGG19(vgg_params).fast.conv == "winograd"
