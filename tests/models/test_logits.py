"""Decoding rules on hand-made score rows."""
from __future__ import annotations

import math

import pytest
import torch

from liaotian.models import logits as L

INF = float("-inf")


def kept(scores: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in scores]


def test_temperature_scales_and_rejects_non_positive():
    s = torch.tensor([[2.0, -4.0]])
    assert torch.equal(L.temperature(s, 2.0), torch.tensor([[1.0, -2.0]]))
    assert L.temperature(s, 1.0) is s
    with pytest.raises(ValueError):
        L.temperature(s, 0.0)


def test_top_k_keeps_the_k_best_per_row():
    s = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 4.0, 3.0, 2.0]])
    assert kept(L.top_k(s, 2)) == [[1, 2], [0, 1]]
    assert torch.equal(L.top_k(s, 0), s)
    assert torch.equal(L.top_k(s, 4), s)


def test_consistent_top_k_keeps_eos_far_below_the_cut():
    eos = 3
    s = torch.tensor([[10.0, 9.0, 8.0, -50.0, 7.0]])  # p(eos) ~ e^-60
    assert kept(L.top_k(s, 1)) == [[0]]
    out = L.top_k(s, 1, always_keep=eos)
    assert kept(out) == [[0, eos]]
    assert out[0, eos] == -50.0  # keeps its own score: renormalised, not boosted


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    s = probs.log()
    assert kept(L.top_p(s, 0.5)) == [[0]]
    assert kept(L.top_p(s, 0.6)) == [[0, 1]]
    assert kept(L.top_p(s, 0.9)) == [[0, 1, 2]]
    assert kept(L.top_p(s, 1.0)) == [[0, 1, 2, 3]]
    # unsorted input: the ranking, not the column order, decides
    perm = torch.tensor([2, 0, 3, 1])
    assert kept(L.top_p(s[:, perm], 0.6)) == [[1, 3]]


def test_consistent_top_p_keeps_eos_below_the_cut():
    eos = 2
    probs = torch.tensor([[0.9, 0.0999, 1e-12, 1e-4]])
    s = probs.log()
    assert eos not in kept(L.top_p(s, 0.5))[0]
    assert kept(L.top_p(s, 0.5, always_keep=eos)) == [[0, eos]]
    assert eos in kept(L.top_p(s, 0.95, always_keep=eos))[0]


def test_always_keep_does_not_resurrect_a_banned_eos():
    eos = 1
    s = L.min_new_tokens(torch.tensor([[1.0, 2.0, 0.0]]), num_generated=0, minimum=1, eos_id=eos)
    assert kept(L.top_k(s, 1, always_keep=eos)) == [[0]]


def test_top_p_validates_p():
    with pytest.raises(ValueError):
        L.top_p(torch.zeros(1, 3), 0.0)
    with pytest.raises(ValueError):
        L.top_k(torch.zeros(1, 3), 1, always_keep=7)


def test_repetition_penalty_makes_repeats_less_likely_for_either_sign():
    s = torch.tensor([[2.0, -2.0, 1.0]])
    out = L.repetition_penalty(s, torch.tensor([[0, 1, 1]]), 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 1.0]]))
    assert torch.equal(L.repetition_penalty(s, torch.tensor([[0]]), 1.0), s)
    assert torch.equal(L.repetition_penalty(s, torch.zeros(1, 0, dtype=torch.long), 2.0), s)


def test_no_repeat_ngram_bans_the_completing_token():
    s = torch.zeros(2, 6)
    generated = torch.tensor([[1, 2, 3, 1, 2], [4, 5, 4, 5, 0]])
    out = L.no_repeat_ngram(s, generated, 3)
    assert kept(out)[0] == [0, 1, 2, 4, 5]  # "1 2" was followed by 3
    assert kept(out)[1] == [0, 1, 2, 3, 4, 5]  # "5 0" never seen before
    assert kept(L.no_repeat_ngram(s, generated, 2))[1] == [0, 1, 2, 3, 4, 5]  # no bigram starts with 0
    assert kept(L.no_repeat_ngram(s, generated, 1))[0] == [0, 4, 5]


def test_no_repeat_bigram_after_a_repeated_token():
    s = torch.zeros(1, 5)
    out = L.no_repeat_ngram(s, torch.tensor([[3, 4, 3]]), 2)
    assert kept(out) == [[0, 1, 2, 3]]  # 3 was followed by 4


def test_min_new_tokens_bans_eos_until_reached():
    s = torch.zeros(1, 4)
    assert kept(L.min_new_tokens(s, 1, 2, eos_id=3)) == [[0, 1, 2]]
    assert kept(L.min_new_tokens(s, 2, 2, eos_id=3)) == [[0, 1, 2, 3]]


def test_filtered_scores_renormalise_over_the_candidate_set():
    s = torch.tensor([[math.log(0.6), math.log(0.3), math.log(0.1)]])
    probs = torch.softmax(L.top_k(s, 2), -1)
    assert torch.allclose(probs, torch.tensor([[2 / 3, 1 / 3, 0.0]]))


def test_banned_tokens_are_never_generated_but_eos_stays_reachable():
    import torch

    from liaotian.models.generate import DecodingConfig, build_rules, apply_rules

    scores = torch.tensor([[5.0, 4.0, 3.0, 0.0]])  # token 0 (a special) would win; 3 is eos
    rules = build_rules(DecodingConfig(strategy="greedy", banned_ids=(0, 3)), eos_id=3)
    out = apply_rules(rules, scores, torch.zeros(1, 0, dtype=torch.long))
    assert out[0, 0] == float("-inf")
    assert out[0, 3] == 0.0  # eos is never banned, whatever the caller passes
    assert out.argmax().item() == 1


def test_fold_end_tokens():
    """Other end tokens become eos: greedy takes the best ending (CDial-GPT's infer.py stops when any
    end token is on top); sampling and beam search get the ending's total probability."""
    scores = torch.log(torch.tensor([[0.3, 0.25, 0.25, 0.2]]))  # eos = 1, end tokens 1 and 2
    greedy = L.fold_end_tokens(scores, 1, (1, 2), best_only=True)
    assert int(greedy.argmax()) == 0 and greedy[0, 2] == float("-inf")
    assert torch.isclose(greedy[0, 1], scores[0, 1])
    total = L.fold_end_tokens(scores, 1, (1, 2), best_only=False)
    assert int(total.argmax()) == 1 and torch.isclose(total[0, 1].exp(), torch.tensor(0.5))
    assert torch.equal(L.fold_end_tokens(scores, 1, (1,), best_only=False), scores)


def test_temperature_is_safe_for_tiny_t():
    s = torch.tensor([[3.0, -1.0, 3.0, float("-inf")], [0.5, 2.0, -7.0, 1.0]])
    for t in (1e-8, 1e-38, 1e-300, 5e-324):
        out = L.temperature(s, t)
        probs = torch.softmax(out, dim=-1)
        assert torch.isfinite(probs).all(), (t, out)
        assert torch.equal(probs.argmax(dim=-1), s.argmax(dim=-1))
        assert probs[0, 1] == 0 and probs[0, 0] == probs[0, 2] == 0.5  # ties share the mass


def test_presence_frequency_penalty_as_openai_defines_it():
    scores = torch.zeros(2, 5)
    generated = torch.tensor([[1, 1, 3], [4, 4, 4]])
    out = L.presence_frequency_penalty(scores, generated, presence=0.5, frequency=0.25)
    assert torch.allclose(out[0], torch.tensor([0.0, -1.0, 0.0, -0.75, 0.0]))
    assert torch.allclose(out[1], torch.tensor([0.0, 0.0, 0.0, 0.0, -1.25]))
    assert L.presence_frequency_penalty(scores, generated, 0.0, 0.0) is scores
    assert torch.allclose(L.presence_frequency_penalty(scores, generated, -1.0, 0.0)[0, 1], torch.tensor(1.0))
