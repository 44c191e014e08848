"""Each dialogue metric on hand-made cases."""
from __future__ import annotations

import math

import pytest

from liaotian.pipelines import metrics as M


def test_perplexity_is_exp_of_mean_nll():
    assert M.perplexity(2 * math.log(4.0), 2) == pytest.approx(4.0)
    assert M.perplexity(0.0, 3) == 1.0
    assert M.perplexity(1.0, 0) == float("inf")
    with pytest.raises(ValueError):
        M.perplexity(-1.0, 2)


def test_non_termination_ratio_counts_length_limited_replies():
    assert M.non_termination_ratio(["stop", "length", "stop", "length"]) == 0.5
    assert M.non_termination_ratio(["stop"]) == 0.0
    with pytest.raises(ValueError):
        M.non_termination_ratio(["stop", "eos"])
    with pytest.raises(ValueError):
        M.non_termination_ratio([])


def test_mean_length_and_distinct_n():
    replies = ["哈哈哈", "我也是"]
    assert M.mean_length(replies) == 3.0
    assert M.distinct_n(replies, 1) == pytest.approx(4 / 6)  # 哈 我 也 是
    assert M.distinct_n(replies, 2) == pytest.approx(3 / 4)  # 哈哈 x2, 我也, 也是
    assert M.distinct_n(["a"], 2) == 0.0
    assert M.distinct_n([[1, 2], [1, 2]], 2) == 0.5  # ids work like characters


def test_bleu_by_hand_without_smoothing():
    hyp, ref = "今天天气很好", "今天天气不错"
    # p1 = 4/6 (今 天 天 气), p2 = 3/5 (今天 天天 天气), p3 = 2/4, p4 = 1/3; equal lengths: BP = 1
    assert M.corpus_bleu([[ref]], [hyp], max_n=2) == pytest.approx(math.sqrt(4 / 6 * 3 / 5))
    assert M.corpus_bleu([[ref]], [hyp], max_n=4) == pytest.approx((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)


def test_bleu_floor_smoothing_and_brevity_penalty():
    # hyp "天气是" vs ref "今天天气不错": p1 = 2/3, p2 = 1/2, p3 = 0 -> 0.1/1 (floor smoothing), BP = exp(1 - 6/3)
    bp = math.exp(1 - 6 / 3)
    assert M.corpus_bleu([["今天天气不错"]], ["天气是"], max_n=3) == pytest.approx(bp * (2 / 3 * 1 / 2 * 0.1) ** (1 / 3))
    # no 3-gram anywhere in the corpus: sacrebleu gives 0 (NLTK's rule gave bp * (1 * 1 * 0.1 * 0.1) ** 0.25)
    assert M.corpus_bleu([["今天天气不错"]], ["天气"], max_n=4) == 0.0
    assert M.corpus_bleu([["今天"]], ["不错"]) == 0.0  # no unigram match at all
    assert M.corpus_bleu([["今天"]], [""]) == 0.0


def test_bleu_pools_counts_over_the_corpus():
    refs, hyps = [["今天天气不错"], ["我也是"]], ["今天天气很好", "我是"]
    # equal to nltk 3.4.5 corpus_bleu(..., smoothing_function=SmoothingFunction().method1) where every reply has
    # n tokens; with "我是" shorter than 3, NLTK counted one 3-gram and one 4-gram for it (0.3883479408242593)
    assert M.corpus_bleu(refs, hyps, max_n=2) == pytest.approx(0.5404167777297231, abs=1e-12)
    # pooled: p1 = 6/8, p2 = 3/6, p3 = 2/4, p4 = 1/3, closest reference lengths 6 + 3 > 8 -> BP = exp(1 - 9/8)
    assert M.corpus_bleu(refs, hyps, max_n=4) == pytest.approx(math.exp(1 - 9 / 8) * (6 / 8 * 3 / 6 * 2 / 4 * 1 / 3) ** 0.25)
    # several references: clipping by the max count in any reference, closest reference length
    assert M.corpus_bleu([["我也", "我也是的"]], ["我也是"], max_n=1) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.corpus_bleu([["a"]], ["a", "b"])


def test_has_loop_definition():
    assert M.has_loop("今天天气不错不错不错")
    assert M.has_loop("的的的")
    assert M.has_loop("我想你我想你我想你啊")
    assert not M.has_loop("不错不错")
    assert not M.has_loop("今天天气很好")
    assert not M.has_loop("一二三四五一二三四五一二三四五")  # unit of 5 > max_unit
    assert M.has_loop("一二三四五一二三四五一二三四五", max_unit=5)
    assert M.has_loop([7, 8, 7, 8, 7, 8])


def test_repetition_rate_is_the_share_of_looping_replies():
    assert M.repetition_rate(["不错不错不错", "好的", "嗯嗯嗯", "你好"]) == 0.5


def test_reply_metrics_gathers_every_metric():
    out = M.reply_metrics(["今天天气很好", "我是"], ["今天天气不错", "我也是"], ["stop", "length"])
    assert out["r_L"] == 0.5 and out["mean_length"] == 4.0 and out["repetition"] == 0.0
    assert out["bleu_2"] == pytest.approx(0.5404167777297231)
    assert set(out) == {"r_L", "mean_length", "distinct_1", "distinct_2", "bleu_2", "bleu_4", "repetition"}
