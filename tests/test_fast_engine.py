"""The two engines behind one network: the fast engine's objective against the reference's, float64, on
the real VGG-19; and the reference evaluation as a learner reads it (few lines, no fast module)."""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from gradcheck import rel_error
from minivgg.transfer import evaluate

ROOT = Path(__file__).resolve().parents[1]

# (pooling, content layer, style layers, tv weight, number of style images)
SETTINGS = [
    ("avg", "conv4_2", ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"), 0.0, 1),  # the paper's
    ("max", "conv4_2", ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"), 0.0, 1),
    ("avg", "conv3_2", ("conv1_2", "pool2", "conv3_2", "conv4_2"), 1e-2, 2),   # content layer also a style layer
]


def _images(seed, style_count):
    rng = np.random.default_rng(seed)
    x, content = rng.normal(0, 20, (1, 3, 48, 64)), rng.normal(0, 40, (1, 3, 48, 64))
    styles = [rng.normal(0, 40, (1, 3, 40 + 8 * k, 56)) for k in range(style_count)]
    return x, content, styles


@pytest.mark.parametrize("setting", SETTINGS)
def test_fast_and_reference_objectives_agree_on_the_real_network(vgg_params, setting):
    pooling, content_layer, style_layers, tv_weight, style_count = setting
    x, content, styles = _images(21, style_count)
    kwargs = dict(alpha=1e-3, beta=1.0, content_layer=content_layer, style_layers=style_layers,
                  pooling=pooling, dtype="float64", tv_weight=tv_weight)
    fast = evaluate(x, content, styles, engine="fast", **kwargs)
    ref = evaluate(x, content, styles, engine="reference", **kwargs)
    for got, want in zip(fast[:3], ref[:3]):                    # content, style, total
        assert abs(got / want - 1) < 1e-12                      # measured: 1e-15 .. 5e-15 (the issue asks 1e-8)
    assert rel_error(fast[3], ref[3]) < 1e-12                   # measured: 4e-15 .. 6e-15
    print(f"{setting[:2]}: losses {[abs(g / w - 1) for g, w in zip(fast[:3], ref[:3])]}, "
          f"gradient {rel_error(fast[3], ref[3]):.1e}")


def _executed_lines(call):
    """{file: lines} of the project's own code (tests and installed packages excluded) that call() executes."""
    hits = defaultdict(set)

    def tracer(frame, event, arg):
        name = frame.f_code.co_filename
        own = name.startswith(str(ROOT) + os.sep) and "site-packages" not in name
        if own and os.sep + "tests" + os.sep not in name and os.sep + ".venv" not in name:
            if event == "line":
                hits[os.path.relpath(name, ROOT)].add(frame.f_lineno)
            return tracer
        return None

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return hits


def test_a_reference_evaluation_reads_in_one_sitting(vgg_params):
    """One reference evaluation (weights loaded) runs at most 250 distinct project lines, none fast."""
    import weights
    weights.load_vgg19()                                        # cached: not part of what is read
    x, content, styles = _images(22, 1)
    evaluate(x, content, styles[0], engine="reference")         # builds the network once
    hits = _executed_lines(lambda: evaluate(x, content, styles[0], engine="reference"))
    total = sum(map(len, hits.values()))
    print(f"{total} lines in {len(hits)} files: {sorted(hits)}")
    assert not [name for name in hits if name.startswith(os.path.join("minivgg", "fast"))]
    assert 150 < total <= 250
