"""Dialogue metrics on token sequences (character-level for Chinese replies). No Ray here.

A reply or reference is any sequence of hashable tokens: a `str` (one token per character, as the
CharTokenizer and CDial-GPT's evaluation split Chinese) or a list of token ids.
BLEU is sacrebleu's corpus BLEU on character tokens with "floor" smoothing 0.1, the counterpart of
NLTK's `SmoothingFunction().method1` (epsilon 0.1) that CDial-GPT reports; distinct-n is corpus-level
(unique / total n-grams).
"""
from __future__ import annotations

import math
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


def _line(tokens: Tokens) -> str:
    """Tokens as one space-separated line (a character is a token; whitespace tokens stay visible)."""
    return " ".join(f"<{ord(t)}>" if isinstance(t, str) and t.isspace() else str(t) for t in tokens)


def corpus_bleu(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens], max_n: int = 4) -> float:
    """Corpus BLEU (sacrebleu) with uniform weights 1/max_n, in [0, 1]; `references[i]` is the list of
    references of hypothesis i, tokens are characters (or ids). Counts are pooled over the corpus; an
    order with no match gets 0.1 / its n-gram count ("floor" smoothing, NLTK's method1); no unigram
    match gives 0; the brevity penalty uses the closest reference lengths.

    Against the hand-written NLTK 3.4.3 rule this replaced: equal when every hypothesis has at least
    n tokens; NLTK counts at least one n-gram per hypothesis of each order, so a corpus with replies
    shorter than n scored lower there (0.388 vs sacrebleu's 0.441 for BLEU-4 of ["今天天气很好", "我是"]),
    and a corpus with no n-gram of some order at all scored epsilon there and 0 here."""
    from sacrebleu.metrics import BLEU

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise ValueError("corpus_bleu of an empty corpus")
    if not all(references):
        raise ValueError("every hypothesis needs at least one reference")
    streams = [[_line(refs[i]) if i < len(refs) else None for refs in references] for i in range(max(map(len, references)))]
    bleu = BLEU(tokenize="none", smooth_method="floor", smooth_value=SMOOTHING_EPSILON, max_ngram_order=max_n)
    return bleu.corpus_score([_line(h) for h in hypotheses], streams).score / 100


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
