"""The straight path x' + α(x − x') between a baseline x' and the input x, both (T, D) token embeddings,
and the evaluation of F and ∇F at a batch of α (what every quadrature driver calls)."""
from __future__ import annotations

import numpy as np
import torch


class Path:
    """Evaluates F and ∇F at a batch of α, in chunks of at most `chunk` interpolation points."""

    def __init__(self, objective, x: torch.Tensor, base: torch.Tensor, chunk: int):
        self.objective, self.x, self.base, self.diff, self.chunk = objective, x, base, x - base, chunk

    def evaluate(self, alphas: np.ndarray, need_grads: bool):
        """-> F (k,) float64, per-token scores ∇F·(x − x') (k, T) float64, grads (k, T, D) or None."""
        fs, scores, grads = [], [], []
        a_all = torch.as_tensor(alphas, dtype=self.x.dtype, device=self.x.device)
        for a in a_all.split(self.chunk):
            emb = (self.base + a[:, None, None] * self.diff).detach().requires_grad_(True)
            with torch.enable_grad():
                f = self.objective(emb)
                (g,) = torch.autograd.grad(f.sum(), emb)
            fs.append(f.detach().double())
            scores.append((g * self.diff).sum(-1).double())
            if need_grads:
                grads.append(g)
        return torch.cat(fs), torch.cat(scores), (torch.cat(grads) if need_grads else None)

    def endpoints(self) -> tuple[float, float]:
        """(F(x'), F(x)) without gradients, for rules whose nodes miss an end."""
        with torch.no_grad():
            f = self.objective(torch.stack([self.base, self.x]))
        return float(f[0]), float(f[1])

    def combine(self, weights: np.ndarray, scores: torch.Tensor, grads: torch.Tensor | None):
        """Σ_k w_k · (per-token scores, and (x − x') ⊙ ∇F when grads are given) at the nodes."""
        w = torch.as_tensor(weights, dtype=torch.float64, device=scores.device)
        token_scores = (w[:, None] * scores).sum(0)
        attributions = None
        if grads is not None:
            attributions = self.diff * (w.to(grads.dtype)[:, None, None] * grads).sum(0)
        return token_scores, attributions


def baseline_embeddings(model, x: torch.Tensor, baseline: str, pad_id: int | None) -> torch.Tensor:
    """`"pad"`: the [PAD] embedding at every position; `"zeros"`: zero vectors (the paper's text baseline)."""
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "pad":
        pad = pad_id if pad_id is not None else config_pad_id(model)
        if pad is None:
            raise ValueError("baseline='pad' needs pad_id (the model config has none)")
        with torch.no_grad():
            return model.token_embedding.weight[pad].detach().expand_as(x).clone()
    raise ValueError(f"baseline must be 'pad' or 'zeros', got {baseline!r}")


def config_pad_id(model) -> int | None:
    """pad_id from the model's config, or its encoder's (Classifier)."""
    for m in (model, getattr(model, "encoder", None)):
        pad = getattr(getattr(m, "config", None), "pad_id", None)
        if pad is not None:
            return int(pad)
    return None
