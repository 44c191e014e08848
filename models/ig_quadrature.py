"""Quadrature rules on [0, 1] for Integrated Gradients: nodes α_k and weights w_k of ∫₀¹ f(α) dα.

captum's `riemann_left|right|middle` and `gausslegendre` exactly; `riemann_trapezoid` is the true
trapezoid rule (α = k/(n−1), w = 1/(n−1), halved at the ends; captum's weights sum to 1 − 1/n instead);
`clenshaw_curtis` has nodes ½(1 − cos(jπ/m)), m = n − 1, and Waldvogel's weight formula. The nested
rules (`clenshaw_curtis`, `riemann_trapezoid`) name their nodes by exact fractions, so a doubled rule
can reuse the evaluations of the coarser one.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

FIXED_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre", "clenshaw_curtis")
NESTED_METHODS = ("clenshaw_curtis", "riemann_trapezoid")


def quadrature(method: str, n: int) -> tuple[list[Fraction | float], np.ndarray, np.ndarray]:
    """(keys, alphas, weights) of an n-node rule on [0, 1]; keys identify nested nodes exactly."""
    if method not in FIXED_METHODS:
        raise ValueError(f"unknown IG method {method!r}; choose one of {FIXED_METHODS}")
    if n < 2 and method in ("riemann_trapezoid", "clenshaw_curtis"):
        raise ValueError(f"{method} needs at least 2 steps, got {n}")
    if n < 1:
        raise ValueError(f"IG needs at least 1 step, got {n}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        alphas, weights = 0.5 * (1 + x), 0.5 * w
        return list(alphas), alphas, weights
    if method == "clenshaw_curtis":
        return clenshaw_curtis(n - 1)
    if method == "riemann_trapezoid":
        keys = [Fraction(k, n - 1) for k in range(n)]
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return keys, np.array([float(k) for k in keys]), weights
    offset = {"riemann_left": Fraction(0), "riemann_right": Fraction(1), "riemann_middle": Fraction(1, 2)}[method]
    keys = [(k + offset) / n for k in range(n)]
    return keys, np.array([float(k) for k in keys]), np.full(n, 1.0 / n)


def clenshaw_curtis(m: int) -> tuple[list[Fraction], np.ndarray, np.ndarray]:
    """m+1 nodes; w_j = c_j/m · [1 − Σ_{k=1}^{⌊m/2⌋} b_k/(4k²−1) cos(2πjk/m)] on [−1, 1], halved to [0, 1]."""
    j = np.arange(m + 1)
    weights = np.ones(m + 1)
    for k in range(1, m // 2 + 1):
        b = 1.0 if 2 * k == m else 2.0
        weights -= b / (4 * k * k - 1) * np.cos(2 * np.pi * j * k / m)
    c = np.full(m + 1, 2.0)
    c[[0, -1]] = 1.0
    weights = 0.5 * c / m * weights
    return [Fraction(int(i), m) for i in j], 0.5 * (1 - np.cos(np.pi * j / m)), weights


def trapezoid_weights(alphas: np.ndarray) -> np.ndarray:
    """Composite trapezoid weights on sorted nodes that include 0 and 1 (any spacing)."""
    h = np.diff(alphas)
    weights = np.zeros(len(alphas))
    weights[:-1] += h / 2
    weights[1:] += h / 2
    return weights
