"""The normalised VGG-19: same features up to per-channel scales, mean activation 1.

Golden references here are (1) the paper's literal sequential recipe, run
layer by layer in this file, and (2) the identity a'_l = a_l / m_l computed
with the original network.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import weights
from minivgg import LAYER_NAMES, VGG19
from weights.cache import arrays_sha256, read_params_h5, write_params_h5
from weights.normalize import (IMAGE_SET, IMAGE_SIZE, channel_means, load_image, load_image_set,
                               rescale)
from weights.samples import sample_path
from weights.table import VGG19_TABLE


@pytest.fixture(scope="module")
def original():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINIVGG_WEIGHTS", raising=False)
        return weights.load_vgg19()


@pytest.fixture(scope="module")
def normalized():
    """(params, attrs) of the cached normalised network (built on first use: a few seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINIVGG_WEIGHTS", raising=False)
        return weights.load_vgg19_with_attrs(normalized=True)


@pytest.fixture(scope="module")
def small_images():
    """Two photos, longer side 40 px (the smallest multiple of 8 that keeps conv5 at least 2x2)."""
    return [load_image(sample_path(name), 40) for name in ("fruits", "baboon")]


def sequential_recipe(params, images):
    """The paper's recipe, literally: for each layer in order, with the earlier layers already
    rescaled, measure m_c, divide filter c by m_c, multiply the next layer's input channel c by m_c.
    A filter that never fires on ``images`` (m_c = 0) keeps m_c = 1, as ``weights.normalize`` documents."""
    current = {name: tuple(np.asarray(a, np.float64) for a in wb) for name, wb in params.items()}
    for index, entry in enumerate(VGG19_TABLE):
        net = VGG19(current, pooling="avg", dtype="float64")
        total, count = 0.0, 0
        for x in images:
            a = net.forward(x, taps=(entry.name,))[0][entry.name]          # (1, C, h, w)
            total, count = total + a.sum(axis=(0, 2, 3)), count + a[0, 0].size
        m = total / count                                                  # (C,)
        m[m == 0] = 1.0
        w, b = current[entry.name]
        current[entry.name] = (w / m[:, None, None, None], b / m)
        if index + 1 < len(VGG19_TABLE):
            following = VGG19_TABLE[index + 1].name
            w, b = current[following]
            current[following] = (w * m[None, :, None, None], b)
    return current


def test_single_pass_equals_the_sequential_recipe(original, small_images):
    fast = rescale(original, channel_means(original, small_images))
    slow = sequential_recipe(original, small_images)
    for entry in VGG19_TABLE:
        for f, s in zip(fast[entry.name], slow[entry.name]):
            np.testing.assert_allclose(f, s, rtol=1e-9, atol=1e-12 * np.abs(s).max(), err_msg=entry.name)


def test_rescaled_network_has_mean_activation_one_on_its_images(original, small_images):
    """1 for every filter that fires on the images; 0 stays 0 (conv5 is only 2x2 on 40-px images,
    so many of its filters never fire there)."""
    means = channel_means(original, small_images)
    scaled = rescale(original, means)
    dead = 0
    for name, m in channel_means(scaled, small_images).items():
        np.testing.assert_allclose(m, np.where(means[name] > 0, 1.0, 0.0), rtol=1e-9, err_msg=name)
        dead += int((means[name] == 0).sum())
    assert dead < 0.25 * sum(e.shape[0] for e in VGG19_TABLE)


def expected_scales(attrs):
    """{layer: m (C,)} for all 21 layers: a pool keeps the scale of the conv before it."""
    scales, m = {}, None
    for name in LAYER_NAMES:
        if name.startswith("conv"):
            m = np.asarray(attrs[f"mean_activation_{name}"])
        scales[name] = m
    return scales


def test_normalized_features_are_original_features_over_the_means(original, normalized):
    """On an image outside the statistics set: a'_l = a_l / m_l for every conv and pool."""
    params, attrs = normalized
    x = load_image(sample_path("starry_night"), 48)                          # (1, 3, 38, 48)
    feats, _ = VGG19(original, dtype="float64").forward(x, taps=LAYER_NAMES)
    exact = rescale(original, {e.name: np.asarray(attrs[f"mean_activation_{e.name}"]) for e in VGG19_TABLE})
    feats64, _ = VGG19(exact, dtype="float64").forward(x, taps=LAYER_NAMES)  # float64 weights
    feats32, _ = VGG19(params, dtype="float64").forward(x, taps=LAYER_NAMES)  # the cached float32 ones
    for name, m in expected_scales(attrs).items():
        expected = feats[name] / m[None, :, None, None]
        scale = np.abs(expected).max()
        np.testing.assert_allclose(feats64[name], expected, rtol=1e-6, atol=1e-12 * scale, err_msg=name)
        assert np.abs(feats32[name] - expected).max() <= 1e-6 * scale, name


def test_normalized_cache_records_how_it_was_made(original, normalized):
    _, attrs = normalized
    assert attrs["normalized"] is True
    assert attrs["images"] == [sample_path(name).name for name in IMAGE_SET]
    assert len(attrs["images_sha256"]) == len(IMAGE_SET)
    assert str(IMAGE_SIZE) in attrs["image_size"] and "bicubic" in attrs["image_size"]
    assert attrs["pooling"].startswith("avg")
    assert attrs["source_arrays_sha256"] == arrays_sha256(original)
    assert attrs["dead_filters"] == "none"


@pytest.mark.slow
def test_mean_activation_over_the_image_set_is_one(normalized):
    """The defining property, on the full statistics set at 224 px (several seconds)."""
    params, _ = normalized
    for name, m in channel_means(params, load_image_set()).items():
        np.testing.assert_allclose(m, 1.0, rtol=1e-5, err_msg=name)


def test_stale_normalized_cache_is_rebuilt(tmp_path, monkeypatch, original, normalized):
    """A normalised file built from other weights is not used."""
    monkeypatch.setenv("MINIVGG_HOME", str(tmp_path))
    monkeypatch.delenv("MINIVGG_WEIGHTS", raising=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MINIVGG_HOME")
        real_home = weights.cache_dir()
    shutil.copyfile(real_home / weights.ORIGINAL_FILE, tmp_path / weights.ORIGINAL_FILE)
    params, attrs = normalized
    own_attrs = {k: v for k, v in attrs.items() if k not in ("arrays_sha256", "attrs_sha256")}
    write_params_h5(tmp_path / weights.NORMALIZED_FILE, params,
                    {**own_attrs, "source_arrays_sha256": "0" * 64})
    builds = []

    def build(p, a):                                  # stands in for the few-second rebuild
        builds.append(1)
        return params, own_attrs
    monkeypatch.setattr("weights.normalize.build_normalized", build)
    loaded = weights.load_vgg19(normalized=True)
    assert builds == [1]
    assert arrays_sha256(loaded) == arrays_sha256(params)
    _, rebuilt = read_params_h5(tmp_path / weights.NORMALIZED_FILE)
    assert rebuilt["source_arrays_sha256"] == arrays_sha256(original)
