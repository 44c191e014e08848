"""Decoding rules: small functions `scores (B,V) -> scores (B,V)` that a request combines. No Ray here.

Scores are unnormalised logits or log-probabilities (self-terminating models); a removed token gets
`-inf`. "Consistent" decoding (Welleck et al., EMNLP 2020) is a parameter, not a class: the cut-off
rules take `always_keep=eos_id`, so eos stays in the candidate set V_t = TopK(p) ∪ {eos} /
Nucleus_p(p) ∪ {eos} however far below the cut it is (it keeps its own score: a token banned earlier,
e.g. by `min_new_tokens`, stays banned). Rules that look at the reply take `generated` (B,t) ids.
"""
from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _keep(scores: torch.Tensor, remove: torch.Tensor, always_keep: int | None) -> torch.Tensor:
    """Set `scores` to -inf where `remove` (B,V) bool, except column `always_keep`."""
    if always_keep is not None:
        if not 0 <= always_keep < scores.shape[-1]:
            raise ValueError(f"always_keep={always_keep} is outside the vocabulary (size {scores.shape[-1]})")
        remove = remove.clone()
        remove[:, always_keep] = False
    return scores.masked_fill(remove, NEG_INF)


def temperature(scores: torch.Tensor, t: float) -> torch.Tensor:
    """Divide scores by `t` > 0: t < 1 sharpens, t > 1 flattens (softmax(s / t)).

    Numerically safe for any t > 0: when s / t would overflow the scores' dtype (a tiny t), each row's
    best score is subtracted first (softmax does not change), since softmax(+inf, ...) is NaN and
    leaves no candidate; a t whose inverse the dtype cannot hold (1e-300 is 0 in float32) is the limit
    itself: the best tokens (ties kept) at 0, the others -inf."""
    if t <= 0:
        raise ValueError(f"temperature must be > 0, got {t}")
    if t == 1.0:
        return scores
    limit = torch.finfo(scores.dtype).max if scores.is_floating_point() else float("inf")
    inverse = 1.0 / t
    largest = float(scores.masked_fill(~torch.isfinite(scores), 0).abs().amax()) if scores.numel() else 0.0
    if inverse < limit and largest * inverse < limit / 2:
        return scores / t
    best = scores.amax(dim=-1, keepdim=True)
    shifted = scores - torch.where(torch.isfinite(best), best, torch.zeros_like(best))
    if inverse >= limit:
        return shifted.masked_fill(shifted < 0, NEG_INF)
    return shifted * inverse


def presence_frequency_penalty(scores: torch.Tensor, generated: torch.Tensor, presence: float,
                               frequency: float) -> torch.Tensor:
    """OpenAI's penalties on the reply so far `generated` (B,t): score -= presence * [count > 0] +
    frequency * count, count = how often the token already occurs in the reply. Positive values make
    repeats less likely, negative ones more; 0 and 0 is a no-op."""
    if (presence == 0 and frequency == 0) or generated.shape[-1] == 0:
        return scores
    counts = torch.zeros_like(scores).scatter_add(-1, generated, torch.ones_like(generated, dtype=scores.dtype))
    return scores - presence * (counts > 0).to(scores.dtype) - frequency * counts


def top_k(scores: torch.Tensor, k: int, always_keep: int | None = None) -> torch.Tensor:
    """Keep the `k` highest scores per row (ties at the k-th score are kept); k <= 0 keeps all.

    With `always_keep=eos_id` this is consistent top-k: V_t = TopK(p_t) ∪ {eos}.
    """
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[:, -1:]  # (B,1)
    return _keep(scores, scores < kth, always_keep)


def top_p(scores: torch.Tensor, p: float, always_keep: int | None = None, min_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability sums to >= p.

    Probabilities are softmax(scores) over the tokens not already removed. A token is dropped when the
    mass of the tokens ranked above it already reaches p (so the token crossing p is kept); at least
    `min_keep` tokens survive. p >= 1 keeps all. With `always_keep=eos_id` this is consistent nucleus
    sampling: V_t = Nucleus_p(p_t) ∪ {eos}.
    """
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
    probs = torch.softmax(sorted_scores, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (B,V) mass of the tokens ranked above
    remove_sorted = mass_before >= p
    remove_sorted[:, :min_keep] = False
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return _keep(scores, remove, always_keep)


def repetition_penalty(scores: torch.Tensor, generated: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL penalty (Keskar et al. 2019) on tokens already in the reply.

    For every token id in `generated` (B,t): a positive score is divided by `penalty`, a negative one
    multiplied by it, so penalty > 1 always makes a repeat less likely. penalty == 1 is a no-op.
    """
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    if penalty == 1.0 or generated.shape[-1] == 0:
        return scores
    seen = torch.gather(scores, -1, generated)  # (B,t)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(-1, generated, seen)


def no_repeat_ngram(scores: torch.Tensor, generated: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram already present in the reply `generated` (B,t).

    n <= 0 is a no-op; n == 1 bans every token already generated.
    """
    if n <= 0 or generated.shape[-1] < n - 1:
        return scores
    remove = torch.zeros_like(scores, dtype=torch.bool)
    rows = generated.tolist()
    for b, ids in enumerate(rows):
        prefix = tuple(ids[len(ids) - (n - 1):]) if n > 1 else ()
        for i in range(len(ids) - n + 1):
            if tuple(ids[i:i + n - 1]) == prefix:
                remove[b, ids[i + n - 1]] = True
    return scores.masked_fill(remove, NEG_INF)


def ban_tokens(scores: torch.Tensor, token_ids) -> torch.Tensor:
    """Never emit `token_ids` (e.g. [PAD], [CLS], [MASK], speaker tokens: they cannot appear in a reply)."""
    if not token_ids:
        return scores
    scores = scores.clone()
    scores[:, list(token_ids)] = NEG_INF
    return scores


def fold_end_tokens(scores: torch.Tensor, eos_id: int, end_ids, best_only: bool) -> torch.Tensor:
    """Other tokens that end a reply (`end_ids`) become eos: their columns go to -inf and eos's
    score becomes the score of "the reply ends". `best_only` (greedy): the best ending's score, so
    greedy ends exactly when an end token is the top token (CDial-GPT's infer.py); otherwise the log of
    their summed probability, so sampling and beam search end as often as the model says."""
    others = [i for i in end_ids if i != eos_id]
    if not others:
        return scores
    cols = [eos_id] + others
    merged = scores[:, cols].max(-1).values if best_only else torch.logsumexp(scores[:, cols], -1)
    scores = scores.clone()
    scores[:, others] = NEG_INF
    scores[:, eos_id] = merged
    return scores


def min_new_tokens(scores: torch.Tensor, num_generated: int, minimum: int, eos_id: int) -> torch.Tensor:
    """Ban eos while fewer than `minimum` tokens have been generated (the reply cannot be shorter)."""
    if num_generated >= minimum:
        return scores
    scores = scores.clone()
    scores[:, eos_id] = NEG_INF
    return scores

