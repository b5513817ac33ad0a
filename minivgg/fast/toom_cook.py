"""Winograd F(m x m, 3 x 3)'s transform matrices, built exactly in rational arithmetic.

Toom-Cook on m + 1 finite points and infinity gives AT, G and BT (``toom_cook``);
their Kronecker products are the 2-D transforms, and the flip that turns the
forward into the backward (the transposed convolution) permutes and scales
them (``flip_map``, ``plans``). ``minivgg.fast.winograd`` uses them; the
derivation is in its docstring.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

__all__ = ["POINTS", "WinogradPlan", "flip_map", "plans", "toom_cook"]

#: Finite evaluation points per output tile side m (infinity is always the last point).
POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, Fraction(1, 2))}

def toom_cook(m: int, points) -> tuple:
    """(AT (m, a), G (a, 3), BT (a, a)) as lists of Fractions, for F(m, 3) on the finite ``points``.

    AT[i, j] = p_j^i and G[j, k] = p_j^k / f_j with f_j = prod_{l != j} (p_j - p_l)
    (the point at infinity picks the leading coefficient: AT[:, a-1] = e_{m-1},
    G[a-1] = e_2). BT is then the unique matrix with
    sum_j AT[i, j] G[j, k] BT[j, l] = [l == i + k], solved exactly column by column.
    """
    a = m + 2
    pts = [Fraction(p) for p in points]
    if len(pts) != a - 1 or len(set(pts)) != len(pts):
        raise ValueError(f"F({m}, 3) needs {a - 1} distinct finite points, got {points}")
    f = [_prod(p - q for q in pts if q != p) for p in pts]
    at = [[p ** i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = [[p ** k / fj for k in range(3)] for p, fj in zip(pts, f)] + [[Fraction(0), Fraction(0), Fraction(1)]]
    q = [[at[i][j] * g[j][k] for j in range(a)] for i in range(m) for k in range(3)]    # (3m, a)
    columns = []
    for l in range(a):
        rhs = [Fraction(int(l == i + k)) for i in range(m) for k in range(3)]
        columns.append(_solve_exact(q, rhs))
    bt = [[columns[l][j] for l in range(a)] for j in range(a)]
    for i in range(m):                     # the identity, checked exactly
        for k in range(3):
            for l in range(a):
                assert sum(at[i][j] * g[j][k] * bt[j][l] for j in range(a)) == int(l == i + k)
    return at, g, bt


def flip_map(g) -> tuple:
    """(pi, s) with (G J)[j] = s[j] * G[pi[j]]: J reverses the kernel; raises if no such map exists."""
    pi, s = [], []
    for row in g:
        flipped = row[::-1]
        for j, other in enumerate(g):
            nz = [k for k in range(3) if other[k] != 0]
            scale = flipped[nz[0]] / other[nz[0]]
            if all(flipped[k] == scale * other[k] for k in range(3)):
                pi.append(j)
                s.append(scale)
                break
        else:
            raise ValueError("these points are not closed under p -> 1/p: no flip map")
    return pi, s


class WinogradPlan(NamedTuple):
    """The exact transforms of F(m x m, 3 x 3) as float lists (the backward's are permuted: ``plans``)."""

    m: int
    input_transform: tuple    # (a*a, a*a): V = KB @ D, KB = BT (x) BT (rows permuted for the backward)
    output_transform: tuple   # (m*m, a*a): Y = KA @ M, KA = AT (x) AT (columns permuted and scaled)
    kernel_transform: tuple   # (a*a, 9): U = KG @ g, KG = G (x) G
    ones_column: int          # k with KA[:, k] all ones: a bias added to M[k] reaches every output
    input_rows: tuple         # (a, a): the one-axis factor of input_transform, which is its
                              # Kronecker square (BT, rows permuted for the backward)


@lru_cache(maxsize=None)
def plans(m: int) -> tuple[WinogradPlan, WinogradPlan]:
    """(forward, backward) plans for tile side m; the backward computes conv(dout, w_t) from U (module docstring)."""
    at, g, bt = toom_cook(m, POINTS[m])
    a = m + 2
    kb, ka, kg = _kron(bt, bt), _kron(at, at), _kron(g, g)
    pi, s = flip_map(g)
    pik = [pi[k // a] * a + pi[k % a] for k in range(a * a)]        # pi on the a*a positions
    sk = [s[k // a] * s[k % a] for k in range(a * a)]
    inv = [0] * (a * a)                                              # pi^-1 (pi is an involution here,
    for k, image in enumerate(pik):                                  # but nothing relies on it)
        inv[image] = k
    # M[k] = s_k U[pi k]^T V[k]; with k' = pi k: M_b[k'] = U[k']^T V[pi^-1 k'] and
    # M[pi^-1 k'] = s_{pi^-1 k'} M_b[k'], so the rows of KB and the columns of KA move.
    kb_back = [kb[inv[k]] for k in range(a * a)]
    inv_1d = [inv[k * a] // a for k in range(a)]                     # pi^-1 on one axis
    bt_back = [bt[inv_1d[j]] for j in range(a)]
    assert _kron(bt_back, bt_back) == kb_back                        # the flip acts on each axis alone
    ka_back = [[row[inv[k]] * sk[inv[k]] for k in range(a * a)] for row in ka]
    as_floats = lambda mat: tuple(tuple(float(v) for v in row) for row in mat)  # noqa: E731
    # The point 1 gives AT a column of ones (1^i = 1), so KA one column of ones: the bias.
    ones = [k for k in range(a * a) if all(row[k] == 1 for row in ka)]
    ones_back = [k for k in range(a * a) if all(row[k] == 1 for row in ka_back)]
    forward = WinogradPlan(m, as_floats(kb), as_floats(ka), as_floats(kg), ones[0], as_floats(bt))
    backward = WinogradPlan(m, as_floats(kb_back), as_floats(ka_back), as_floats(kg), ones_back[0],
                            as_floats(bt_back))
    return forward, backward


def _kron(a, b):
    """Kronecker product of two lists of lists: row (i, k) = i * rows(b) + k, column likewise."""
    return [[x * y for x in ra for y in rb] for ra in a for rb in b]


def _prod(values):
    out = Fraction(1)
    for v in values:
        out *= v
    return out


def _solve_exact(q, rhs):
    """The x with q @ x = rhs (q: rows x cols, full column rank, consistent) in exact arithmetic.

    Gauss-Jordan elimination on the normal equations q^T q x = q^T rhs.
    """
    cols = len(q[0])
    a = [[sum(q[r][i] * q[r][j] for r in range(len(q))) for j in range(cols)]
         + [sum(q[r][i] * rhs[r] for r in range(len(q)))] for i in range(cols)]
    for i in range(cols):
        pivot = next(r for r in range(i, cols) if a[r][i] != 0)
        a[i], a[pivot] = a[pivot], a[i]
        a[i] = [v / a[i][i] for v in a[i]]
        for r in range(cols):
            if r != i and a[r][i] != 0:
                a[r] = [vr - a[r][i] * vi for vr, vi in zip(a[r], a[i])]
    x = [a[i][cols] for i in range(cols)]
    for row, want in zip(q, rhs):                                            # consistent: exact fit
        assert sum(v * xi for v, xi in zip(row, x)) == want
    return x
