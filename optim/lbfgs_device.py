"""L-BFGS with box bounds on the image's own device: NumPy or CuPy arrays, never scipy's.

scipy's L-BFGS-B (``optim.lbfgs``, the default and the reference) works on
float64 host vectors: on the GPU every iteration copies the image and its
gradient to the host and back, and its own work between two evaluations
(0.13 s unbounded, 0.30 s with bounds, at 512 x 384) is most of an iteration.
This optimiser does the same job where the image lives, in the image's dtype.

Shapes: x, g, d (1, 3, H, W) in the engine's dtype on its device, with flat
views (n,), n = 3HW; S, Y (m + 1, n) ring buffers of correction pairs, same
dtype (one slot is a spare for the candidate pair); lb, ub (1, 3, 1, 1), per
channel, broadcast over x.

The method (notebooks/07_optimizer.ipynb derives it):

1. Direction. ``A`` (the active set) holds the variables at a bound whose
   gradient pushes outward (x_i = l_i and g_i > 0, or x_i = u_i and g_i < 0);
   they stay where they are. On the free variables F, d_F = -H_k g_F by the
   two-loop recursion (``two_loop``) on the pairs restricted to F, (s_F, y_F):
   H_k is the BFGS inverse-Hessian approximation built from H_0 = gamma I,
   gamma = s.y / y.y of the newest pair, and the last m pairs, so it
   approximates the inverse of the Hessian's F x F block (the Newton step
   with A fixed); rho_i = 1 / s_i.y_i is taken over all variables, which is
   exact when the held variables did not move during step i
   (``Pairs.curvature`` says why and what it saves). Restricting the full H_k to F instead does not approximate
   that inverse: on a bounded quadratic with 1,800 unknowns it took 500
   evaluations for 100 iterations and stopped far from the minimiser, against
   104 (scipy: 107) with the restricted pairs. Then d_i = 0 where it would
   leave the box at once (x_i = l_i and d_i < 0, x_i = u_i and d_i > 0). Each
   zeroing removes a term g_i d_i >= 0 from g.d = -g_F.H_k g_F < 0, so d stays
   a descent direction, and g.d is the slope of the search path at t = 0.
   Index lists of A and of the variables at a bound keep the bound handling
   to O(m |A|) work beside the recursion's O(m n): a scatter of zeros after
   each vector update, or a boolean mask once A holds an eighth of the image.
2. Search path. x(t) = P(x + t d), P the projection (clip) onto the box: every
   point evaluated lies in the box; nothing is clipped after a step.
3. Step. t satisfies the strong Wolfe conditions on phi(t) = f(x(t)):
       phi(t) <= phi(0) + c1 t phi'(0),    |phi'(t)| <= c2 |phi'(0)|,
   c1 = 1e-4, c2 = 0.9 (``optim.line_search.strong_wolfe``: bracketing, then zoom with
   safeguarded cubic interpolation, Nocedal & Wright Alg. 3.5-3.6), with
   phi'(t) = g(x(t)) . d_t, d_t the part of d whose variables are still
   strictly moving at t (P clips the others). Without bounds (or while no
   bound binds) this is exactly the strong Wolfe line search, and it makes
   s.y > 0; where bounds bind, phi is piecewise smooth and the same two
   conditions are imposed on it (the Armijo condition along the projected
   path, and the slope condition on its one-sided derivative). The first
   trial is t = 1, except on the first iteration (and after a reset), where
   it is scaled so that the largest pixel change is ``FIRST_STEP`` (the loss's
   scale spans decades; the line search grows it from there).
4. Memory. s = x_{k+1} - x_k, y = g_{k+1} - g_k are kept unless
   s.y <= eps y.y (eps: the dtype's machine epsilon), which keeps H_k
   positive definite. A line search that finds no acceptable step clears the
   memory and retries along the steepest descent; a second failure stops.

Precision. S and Y are in the image's dtype (float32 for a float32 image: half
the memory and traffic of float64; the gradient they are made of is float32
anyway). Dot products are ``xp.dot``, BLAS sdot / cuBLAS in that dtype: these
accumulate in float32 with many partial sums (SIMD lanes, tree reductions);
measured against float64 at n = 590k, relative errors of 1e-7 to 1e-6 (0.2 ms
each on this project's CPU), well below the noise in y itself. The recursion
needs its dot products consistent, not exact, and a float64 accumulation
would cost a converted copy per dot. The scalars (rho, gamma, the line
search's values and slopes) are Python floats (float64).

Stops are those of ``optim.lbfgs``, through ``optim.boundary.BestPoint``:
a NaN or Inf loss or gradient, a time limit, or Ctrl-C return the best point
evaluated, kept on the device.
"""
from __future__ import annotations

import time

from minivgg.backend import get_array_module, synchronize
from optim.boundary import BestPoint, Stopped
from optim.line_search import strong_wolfe
from optim.progress import Progress
from optim.result import OptimResult

FIRST_STEP = 1.0   # largest pixel change of the first trial step after a (re)start, 0..255 scale


# ---------------------------------------------------------------- the two-loop recursion

class Pairs:
    """The last m correction pairs (s_i, y_i) in ring buffers, oldest first.

    S, Y: (m + 1, n), zero at first; ``order`` lists the slots in use, oldest
    to newest; ``spare()`` is a slot outside ``order``, where the next
    candidate pair is written before it is kept or skipped. ``sy``, ``yy``:
    s_i.y_i and y_i.y_i per slot (Python floats).
    """

    def __init__(self, m: int, n: int, dtype, xp):
        self.m = m
        self.S = xp.zeros((m + 1, n), dtype=dtype)
        self.Y = xp.zeros((m + 1, n), dtype=dtype)
        self.sy, self.yy = [0.0] * (m + 1), [0.0] * (m + 1)
        self.eps = float(xp.finfo(dtype).eps)
        self.clear()

    def clear(self):
        self.order, self.free = [], list(range(self.m + 1))

    def __len__(self):
        return len(self.order)

    def spare(self) -> int:
        return self.free[-1]

    def commit(self, slot: int, sy: float, yy: float) -> bool:
        """Keep the pair written in ``slot`` if s.y > eps y.y (else leave it); True when kept."""
        if not sy > self.eps * yy:                      # also refuses NaN
            return False
        self.free.remove(slot)
        self.order.append(slot)
        self.sy[slot], self.yy[slot] = sy, yy
        if len(self.order) > self.m:
            self.free.append(self.order.pop(0))
        return True

    def curvature(self, fixed=None):
        """([(slot, rho_i)] oldest first, gamma) for the recursion on the free variables.

        rho_i = 1 / s_i.y_i over all variables; gamma = s.y / y.y of the
        newest pair (1 with none), over the free variables only when ``fixed``
        (flat indices of the held variables A) is given: s_F.y_F = s.y - s_A.y_A,
        y_F.y_F = y.y - y_A.y_A, gathered from one pair (2 |A| values).
        rho_i over all variables equals 1 / s_F.y_F whenever the held variables
        did not move during step i (s_A = 0), the usual case: a pixel stays at its
        bound for many iterations. Where they did, H stays positive definite (the
        update is, for any rho > 0) and the pair's secant condition holds only
        approximately. The exact s_F.y_F of every pair would gather m |A|
        scattered values of S and Y per iteration: 15-70 ms at 512 x 384 with 2-35%
        of the variables held (measured on a busy machine), more than the recursion.
        """
        rhos = [(i, 1.0 / self.sy[i]) for i in self.order]
        if not self.order:
            return rhos, 1.0
        newest = self.order[-1]
        sy, yy = self.sy[newest], self.yy[newest]
        if fixed is not None and fixed.size:
            s_a, y_a = self.S[newest].take(fixed), self.Y[newest].take(fixed)    # (|A|,)
            sy_f, yy_f = sy - float(s_a @ y_a), yy - float(y_a @ y_a)
            if sy_f > self.eps * yy_f:
                sy, yy = sy_f, yy_f
        return rhos, sy / yy


def two_loop(q, pairs: Pairs, tmp, fixed=None, free=None):
    """q <- H_k q in place (Nocedal & Wright, Alg. 7.4); returns q.

    H_k = V_j^T H_{k-1} V_j + rho_j s_j s_j^T applied for j = oldest..newest
    from H_0 = gamma I, with V_j = I - rho_j y_j s_j^T, rho_j = 1 / (s_j.y_j):
    the BFGS update of the inverse Hessian, which makes H_k y_j = s_j for the
    newest pair (the secant condition). Never formed: 4m dot products and 4m
    axpys on (n,) vectors.

    fixed: flat indices A of variables held fixed (q_A must be 0), or None.
    Then the recursion runs on the free variables F only: H_k is built from
    the pairs (s_F, y_F) (rho and gamma: ``Pairs.curvature``), an
    approximation of the inverse of the Hessian's F x F block, and q_A stays
    0. (Restricting the full H_k to F instead would not approximate that
    inverse.) q_A is zeroed after each vector update: a scatter of |A| zeros,
    or for a large A a multiplication by the boolean ``free`` mask.

    q: (n,) flat, the image's dtype; tmp: (n,) work array; free: (n,)
    boolean, True off A (built here when A is large and it is not given). The
    alphas stay on the device (0-d arrays on CuPy: no synchronisation inside
    the loops).
    """
    xp = get_array_module(q)
    rhos, gamma = pairs.curvature(fixed)
    hold = _holder(q, fixed, free)
    alphas = []
    for i, rho in reversed(rhos):                       # newest to oldest
        a = rho * xp.dot(pairs.S[i], q)                 # alpha_i = rho_i s_i.q
        q -= xp.multiply(pairs.Y[i], a, out=tmp)        # q <- q - alpha_i y_i
        hold(q)                                         # ... with y_F: q_A stays 0
        alphas.append(a)
    q *= q.dtype.type(gamma)                            # r <- H_0 q
    for (i, rho), a in zip(rhos, reversed(alphas)):     # oldest to newest
        b = rho * xp.dot(pairs.Y[i], q)                 # beta = rho_i y_i.r
        q += xp.multiply(pairs.S[i], a - b, out=tmp)    # r <- r + (alpha_i - beta) s_i
        hold(q)
    return q


def _holder(q, fixed, free):
    """A function v -> v with v_A = 0: nothing without A, a scatter of zeros for a small A
    (|A| < n / 8), a multiplication by the (n,) boolean mask ``free`` for a large one."""
    xp = get_array_module(q)
    if fixed is None or fixed.size == 0:
        return lambda v: v
    if 8 * fixed.size < q.size:
        def scatter(v):
            v[fixed] = 0
        return scatter
    if free is None:
        free = xp.ones(q.shape, dtype=bool)
        free[fixed] = False
    return lambda v: xp.multiply(v, free, out=v)


# ---------------------------------------------------------------- the box

class Box:
    """Per-channel bounds low_c <= x[:, c] <= high_c, or no bounds at all (``bounds=None``).

    lb, ub: (1, C, 1, ...) in x's dtype and on its device, broadcast over x;
    mask: a boolean work array shaped like x. Index arrays are flat indices
    into x.reshape(-1) (x C-contiguous).
    """

    def __init__(self, bounds, like):
        xp = get_array_module(like)
        self.bounded = bounds is not None
        if not self.bounded:
            return
        low, high = (xp.asarray(b, dtype=xp.float64).ravel() for b in bounds)
        if like.ndim < 2 or low.shape != (like.shape[1],) or high.shape != (like.shape[1],):
            raise ValueError(f"bounds: one (low, high) pair per channel of x {tuple(like.shape)}, got "
                             f"{tuple(low.shape)} and {tuple(high.shape)} values")
        if not bool((low <= high).all()):
            raise ValueError("bounds: every low must be <= its high")
        shape = (1, like.shape[1]) + (1,) * (like.ndim - 2)
        self.lb = low.reshape(shape).astype(like.dtype)
        self.ub = high.reshape(shape).astype(like.dtype)
        self.mask = xp.empty(like.shape, dtype=bool)

    def project(self, v, out):
        """out <- P(v), the nearest point of the box (a copy without bounds)."""
        xp = get_array_module(v)
        if not self.bounded:
            xp.copyto(out, v)
            return out
        return xp.clip(v, self.lb, self.ub, out=out)

    def at_bounds(self, x):
        """(low, high): flat indices of the variables at their lower, upper bound."""
        xp = get_array_module(x)
        low = xp.flatnonzero(xp.less_equal(x, self.lb, out=self.mask))
        high = xp.flatnonzero(xp.greater_equal(x, self.ub, out=self.mask))
        return low, high

    @staticmethod
    def outward(v, low, high):
        """Flat indices where the step v leaves the box: v_i < 0 at low, v_i > 0 at high."""
        xp = get_array_module(v)
        return xp.concatenate((low[v[low] < 0], high[v[high] > 0]))


class _Timed:
    """objective(x) with the seconds spent inside it added up (the GPU waited for, so that
    asynchronous work is counted where it belongs)."""

    def __init__(self, objective):
        self.objective, self.seconds = objective, 0.0

    def __call__(self, x):
        start = time.perf_counter()
        ev = self.objective(x)
        synchronize(ev.grad)
        self.seconds += time.perf_counter() - start
        return ev


class _Search:
    """The projected search path from (x, g, f) along d, and its trial point (xt, gt, ft).

    phi(t) = f(P(x + t d)); phi'(t) = g(xt) . d_t with d_t = d where x + t d
    is inside the box (P moves those variables at rate d), 0 where P clips.
    Buffers are allocated once: x, g, xt, gt, d, w (1, 3, H, W); ``moving`` is
    a boolean mask. After ``accept``, (x, g) and (xt, gt) swap roles.
    """

    def __init__(self, points, box, x0):
        xp = get_array_module(x0)
        self.points, self.box, self.xp = points, box, xp
        self.x, self.g, self.xt, self.gt, self.d, self.w = (
            xp.empty(x0.shape, dtype=x0.dtype) for _ in range(6))
        self.moving = xp.empty(x0.shape, dtype=bool) if box.bounded else None
        box.project(x0, out=self.x)
        self.f = self._evaluate(self.x, self.g)
        self.t = None                                   # the step of the trial point held in xt

    def _evaluate(self, x, g) -> float:
        """f(x), its gradient copied into g (the objective may reuse its memory next time)."""
        ev = self.points.evaluate(x)
        self.xp.copyto(g, ev.grad)
        return self.points.last[0]

    def __call__(self, t: float):
        """(phi(t), phi'(t)); the trial point stays in (xt, gt)."""
        xp = self.xp
        w = xp.multiply(self.d, self.d.dtype.type(t), out=self.w)
        w += self.x                                     # x + t d
        self.box.project(w, out=self.xt)
        if self.box.bounded:
            xp.equal(w, self.xt, out=self.moving)       # not clipped
        f = self._evaluate(self.xt, self.gt)
        self.t = t
        dt = self.d if not self.box.bounded else xp.multiply(self.d, self.moving, out=self.w)
        return f, float(xp.dot(self.gt.reshape(-1), dt.reshape(-1)))

    def accept(self, t: float, pairs: Pairs):
        """Move to the trial point at t (evaluating it again if the last trial was another step);
        offer (s, y) to the memory."""
        if self.t != t:
            self(t)
        xp = self.xp
        slot = pairs.spare()
        s, y = pairs.S[slot], pairs.Y[slot]
        xp.subtract(self.xt.reshape(-1), self.x.reshape(-1), out=s)
        xp.subtract(self.gt.reshape(-1), self.g.reshape(-1), out=y)
        sy, yy = float(xp.dot(s, y)), float(xp.dot(y, y))
        self.x, self.xt, self.g, self.gt = self.xt, self.x, self.gt, self.g
        self.f, self.t = self.points.last[0], None
        pairs.commit(slot, sy, yy)

    def direction(self, pairs: Pairs) -> float:
        """d <- the projected L-BFGS direction (module docstring, step 1); returns g.d = phi'(0)."""
        xp = self.xp
        g, d = self.g.reshape(-1), self.d.reshape(-1)   # (n,) views
        xp.copyto(d, g)
        fixed = None
        if self.box.bounded:
            low, high = self.box.at_bounds(self.x)
            fixed = self.box.outward(-g, low, high)     # A: -g would leave the box
            d[fixed] = 0
        two_loop(d, pairs, self.w.reshape(-1), fixed)   # H_k g_F
        d *= d.dtype.type(-1)
        if self.box.bounded:
            d[self.box.outward(d, low, high)] = 0       # nothing leaves the box at once
        return float(xp.dot(g, d))

    def first_step(self) -> float:
        """The trial step whose largest pixel change is FIRST_STEP."""
        return FIRST_STEP / max(float(self.xp.abs(self.d).max()), 1e-30)


def check_arguments(iterations, maxcor):
    """Refuse what cannot mean anything: a negative iteration count, fewer than one pair."""
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be a whole number >= 0, got {iterations!r}")
    if isinstance(maxcor, bool) or int(maxcor) != maxcor or maxcor < 1:
        raise ValueError(f"maxcor (correction pairs kept) must be a whole number >= 1, got {maxcor!r}")


def _step(search: _Search, pairs: Pairs) -> str | None:
    """Direction, line search, step: None when it stepped, else why it cannot ("failed", "zero")."""
    df0 = search.direction(pairs)
    if df0 >= 0:
        return "zero"
    t = strong_wolfe(search, search.f, df0, search.first_step() if len(pairs) == 0 else 1.0)
    if t is None:
        return "failed"
    search.accept(t, pairs)
    return None


def _iterate(search: _Search, pairs: Pairs) -> str | None:
    """One iteration; with a memory that gives no step, once more from an empty memory
    (steepest descent on the free variables). None when it stepped, else why the run stops."""
    why = _step(search, pairs)
    if why is not None and len(pairs) > 0:
        pairs.clear()
        why = _step(search, pairs)
    if why is None:
        return None
    return "converged: projected gradient is zero" if why == "zero" else "line search failed"


def lbfgs_device(objective, x0, iterations, *, bounds=None, maxcor=20, progress=None,
                 time_limit=None, on_iteration=None) -> OptimResult:
    """Minimise ``objective`` from x0 for ``iterations`` iterations of projected L-BFGS, on x0's device.

    objective: x (1, 3, H, W) -> Evaluation (``minivgg.transfer.Objective``).
    bounds: per-channel (low, high) sequences (``minivgg.image.pixel_bounds``), or None.
    maxcor: correction pairs kept (memory: 2 (maxcor + 1) images in x0's dtype).
    on_iteration(iteration, x): after each iteration. Returns OptimResult with the best
    evaluated image; ``optimizer_seconds`` is the wall time minus the time inside the
    objective and the callbacks. Ctrl-C returns the best image, stopped="interrupted".
    """
    check_arguments(iterations, maxcor)
    start = time.perf_counter()
    timed = _Timed(objective)
    points = BestPoint(timed, x0, time_limit=time_limit)
    progress = progress or Progress(iterations, quiet=True)
    box = Box(bounds, x0)
    pairs = Pairs(int(maxcor), x0.size, x0.dtype, get_array_module(x0))
    done, stopped, outside = 0, "done", 0.0
    try:
        search = _Search(points, box, x0)
        for k in range(1, int(iterations) + 1):
            why = _iterate(search, pairs)
            if why is not None:
                stopped = why
                break
            done = k
            called = time.perf_counter()
            progress.update(k, points.evaluations, *points.last)
            if on_iteration is not None:
                on_iteration(k, search.x.copy())        # a copy: search.x is reused
            outside += time.perf_counter() - called
    except KeyboardInterrupt:
        stopped = "interrupted"
    except Stopped as why:
        stopped = str(why)
    seconds = time.perf_counter() - start - timed.seconds - outside
    return OptimResult(points.best_x(x0), points.best_loss, done, points.evaluations, stopped,
                       progress.history, optimizer_seconds=seconds)
