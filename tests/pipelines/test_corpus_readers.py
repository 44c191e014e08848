"""The corpus layouts beside LCCC JSON: post/response TSV, CSV with a dialogue id, KdConv JSON.
Good and malformed records on hand-made files (counts in = out + rejected), and the real files."""
import json
from pathlib import Path

import pytest

from liaotian.pipelines.readers import CorpusError, RawDialogue, detect_format, read_corpus, read_unit
from liaotian.pipelines.schema import RejectedRecord

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _split(recs):
    return [r for r in recs if isinstance(r, RawDialogue)], [r for r in recs if isinstance(r, RejectedRecord)]


def test_pairs_tsv_lines_are_dialogues_and_a_line_without_a_tab_is_rejected(tmp_path):
    p = tmp_path / "stc.tsv"
    p.write_bytes("你 好\t你 好 呀\n\n没有制表符\n一\t二\t三\n".encode() + b"\xe5\x9d\x8f\xff\t\xe5\xa5\xbd\n")
    assert detect_format(p) == "pairs"
    ok, bad = _split(list(read_corpus(p)))
    assert [(r.position, r.utterances) for r in ok] == [(1, ["你 好", "你 好 呀"]), (4, ["一", "二", "三"])]
    assert [(r.position, r.reason) for r in bad] == [(3, "bad_row"), (5, "invalid_utf8")]


def test_csv_rows_are_grouped_by_dialogue_id_in_file_order(tmp_path):
    p = tmp_path / "cped.csv"
    p.write_text("\ufeffTV_ID,Dialogue_ID,Speaker,Utterance\n1,d1,a,怎么了\n1,d1,b,撞车了\n1,,a,没有编号\n"
                 "1,d2,a,你好\n1,d2,b,\"有, 逗号\"\n1,d1,a,又是d1\n", encoding="utf-8")
    assert detect_format(p) == "csv"
    ok, bad = _split(list(read_corpus(p)))
    assert [(r.position, r.utterances) for r in ok] == [(2, ["怎么了", "撞车了"]), (5, ["你好", "有, 逗号"]), (7, ["又是d1"])]
    assert [(r.position, r.reason) for r in bad] == [(4, "bad_row")]
    q = tmp_path / "other.csv"
    q.write_text("conv,text\n1,a\n1,b\n")
    with pytest.raises(CorpusError, match="csv_columns"):
        list(read_corpus(q))
    assert [r.utterances for r in read_unit(q, "csv", csv_columns=("conv", "text"))] == [["a", "b"]]


def test_kdconv_list_and_object_of_dialogues(tmp_path):
    dialogues = [{"messages": [{"message": "知道这部电影吗？"}, {"message": "知道", "attrs": []}]},
                 {"messages": [{"text": "no message key"}]}, {"messages": [{"message": 3}, {"message": "x"}]}, ["not", "an object"]]
    p = tmp_path / "film_dev.json"
    p.write_text(json.dumps(dialogues, ensure_ascii=False, indent=2))
    assert detect_format(p) == "kdconv"
    ok, bad = _split(list(read_corpus(p)))
    assert [(r.position, r.utterances) for r in ok] == [(0, ["知道这部电影吗？", "知道"])]
    assert [(r.position, r.reason) for r in bad] == [(1, "not_a_list"), (2, "non_string_utterance"), (3, "not_a_list")]
    q = tmp_path / "obj.json"
    q.write_text(json.dumps({"7": dialogues[0], "9": dialogues[0]}, ensure_ascii=False))
    assert detect_format(q) == "kdconv" and len(list(read_corpus(q))) == 2
    t = tmp_path / "trunc.json"
    t.write_text(json.dumps(dialogues[:1], ensure_ascii=False)[:-20])
    ok, bad = _split(list(read_corpus(t, "kdconv")))
    assert ok == [] and [r.reason for r in bad] == ["truncated_json"]


def test_mixed_inputs_in_one_run_count_every_record_per_source(ray_session, tmp_path):
    from liaotian.pipelines.config import DialogDataConfig
    from liaotian.pipelines.prepare import run_dialog

    (tmp_path / "a.tsv").write_text("你 好\t好\n坏行\n你 好\t好\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("Dialogue_ID,Utterance\n1,早\n1,早上好\n2,只有一句\n", encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps([{"messages": [{"message": "在吗"}, {"message": "在"}]}, {"x": 1}], ensure_ascii=False))
    (tmp_path / "d.json").write_text(json.dumps([["一", "二"], ["三", 4]], ensure_ascii=False))
    inputs = [str(tmp_path / n) for n in ("a.tsv", "b.csv", "c.json", "d.json")]
    m = run_dialog(DialogDataConfig(inputs=inputs, max_len=16), tmp_path / "out")
    assert m.rejected == {"bad_row": 1, "duplicate": 1, "too_few_utterances": 1, "not_a_list": 1, "non_string_utterance": 1}
    by_path = {Path(s["path"]).name: s for s in m.sources}
    assert [(by_path[n]["dialogues_in"], by_path[n]["dialogues_out"], by_path[n]["rejected"]) for n in ("a.tsv", "b.csv", "c.json", "d.json")] \
        == [(3, 1, 2), (2, 1, 1), (2, 1, 1), (2, 1, 1)]
    assert m.dialogues_in == 9 == m.dialogues_out + sum(m.rejected.values())
    assert all(s["dialogues_in"] == s["dialogues_out"] + s["rejected"] for s in m.sources)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (real corpora live beside the repo, not in it)")
def test_the_shared_real_corpora_read_with_every_record_accounted():
    files = {"cdial_gpt/toy_valid.txt": ("pairs", 2000), "cped/valid_split.csv": ("csv", None),
             "kdconv/travel_dev.json": ("kdconv", None), "lccc_toy.json": ("lccc", 1400)}
    for name, (fmt, expected) in files.items():
        p = SHARED / name
        assert detect_format(p) == fmt, name
        ok, bad = _split(list(read_corpus(p)))
        assert ok and len(bad) <= len(ok) // 100, (name, bad[:3])
        if expected:
            assert len(ok) + len(bad) == expected, name
        assert all(all(isinstance(u, str) for u in r.utterances) for r in ok)
