"""Every combination of the fast engine's switches (``minivgg.fast.transforms.Transforms``, 2^11) against
the reference engine, float64, on the real VGG-19: the objective's losses and gradient agree to 1e-12."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gradcheck import rel_error
from minivgg.backend import to_device
from minivgg.evaluation import Evaluation
from minivgg.fast.network import FastVGG19
from minivgg.fast.objective import FastEvaluator
from minivgg.fast.transforms import Transforms
from minivgg.transfer.objective import Objective
from minivgg.vgg import VGG19


def _problem(xp, vgg_params, pooling):
    """The reference network on xp's device, an objective (paper layers, TV, a non-square x) and x."""
    device = "cpu" if xp is np else "gpu"
    rng = np.random.default_rng(31)
    content, x = (to_device(rng.normal(0, s, (1, 3, 24, 40)), device) for s in (40, 20))
    style = to_device(rng.normal(0, 40, (1, 3, 32, 24)), device)
    reference = VGG19(vgg_params, pooling=pooling, dtype="float64", device=device, engine="reference")
    objective = Objective(reference, content, [style], alpha=1e-3, beta=1.0, tv_weight=1e-2)
    return reference, objective, x


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_every_combination_of_switches_agrees_with_the_reference(xp, vgg_params, pooling):
    """One record of targets (made once, by the reference), each switch setting's evaluator on it, two
    evaluations where it has a pool (the second reuses the first's), else one: every one equals the
    reference evaluation. The Winograd kernels are transformed once and shared (``with_transforms``)."""
    reference, objective, x = _problem(xp, vgg_params, pooling)
    want = objective(x)
    worst = [0.0, 0.0]                                           # losses, gradient
    combinations = list(Transforms.every_combination())
    assert len(combinations) == 2 ** len(Transforms.names()) == 2048
    first = FastVGG19(reference.params, pooling, reference.device)  # its Winograd kernels, made once, shared
    for transforms in combinations:
        evaluator = FastEvaluator(first.with_transforms(transforms), objective.targets)
        for _ in range(2 if transforms.array_pool else 1):
            got = evaluator(x)
            assert type(got) is Evaluation
            losses = max(abs(float(g) / float(w) - 1) for g, w in zip(got[:4], want[:4]))
            gradient = rel_error(got.grad, want.grad)
            worst = [max(worst[0], losses), max(worst[1], gradient)]
            assert losses < 1e-12 and gradient < 1e-12, (transforms, losses, gradient)
    # measured (numpy, both poolings): losses <= 4e-15, gradient <= 2e-15
    print(f"{pooling}: worst over 2048 settings: losses {worst[0]:.1e}, gradient {worst[1]:.1e}")


def test_a_switch_off_changes_the_route_it_names(vgg_params, monkeypatch):
    """Each switch is honoured: the features' memory order, the reference ReLU and pooling called or not,
    the lean mode's bit masks, the pool's use, and the defaults (the default route on each device)."""
    import minivgg.fast.network as fast_network
    from minivgg import pool as reference_pool
    rng = np.random.default_rng(3)
    x = rng.normal(0, 20, (1, 3, 16, 24))
    defaults = Transforms.default("cpu")
    assert defaults == Transforms() and defaults.lean and defaults.threads
    gpu = Transforms.default("gpu")
    assert not (gpu.channels_last or gpu.threads or gpu.lean or gpu.separable_winograd or gpu.small_products)
    assert gpu.winograd
    assert Transforms().with_route("im2col") == Transforms(winograd=False, channels_last=False)
    assert gpu.with_route(None, lean=True).lean and not defaults.with_route(None, lean=False).lean
    assert defaults.with_route(None).lean and Transforms().off("inplace").inplace is False
    with pytest.raises(ValueError, match="conv must be"):
        Transforms().with_route("fft")
    with pytest.raises(dataclasses.FrozenInstanceError):
        defaults.winograd = False
    calls = []
    for module, name in ((fast_network, "relu_forward"), (reference_pool, "avg_pool2d_forward")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    params = VGG19(vgg_params, dtype="float64").params
    for switches, called, check in (
            (defaults, [], lambda f, c: f.strides[1] == 8 and not f.flags.c_contiguous),
            (defaults.off("channels_last"), [], lambda f, c: f.flags.c_contiguous),
            (defaults.off("fused_relu"), ["relu_forward"] * 2, lambda f, c: c.layers[0][1].out is f),
            (defaults.off("separable_pool"), ["avg_pool2d_forward"], lambda f, c: True),
            (Transforms(lean=True), [], lambda f, c: type(c.layers[1][1]).__name__ == "PackedReluCache")):
        calls.clear()
        feats, cache = FastVGG19(params, "avg", "cpu", switches).forward(x, ("conv1_1", "pool1"))
        assert calls == called and check(feats["conv1_1"], cache), switches
    import minivgg.fast.winograd_band as winograd_band           # the separable input transform, both ways
    rows = []
    real_rows = winograd_band.separable_tiles
    monkeypatch.setattr(winograd_band, "separable_tiles", lambda *a: rows.append(1) or real_rows(*a))
    for switches in (defaults, defaults.off("separable_winograd")):
        rows.clear()
        net = FastVGG19(params, "avg", "cpu", switches)
        feats, cache = net.forward(x, ("conv1_2",))
        net.backward({"conv1_2": feats["conv1_2"]}, cache)
        assert bool(rows) == switches.separable_winograd, switches
    import minivgg.fast.small_products as small_products         # products in pieces, or whole
    asked = []
    real_columns = small_products.columns
    monkeypatch.setattr(small_products, "columns", lambda xp, a, b, out, enabled=True:
                        asked.append(enabled) or real_columns(xp, a, b, out, enabled))
    for switches in (defaults, defaults.off("small_products")):
        asked.clear()
        net = FastVGG19(params, "avg", "cpu", switches)
        feats, cache = net.forward(x, ("conv1_2",))
        net.backward({"conv1_2": feats["conv1_2"]}, cache)
        assert asked and set(asked) == {switches.small_products}, switches
    net = FastVGG19(params, "avg", "cpu", defaults.off("winograd"))
    assert net.conv == "im2col" and net.winograd_weights("conv3_1") is None
    assert FastVGG19(params, "avg", "cpu").winograd_weights("conv3_1").m == 4
    # the evaluator's switches: the pool, the style gradients as functions, the walk's in-place ReLU
    deferred, in_place = [], []
    real_backward, real_relu_backward = FastVGG19.backward, fast_network.relu_backward
    monkeypatch.setattr(FastVGG19, "backward", lambda self, grads, cache, pool=None: deferred.append(
        any(map(callable, grads.values()))) or real_backward(self, grads, cache, pool))
    monkeypatch.setattr(fast_network, "relu_backward", lambda dout, cache, out=None: in_place.append(
        out is not None and np.shares_memory(out, dout)) or real_relu_backward(dout, cache, out=out))
    content, style = rng.normal(0, 40, (1, 3, 16, 24)), rng.normal(0, 40, (1, 3, 16, 24))
    for switches in (defaults, defaults.off("array_pool"), defaults.off("deferred"), defaults.off("inplace")):
        objective = Objective(VGG19(vgg_params, dtype="float64", transforms=switches), content, [style])
        in_place.clear()
        assert objective(x).grad.shape == x.shape
        assert (objective.fast.pool is None) == (not switches.array_pool)
        assert deferred[-1] == switches.deferred and any(in_place) == switches.inplace, switches
