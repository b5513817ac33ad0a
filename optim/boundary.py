"""The one boundary between the engine and scipy.

Shapes: the engine's x is (1, 3, H, W) in its own dtype (float32 or float64)
on its own device (NumPy or CuPy); scipy's z is the same numbers as a 1-D,
contiguous float64 NumPy vector of length 3 * H * W. Nothing else in the
project converts between the two.
"""
from __future__ import annotations

import math
import time

import numpy as np

from minivgg.backend import get_array_module, to_numpy


class Stopped(Exception):
    """Raised inside an evaluation or a callback to end a run cleanly (time limit, NaN)."""


class FlatObjective:
    """Wraps ``objective(x) -> Evaluation`` as scipy's ``fun(z) -> (f, g)`` and keeps the best point.

    Counts evaluations, remembers the loss parts of the latest one (for
    progress), and keeps a copy of the evaluated point with the lowest finite
    total loss, which is what any stop returns. A NaN or Inf loss or gradient
    raises ``Stopped("not finite")`` so the last good image survives. The best
    (loss, z) pair is replaced in one assignment, so a KeyboardInterrupt that
    lands anywhere in an evaluation never leaves a loss paired with another point.
    """

    def __init__(self, objective, like, time_limit=None):
        self.objective = objective
        self.shape = tuple(like.shape)
        self.dtype = like.dtype
        self.xp = get_array_module(like)
        self.evaluations = 0
        self.last = None              # (total, content, style) of the latest evaluation
        self.best = (math.inf, None)  # (lowest finite total loss, its z (3HW,) float64)
        self.deadline = None if time_limit is None else time.monotonic() + float(time_limit)

    def to_engine(self, z):
        """(3HW,) float64 NumPy -> (1, 3, H, W) engine dtype on the engine's device."""
        return self.xp.asarray(np.asarray(z).reshape(self.shape), dtype=self.dtype)

    @staticmethod
    def to_flat(x):
        """(1, 3, H, W) engine array -> (3HW,) contiguous float64 NumPy (a copy, always: the
        best point kept must not change when an optimiser updates x in place)."""
        return np.array(to_numpy(x), dtype=np.float64, order="C", copy=True).ravel()

    def evaluate(self, x, z=None):
        """One evaluation on an engine array: the Evaluation, with counting, best-keeping and checks.

        z: x's flat float64 form when the caller has it (scipy's point): a copy of it
        is kept as the best point instead of copying x back from the engine
        (``to_engine(z)`` gives x again exactly, so nothing is lost).
        """
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Stopped("time limit")
        ev = self.objective(x)
        self.evaluations += 1
        total = float(ev.total_loss)
        if not math.isfinite(total) or not bool(self.xp.isfinite(ev.grad).all()):
            raise Stopped("not finite")
        self.last = (total, float(ev.content_loss), float(ev.style_loss))
        if total < self.best_loss:
            self.best = (total, self.to_flat(x) if z is None else np.array(z, dtype=np.float64, copy=True))
        return ev

    @property
    def best_loss(self) -> float:
        return self.best[0]

    @property
    def best_z(self):
        return self.best[1]

    def __call__(self, z):
        """scipy's fun: z (3HW,) float64 -> (f float, g (3HW,) float64)."""
        ev = self.evaluate(self.to_engine(z), z)
        return float(ev.total_loss), self.to_flat(ev.grad)

    def best_x(self, fallback):
        """The best evaluated point as an engine array (``fallback`` if nothing was evaluated)."""
        return fallback if self.best_z is None else self.to_engine(self.best_z)


class BestOnDevice(FlatObjective):
    """``FlatObjective`` (counting, checks, time limit, best point) with the best point kept as
    an engine array on its own device instead of a float64 host vector: a copy on the device,
    never a transfer. Exact: the copy has the dtype the objective saw. For the optimisers that
    work on engine arrays themselves (``optim.lbfgs_device``, ``optim.first_order``)."""

    @staticmethod
    def to_flat(x):
        return x.copy()

    def to_engine(self, z):
        return z


def box_bounds(like, low, high):
    """Per-pixel bounds (lb, ub), each (3HW,) float64: channel c's (low_c, high_c) broadcast over (1, 3, H, W)."""
    shape = tuple(like.shape)
    lb = np.broadcast_to(np.asarray(low, dtype=np.float64).reshape(1, -1, 1, 1), shape).ravel()
    ub = np.broadcast_to(np.asarray(high, dtype=np.float64).reshape(1, -1, 1, 1), shape).ravel()
    return lb, ub
