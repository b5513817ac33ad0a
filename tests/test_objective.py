"""The whole objective: the oracle's losses and gradients, and a directional check that needs no shared data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gradcheck import directional_check, rel_error
from minivgg.transfer import evaluate


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("case", ["paper", "shallow_max"])
def test_evaluate_reproduces_the_oracle(reference_dir, case, engine):
    meta = json.loads((reference_dir / "README.json").read_text())["cases"][case]
    data = np.load(reference_dir / "gatys_objective.npz")
    content, style, total, grad = evaluate(
        data["x"], data["content"], data["style"], alpha=meta["alpha"], beta=meta["beta"],
        content_layer=meta["content_layer"], style_layers=tuple(meta["style_layers"]),
        pooling=meta["pooling"], dtype="float64", engine=engine)
    # measured (both cases, both engines): losses <= 4.1e-15, gradient <= 5.3e-15 (fast), 3.2e-16 (reference)
    assert abs(content / meta["content_loss"] - 1) < 5e-14
    assert abs(style / meta["style_loss"] - 1) < 5e-14
    assert abs(total / meta["total_loss"] - 1) < 5e-14
    assert rel_error(grad, data[f"grad_{case}"]) < 5e-14


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_whole_objective_directional_derivative(vgg_params, pooling, engine):
    """(L(x + h r) - L(x - h r)) / 2h against grad . r, paper settings, a small real-weights run."""
    rng = np.random.default_rng(11)
    content = rng.normal(0, 40, (1, 3, 32, 40))
    style = rng.normal(0, 40, (1, 3, 36, 32))
    x = rng.normal(0, 20, (1, 3, 32, 40))
    kwargs = dict(alpha=1e-3, beta=1.0, pooling=pooling, dtype="float64", tv_weight=1e-2, engine=engine)
    _, _, _, grad = evaluate(x, content, style, **kwargs)
    total = lambda v: evaluate(v, content, style, **kwargs)[2]    # noqa: E731
    # measured: 7e-9 .. 1.8e-7 (finite-difference truncation and float64 cancellation at h = 1e-3)
    assert directional_check(total, x, grad, rng, h=1e-3, directions=3) < 1e-6


def test_repeated_evaluations_reuse_memory_without_aliasing():
    """The fast engine's array pool: evaluation k+1 reuses evaluation k's memory, yet an Evaluation the
    caller kept is never overwritten, and every evaluation equals a fresh objective's."""
    from minivgg.transfer.objective import Objective
    from minivgg.architecture import CONV_SHAPES
    from minivgg.vgg import VGG19
    rng = np.random.default_rng(12)
    params = {name: (rng.standard_normal(shape) * np.sqrt(2 / (9 * shape[1])), rng.standard_normal(shape[0]) * 0.1)
              for name, shape in CONV_SHAPES.items()}
    content, style = (rng.normal(0, 40, (1, 3, 34, 30)) for _ in range(2))
    xs = [rng.normal(0, 20, (1, 3, 34, 30)) for _ in range(3)]
    make = lambda: Objective(VGG19(params, dtype="float64"), content, [style])   # noqa: E731
    objective = make()
    results = [objective(xs[0])]
    pool = objective.fast.pool
    held = pool.nbytes
    results += [objective(x) for x in xs[1:]]            # all three kept alive
    assert held > 0 and pool.nbytes == held              # the same memory, reused
    kept = [r.grad.copy() for r in results]
    for x, r, g in zip(xs, results, kept):
        assert float(abs(r.grad - g).max()) == 0.0        # later evaluations did not write into it
        fresh = make()(x)
        assert rel_error(r.grad, fresh.grad) < 1e-15 and float(r.total_loss) == float(fresh.total_loss)
    assert not np.allclose(kept[0], kept[1])
