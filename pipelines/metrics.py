"""Dialogue metrics on token sequences (character-level for Chinese replies). No Ray here.

A reply or reference is any sequence of hashable tokens: a `str` (one token per character, as the
CharTokenizer and CDial-GPT's evaluation split Chinese) or a list of token ids.
BLEU follows NLTK 3.4.3 `corpus_bleu` with `SmoothingFunction().method1` (epsilon 0.1), the setting
CDial-GPT reports (thu-coai/CDial-GPT issue #41); distinct-n is corpus-level (unique / total n-grams).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

Tokens = Sequence[Hashable]

SMOOTHING_EPSILON = 0.1  # NLTK SmoothingFunction(epsilon=0.1).method1


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(summed next-token NLL / number of predicted tokens); `inf` when there are no tokens."""
    if n_tokens < 0 or nll_sum < 0:
        raise ValueError(f"perplexity needs nll_sum >= 0 and n_tokens >= 0, got {nll_sum}, {n_tokens}")
    if n_tokens == 0:
        return float("inf")
    return math.exp(nll_sum / n_tokens)


def non_termination_ratio(finish_reasons: Sequence[str]) -> float:
    """r_L (Welleck et al. 2020): share of replies that hit the length limit L without emitting eos.

    `finish_reasons` are `Generation.finish_reason` values: "length" (no eos within L) or "stop".
    A stop string ends a reply like eos does, so it counts as terminated.
    """
    if not finish_reasons:
        raise ValueError("non_termination_ratio of an empty list")
    unknown = set(finish_reasons) - {"stop", "length"}
    if unknown:
        raise ValueError(f"unknown finish reasons {sorted(unknown)}")
    return sum(r == "length" for r in finish_reasons) / len(finish_reasons)


def mean_length(replies: Sequence[Tokens]) -> float:
    """Mean number of tokens per reply (eos not counted)."""
    if not replies:
        raise ValueError("mean_length of an empty list")
    return sum(len(r) for r in replies) / len(replies)


def ngrams(tokens: Tokens, n: int) -> list[tuple]:
    """The n-grams of one sequence, in order."""
    tokens = tuple(tokens)
    return [tokens[i:i + n] for i in range(len(tokens) - n + 1)]


def distinct_n(replies: Sequence[Tokens], n: int) -> float:
    """Distinct-n (Li et al. 2016), corpus-level: unique n-grams / all n-grams over every reply (0 if none)."""
    grams = [g for r in replies for g in ngrams(r, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def _brevity_penalty(ref_len: int, hyp_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    if hyp_len == 0:
        return 0.0
    return math.exp(1 - ref_len / hyp_len)


def corpus_bleu(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens], max_n: int = 4) -> float:
    """Corpus BLEU with uniform weights 1/max_n and NLTK smoothing method1, in [0, 1].

    Modified precisions p_n pool clipped n-gram matches and hypothesis n-gram counts over the corpus
    (each denominator at least 1 per hypothesis, as NLTK does); an order with no match gets
    epsilon / denominator (method1). No unigram match at all gives 0. The brevity penalty uses the
    summed hypothesis length c and the summed closest reference lengths r: exp(1 - r/c) when c <= r.
    `references[i]` is the list of references of hypothesis i.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise ValueError("corpus_bleu of an empty corpus")
    numerators = [0] * (max_n + 1)
    denominators = [0] * (max_n + 1)
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        for n in range(1, max_n + 1):
            counts = Counter(ngrams(hyp, n))
            max_ref = Counter()
            for ref in refs:
                for g, c in Counter(ngrams(ref, n)).items():
                    max_ref[g] = max(max_ref[g], c)
            numerators[n] += sum(min(c, max_ref[g]) for g, c in counts.items())
            denominators[n] += max(1, sum(counts.values()))
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]  # closest, shorter on ties
    if numerators[1] == 0:
        return 0.0
    log_p = [
        math.log((numerators[n] if numerators[n] else SMOOTHING_EPSILON) / denominators[n])
        for n in range(1, max_n + 1)
    ]
    return _brevity_penalty(ref_len, hyp_len) * math.exp(math.fsum(log_p) / max_n)


def has_loop(tokens: Tokens, max_unit: int = 4, min_repeats: int = 3) -> bool:
    """True when some unit of 1..`max_unit` tokens occurs `min_repeats` times back to back.

    "不错不错不错" (unit "不错" x3) and "的的的" loop; "不错不错" and "哈哈" do not. Laughter such as
    "哈哈哈" counts as a loop too: the metric measures degenerate repetition, not intent.
    """
    tokens = tuple(tokens)
    for m in range(1, max_unit + 1):
        span = m * min_repeats
        for i in range(len(tokens) - span + 1):
            unit = tokens[i:i + m]
            if all(tokens[i + k * m:i + (k + 1) * m] == unit for k in range(1, min_repeats)):
                return True
    return False


def repetition_rate(replies: Sequence[Tokens], max_unit: int = 4, min_repeats: int = 3) -> float:
    """Share of replies with a repeated n-gram loop: `has_loop(reply, max_unit, min_repeats)`."""
    if not replies:
        raise ValueError("repetition_rate of an empty list")
    return sum(has_loop(r, max_unit, min_repeats) for r in replies) / len(replies)


def reply_metrics(replies: Sequence[Tokens], references: Sequence[Tokens], finish_reasons: Sequence[str]) -> dict[str, float]:
    """Every generation metric of one decoding setting: r_L, mean length, distinct-1/2, BLEU-2/4, repetition."""
    if not len(replies) == len(references) == len(finish_reasons):
        raise ValueError("replies, references and finish_reasons must have the same length")
    refs = [[r] for r in references]
    return {
        "r_L": non_termination_ratio(finish_reasons),
        "mean_length": mean_length(replies),
        "distinct_1": distinct_n(replies, 1),
        "distinct_2": distinct_n(replies, 2),
        "bleu_2": corpus_bleu(refs, replies, max_n=2),
        "bleu_4": corpus_bleu(refs, replies, max_n=4),
        "repetition": repetition_rate(replies),
    }
