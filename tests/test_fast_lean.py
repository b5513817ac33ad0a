"""The fast engine's lean mode: bit-packed ReLU masks give the normal mode's gradient, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from gradcheck import channels_last_copy, rel_error, to_np
from minivgg.architecture import LAYER_NAMES, layer_outputs
from minivgg.fast.lean import PackedReluCache, pack_relu, packed_relu_backward, unpack_mask
from minivgg.relu import relu_backward, relu_forward
from minivgg.transfer.objective import Objective
from minivgg.architecture import CONV_SHAPES
from minivgg.vgg import VGG19


@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (2, 3, 4, 4), (1, 64, 9, 13)])
def test_packed_mask_is_relus_own(xp, shape):
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal(shape))
    dout = xp.asarray(rng.standard_normal(shape))
    for order in (lambda a: a, channels_last_copy):
        out, cache = relu_forward(order(x))
        packed = pack_relu(out)
        assert packed.bits.nbytes == -(-x.size // 8)                   # one bit per element
        assert np.array_equal(to_np(unpack_mask(packed)), to_np(out > 0))
        got = packed_relu_backward(order(dout), packed)
        assert float(abs(got - relu_backward(order(dout), cache)).max()) == 0.0
        assert got.flags.c_contiguous == order(dout).flags.c_contiguous  # the gradient keeps its order


@pytest.mark.parametrize("workers", [1, 3])
def test_spans_on_workers_give_the_same_bits_and_gradient(monkeypatch, workers):
    """Packed and unpacked 16 elements at a time (spans end mid-byte of no array: 16 is 2 bytes), the
    spans on one thread or three, a gradient arriving in either memory order, in place or not."""
    from minivgg.fast import lean
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 6, 7, 5))                             # 210 elements: a short last span
    dout = rng.standard_normal(x.shape)
    for order in (lambda a: a, channels_last_copy):
        out, cache = relu_forward(order(x))
        whole = pack_relu(out)
        monkeypatch.setattr(lean, "MASK_SPAN", 16)
        spans = pack_relu(out, workers=workers)
        assert np.array_equal(spans.bits, whole.bits)
        want = relu_backward(dout, cache)
        for given in (dout, channels_last_copy(dout)):
            assert float(abs(packed_relu_backward(given, spans, workers=workers) - want).max()) == 0.0
            mine = given.copy(order="K")
            got = packed_relu_backward(mine, spans, out=mine, workers=workers)
            assert got is mine and float(abs(got - want).max()) == 0.0
        monkeypatch.undo()


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_lean_objective_equals_the_normal_one(pooling):
    """The whole objective, float64, synthetic weights: same losses and gradient; fewer arrays kept."""
    rng = np.random.default_rng(2)
    params = {name: (rng.standard_normal(shape) * np.sqrt(2 / (9 * shape[1])), rng.standard_normal(shape[0]) * 0.1)
              for name, shape in CONV_SHAPES.items()}
    content, style, x = (rng.normal(0, 40, (1, 3, 40, 52)) for _ in range(3))
    evaluations = []
    for lean in (False, True):
        net = VGG19(params, pooling=pooling, dtype="float64", lean=lean)
        evaluations.append(Objective(net, content, [style])(x))
        feats, cache = net.forward(x, taps=("conv1_1", "conv3_1"))
        packed = [name for name, layer in zip(LAYER_NAMES, cache.layers)
                  if name.startswith("conv") and isinstance(layer[1], PackedReluCache)]
        convs = [name for name in LAYER_NAMES[:cache.depth] if name.startswith("conv")]
        assert packed == ([n for n in convs if n not in ("conv1_1", "conv3_1")] if lean else [])
    normal, lean = evaluations
    assert float(lean.total_loss) == float(normal.total_loss)
    assert rel_error(lean.grad, normal.grad) == 0.0


def test_lean_pool_keeps_the_taps_only():
    """With the array pool, the lean mode lets every activation that is not a tap go after the forward:
    between evaluations its pool holds exactly the normal mode's less those activations' bytes."""
    rng = np.random.default_rng(4)
    params = {name: (rng.standard_normal(shape) * np.sqrt(2 / (9 * shape[1])), rng.standard_normal(shape[0]) * 0.1)
              for name, shape in CONV_SHAPES.items()}
    content, style, x = (rng.normal(0, 40, (1, 3, 40, 52)) for _ in range(3))
    held, grads = [], []
    for lean in (False, True):
        objective = Objective(VGG19(params, dtype="float64", lean=lean), content, [style])
        for _ in range(2):                                   # the second evaluation reuses the first's pool
            grads.append(objective(x).grad)
        held.append(objective.fast.pool.nbytes)
        taps = objective.targets.taps
    assert all(rel_error(g, grads[0]) == 0.0 for g in grads)
    not_taps = sum(cout * h * w * 8 for name, _, cout, h, w in layer_outputs(40, 52, "conv5_1") if name not in taps)
    assert not_taps > 0 and held[0] - held[1] == not_taps
