"""The one boundary between the engine and scipy.

Shapes: the engine's x is (1, 3, H, W) in its own dtype (float32 or float64)
on its own device (NumPy or CuPy); scipy's z is the same numbers as a 1-D,
contiguous float64 NumPy vector of length 3 * H * W. Nothing else in the
project converts between the two.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import math
import time

import numpy as np

from minivgg.backend import get_array_module, to_numpy


class Stopped(Exception):
    """Raised inside an evaluation or a callback to end a run cleanly (time limit, NaN)."""


class BestPoint:
    """Evaluates ``objective(x) -> Evaluation`` on engine arrays, counting and checking each
    evaluation, and keeps the point with the lowest finite total loss: what any stop returns.

    A NaN or Inf loss or gradient raises ``Stopped("not finite")`` so the last good image
    survives; a passed deadline raises ``Stopped("time limit")``. The best (loss, point) pair is
    replaced in one assignment, so a KeyboardInterrupt that lands anywhere in an evaluation
    never leaves a loss paired with another point. The point kept is a copy of x on x's own
    device (a device-to-device copy, never a transfer), unless the caller hands ``evaluate`` its
    own copy to keep (scipy's float64 vector: ``FlatObjective``).
    """

    def __init__(self, objective, like, time_limit=None):
        self.objective = objective
        self.xp = get_array_module(like)
        self.evaluations = 0
        self.last = None              # (total, content, style) of the latest evaluation
        self.best = (math.inf, None)  # (lowest finite total loss, its point)
        self.deadline = None if time_limit is None else time.monotonic() + float(time_limit)

    def evaluate(self, x, keep=None):
        """One evaluation of x (1, 3, H, W): the Evaluation, counted, checked, and its point kept
        if it is the best so far: ``keep()`` (a copy the caller makes), else ``x.copy()``."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Stopped("time limit")
        ev = self.objective(x)
        self.evaluations += 1
        total = float(ev.total_loss)
        if not math.isfinite(total) or not bool(self.xp.isfinite(ev.grad).all()):
            raise Stopped("not finite")
        self.last = (total, float(ev.content_loss), float(ev.style_loss))
        if total < self.best_loss:
            self.best = (total, x.copy() if keep is None else keep())
        return ev

    @property
    def best_loss(self) -> float:
        return self.best[0]

    def best_x(self, fallback):
        """The best evaluated point (``fallback`` if nothing was evaluated)."""
        return fallback if self.best[1] is None else self.best[1]


class FlatObjective:
    """``objective(x) -> Evaluation`` as scipy's ``fun(z) -> (f, g)`` on flat float64 vectors.

    The evaluations go through a ``BestPoint`` (``self.points``: counting, checks, time limit);
    the best point is kept as the float64 vector scipy handed in (``to_engine`` of it gives x
    again exactly), so no copy comes back from the device for it.
    """

    def __init__(self, objective, like, time_limit=None):
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.xp = get_array_module(like)
        self.points = BestPoint(objective, like, time_limit=time_limit)

    def to_engine(self, z):
        """(3HW,) float64 NumPy -> (1, 3, H, W) engine dtype on the engine's device."""
        return self.xp.asarray(np.asarray(z).reshape(self.shape), dtype=self.dtype)

    @staticmethod
    def to_flat(x):
        """(1, 3, H, W) engine array -> (3HW,) contiguous float64 NumPy (a copy, always: the
        best point kept must not change when an optimiser updates x in place)."""
        return np.array(to_numpy(x), dtype=np.float64, order="C", copy=True).ravel()

    def __call__(self, z):
        """scipy's fun: z (3HW,) float64 -> (f float, g (3HW,) float64)."""
        ev = self.points.evaluate(self.to_engine(z), keep=lambda: np.array(z, dtype=np.float64, copy=True))
        return float(ev.total_loss), self.to_flat(ev.grad)

    def best_x(self, fallback):
        """The best evaluated point as an engine array (``fallback`` if nothing was evaluated)."""
        best = self.points.best[1]
        return fallback if best is None else self.to_engine(best)


def box_bounds(like, low, high):
    """Per-pixel bounds (lb, ub), each (3HW,) float64: channel c's (low_c, high_c) broadcast over (1, 3, H, W)."""
    shape = tuple(like.shape)
    lb = np.broadcast_to(np.asarray(low, dtype=np.float64).reshape(1, -1, 1, 1), shape).ravel()
    ub = np.broadcast_to(np.asarray(high, dtype=np.float64).reshape(1, -1, 1, 1), shape).ravel()
    return lb, ub


class ChannelBounds(Sequence):
    """Per-pixel (low, high) pairs for scipy's L-BFGS-B, one shared pair per channel, made on demand.

    Why not arrays in ``scipy.optimize.Bounds(lb, ub)``: scipy turns bounds into one (low, high)
    tuple of two fresh floats per unknown on the way in (``optim/lbfgs.py`` says where, and what
    that cost at 1024x768). A sequence of pairs is the other form scipy documents; this one stores
    nothing per pixel: item i is channel (i // (H W))'s own tuple, the same object each time, so
    scipy's conversion to arrays copies references, not floats, and keeps nothing after it.
    """

    def __init__(self, like, low, high):
        """like: (1, C, H, W), the image's shape; low, high: C per-channel bounds."""
        _, channels, h, w = tuple(like.shape)
        self._plane = h * w
        self._pairs = tuple((float(lo), float(hi)) for lo, hi in zip(low, high))
        if len(self._pairs) != channels:
            raise ValueError(f"{len(self._pairs)} channel bounds for {channels} channels")

    def __len__(self) -> int:
        return self._plane * len(self._pairs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._pairs[i // self._plane]

    def __iter__(self):
        for pair in self._pairs:
            yield from repeat(pair, self._plane)

