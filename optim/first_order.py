"""Projected gradient descent and Adam on the same objective, for comparison with L-BFGS-B.

They work on engine arrays directly (NumPy or CuPy, the objective's dtype),
one evaluation per iteration, and project back onto the pixel box after each
step (projection is the optimiser's business, never the objective's).
Shapes: x, g, m, v: (1, 3, H, W).
"""
from __future__ import annotations

from minivgg.backend import get_array_module
from optim.boundary import BestPoint, Stopped
from optim.progress import Progress
from optim.result import OptimResult


def _project(x, bounds):
    """Clip channel c of x (1, 3, H, W) to [low_c, high_c] in place; no-op without bounds."""
    if bounds is not None:
        for c, (low, high) in enumerate(zip(*bounds)):
            x[:, c].clip(low, high, out=x[:, c])
    return x


def _run(step, objective, x0, iterations, bounds, progress, time_limit, on_iteration):
    """Shared loop: evaluate, report, step, project; stops cleanly like ``optim.lbfgs``."""
    points = BestPoint(objective, x0, time_limit=time_limit)    # the best point stays on the device
    progress = progress or Progress(iterations, quiet=True)
    x = _project(x0.copy(), bounds)
    done, stopped = 0, "done"
    try:
        for k in range(1, int(iterations) + 1):
            ev = points.evaluate(x)
            x = _project(step(k, x, ev.grad), bounds)
            done = k
            progress.update(k, points.evaluations, *points.last)
            if on_iteration is not None:
                on_iteration(k, x)
    except KeyboardInterrupt:
        stopped = "interrupted"
    except Stopped as why:
        stopped = str(why)
    return OptimResult(points.best_x(x0), points.best_loss, done, points.evaluations, stopped,
                       progress.history)


def gradient_descent(objective, x0, iterations, *, lr=None, bounds=None, progress=None,
                     time_limit=None, on_iteration=None):
    """x <- x - lr * g. With lr=None, lr is set at the first step so that its
    largest pixel change is 1.0 (the raw loss scale spans many decades, so a
    fixed default would be meaningless)."""
    xp = get_array_module(x0)
    state = {"lr": lr}

    def step(k, x, g):
        if state["lr"] is None:
            state["lr"] = 1.0 / max(float(xp.abs(g).max()), 1e-30)
        x -= x.dtype.type(state["lr"]) * g
        return x

    return _run(step, objective, x0, iterations, bounds, progress, time_limit, on_iteration)


def adam(objective, x0, iterations, *, lr=2.0, beta1=0.9, beta2=0.999, eps=1e-8, bounds=None,
         progress=None, time_limit=None, on_iteration=None):
    """Adam (Kingma & Ba): m, v running moments of g; x <- x - lr * m_hat / (sqrt(v_hat) + eps).

    lr is in pixel units (0..255 scale): roughly the largest change per step early on.
    """
    xp = get_array_module(x0)
    m = xp.zeros_like(x0)
    v = xp.zeros_like(x0)

    def step(k, x, g):
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** k)
        v_hat = v / (1 - beta2 ** k)
        x -= (lr * m_hat / (xp.sqrt(v_hat) + eps)).astype(x.dtype, copy=False)
        return x

    return _run(step, objective, x0, iterations, bounds, progress, time_limit, on_iteration)
