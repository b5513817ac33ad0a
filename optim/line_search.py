"""A line search satisfying the strong Wolfe conditions, on a scalar function of the step.

    phi(t) <= phi(0) + c1 t phi'(0)          (sufficient decrease)
    |phi'(t)| <= c2 |phi'(0)|                (curvature, strong form)

Bracketing, then zoom with safeguarded cubic interpolation (Nocedal & Wright,
Alg. 3.5-3.6). Scalars only: ``optim.lbfgs_device`` wraps the objective along
its projected search path as phi. Derived in notebooks/07_optimizer.ipynb.
"""
from __future__ import annotations

import math
from typing import NamedTuple

C1 = 1e-4          # sufficient decrease (Armijo)
C2 = 0.9           # curvature, strong form: |phi'(t)| <= C2 |phi'(0)|
MAX_EVALUATIONS = 20   # per line search (scipy's maxls)


class Point(NamedTuple):
    t: float
    f: float
    df: float


def strong_wolfe(phi, f0: float, df0: float, t: float, *, c1=C1, c2=C2,
                 max_evaluations=MAX_EVALUATIONS):
    """A step t with phi(t) <= f0 + c1 t df0 and |phi'(t)| <= c2 |df0|; None if none was found.

    phi(t) -> (phi(t), phi'(t)) evaluates the objective; df0 = phi'(0) < 0.
    Bracketing (Nocedal & Wright Alg. 3.5): trial steps grow until one fails
    the sufficient decrease, stops decreasing, or has phi' >= 0; then ``_zoom``
    narrows the bracket. When the budget of evaluations runs out, the best
    trial that satisfies the sufficient decrease is returned (it may not be
    the last one evaluated: the caller checks), or None.
    """
    prev = Point(0.0, f0, df0)
    for used in range(1, max_evaluations + 1):
        now = Point(t, *phi(t))
        if now.f > f0 + c1 * t * df0 or (used > 1 and now.f >= prev.f):
            return _zoom(phi, f0, df0, prev, now, c1, c2, max_evaluations - used)
        if abs(now.df) <= -c2 * df0:
            return t
        if now.df >= 0:
            return _zoom(phi, f0, df0, now, prev, c1, c2, max_evaluations - used)
        prev, t = now, _extrapolate(prev, now)
    return prev.t                                        # still decreasing: the last, Armijo-good trial


def _zoom(phi, f0, df0, lo: Point, hi: Point, c1, c2, budget):
    """Alg. 3.6: lo satisfies the sufficient decrease with the lowest phi so far; the bracket
    [lo, hi] (either order) holds a step that satisfies both conditions."""
    for _ in range(budget):
        t = _cubic_in(lo, hi)
        now = Point(t, *phi(t))
        if now.f > f0 + c1 * t * df0 or now.f >= lo.f:
            hi = now
            continue
        if abs(now.df) <= -c2 * df0:
            return t
        if now.df * (hi.t - lo.t) >= 0:
            hi = lo
        lo = now
    return lo.t if lo.t > 0 else None


def _cubic_min(a: Point, b: Point):
    """The minimiser of the cubic through (a.t, a.f, a.df) and (b.t, b.f, b.df) (N&W eq. 3.59), or None."""
    d1 = a.df + b.df - 3.0 * (a.f - b.f) / (a.t - b.t)
    disc = d1 * d1 - a.df * b.df
    if not math.isfinite(disc) or disc < 0:
        return None
    d2 = math.copysign(math.sqrt(disc), b.t - a.t)
    denominator = b.df - a.df + 2.0 * d2
    if denominator == 0:
        return None
    t = b.t - (b.t - a.t) * (b.df + d2 - d1) / denominator
    return t if math.isfinite(t) else None


def _cubic_in(lo: Point, hi: Point) -> float:
    """Cubic interpolation kept in the middle 80% of the bracket (bisection when it fails)."""
    left, right = min(lo.t, hi.t), max(lo.t, hi.t)
    margin = 0.1 * (right - left)
    t = _cubic_min(lo, hi)
    if t is None:
        return 0.5 * (left + right)
    return min(max(t, left + margin), right - margin)


def _extrapolate(prev: Point, now: Point) -> float:
    """A longer trial step: the cubic's minimiser, kept in [t + 1.1 (t - t_prev), t + 4 (t - t_prev)]."""
    width = now.t - prev.t
    low, high = now.t + 1.1 * width, now.t + 4.0 * width
    t = _cubic_min(prev, now)
    if t is None or t <= now.t:
        return high
    return min(max(t, low), high)


# ---------------------------------------------------------------- the run
