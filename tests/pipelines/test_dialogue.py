"""Samples: segment ids, loss masks, windows (every response learnt exactly once), build_context, and the
one fitting rule both use."""
from collections import Counter

from liaotian.pipelines.dialogue import Fit, build_context, dialogue_samples, encode_pieces, fit_newest, plan_windows
from liaotian.pipelines.tokenizer import build_vocab, count_chars

TOK = build_vocab(count_chars(["abcdefghij"]))


def toks(ids):
    return "".join("|" if i == TOK.sep_id else "^" if i == TOK.cls_id else TOK.tokens[i] for i in ids)


def test_sample_masks_and_segments_by_hand():
    (ids, seg, mask, turns), = dialogue_samples([TOK.encode("ab"), TOK.encode("c"), TOK.encode("de")], TOK, 32)
    assert toks(ids) == "^ab|c|de|"
    assert seg == [0, 0, 0, 0, 1, 1, 0, 0, 0]
    assert mask == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert turns == 3


def test_windows_learn_every_response_once_with_most_context():
    lengths = [3, 3, 3, 3, 3]  # each utterance costs 4 with its [SEP]; max_len 13 fits 3 utterances
    windows = plan_windows(lengths, 13)
    learnt = [k for w in windows for k in range(w.first_response, w.end)]
    assert learnt == [1, 2, 3, 4]
    assert [(w.start, w.first_response, w.end) for w in windows] == [(0, 1, 3), (1, 3, 4), (2, 4, 5)]


def test_window_segments_follow_the_original_index_and_context_is_not_learnt():
    utts = [TOK.encode(s) for s in ("abc", "def", "ghi", "jab")]
    samples = dialogue_samples(utts, TOK, 13)
    ids, seg, mask, _ = samples[1]
    assert toks(ids) == "^def|ghi|jab|"
    assert seg == [1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]  # [CLS] takes the first utterance's segment (index 1)
    assert mask == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]  # u2 was learnt in window 1


def test_overlong_utterances_are_truncated_and_counted():
    c = Counter()
    samples = dialogue_samples([TOK.encode("abcdefghij"), TOK.encode("abcdefghij")], TOK, 10, c)
    assert [toks(s[0]) for s in samples] == ["^j|abcdef|"]
    assert c == {"utterances": 1, "context": 1}


def test_batch_encoding_equals_per_dialogue_samples():
    pieces = [["ab", "c", "de"], ["abcdefghij", "ab", "c"], ["a", "b"]]
    out = encode_pieces(pieces, [0, 0, 3], TOK, 10)
    o = out["offsets"]
    got = {(int(p), toks(out["input_ids"][o[j]:o[j + 1]])) for j, p in enumerate(out["piece_index"])}
    want = {(i, toks(s[0])) for i, p in enumerate(pieces)
            for s in dialogue_samples([TOK.encode(u) for u in p], TOK, 10, offset=[0, 0, 3][i])}
    assert got == want
    j = list(out["piece_index"]).index(2)  # the piece that starts at original index 3: segment 1 first
    assert out["segment_ids"][o[j]:o[j + 1]].tolist() == [1, 1, 1, 0, 0]


def test_build_context_drops_oldest_and_keeps_reply_parity():
    ids, seg, reply = build_context(["abc", "defg", "hi"], TOK, 9)
    assert toks(ids) == "^defg|hi|" and seg == [1, 1, 1, 1, 1, 1, 0, 0, 0] and reply == 1
    ids, seg, reply = build_context(["ab", "c"], TOK, 32, reserve=4)
    assert toks(ids) == "^ab|c|" and reply == 0


def test_one_fitting_rule_for_prompts_and_training_windows():
    # [CLS] + utterances of 3, 4, 2 tokens, each with its separator: the newest two take 1 + 5 + 3 = 9
    assert fit_newest([3, 4, 2], 9, fixed=1) == Fit(1, None, 9)
    assert fit_newest([3, 4, 9], 9, fixed=1) == Fit(2, 7, 9)  # the last alone does not fit: its tail
    assert fit_newest([3, 8, 2], 9, fixed=1) == Fit(2, None, 4)  # a prompt is content with the last one
    assert fit_newest([3, 8, 2], 9, fixed=1, at_least=2) == Fit(1, 4, 9)  # a window wants context: a tail
    # the prompt for a history and the window learning its last utterance start at the same place
    history = ["abc", "defg", "hi"]
    ids, _, _ = build_context(history, TOK, 9)
    window = plan_windows([len(TOK.encode(u)) for u in history], 9)[-1]
    assert toks(ids) == "^defg|hi|" and (window.start, window.first_response, window.context_keep) == (1, 2, None)
