"""Integrated Gradients on the token-embedding layer: one explanation, fixed-step or adaptive.

IG_i(x) = (x_i − x'_i) ∫₀¹ ∂_i F(x' + α(x − x')) dα (Sundararajan et al. 2017). Completeness:
Σ_i IG_i = F(x) − F(x'). A quadrature rule {(α_k, w_k)} gives IG ≈ (x − x') ⊙ Σ_k w_k ∇F(x' + α_k(x − x')),
and delta = |Σ IG − (F(x) − F(x'))| is the quadrature error of the summed integrand (reported; the
adaptive mode stops on a bound that cannot cancel, see `ig_adaptive`).

x is the (T, D) output of `model.token_embedding` (`forward(..., token_embeds=)` takes it in place of
the lookup; positions and segments are added by the model and are not attributed). The pieces:
`ig_quadrature` (rules), `ig_objectives` (what F is), `ig_path` (baselines, evaluating F and ∇F along
the path), `ig_adaptive` (`steps="auto"`). Positions with attention_mask 0 never move (zero attribution);
for DialogLM only context tokens move unless `attribute_reply=True`, so the scores say which context
tokens drove the reply.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Sequence

import torch

from liaotian.models.ig_adaptive import AUTO_METHODS, Integral, adaptive
from liaotian.models.ig_objectives import classifier_objective, reply_objective
from liaotian.models.ig_path import Path, baseline_embeddings
from liaotian.models.ig_quadrature import FIXED_METHODS, NESTED_METHODS, quadrature

__all__ = ["Attribution", "integrated_gradients", "quadrature", "FIXED_METHODS", "NESTED_METHODS", "AUTO_METHODS"]
TOKEN_BUDGET = 4096  # default chunk: interpolation points × tokens per forward/backward


@dataclass
class Attribution:
    """One explanation. `token_scores` (T,) = Σ_D attributions; delta = |Σ scores − (f_x − f_baseline)|."""

    input_ids: list[int]
    token_scores: torch.Tensor
    f_x: float
    f_baseline: float
    delta: float
    steps: int
    method: str
    target: int | list[int]
    attributions: torch.Tensor | None = None
    tokens: list[str] | None = None
    reply_start: int | None = None  # DialogLM: index of the first reply token in input_ids
    node_alphas: list[float] = field(default_factory=list)
    error_bound: float | None = None  # steps="auto": estimated bound on each token score's absolute error

    @property
    def relative_delta(self) -> float:
        gap = abs(self.f_x - self.f_baseline)
        return self.delta / gap if gap > 0 else (0.0 if self.delta == 0 else math.inf)


def fixed(path: Path, method: str, steps: int, need_grads: bool) -> Integral:
    keys, alphas, weights = quadrature(method, steps)
    f, scores, grads = path.evaluate(alphas, need_grads)
    token_scores, attributions = path.combine(weights, scores, grads)
    ends = {k: float(v) for k, v in zip(keys, f) if k in (0, 1)}
    if len(ends) < 2:
        ends[0], ends[1] = path.endpoints()
    return Integral(token_scores, attributions, ends[0], ends[1], list(map(float, alphas)))


def _as_row(t, name: str, device) -> torch.Tensor | None:
    if t is None:
        return None
    t = torch.as_tensor(t, device=device).long()
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise ValueError(f"{name} must be one sequence (T,) or (1, T), got shape {tuple(t.shape)}")
    return t[None]


def integrated_gradients(
    model,
    input_ids,
    target: int | Sequence[int] | torch.Tensor,
    baseline: str = "pad",
    steps: int | str = 50,
    method: str | None = None,
    attention_mask=None,
    segment_ids=None,
    internal_batch_size: int | None = None,
    tolerance: float = 0.01,
    max_steps: int = 257,
    min_steps: int | None = None,
    refine: float = 1.0,
    output: str = "logit",
    attribute_reply: bool = False,
    return_attributions: bool = False,
    pad_id: int | None = None,
    tokenizer=None,
) -> Attribution:
    """Explain one example. `target`: class index (classifier) or reply token ids (DialogLM).

    `method` defaults to gausslegendre (fixed steps, captum's default) or adaptive_trapezoid ("auto").
    `steps="auto"` adds nodes until every token score's estimated error is at most `tolerance` × the
    largest token score (or `max_steps` nodes). `output` ("logit", "log_odds", "prob"): see `ig_objectives`.
    `internal_batch_size` bounds interpolation points per forward/backward (default ⌊4096 / T⌋).
    """
    device = model.token_embedding.weight.device
    ids = _as_row(input_ids, "input_ids", device)
    is_reply = not (isinstance(target, numbers.Integral) or (torch.is_tensor(target) and target.dim() == 0))
    mask = _as_row(attention_mask, "attention_mask", device)
    seg = _as_row(segment_ids, "segment_ids", device)
    reply_start = None
    if is_reply:
        reply = _as_row(target, "target reply", device)
        if reply.shape[1] == 0:
            raise ValueError("the target reply is empty")
        if mask is not None and not bool(mask.all()):
            raise ValueError("DialogLM explanations take an unpadded context; drop attention_mask padding")
        reply_start = ids.shape[1]
        ids = torch.cat([ids, reply], 1)
        if seg is not None and seg.shape[1] == reply_start:  # the reply is the next speaker's turn
            seg = torch.cat([seg, (1 - seg[:, -1:]).expand(-1, reply.shape[1])], 1)
        objective = reply_objective(model, ids, seg, reply_start)
        target_out = reply[0].tolist()
    else:
        objective = classifier_objective(model, ids, mask, seg, int(target), output)
        target_out = int(target)
    if seg is not None and seg.shape != ids.shape:
        raise ValueError(f"segment_ids shape {tuple(seg.shape)} does not match the input {tuple(ids.shape)}")
    if mask is not None and mask.shape[1] != ids.shape[1]:
        raise ValueError(f"attention_mask length {mask.shape[1]} does not match input_ids length {ids.shape[1]}")

    x = model.token_embedding(ids)[0].detach()  # (T, D)
    base = baseline_embeddings(model, x, baseline, pad_id)
    frozen = torch.zeros(x.shape[0], dtype=torch.bool, device=device)
    if mask is not None:
        frozen |= ~mask[0].bool()
    if is_reply and not attribute_reply:
        frozen[reply_start:] = True
    base = torch.where(frozen[:, None], x, base)
    path = Path(objective, x, base, internal_batch_size or max(1, TOKEN_BUDGET // x.shape[0]))

    was_training = model.training
    model.eval()
    try:
        if steps == "auto":
            method = method or "adaptive_trapezoid"
            if min_steps is None:
                min_steps = 5 if method == "adaptive_trapezoid" else 9
            result = adaptive(path, method, min_steps, max_steps, tolerance, return_attributions, refine)
        elif isinstance(steps, int) and not isinstance(steps, bool):
            method = method or "gausslegendre"
            result = fixed(path, method, steps, return_attributions)
        else:
            raise ValueError(f"steps must be a positive int or 'auto', got {steps!r}")
    finally:
        model.train(was_training)
    ids_list = ids[0].tolist()
    scores = result.token_scores
    return Attribution(
        input_ids=ids_list, token_scores=scores.float().cpu(), f_x=result.f_x, f_baseline=result.f_baseline,
        delta=abs(float(scores.sum()) - (result.f_x - result.f_baseline)), steps=len(result.alphas), method=method,
        target=target_out, attributions=None if result.attributions is None else result.attributions.detach().cpu(),
        tokens=None if tokenizer is None else _token_strings(tokenizer, ids_list),
        reply_start=reply_start, node_alphas=result.alphas, error_bound=result.error_bound,
    )


def _token_strings(tokenizer, ids: list[int]) -> list[str]:
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return list(tokenizer.convert_ids_to_tokens(ids))
    return [tokenizer.decode([i], skip_special=False) for i in ids]
