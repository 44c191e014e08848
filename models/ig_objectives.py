"""The scalar F that Integrated Gradients explains, as a function of the token embeddings.

Each builder returns `objective(embeds (k, T, D)) -> (k,)`: k interpolation points in one batch.
- Classifier (integer `target`), `output=`:
  `"log_odds"`: log p_t − log(1 − p_t) = logit_t − logsumexp_{j≠t} logit_j. It does not change when
  all logits shift together (softmax ignores such a shift, so the logit of one class alone carries no
  meaning), it is positive exactly where class t is more likely than all others together, and so
  explaining the predicted class from a neutral baseline normally gives F(x) > F(baseline).
  `"logit"`: the raw logit of class t, the quantity captum's LayerIntegratedGradients attributes when
  the forward returns logits. `"prob"`: its softmax probability.
- DialogLM (reply token ids): F = Σ_{t ∈ reply} log p(x_t | x_<t) over the [context ; reply] input.
"""
from __future__ import annotations

from typing import Callable

import torch

CLASSIFIER_OUTPUTS = ("log_odds", "logit", "prob")


def class_score(logits: torch.Tensor, target: int, output: str) -> torch.Tensor:
    """(k, C) logits -> (k,) F of class `target` under the `output` rule above."""
    if output == "logit":
        return logits[:, target]
    if output == "prob":
        return torch.softmax(logits, -1)[:, target]
    others = torch.cat([logits[:, :target], logits[:, target + 1:]], 1)
    return logits[:, target] - torch.logsumexp(others, -1)


def classifier_objective(model, ids, attention_mask, segment_ids, target: int, output: str) -> Callable:
    if output not in CLASSIFIER_OUTPUTS:
        raise ValueError(f"output must be one of {CLASSIFIER_OUTPUTS}, got {output!r}")

    def objective(embeds):
        k = embeds.shape[0]
        kw = {} if attention_mask is None else {"attention_mask": attention_mask.expand(k, -1)}
        if segment_ids is not None:
            kw["segment_ids"] = segment_ids.expand(k, -1)
        logits = model(ids.expand(k, -1), token_embeds=embeds, **kw).logits.float()
        if logits.dim() != 2 or not 0 <= target < logits.shape[1]:
            raise ValueError(f"target class {target} does not index classifier logits of shape {tuple(logits.shape)}")
        return class_score(logits, target, output)

    return objective


def reply_objective(model, ids, segment_ids, reply_start: int) -> Callable:
    """Σ log p(reply | context): through the model's scored-position path (`loss_mask`)."""
    loss_mask = torch.zeros_like(ids)
    loss_mask[:, reply_start:] = 1

    def objective(embeds):
        k = embeds.shape[0]
        seg = None if segment_ids is None else segment_ids.expand(k, -1)
        out = model(ids.expand(k, -1), segment_ids=seg, loss_mask=loss_mask.expand(k, -1), token_embeds=embeds)
        if out.token_nll is not None:
            return -out.token_nll.float().sum(-1)
        out = model(ids.expand(k, -1), segment_ids=seg, token_embeds=embeds)  # (k, T, V) fallback
        logp = torch.log_softmax(out.logits[:, reply_start - 1 : -1].float(), -1)
        return logp.gather(-1, ids[:, reply_start:].expand(k, -1)[..., None]).squeeze(-1).sum(-1)

    return objective
