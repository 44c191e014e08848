"""Rerank candidate replies by a masked LM's pseudo-log-likelihood of [context ; reply]. No Ray here.

`FastMLM` (T-TA) scores every position of a sequence in one forward pass, so the n candidates of a
context cost one batched pass (per `batch_size` of them) instead of one pass per token as with BERT.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def map_ids(ids: Sequence[int], source_tok, target_tok) -> list[int]:
    """Token ids of `source_tok` -> ids of `target_tok` by token string (unknown -> target [UNK])."""
    tokens = source_tok.convert_ids_to_tokens(ids)
    return [target_tok.token_to_id.get(t, target_tok.unk_id) for t in tokens]


def _pack(context_ids: list[int], replies: list[list[int]], tok, max_len: int):
    """[context ; reply [SEP]] rows, right padded; an over-long row keeps [CLS] and its tail."""
    rows = []
    for reply in replies:
        seq = context_ids + reply + [tok.sep_id]
        if len(seq) > max_len:
            seq = [tok.cls_id] + seq[len(seq) - (max_len - 1):]
        rows.append(seq)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


@torch.no_grad()
def mlm_scores(mlm, tok, context_ids: Sequence[int], candidates: Sequence[Sequence[int]], batch_size: int = 32) -> list[float]:
    """Per-token pseudo-log-likelihood of [context ; candidate [SEP]] for each candidate: the MLM's
    `pseudo_log_likelihood` (sum of log p(x_i | x_\\i) over real tokens except [CLS]/[SEP]) divided
    by the number of such tokens. Ids are in `tok`'s (the MLM's) vocabulary."""
    device = next(mlm.parameters()).device
    max_len = int(mlm.config.max_len)
    special = {tok.cls_id, tok.sep_id, tok.pad_id}
    out: list[float] = []
    for start in range(0, len(candidates), batch_size):
        chunk = [list(c) for c in candidates[start:start + batch_size]]
        ids, mask = _pack(list(context_ids), chunk, tok, max_len)
        pll = mlm.pseudo_log_likelihood(ids.to(device), attention_mask=mask.to(device)).double().cpu()
        scored = (mask.bool() & ~torch.isin(ids, torch.tensor(sorted(special)))).sum(1).clamp(min=1)
        out += (pll / scored).tolist()
    return out


def rerank(mlm, tok, context_ids: Sequence[int], candidates: Sequence[Sequence[int]], lm_scores: Sequence[float] | None = None,
           alpha: float = 0.5, source_tok=None, batch_size: int = 32) -> list[tuple[int, float]]:
    """Order candidate replies (token ids, no eos) of one context, best first, as (index, score).

    score = (1 - alpha) * MLM per-token PLL + alpha * LM per-token log p, where the LM part is
    `lm_scores[i] / (len(candidates[i]) + 1)` (`Generation.logprob` counts the closing eos);
    without `lm_scores` the score is the MLM part alone. `context_ids` is the dialogue prompt
    `[CLS] u1 [SEP] … un [SEP]`. When the dialogue model's tokenizer differs from the MLM's `tok`,
    pass it as `source_tok` and the ids are mapped by token string.
    """
    if not candidates:
        return []
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"rerank: alpha must be in [0, 1], got {alpha}")
    if lm_scores is not None and len(lm_scores) != len(candidates):
        raise ValueError(f"rerank: {len(lm_scores)} lm_scores for {len(candidates)} candidates")
    if source_tok is not None:
        context_ids = map_ids(context_ids, source_tok, tok)
        candidates = [map_ids(c, source_tok, tok) for c in candidates]
    scores = mlm_scores(mlm, tok, context_ids, candidates, batch_size)
    if lm_scores is not None:
        scores = [(1 - alpha) * s + alpha * lm / (len(c) + 1) for s, lm, c in zip(scores, lm_scores, candidates)]
    return sorted(enumerate(scores), key=lambda pair: -pair[1])
