"""Reranking by pseudo-log-likelihood: ordering, mixing with the LM score, batching, vocab mapping."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from liaotian.models.rerank import map_ids, mlm_scores, rerank

TOK = SimpleNamespace(pad_id=0, unk_id=1, cls_id=2, sep_id=3)


class CountingMLM(torch.nn.Module):
    """PLL = -(occurrences of token 9) over scored tokens: a reply full of 9s is implausible."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_len=16)
        self.batches = []

    def pseudo_log_likelihood(self, input_ids, attention_mask=None):
        self.batches.append(input_ids.shape[0])
        return -((input_ids == 9) & attention_mask.bool()).sum(1).float()


def test_mlm_scores_are_per_token_and_batched():
    mlm = CountingMLM()
    ctx = [2, 5, 6, 3]
    scores = mlm_scores(mlm, TOK, ctx, [[7, 8], [9, 9], [9]], batch_size=2)
    # scored tokens: 5 6 + reply (the [CLS]/[SEP] excluded)
    assert scores == pytest.approx([0 / 4, -2 / 4, -1 / 3])
    assert mlm.batches == [2, 1]


def test_rerank_orders_best_first_and_mixes_the_lm_score():
    mlm, ctx = CountingMLM(), [2, 5, 3]
    cands = [[9, 9, 9], [7, 7, 7], [9, 7, 7]]
    assert [i for i, _ in rerank(mlm, TOK, ctx, cands)] == [1, 2, 0]
    lm = [0.0, -40.0, -4.0]  # the LM strongly prefers candidate 0
    mixed = rerank(mlm, TOK, ctx, cands, lm_scores=lm, alpha=0.9)
    assert [i for i, _ in mixed] == [0, 2, 1]
    assert mixed[0][1] == pytest.approx(0.1 * (-3 / 4) + 0.9 * 0.0)
    assert rerank(mlm, TOK, ctx, []) == []
    with pytest.raises(ValueError):
        rerank(mlm, TOK, ctx, cands, lm_scores=[0.0])
    with pytest.raises(ValueError):
        rerank(mlm, TOK, ctx, cands, alpha=2.0)


def test_long_context_keeps_cls_and_the_tail():
    mlm = CountingMLM()
    scores = mlm_scores(mlm, TOK, [2] + [9] * 30 + [3], [[5]])
    assert scores == pytest.approx([-12 / 13])  # 16 = [CLS] + 12 x 9 + [SEP] + 5 + [SEP]


def test_ids_map_between_vocabularies_by_token_string():
    src = SimpleNamespace(convert_ids_to_tokens=lambda ids: [["[PAD]", "[UNK]", "[CLS]", "[SEP]", "你", "好"][i] for i in ids])
    dst = SimpleNamespace(token_to_id={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "好": 10}, unk_id=1)
    assert map_ids([2, 4, 5, 3], src, dst) == [2, 1, 10, 3]


def test_fast_mlm_scores_do_not_depend_on_batch_padding():
    from liaotian.models.fast_mlm import FastMLM, FastMLMConfig

    torch.manual_seed(0)
    mlm = FastMLM(FastMLMConfig(vocab_size=30, max_len=32, n_layer=1, n_head=2, d_model=32, dropout=0.0)).eval()
    ctx, cands = [2, 10, 11, 3], [[12], [13, 14, 15, 16, 17], [20, 21]]
    together = mlm_scores(mlm, TOK, ctx, cands, batch_size=8)
    alone = [mlm_scores(mlm, TOK, ctx, [c], batch_size=1)[0] for c in cands]
    assert together == pytest.approx(alone, abs=1e-5)
    assert all(s < 0 for s in together)
