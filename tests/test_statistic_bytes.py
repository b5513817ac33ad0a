"""Each style statistic's report of the bytes it keeps and takes (``losses.statistics``: target_bytes,
workspace_bytes, what ``minivgg.memory`` adds up for ``--style-loss``), held to what its functions really
allocate, traced by ``tracemalloc``, as tests/test_kernel_bytes.py holds the kernels'."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from gradcheck import channels_last_copy
from losses.statistics import STYLE_STATISTICS
from minivgg.architecture import PAPER_STYLE_LAYERS, layer_outputs
from minivgg.memory import estimate_phases

#: What NumPy may take beyond the arrays a statistic makes: two ufunc buffers of
#: ``numpy.getbufsize()`` elements (a reduction over a strided axis and the ufunc beside it: measured
#: up to 67 kB over the reports, whatever the features' size), and tracemalloc's bookkeeping.
SLACK = 2 * np.getbufsize() * 8 + 4096
#: What a target holds beyond its arrays: its NamedTuple, Python floats (measured: up to 1.2 kB).
TARGET_SLACK = 4096

NAMES = list(STYLE_STATISTICS)
# (N, C, H, W): arrays above NumPy's 256 kB threshold for eliding temporaries (as a real layer's
# are), a wide layer with few positions (C^2 > A), and two images.
SHAPES = [(1, 64, 40, 56), (1, 256, 12, 10), (2, 64, 24, 30)]


def _traced(fn):
    """(fn(), the bytes it still holds on return, the most it held at once while it ran)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, now - before, peak - before


def _features(rng, shape):
    return np.maximum(rng.standard_normal(shape), 0.0).astype(np.float32)       # post-ReLU


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("style_hw", [None, (7, 13)])
def test_the_target_keeps_what_it_reports(name, shape, style_hw):
    """target_bytes: what the target still holds once made (the style at f's size, and smaller)."""
    stat = STYLE_STATISTICS[name]
    style_shape = shape if style_hw is None else (1, shape[1], *style_hw)
    f_style = _features(np.random.default_rng(5), style_shape)
    target, kept, _ = _traced(lambda: stat.target(f_style))
    want = stat.target_bytes(style_shape, 4)
    assert want <= kept <= want + TARGET_SLACK, (kept, want)
    del target


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("style_hw", [None, (7, 13)])
def test_forward_and_backward_take_what_they_report(name, shape, last, style_hw):
    """workspace_bytes: the peak of forward + backward besides f and the gradient they return, on
    C-order features and on the fast engine's channels-last views (style_term's two callers)."""
    stat = STYLE_STATISTICS[name]
    rng = np.random.default_rng(6)
    style_shape = shape[:2] + (style_hw or shape[2:])
    target = stat.target(_features(rng, (1,) + style_shape[1:]))
    f = _features(rng, shape)
    if last:
        f = channels_last_copy(f)

    def step():
        loss, cache = stat.forward(f, target)
        return stat.backward(cache, 0.5)

    df, _, peak = _traced(step)
    assert df.shape == f.shape
    want = stat.workspace_bytes(shape, 4, (1,) + style_shape[1:])
    assert want <= peak - df.nbytes <= want + SLACK, (peak - df.nbytes, want)


def _layer_shapes(size):
    """{layer: (1, C, h, w)} of VGG-19 down to conv5_1 on a size x size image."""
    return {name: (1, c, h, w) for name, _, c, h, w in layer_outputs(size, size, "conv5_1")}


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gram"])
def test_the_estimate_grows_by_the_statistics_reports(name, monkeypatch):
    """estimate_phases(style_loss=name): the baseline grows by the targets' reports (against the Gram
    matrices'); the evaluation holds what style_term makes before the walk, layer after layer: the
    gradients made so far, then the statistic's reported work arrays and the new gradient; then every
    style gradient through the walk."""
    size, s = 256, 4
    stat, gram = STYLE_STATISTICS[name], STYLE_STATISTICS["gram"]
    shapes = _layer_shapes(size)
    style = [shapes[layer] for layer in PAPER_STYLE_LAYERS]
    base, _ = estimate_phases(size, size, optimizer=None)
    other, _ = estimate_phases(size, size, optimizer=None, style_loss=name)
    assert other.baseline - base.baseline == sum(stat.target_bytes(sh, s) - gram.target_bytes(sh, s)
                                                 for sh in style)
    assert other.activations == base.activations
    content = 2 * int(np.prod(shapes["conv4_2"])) * s                 # the content's gradient and diff
    made = [int(np.prod(sh)) * s for sh in style]                       # each style layer's gradient
    steps = [content + sum(made[:i]) + stat.workspace_bytes(sh, s, sh) + made[i] for i, sh in enumerate(style)]
    assert other.gradients + other.transient >= max(max(steps), content + sum(made))

    # Exactly: a workspace of X at conv3_1 alone makes the peak that step's, X more for X more.
    def patched(extra):
        def workspace_bytes(shape, itemsize, style_shape=None):
            return extra if shape == shapes["conv3_1"] else 0
        monkeypatch.setitem(STYLE_STATISTICS, name, stat._replace(workspace_bytes=workspace_bytes))
        return estimate_phases(size, size, optimizer=None, style_loss=name)[0]

    one, two = patched(10**12), patched(2 * 10**12)
    assert one.gradients == two.gradients == content + made[0] + made[1]   # conv1_1's and conv2_1's made
    assert two.transient - one.transient == 10**12
    assert 10**12 + made[2] <= one.transient < 10**12 + made[2] + 64 * 2**20  # + the pool's work buffer
