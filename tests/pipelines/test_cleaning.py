"""Cleaning rules, each counted, and the duplicate rule's first-copy-wins order."""
from collections import Counter

import numpy as np

from liaotian.pipelines.cleaning import (clean_dialogues, clean_text, clean_texts, content_key, duplicate_mask,
                                fullwidth_to_ascii, normalize_whitespace, remove_control, split_at_empty)


def test_text_rules_each_count_their_edits():
    assert remove_control("a\x00b\u200bc") == ("abc", 2)
    assert fullwidth_to_ascii("ＡＢ，？") == ("AB,?", 4)
    assert normalize_whitespace("a\t\tb  c\u3000d") == ("a b c d", 3)
    c = Counter()
    assert clean_text("  今 天\x07 ＯＫ ", c) == "今天OK"
    assert c == {"control_chars_removed": 1, "fullwidth_normalised": 2, "whitespace_normalised": 1,
                 "lccc_spaces_removed": 3, "ends_stripped": 1}


def test_batch_cleaning_equals_one_by_one():
    texts = ["今 天 天 气", "", " a  b ", "好 ！", "x\ue000y"]  # the last holds the join marker: slow path
    assert clean_texts(texts) == [clean_text(t) for t in texts]
    assert clean_texts(texts[:4]) == [clean_text(t) for t in texts[:4]]


def test_dialogue_is_cut_at_an_empty_turn_not_merged():
    assert split_at_empty(["a", "b", " ", "c", "d"])[0] == [(0, ["a", "b", " ", "c", "d"])]
    assert split_at_empty(["a", "b", "", "c", "d"]) == ([(0, ["a", "b"]), (3, ["c", "d"])], 1)
    c = Counter()
    out = clean_dialogues([["a", "b", "  ", "c"], ["x", ""], ["你 好", "嗯" * 10]], 5, c)
    assert out == [[(0, ["a", "b"])], None, [(0, ["你好", "嗯嗯嗯嗯嗯"])]]
    assert c["empty_utterances"] == 2 and c["fragments_dropped"] == 1 and c["utterances_truncated"] == 1


def test_content_key_is_stable_and_duplicates_keep_the_first_copy():
    assert content_key([(0, ["a", "b"])]) == content_key([(0, ["a", "b"])]) != content_key([(0, ["ab"])])
    keys = np.array([5, 7, 5, 5, 9])
    orders = np.array([30, 1, 10, 20, 2])  # input order: the copy at order 10 is the first
    assert duplicate_mask(keys, orders).tolist() == [True, False, False, True, False]


def test_arrow_batch_path_matches_the_rules_one_string_at_a_time():
    import random

    import pyarrow as pa

    from liaotian.pipelines.cleaning import TEXT_RULES, clean_dialogue_lists

    rng = random.Random(0)
    for alphabet in (list("ab 中文，？！Ａ｀"),  # the NumPy fast path only
                     list("ab 中文，？！Ａ｀～　\t\n\x00\x07\u200b\ufeff\x85\xa0\u3000") + ["  ", "x y", "好 "]):
        for _ in range(100):
            dialogues = [["".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in range(rng.randint(0, 6))]
                         for _ in range(rng.randint(0, 20))]
            want, got = Counter(), Counter()
            expected = clean_dialogues(dialogues, 4, want)
            for name in TEXT_RULES:  # the rules' own definition: each string alone
                want.pop(name, None)
            for u in (u for d in dialogues for u in d):
                clean_text(u, want)
            out = clean_dialogue_lists(pa.array(dialogues, pa.list_(pa.string())), 4, got)
            assert +got == +want
            for e, p, o, k in zip(expected, out["pieces"].to_pylist(), out["offsets"].to_pylist(), out["key"].to_pylist()):
                assert (p, o, k) == ((None, None, None) if e is None else ([x for _, x in e], [s for s, _ in e], content_key(e)))
