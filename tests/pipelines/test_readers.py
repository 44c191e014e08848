"""Readers: formats, detection, LCCC spacing, and every bad-input case as a reasoned rejection."""
import json

import pytest

from pipelines.readers import CorpusError, RawDialogue, detect_format, read_corpus, restore_spacing
from pipelines.schema import RejectedRecord


def test_restore_spacing_joins_cjk_and_keeps_ascii_words():
    assert restore_spacing("今 天 天 气 不 错") == "今天天气不错"
    assert restore_spacing("我 爱 hello world 啊") == "我爱hello world啊"


def test_lccc_object_of_splits_is_streamed_per_split(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"train": [["你 好", "好"]], "valid": [["a", "b"], ["c", "d"]]}, ensure_ascii=False))
    recs = list(read_corpus(p))
    assert detect_format(p) == "lccc"
    assert [(r.split, r.position) for r in recs] == [("train", 0), ("valid", 0), ("valid", 1)]
    assert recs[0].utterances == ["你 好", "好"]


def test_bare_list_and_jsonl_are_detected(tmp_path):
    bare = tmp_path / "b.json"
    bare.write_text('[\n["a","b"],\n["c","d"]\n]')
    lines = tmp_path / "l.json"
    lines.write_text('["a","b"]\n{"dialog": ["c","d"]}\n')
    assert detect_format(bare) == "lccc" and detect_format(lines) == "jsonl"
    assert [r.utterances for r in read_corpus(lines)] == [["a", "b"], ["c", "d"]]


def test_truncated_json_keeps_what_parsed_and_rejects_the_tail(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('[["a","b"],["c","d"],["e",')
    recs = list(read_corpus(p))
    assert [type(r) for r in recs] == [RawDialogue, RawDialogue, RejectedRecord]
    assert recs[2].reason == "truncated_json" and recs[2].position == 2 and "byte" in recs[2].detail


def test_bad_records_become_rejections_with_reasons(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'["ok","fine"]\n"just a string"\n["a", 3]\nnot json\n["\xff\xfe bad", "x"]\n')
    recs = list(read_corpus(p))
    reasons = [getattr(r, "reason", None) for r in recs]
    assert reasons == [None, "not_a_list", "non_string_utterance", "invalid_json", "invalid_utf8"]
    assert [r.position for r in recs] == [1, 2, 3, 4, 5]


def test_invalid_utf8_inside_lccc_rejects_only_its_record(tmp_path):
    p = tmp_path / "u.json"
    p.write_bytes(b'[["a","b"],["\xc3\x28x","y"],["c","d"]]')
    recs = list(read_corpus(p, "lccc"))
    assert [getattr(r, "reason", None) for r in recs] == [None, "invalid_utf8", None]


def test_chatterbot_yaml_keeps_scalars_as_strings(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("categories: [x]\nconversations:\n- - 你好\n  - 42\n")
    (rec,) = read_corpus(p)
    assert rec.utterances == ["你好", "42"]


def test_unreadable_inputs_raise_naming_the_file(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        list(read_corpus(tmp_path / "missing.json"))
    p = tmp_path / "x.json"
    p.write_text("hello")
    with pytest.raises(CorpusError, match="x.json"):
        detect_format(p)
    q = tmp_path / "s.json"
    q.write_text('{\n"training": [["a","b"]]\n}')
    with pytest.raises(CorpusError, match="training"):
        list(read_corpus(q))
