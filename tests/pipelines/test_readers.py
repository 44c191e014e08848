"""Readers: formats, detection, and every bad-input case as a reasoned rejection."""
import json

import pytest

from liaotian.pipelines.readers import CorpusError, RawDialogue, detect_format, read_corpus
from liaotian.pipelines.schema import RejectedRecord


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
    from liaotian.pipelines.shards import _raw_table, spec_blocks

    plan = lccc_plan(p, range_bytes)
    assert plan is not None
    for unit, (key, rngs) in enumerate(plan.items()):
        whole = _raw_table(unit, 0, list(read_lccc(p, key)))
        parts, first = [], 0
        for r in rngs:
            spec = {"unit": unit, "range_id": 0, "path": str(p), "format": "lccc", "split_key": key, "start": r.start, "end": r.end}
            blocks = [t for t, _ in spec_blocks(spec, 3)]
            got = pa.concat_tables(blocks)
            parts.append(got.set_column(3, "position", pa.compute.add(got.column("position"), first)))
            first += got.num_rows
        got = pa.concat_tables(parts) if parts else whole.slice(0, 0)
        assert got.to_pylist() == whole.to_pylist()
    return plan


@pytest.mark.parametrize("range_bytes", [1, 7, 40, 1 << 20])
def test_lccc_ranges_read_exactly_what_the_whole_file_read_does(tmp_path, range_bytes):
    dialogues = [["你 好", "好 的"], [], ["a\"]", "c\\\"[,", "\u4e00 \n tab\t"], "a string", ["x", ["nested"]], ["只 有"],
                 ["\U0010fffe marked", "y"], ["ｆｕｌｌ"] * 3, ["a", 3], ["b", None], None]
    splits = {"train": dialogues * 3, "valid": [], "test": [["z", "w"]]}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(splits, ensure_ascii=False, indent=1))
    plan = _ranges_vs_whole(p, range_bytes)
    assert list(plan) == ["train", "valid", "test"] and plan["valid"] == []
    bare = tmp_path / "b.json"
    bare.write_bytes(b'[["a","b"],\n["\xc3\x28x","y"],["c","d"] , ["\\u4e00", "\\\\"]]')
    _ranges_vs_whole(bare, range_bytes)


@pytest.mark.parametrize("text", [
    '[["a","b"],["c","d"],["e",', '[["a","b"]] x', '\ufeff[["a","b"]]', '{"train": "x"}', '{"train": [["a"]], "train": [["b"]]}',
    '{"train": [["a"]], "training": [["b"]]}', '{"train": [["a"]]}{', '', '  '])
def test_lccc_plan_leaves_files_that_are_not_whole_lists_to_the_careful_reader(tmp_path, text):
    from liaotian.pipelines.readers import lccc_plan

    p = tmp_path / "x.json"
    p.write_text(text)
    assert lccc_plan(p, 4) is None


@pytest.mark.parametrize("text", ['[["a","b"] ["c"]]', '[["a","b"],]', '[["\\x"]]', '[["a\nb"]]', '[["a"], ["b], [c"], ["d"]]'])
def test_a_range_that_does_not_parse_is_never_read_silently(tmp_path, text):
    """Corrupt JSON inside the list, or a cut inside a string that holds `], [`: the range raises
    RangePlanError (the job then reads the file whole, the careful way)."""
    from liaotian.pipelines.readers import RangePlanError, lccc_plan, read_lccc_range

    p = tmp_path / "x.json"
    p.write_text(text)
    plan = lccc_plan(p, 1)
    with pytest.raises(RangePlanError, match="bytes"):
        for r in plan[None]:
            read_lccc_range(p, None, r)


def test_a_range_with_odd_records_names_why_it_was_read_record_by_record(tmp_path):
    from liaotian.pipelines.readers import lccc_plan, read_lccc_range

    p = tmp_path / "x.json"
    p.write_bytes(b'[["a","b"],["c",3],["\xff","d"]]')
    (plain, ok), (typed, why_typed), (bad_utf8, why_utf8) = [read_lccc_range(p, None, r) for r in lccc_plan(p, 1)[None]]
    assert ok is None and plain.to_pylist() == [["a", "b"]]
    assert "not a list of strings" in why_typed and typed[0].reason == "non_string_utterance"
    assert why_utf8.startswith("msgspec") and bad_utf8[0].reason == "invalid_utf8"
