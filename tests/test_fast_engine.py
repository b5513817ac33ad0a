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



@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_fast_and_reference_agree_with_perceptual_controls(vgg_params, pooling):
    """Spatial control (soft content masks, a style mask, styles of other sizes) and two weighted
    content layers, one of them also a style layer: the engines agree to float64 rounding."""
    from minivgg.transfer.objective import Objective
    from minivgg.vgg import VGG19
    x, content, styles = _images(23, 2)
    h, w = content.shape[2:]
    left = 1 / (1 + np.exp((np.arange(w)[None, :] - w / 2) / 3.0)) * np.ones((h, 1))   # soft edge
    style_mask = np.random.default_rng(24).random(styles[1].shape[2:])
    kwargs = dict(alpha=1e-3, beta=1.0, content_layers={"conv4_2": 1.0, "conv3_1": 0.5}, tv_weight=1e-2,
                  style_layers=("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
                  content_masks=[left, 1 - left], style_masks=[None, style_mask])
    fast, ref = (Objective(VGG19(vgg_params, pooling=pooling, dtype="float64", engine=engine),
                           content, styles, **kwargs)(x) for engine in ("fast", "reference"))
    for got, want in zip(fast[:4], ref[:4]):                    # content, style, tv, total
        assert abs(float(got) / float(want) - 1) < 1e-12
    assert rel_error(fast.grad, ref.grad) < 1e-12
    print(f"{pooling}: losses {[abs(float(g) / float(w) - 1) for g, w in zip(fast[:4], ref[:4])]}, "
          f"gradient {rel_error(fast.grad, ref.grad):.1e}")

def test_an_objective_and_its_evaluator_share_one_record_and_no_cycle(vgg_params):
    """The Objective hands its fast evaluator one frozen record of targets and weights, not itself: the
    evaluator never reads the objective, and dropping the objective frees the evaluator, its pool
    and the targets at once, not at some later garbage collection (a coarse-to-fine run, or a
    notebook making one objective per run). Both evaluations return the one Evaluation type."""
    import dataclasses
    import gc
    import weakref

    from minivgg.evaluation import Evaluation
    from minivgg.transfer.objective import Objective
    from minivgg.vgg import VGG19
    x, content, styles = _images(5, 1)
    net = VGG19(vgg_params, pooling="avg", dtype="float32")
    objective = Objective(net, content.astype("float32"), [styles[0].astype("float32")])
    assert objective.fast.targets is objective.targets and vars(objective.fast).keys() == {"net", "targets", "pool"}
    assert type(objective(x.astype("float32"))) is Evaluation
    with pytest.raises(dataclasses.FrozenInstanceError):
        objective.targets.alpha = 1.0
    with pytest.raises(TypeError):
        objective.targets.style_targets["conv1_1"] = None          # a read-only view
    assert objective.alpha == objective.targets.alpha == 1e-3        # the record's fields, read through
    refs = [weakref.ref(objective), weakref.ref(objective.fast), weakref.ref(objective.fast.pool),
            weakref.ref(objective.targets)]
    gc.disable()
    try:
        del objective
        assert all(r() is None for r in refs)
    finally:
        gc.enable()
    reference = Objective(VGG19(vgg_params, dtype="float32", engine="reference"),
                          content.astype("float32"), [styles[0].astype("float32")])
    assert reference.fast is None and type(reference(x.astype("float32"))) is Evaluation

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
