"""Readers: formats, detection, LCCC spacing, and every bad-input case as a reasoned rejection."""
import json

import pytest

from liaotian.pipelines.readers import CorpusError, RawDialogue, detect_format, read_corpus, restore_spacing
from liaotian.pipelines.schema import RejectedRecord


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


# ------------------------------------------------------------------ LCCC byte ranges (the parallel read)

def _ranges_vs_whole(p, range_bytes):
    """Every planned range read by the fast path (or its careful fallback) == the whole-file careful read."""
    import pyarrow as pa

    from liaotian.pipelines.readers import lccc_plan, read_lccc
    from liaotian.pipelines.shards import _blocks, _raw_table

    plan = lccc_plan(p, range_bytes)
    assert plan is not None
    for unit, (key, rngs) in enumerate(plan.items()):
        whole = _raw_table(unit, list(read_lccc(p, key)))
        parts = [t for r in rngs for t in _blocks(unit, str(p), "lccc", key, 3, None, r)]
        got = pa.concat_tables(parts) if parts else whole.slice(0, 0)
        assert got.to_pylist() == whole.to_pylist()
        assert sum(r.count for r in rngs) == whole.num_rows
    return plan


@pytest.mark.parametrize("range_bytes", [1, 7, 40, 1 << 20])
def test_lccc_ranges_read_exactly_what_the_whole_file_read_does(tmp_path, range_bytes):
    dialogues = [["你 好", "好 的"], [], ["a\"]", "c\\\"[,", "\u4e00 \n tab\t"], "a string", ["x", ["nested"]], ["只 有"],
                 ["\U0010fffe marked", "y"], ["ｆｕｌｌ"] * 3]
    splits = {"train": dialogues * 3, "valid": [], "test": [["z", "w"]]}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(splits, ensure_ascii=False, indent=1))
    plan = _ranges_vs_whole(p, range_bytes)
    assert list(plan) == ["train", "valid", "test"] and plan["valid"] == []
    bare = tmp_path / "b.json"
    bare.write_bytes(b'[["a","b"],\n["\xc3\x28x","y"],["c","d"] , ["\\u4e00", "\\\\"]]')
    _ranges_vs_whole(bare, range_bytes)


@pytest.mark.parametrize("text", [
    '[["a","b"],["c","d"],["e",',  # truncated
    '[["a","b"],["c", 3]]', '[["a",null]]', '[["a","b"] ["c"]]', '[["a","b"],]', '[["a","b"]] x', '\ufeff[["a","b"]]',
    '[{"dialog": ["a"]}]', '{"train": "x"}', '{"train": [["a"]], "train": [["b"]]}', '[["\\ud83d\\ude00"]]', '[["\\x"]]',
    '[["a\nb"]]', '{"train": [["a"]]}{', '', '  '])
def test_lccc_plan_leaves_every_other_file_to_the_careful_reader(tmp_path, text):
    from liaotian.pipelines.readers import lccc_plan

    p = tmp_path / "x.json"
    p.write_text(text)
    assert lccc_plan(p, 4) is None


def test_lccc_plan_names_a_key_that_is_not_a_split(tmp_path):
    from liaotian.pipelines.readers import lccc_plan

    p = tmp_path / "s.json"
    p.write_text('{"train": [["a","b"]], "training": [["c","d"]]}')
    with pytest.raises(CorpusError, match="training"):
        lccc_plan(p)


def test_lccc_plan_of_a_large_file_scans_in_blocks(tmp_path, monkeypatch):
    """Scan blocks far smaller than the file (escapes and strings cut at block edges) give the same plan."""
    from liaotian.pipelines import readers

    rows = [[f"第 {i} 句 \\ \"", "好 的 \\u"] for i in range(300)]
    p = tmp_path / "big.json"
    p.write_text(json.dumps({"train": rows, "test": rows[:5]}, ensure_ascii=False))
    whole = readers.lccc_plan(p, 500)
    for block in (9, 10, 13, 64, 1000):
        monkeypatch.setattr(readers, "_SCAN_BLOCK", block)
        assert readers.lccc_plan(p, 500) == whole
    assert sum(r.count for r in whole["train"]) == 300 and len(whole["train"]) > 5
    _ranges_vs_whole(p, 500)
