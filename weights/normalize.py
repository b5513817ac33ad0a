"""The normalised VGG-19 (Gatys et al., CVPR 2016 and the texture paper; PAPER.md).

Shape legend: N images, C_l filters of conv layer l, H_l x W_l its feature map;
w_l (C_l, C_{l-1}, 3, 3) OIHW, b_l (C_l,), a_l (N, C_l, H_l, W_l) post-ReLU output.

Goal: rescale the weights so that every filter's mean activation over a set
of images and all positions is 1, without changing what the network computes
beyond those per-channel scales. With m_l (C_l,) the mean activations:

    w'_l[c, k] = w_l[c, k] * m_{l-1}[k] / m_l[c]      (m_0 = 1: the image is not rescaled)
    b'_l[c]    = b_l[c] / m_l[c]

Then, by induction over l, a'_l = a_l / m_l per channel: the pre-activation
of layer l is sum_k w_l[c, k] m_{l-1}[k] (a_{l-1}[k] / m_{l-1}[k]) / m_l[c] +
b_l[c] / m_l[c] = z_l[c] / m_l[c], ReLU is positively homogeneous, and the
pools between blocks commute with positive per-channel scales (average pooling
is linear; max pooling also commutes with them).

That identity is also why one forward pass of the *original* network is
enough: the paper's sequential recipe ("for each layer in order, measure the
mean activation with the earlier layers already rescaled, divide filter c by
m_c, multiply the next layer's input channel c by m_c") measures a_l / 1 at
layer l, i.e. exactly a_l's means. ``tests/test_weights_normalize.py`` runs
that literal sequential recipe on small images and checks it gives the same
weights.

The statistics use **average pooling** (the paper's choice for synthesis),
over ``IMAGE_SET``: twelve real photos from OpenCV's samples
(``weights.samples``), each resized with Pillow bicubic so its longer side is
``IMAGE_SIZE`` pixels, all positions of all images weighted equally. A filter
that never fires on the set (m_c = 0) cannot be normalised; it keeps scale 1
and is listed in the cache file's ``dead_filters`` attribute.
"""
from __future__ import annotations

import numpy as np

from weights.cache import arrays_sha256
from weights.table import VGG19_TABLE, check_params

IMAGE_SET = ("aero1", "aloeL", "apple", "baboon", "board", "building",
             "butterfly", "fruits", "home", "leuvenB", "messi5", "squirrel_cls")
IMAGE_SIZE = 224
POOLING = "avg"


def load_image(path, size: int) -> np.ndarray:
    """Image file -> (1, 3, h, w) float64 network input, longer side ``size`` (Pillow bicubic)."""
    from PIL import Image

    from minivgg.network_input import rgb_to_net

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = size / max(image.size)
        width, height = (max(1, round(n * scale)) for n in image.size)
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        return rgb_to_net(np.asarray(image), dtype="float64")


def load_image_set(names=IMAGE_SET, size: int = IMAGE_SIZE) -> list:
    """The sample images ``names`` as a list of (1, 3, h, w) float64 inputs."""
    from weights.samples import sample_path

    return [load_image(sample_path(name), size) for name in names]


def channel_means(params: dict, images, pooling: str = POOLING) -> dict:
    """Mean post-ReLU activation of every filter of every conv over all images and positions.

    params: original weights; images: list of (1, 3, h, w) inputs (sizes may differ).
    Returns {"conv1_1": m (64,) float64, ...}: sum over images and positions / number of positions.
    """
    from minivgg import VGG19

    net = VGG19(params, pooling=pooling, dtype="float64")
    names = [entry.name for entry in VGG19_TABLE]
    sums = {name: 0.0 for name in names}
    counts = {name: 0 for name in names}
    for x in images:
        feats, _ = net.forward(x, taps=names)
        for name in names:
            a = feats[name]                                    # (1, C, h, w)
            sums[name] = sums[name] + a.sum(axis=(0, 2, 3))    # (C,)
            counts[name] += a.shape[0] * a.shape[2] * a.shape[3]
    return {name: np.asarray(sums[name], dtype=np.float64) / counts[name] for name in names}


def rescale(params: dict, means: dict) -> dict:
    """Apply w'_l[c, k] = w_l[c, k] m_{l-1}[k] / m_l[c], b'_l = b_l / m_l -> float64 params.

    A zero mean (dead filter) is treated as 1: that filter and its outgoing
    weights are left as they are.
    """
    scaled = {}
    previous = np.ones(3)                                      # m_0: the image channels
    for entry in VGG19_TABLE:
        w, b = (np.asarray(a, dtype=np.float64) for a in params[entry.name])
        m = np.where(means[entry.name] > 0, means[entry.name], 1.0)       # (C_l,)
        w_scaled = w * previous[None, :, None, None] / m[:, None, None, None]  # (C_l, C_{l-1}, 3, 3)
        scaled[entry.name] = (w_scaled, b / m)
        previous = m
    return scaled


def build_normalized(params: dict, source_attrs: dict, names=IMAGE_SET, size: int = IMAGE_SIZE) -> tuple:
    """(original params, their file's attrs) -> (normalised float32 params, attrs saying how)."""
    from weights.fetch import sha256_of
    from weights.samples import sample_path

    images = load_image_set(names, size)
    means = channel_means(params, images)
    normalized = check_params(rescale(params, means), "normalised VGG-19")
    dead = [f"{name}:{c}" for name, m in means.items() for c in np.flatnonzero(m <= 0)]
    attrs = {key: value for key, value in source_attrs.items()
             if key in ("source", "wheel_sha256", "file_sha256", "conversion")}
    attrs.update({
        "normalized": True,
        "normalization": "each conv filter divided by its mean post-ReLU activation m_c, the next "
                         "layer's input channel c multiplied by m_c (PAPER.md, CVPR 2016)",
        "source_arrays_sha256": arrays_sha256(params),
        "images": [sample_path(name).name for name in names],
        "images_sha256": [sha256_of(sample_path(name)) for name in names],
        "images_source": "opencv-python==4.10.0.84 sdist, opencv/samples/data (weights.samples)",
        "image_size": f"longer side {size} px, Pillow bicubic, RGB -> BGR, mean subtracted",
        "pooling": f"{POOLING} (statistics computed with average pooling)",
        "statistic": "mean over all images and positions (each position weighted equally)",
        "dead_filters": dead or "none",
    })
    attrs.update({f"mean_activation_{name}": m for name, m in means.items()})
    return normalized, attrs
