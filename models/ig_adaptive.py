"""`steps="auto"`: add quadrature nodes until an error bound that cannot cancel is below the tolerance.

The quantity that matters to a reader of the heat map is each token's score, so both drivers bound
the error of every token score, relative to the largest one: they stop once
`error_bound ≤ tolerance · max_j |score_j|` or at `max_steps` nodes. Signed errors are never summed:
the completeness delta |Σ scores − (F(x) − F(x'))| is the sum of signed local errors, which can cancel
(a delta of 0 with every token wrong), so it is reported but does not decide when to stop.

- `adaptive_trapezoid` (locally refined trapezoid): `min_steps` uniform nodes, then bisect the interval
  with the largest local error (or every interval within `refine` × the largest) until
  Σ_intervals max(|e_i|, max_j |ê_ij|) is small enough. The forward at each node also yields F(α), so
  the trapezoid error of the summed integrand g = ∇F·(x − x') on interval i is known exactly:
  e_i = F(α_{i+1}) − F(α_i) − h_i (g_i + g_{i+1})/2. Per token, ê_ij = h_i³/6 · |second divided
  difference of the token's integrand| over the neighbouring nodes (the trapezoid's h³ f''/12), scaled
  up on intervals where the same estimate for g falls short of the exact e_i. Weights are the
  composite trapezoid on the final nodes: they depend only on where the nodes are.
- `clenshaw_curtis` / `riemann_trapezoid`: nested global rules, m = `min_steps` − 1 doubling each round;
  the bound is max_j |I_2m,j − I_m,j| (the coarser rule's error, an over-estimate of the finer one's).
All nodes of a round are evaluated as one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from liaotian.models.ig_path import Path
from liaotian.models.ig_quadrature import NESTED_METHODS, quadrature, trapezoid_weights

AUTO_METHODS = ("adaptive_trapezoid",) + NESTED_METHODS


@dataclass
class Integral:
    token_scores: torch.Tensor  # (T,) float64
    attributions: torch.Tensor | None  # (T, D) or None
    f_baseline: float
    f_x: float
    alphas: list[float]
    error_bound: float | None = None  # estimated bound on every token score's absolute error


def adaptive(path: Path, method: str, min_steps: int, max_steps: int, tolerance: float, need_grads: bool,
             refine: float = 1.0) -> Integral:
    if method not in AUTO_METHODS:
        raise ValueError(f"steps='auto' needs a nested rule {AUTO_METHODS}, got {method!r}")
    if min_steps < 3 or max_steps < min_steps:
        raise ValueError(f"need 3 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if method == "adaptive_trapezoid":
        if not 0 < refine <= 1:
            raise ValueError(f"refine must be in (0, 1], got {refine}")
        return locally_refined(path, min_steps, max_steps, tolerance, need_grads, refine)
    return nested_doubling(path, method, min_steps, max_steps, tolerance, need_grads)


def nested_doubling(path: Path, method: str, min_steps: int, max_steps: int, tolerance: float, need_grads: bool) -> Integral:
    store: dict[Fraction, tuple] = {}  # node -> (F, scores (T,), grad (T,D) | None)
    m, previous, bound = min_steps - 1, None, float("inf")
    while True:
        keys, alphas, weights = quadrature(method, m + 1)
        new = [i for i, k in enumerate(keys) if k not in store]
        f, scores, grads = path.evaluate(alphas[new], need_grads)
        for j, i in enumerate(new):
            store[keys[i]] = (float(f[j]), scores[j], None if grads is None else grads[j])
        token_scores, attributions = path.combine(
            weights, torch.stack([store[k][1] for k in keys]),
            torch.stack([store[k][2] for k in keys]) if need_grads else None)
        if previous is not None:
            bound = float((token_scores - previous).abs().max())
        previous = token_scores
        if bound <= tolerance * float(token_scores.abs().max()) or 2 * m + 1 > max_steps:
            return Integral(token_scores, attributions, store[Fraction(0)][0], store[Fraction(1)][0],
                            list(map(float, alphas)), bound)
        m *= 2


F_NOISE = 1e-6  # relative rounding noise of F from a float32 forward: local errors below it are not real
MIN_WIDTH = 2.0 ** -20  # narrower intervals are not bisected further (the path's float32 resolution)


def local_errors(alphas: np.ndarray, fs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(intervals, T) estimated |error| of each token's trapezoid on each interval (see above)."""
    h = np.diff(alphas)
    g = scores.sum(1)
    exact = np.abs(np.diff(fs) - h * (g[:-1] + g[1:]) / 2)
    exact = np.maximum(exact - 2 * F_NOISE * np.abs(fs).max(), 0.0)
    change = np.abs(np.diff(scores, axis=0))
    share = exact[:, None] * change / np.maximum(change.sum(1, keepdims=True), 1e-300)  # g's error by each token's move
    if len(alphas) < 3:
        return share
    values = np.concatenate([scores, g[:, None]], 1)  # the tokens, then g as the last column
    slopes = np.diff(values, axis=0) / h[:, None]
    dd = np.abs(np.diff(slopes, axis=0) / (alphas[2:] - alphas[:-2])[:, None])  # (K-2, T+1)
    curvature = np.zeros((len(h), values.shape[1]))
    curvature[1:] = dd  # triple (i-1, i, i+1) for interval i
    curvature[:-1] = np.maximum(curvature[:-1], dd)  # triple (i, i+1, i+2)
    estimate = h[:, None] ** 3 / 6 * curvature
    shortfall = np.where(estimate[:, -1] > 0, exact / np.maximum(estimate[:, -1], 1e-300), 0.0)
    return np.maximum(estimate[:, :-1] * np.maximum(shortfall, 1.0)[:, None], share)


def locally_refined(path: Path, min_steps: int, max_steps: int, tolerance: float, need_grads: bool, refine: float) -> Integral:
    store: dict[Fraction, tuple] = {}  # node -> (F, scores (T,), grad (T,D) | None)
    new = [Fraction(k, min_steps - 1) for k in range(min_steps)]
    while True:
        f, scores, grads = path.evaluate(np.array([float(k) for k in new]), need_grads)
        for j, k in enumerate(new):
            store[k] = (float(f[j]), scores[j], None if grads is None else grads[j])
        keys = sorted(store)
        alphas = np.array([float(k) for k in keys])
        node_scores = torch.stack([store[k][1] for k in keys])
        token_scores, _ = path.combine(trapezoid_weights(alphas), node_scores, None)
        per_token = local_errors(alphas, np.array([store[k][0] for k in keys]), node_scores.cpu().numpy())
        bound, room = float(per_token.sum(0).max()), max_steps - len(keys)
        err = per_token.max(1)
        if bound <= tolerance * float(token_scores.abs().max()) or room <= 0:
            break
        err = np.where(np.diff(alphas) >= 2 * MIN_WIDTH, err, 0.0)
        if not err.max() > 0:
            break
        worst = np.argsort(-err, kind="stable")
        chosen = [i for i in worst if err[i] >= refine * err[worst[0]]][:room]
        new = [(keys[i] + keys[i + 1]) / 2 for i in chosen]
    attributions = None
    if need_grads:
        _, attributions = path.combine(trapezoid_weights(alphas), node_scores, torch.stack([store[k][2] for k in keys]))
    return Integral(token_scores, attributions, store[keys[0]][0], store[keys[-1]][0], list(map(float, alphas)), bound)
