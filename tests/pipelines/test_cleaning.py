"""Cleaning rules, each counted; one string (`re`) and a column (RE2) cleaned alike; the duplicate
rule's first-copy-wins order."""
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from liaotian.pipelines.cleaning import (TEXT_RULES, apply_rule, clean_dialogue_lists, clean_text, clean_text_array,
                                         clean_texts, content_key, duplicate_mask)


def test_text_rules_each_count_their_edits():
    assert apply_rule("control_chars_removed", "a\x00b\u200bc") == ("abc", 2)
    assert apply_rule("fullwidth_normalised", "ＡＢ，？") == ("AB,?", 4)
    assert apply_rule("whitespace_normalised", "a\t\tb  c\u3000d") == ("a b c d", 3)
    c = Counter()
    assert clean_text("  今 天\x07 ＯＫ ", c) == "今天OK"
    assert c == {"control_chars_removed": 1, "fullwidth_normalised": 2, "whitespace_normalised": 1,
                 "lccc_spaces_removed": 3, "ends_stripped": 1}


def test_lccc_spacing_joins_cjk_and_keeps_ascii_words():
    assert apply_rule("lccc_spaces_removed", "今 天 天 气 不 错") == ("今天天气不错", 5)
    assert apply_rule("lccc_spaces_removed", "我 爱 hello world 啊") == ("我爱hello world啊", 3)


# What each string cleans to, and the edits counted (the outputs of the per-string and Arrow
# implementations these rules replaced, which agreed on them).
TRICKY = [
    ("a\x00b\x7f\x9f\u200b\u202a\ufeffc", "abc", {"control_chars_removed": 6}),  # C0, DEL, C1, zero-width, bidi, BOM
    ("a\x85b\x1cc", "a b c", {"whitespace_normalised": 2}),  # NEL and U+001C are whitespace, not controls
    ("ＡＢＣ１２３，？～", "ABC123,?~", {"fullwidth_normalised": 9}),
    ("Ａ Ｂ", "A B", {"fullwidth_normalised": 2}),  # mapped to ASCII first: the space between stays
    ("\u3000", "", {"whitespace_normalised": 1, "ends_stripped": 1}),  # ideographic space
    ("今 天\u3000天 气", "今天天气", {"whitespace_normalised": 1, "lccc_spaces_removed": 3}),
    ("a \t b", "a b", {"whitespace_normalised": 1}),
    ("hello  world", "hello world", {"whitespace_normalised": 1}),
    ("x\u2028\u2029y", "x y", {"whitespace_normalised": 1}),
    (" \n ", "", {"whitespace_normalised": 1, "ends_stripped": 1}),
    (" 你好 ", "你好", {"lccc_spaces_removed": 2}),  # next to a CJK character: LCCC spacing, not an end
    ("中 a", "中a", {"lccc_spaces_removed": 1}),
    ("ok ", "ok", {"ends_stripped": 1}),
    ("a\u200b b", "a b", {"control_chars_removed": 1}),
]


@pytest.mark.parametrize("text, cleaned, edits", TRICKY)
def test_tricky_strings_clean_the_same_one_by_one_and_as_a_column(text, cleaned, edits):
    one, column = Counter(), Counter()
    assert clean_text(text, one) == cleaned and one == edits
    assert clean_text_array(pa.array(["中 文", text, "ｘ"])[1:2], column).to_pylist() == [cleaned]  # a slice
    assert column == edits


def test_batch_cleaning_equals_one_by_one():
    texts = ["今 天 天 气", "", " a  b ", "好 ！", "x\ue000y"]
    assert clean_texts(texts) == [clean_text(t) for t in texts]
    assert clean_texts(texts[:4]) == [clean_text(t) for t in texts[:4]]


def _pieces(dialogues, max_chars, counts):
    out = clean_dialogue_lists(pa.array(dialogues, pa.list_(pa.string())), max_chars, counts)
    return [None if p is None else list(zip(o, p)) for p, o in zip(out["pieces"].to_pylist(), out["offsets"].to_pylist())]


def test_dialogue_is_cut_at_an_empty_turn_not_merged():
    c = Counter()
    assert _pieces([["a", "b", "", "c", "d"]], 5, c) == [[(0, ["a", "b"]), (3, ["c", "d"])]]
    assert c["empty_utterances"] == 1
    assert _pieces([["a", "b", " ", "c", "d"]], 5, Counter()) == [[(0, ["a", "b"]), (3, ["c", "d"])]]  # empty once cleaned
    c = Counter()
    out = _pieces([["a", "b", "  ", "c"], ["x", ""], ["你 好", "嗯" * 10]], 5, c)
    assert out == [[(0, ["a", "b"])], None, [(0, ["你好", "嗯嗯嗯嗯嗯"])]]
    assert c["empty_utterances"] == 2 and c["fragments_dropped"] == 1 and c["utterances_truncated"] == 1


def test_content_key_is_stable_and_duplicates_keep_the_first_copy():
    assert content_key([(0, ["a", "b"])]) == content_key([(0, ["a", "b"])]) != content_key([(0, ["ab"])])
    keys = np.array([5, 7, 5, 5, 9])
    orders = np.array([30, 1, 10, 20, 2])  # input order: the copy at order 10 is the first
    assert duplicate_mask(keys, orders).tolist() == [True, False, False, True, False]


def _dialogue_rules_one_record_at_a_time(dialogues, max_chars, counts, min_utterances=2):
    """The dialogue rules written plainly, record by record (this test's reference): each utterance
    cleaned and cut to `max_chars`, the dialogue split at empty turns, pieces too short dropped."""
    out = []
    for d in dialogues:
        utterances = [clean_text(u, counts) for u in d]
        counts["utterances_truncated"] += sum(len(u) > max_chars for u in utterances)
        utterances = [u[:max_chars] for u in utterances]
        counts["empty_utterances"] += utterances.count("")
        pieces, start = [], None
        for i, u in enumerate(utterances + [""]):
            if u and start is None:
                start = i
            elif not u and start is not None:
                pieces.append((start, utterances[start:i]))
                start = None
        kept = [p for p in pieces if len(p[1]) >= min_utterances]
        if kept:
            counts["fragments_dropped"] += len(pieces) - len(kept)
        out.append(kept or None)
    return out


def test_arrow_batch_path_matches_the_rules_one_string_at_a_time():
    import random

    rng = random.Random(0)
    for alphabet in (list("ab 中文，？！Ａ｀"),
                     list("ab 中文，？！Ａ｀～　\t\n\x00\x07\u200b\ufeff\x85\xa0\u3000") + ["  ", "x y", "好 "]):
        for _ in range(100):
            dialogues = [["".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in range(rng.randint(0, 6))]
                         for _ in range(rng.randint(0, 20))]
            want, got = Counter(), Counter()
            expected = _dialogue_rules_one_record_at_a_time(dialogues, 4, want)
            out = clean_dialogue_lists(pa.array(dialogues, pa.list_(pa.string())), 4, got)
            assert +got == +want
            assert set(got) <= set(TEXT_RULES) | {"utterances_truncated", "empty_utterances", "fragments_dropped"}
            for e, p, o, k in zip(expected, out["pieces"].to_pylist(), out["offsets"].to_pylist(), out["key"].to_pylist()):
                assert (p, o, k) == ((None, None, None) if e is None else ([x for _, x in e], [s for s, _ in e], content_key(e)))
