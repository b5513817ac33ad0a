"""optim.lbfgs_device: L-BFGS with box bounds on the image's own device.

The two-loop recursion is held to the explicit BFGS inverse Hessian built from
the same pairs (a dense matrix, float64, written here from the textbook update,
not from the code under test); the runs are checked on quadratics whose
minimiser is known by construction (the KKT conditions hold there), on every
backend through the ``xp`` fixture.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from minivgg.transfer.objective import Evaluation
from optim import lbfgs_device
from optim.lbfgs_device import Pairs, strong_wolfe, two_loop

SHAPE = (1, 3, 4, 5)
N = math.prod(SHAPE)
LOW, HIGH = (-1.0, -0.5, -2.0), (1.0, 0.5, 0.0)          # per channel


def explicit_inverse_hessian(pairs, gamma, n):
    """H_k from H_0 = gamma I by the BFGS update H <- V^T H V + rho s s^T, V = I - rho y s^T."""
    H = gamma * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (y @ s)
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


def random_pairs(rng, n, count):
    """(s, y) pairs with s.y > 0: y = B s for a random SPD B plus a little noise."""
    Q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    B = Q @ np.diag(np.geomspace(0.1, 10.0, n)) @ Q.T
    pairs = []
    for _ in range(count):
        s = rng.normal(size=n)
        pairs.append((s, B @ s + 0.01 * rng.normal(size=n)))
    return pairs


def filled(xp, pairs, m, n):
    """A Pairs holding ``pairs`` (the last m of them), float64 on xp."""
    memory = Pairs(m, n, "float64", xp)
    for s, y in pairs:
        slot = memory.spare()
        memory.S[slot], memory.Y[slot] = xp.asarray(s), xp.asarray(y)
        memory.commit(slot, float(s @ y), float(y @ y))
    return memory


def two_loop_numpy(xp, q, memory, fixed=None):
    n = q.size
    out = two_loop(xp.asarray(q).copy(), memory, xp.empty(n), None if fixed is None else xp.asarray(fixed))
    return np.asarray(out.get() if hasattr(out, "get") else out)


# ---------------------------------------------------------------- the recursion

@pytest.mark.parametrize("count", [1, 3, 8])
def test_two_loop_equals_the_explicit_inverse_hessian(xp, count):
    """H_k q by the recursion == the dense BFGS matrix built from the same (last m) pairs times q."""
    rng = np.random.default_rng(count)
    n, m = 12, 5
    pairs = random_pairs(rng, n, count)
    memory = filled(xp, pairs, m, n)
    kept = pairs[-m:]
    s, y = kept[-1]
    H = explicit_inverse_hessian(kept, (s @ y) / (y @ y), n)
    q = rng.normal(size=n)
    assert np.allclose(two_loop_numpy(xp, q, memory), H @ q, rtol=1e-12, atol=1e-12)
    assert np.allclose(H @ y, s, rtol=1e-10)                   # the secant condition, newest pair


@pytest.mark.parametrize("held", [[5], [0, 3, 4, 11]])    # |A| < n / 8: a scatter; more: a mask
def test_two_loop_on_the_free_variables_is_bfgs_on_the_reduced_pairs(xp, held):
    """With A held fixed, and pairs whose steps did not move A (s_A = 0, the usual case): the
    BFGS matrix built from (s_F, y_F) on the F block, applied to q_F; q_A stays 0."""
    rng = np.random.default_rng(7)
    n, m = 14, 4
    fixed = np.array(held)
    pairs = random_pairs(rng, n, 6)
    for s, y in pairs:
        s[fixed] = 0
    pairs = [(s, y) for s, y in pairs if s @ y > 0]
    memory = filled(xp, pairs, m, n)
    free = np.setdiff1d(np.arange(n), fixed)
    reduced = [(s[free], y[free]) for s, y in pairs[-m:]]
    s, y = reduced[-1]
    H = explicit_inverse_hessian(reduced, (s @ y) / (y @ y), free.size)
    q = rng.normal(size=n)
    q[fixed] = 0
    got = two_loop_numpy(xp, q, memory, fixed)
    assert np.allclose(got[free], H @ q[free], rtol=1e-12, atol=1e-12)
    assert np.all(got[fixed] == 0)


def test_two_loop_on_the_free_variables_gives_a_descent_direction(xp):
    """Pairs whose steps moved the held variables too: H on F stays positive definite."""
    rng = np.random.default_rng(8)
    n, m = 14, 5
    memory = filled(xp, random_pairs(rng, n, 7), m, n)
    fixed = np.array([1, 2, 8])
    for _ in range(20):
        g = rng.normal(size=n)
        g[fixed] = 0
        d = -two_loop_numpy(xp, g, memory, fixed)
        assert g @ d < 0 and np.all(d[fixed] == 0)


def test_unwritten_history_slots_take_no_memory_on_the_cpu():
    """What the memory model counts (minivgg.memory, "lbfgs-device"): NumPy's zeros are pages
    the kernel maps on first write, so a history of 20 slots costs only the slots written."""
    def resident(*arrays) -> int:
        """Resident bytes of the mappings that hold the arrays (/proc/self/smaps): the process's own
        RSS also moves when the kernel reclaims other pages meanwhile (it did, in a full test run)."""
        spans = [(a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays]
        total, inside = 0, False
        with open("/proc/self/smaps") as handle:          # NumPy's huge-page advice splits a buffer's
            for line in handle:                            # mapping in several: each one that overlaps
                head = line.split()[0]
                if "-" in head and ":" not in head:                # a mapping: start-end perms ...
                    lo, hi = (int(v, 16) for v in head.split("-"))
                    inside = any(lo < end and start < hi for start, end in spans)
                elif inside and head == "Rss:":
                    total += int(line.split()[1]) * 1024
        return total
    n = 2**22                                           # 16 MiB per float32 row
    pairs = Pairs(20, n, np.float32, np)
    empty = resident(pairs.S, pairs.Y)
    for slot in range(2):
        pairs.S[slot] = 1.0
        pairs.Y[slot] = 1.0
    written = resident(pairs.S, pairs.Y)
    assert empty < 8 * 2**20, empty                     # 2 x 21 rows allocated, none resident
    assert 60 * 2**20 < written < 80 * 2**20, written   # four rows of 16 MiB written


def test_pairs_without_positive_curvature_are_skipped(xp):
    """s.y <= eps y.y is refused: the memory and the recursion are as if it never came."""
    rng = np.random.default_rng(3)
    n, m = 10, 3
    pairs = random_pairs(rng, n, 4)
    memory = filled(xp, pairs, m, n)
    order = list(memory.order)
    for s, y in [(pairs[0][0], -pairs[0][1]), (np.zeros(n), pairs[1][1])]:   # s.y < 0, s.y = 0
        slot = memory.spare()
        memory.S[slot], memory.Y[slot] = xp.asarray(s), xp.asarray(y)
        assert not memory.commit(slot, float(s @ y), float(y @ y))
    assert memory.order == order and len(memory) == m
    s, y = pairs[-1]
    H = explicit_inverse_hessian(pairs[-m:], (s @ y) / (y @ y), n)
    q = rng.normal(size=n)
    assert np.allclose(two_loop_numpy(xp, q, memory), H @ q, rtol=1e-12, atol=1e-12)


def test_without_pairs_the_direction_is_the_gradient(xp):
    q = np.random.default_rng(0).normal(size=6)
    assert np.array_equal(two_loop_numpy(xp, q, Pairs(4, 6, "float64", xp)), q)


# ---------------------------------------------------------------- the line search

@pytest.mark.parametrize("t0", [1e-4, 1.0, 50.0])
def test_the_step_satisfies_the_strong_wolfe_conditions(t0):
    """phi(t) = (t - 2)^4 + t^2 - 4 t from t0 tiny (extrapolation), fair, huge (zoom)."""
    def phi(t):
        return (t - 2) ** 4 + t * t - 4 * t, 4 * (t - 2) ** 3 + 2 * t - 4

    f0, df0 = phi(0.0)
    t = strong_wolfe(phi, f0, df0, t0, c1=1e-4, c2=0.1)
    f, df = phi(t)
    assert f <= f0 + 1e-4 * t * df0 and abs(df) <= 0.1 * abs(df0)


def test_the_line_search_gives_up_on_an_ascent():
    assert strong_wolfe(lambda t: (t, 1.0), 0.0, -1.0, 1.0, max_evaluations=5) is None


# ---------------------------------------------------------------- runs on quadratics

class BoundedQuadratic:
    """f(x) = 1/2 (x - c)^T A (x - c), A dense SPD (condition 100), on (1, 3, 4, 5) in ``dtype``.

    Its minimiser over the box is ``solution`` by construction: a point with a
    third of its variables at a bound, and c chosen so that the gradient there,
    A (x* - c), is 0 on the free variables and points out of the box on the
    others (the KKT conditions of a convex problem). ``seen`` keeps every point
    evaluated, as NumPy float64.
    """

    def __init__(self, xp, dtype="float64", seed=0):
        rng = np.random.default_rng(seed)
        Q = np.linalg.qr(rng.normal(size=(N, N)))[0]
        self.A = Q @ np.diag(np.geomspace(1.0, 100.0, N)) @ Q.T
        low = np.broadcast_to(np.reshape(LOW, (1, 3, 1, 1)), SHAPE).ravel()
        high = np.broadcast_to(np.reshape(HIGH, (1, 3, 1, 1)), SHAPE).ravel()
        where = rng.integers(0, 3, N)                          # 0 free, 1 at low, 2 at high
        solution = np.where(where == 1, low, np.where(where == 2, high, rng.uniform(low, high)))
        grad = np.where(where == 1, rng.uniform(0.5, 2, N), np.where(where == 2, -rng.uniform(0.5, 2, N), 0))
        self.c = solution - np.linalg.solve(self.A, grad)
        self.solution, self.xp, self.dtype, self.seen = solution.reshape(SHAPE), xp, dtype, []

    def __call__(self, x):
        xp = self.xp
        z = np.asarray(x.get() if hasattr(x, "get") else x, dtype=np.float64).ravel()
        self.seen.append(z.reshape(SHAPE).copy())
        r = z - self.c
        g = self.A @ r
        loss = xp.asarray(0.5 * r @ g, dtype=self.dtype)
        return Evaluation(loss, loss, 0.0, loss, xp.asarray(g.reshape(SHAPE), dtype=self.dtype))


def inside(points, dtype):
    """Every point within the box, the box's bounds rounded to ``dtype`` as the optimiser holds them."""
    low = np.asarray(LOW, dtype=dtype).astype(np.float64).reshape(1, 3, 1, 1)
    high = np.asarray(HIGH, dtype=dtype).astype(np.float64).reshape(1, 3, 1, 1)
    return all(np.all(p >= low) and np.all(p <= high) for p in points)


def test_converges_to_the_known_minimiser_of_a_bounded_quadratic(xp):
    f = BoundedQuadratic(xp)
    result = lbfgs_device(f, xp.zeros(SHAPE), 200, bounds=(LOW, HIGH), maxcor=10)
    x = np.asarray(result.x.get() if hasattr(result.x, "get") else result.x)
    # It stops where no step decreases f any more in float64 (after about 30 iterations), as
    # scipy's L-BFGS-B does ("ABNORMAL_TERMINATION_IN_LNSRCH"), at the minimiser.
    assert result.stopped in ("done", "line search failed", "converged: projected gradient is zero")
    assert np.abs(x - f.solution).max() < 1e-6
    assert result.history[19]["evaluations"] <= 25                  # t = 1 accepted most of the time


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_no_evaluated_point_leaves_the_box(xp, dtype):
    """Started outside the box, far from the minimiser: every point evaluated lies inside."""
    f = BoundedQuadratic(xp, dtype, seed=1)
    x0 = xp.asarray(np.random.default_rng(1).normal(0, 3, SHAPE), dtype=dtype)
    result = lbfgs_device(f, x0, 30, bounds=(LOW, HIGH), maxcor=5)
    assert result.iterations >= 20 and len(f.seen) == result.evaluations
    assert inside(f.seen, dtype)
    assert result.x.dtype == np.dtype(dtype) and type(result.x) is type(x0)


def test_unbounded_run_matches_the_minimiser(xp):
    f = BoundedQuadratic(xp)
    target = f.c.reshape(SHAPE)
    seen = []
    result = lbfgs_device(f, xp.zeros(SHAPE), 150, maxcor=10,
                          on_iteration=lambda k, x: seen.append(k))
    x = np.asarray(result.x.get() if hasattr(result.x, "get") else result.x)
    assert np.abs(x - target).max() < 1e-6
    assert seen == list(range(1, result.iterations + 1)) and len(result.history) == result.iterations
    assert result.optimizer_seconds is not None and result.optimizer_seconds >= 0


# ---------------------------------------------------------------- bad input, stops

@pytest.mark.parametrize("kwargs, words", [(dict(maxcor=0), "maxcor"), (dict(maxcor=-3), "maxcor"),
                                           (dict(iterations=-1), "iterations"),
                                           (dict(iterations=2.5), "iterations")])
def test_refuses_meaningless_arguments(kwargs, words):
    args = dict(iterations=5) | kwargs
    iterations = args.pop("iterations")
    with pytest.raises(ValueError, match=words):
        lbfgs_device(BoundedQuadratic(np), np.zeros(SHAPE), iterations, **args)


def test_refuses_bounds_that_do_not_fit():
    with pytest.raises(ValueError, match="per channel"):
        lbfgs_device(BoundedQuadratic(np), np.zeros(SHAPE), 3, bounds=((0, 0), (1, 1)))


class Trouble(BoundedQuadratic):
    """The quadratic, going wrong (NaN loss, Inf gradient, Ctrl-C) from evaluation ``bad_at`` on."""

    def __init__(self, bad_at, trouble):
        super().__init__(np)
        self.bad_at, self.trouble, self.good = bad_at, trouble, []

    def __call__(self, x):
        ev = super().__call__(x)
        if len(self.seen) < self.bad_at:
            self.good.append((float(ev.total_loss), np.array(x)))
            return ev
        if self.trouble == "interrupt":
            raise KeyboardInterrupt
        grad = ev.grad.copy()
        grad[0, 1, 2, 3] = np.nan
        return ev._replace(grad=grad)


@pytest.mark.parametrize("trouble, stopped", [("grad", "not finite"), ("interrupt", "interrupted")])
def test_a_nan_gradient_or_ctrl_c_keeps_the_last_good_point(trouble, stopped):
    f = Trouble(bad_at=6, trouble=trouble)
    result = lbfgs_device(f, np.zeros(SHAPE), 50, bounds=(LOW, HIGH))
    assert result.stopped == stopped
    best_loss, best_x = min(f.good, key=lambda seen: seen[0])
    assert result.loss == best_loss and np.array_equal(result.x, best_x)
    assert result.evaluations == (6 if trouble == "grad" else 5)


class Slow(BoundedQuadratic):
    def __call__(self, x):
        time.sleep(0.02)
        return super().__call__(x)


def test_time_limit_stops_cleanly_with_the_best_point():
    f = Slow(np)
    result = lbfgs_device(f, np.zeros(SHAPE), 50, bounds=(LOW, HIGH), time_limit=0.1)
    assert result.stopped == "time limit" and 2 <= result.evaluations == len(f.seen) < 10
    losses = [0.5 * (p.ravel() - f.c) @ f.A @ (p.ravel() - f.c) for p in f.seen]
    assert result.loss == pytest.approx(min(losses), rel=1e-12)


def test_scipy_bounds_are_shared_channel_pairs():
    """optim.lbfgs hands scipy one (low, high) tuple per channel, repeated (no per-pixel floats):
    the same bounds, element by element, as box_bounds' arrays."""
    from optim.boundary import ChannelBounds, box_bounds
    x = np.zeros((1, 3, 4, 5))
    pairs = ChannelBounds(x, [-1.0, -2.0, -3.0], [1.0, 2.0, 3.0])
    lb, ub = box_bounds(x, [-1.0, -2.0, -3.0], [1.0, 2.0, 3.0])
    assert len(pairs) == 60 and [p[0] for p in pairs] == list(lb) and [p[1] for p in pairs] == list(ub)
    assert pairs[25] == (-2.0, 2.0) and pairs[-1] == (-3.0, 3.0) and pairs[0] is pairs[19]
    assert pairs[18:21] == [(-1.0, 1.0), (-1.0, 1.0), (-2.0, 2.0)]
    with pytest.raises(IndexError):
        pairs[60]
