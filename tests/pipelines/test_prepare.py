"""`liaotian data` on the shared Ray session: every bad-input case accounted, manifest, schema, CLI, imbalance."""
import json

import pyarrow.parquet as pq
import pytest

from liaotian.pipelines.schema import DIALOG_SCHEMA, SENTIMENT_SCHEMA, Manifest


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    splits = {"train": [["你 好", "你 好 呀"], ["今 天 天 气", "不 错", "", "是 啊", "走 吧"], ["一", "二"]] * 1
              + [["你 好", "你 好 呀"]],  # an exact duplicate of the first dialogue
              "test": [["a", "b"], "not a list", ["x", 3]]}
    (d / "lccc.json").write_text(json.dumps(splits, ensure_ascii=False, indent=1))
    (d / "trunc.json").write_text('[["好", "的"], ["再 见", "拜 拜"], ["半')
    (d / "bad.jsonl").write_bytes(b'["\xe4\xbd\xa0 \xe5\xa5\xbd", "\xe5\x97\xaf"]\n{not json}\n["\xff\xfe", "x"]\n["only one"]\n')
    return d


def test_dialog_accounts_for_every_record(ray_session, corpus, tmp_path):
    from liaotian.pipelines.config import DialogDataConfig
    from liaotian.pipelines.prepare import run_dialog

    out = tmp_path / "out"
    inputs = [str(corpus / n) for n in ("lccc.json", "trunc.json", "bad.jsonl")]
    m = run_dialog(DialogDataConfig(inputs=inputs, max_len=8, batch_size=64), out)
    assert m.rejected == {"not_a_list": 1, "non_string_utterance": 1, "truncated_json": 1, "invalid_json": 1,
                          "invalid_utf8": 1, "too_few_utterances": 1, "duplicate": 1}
    assert m.dialogues_in == 7 + 3 + 4 == m.dialogues_out + sum(m.rejected.values())
    assert m.cleaning["empty_utterances"] == 1 and m.split_source == "corpus"
    assert Manifest.load(out).dialogues_out == m.dialogues_out == 7
    lines = [json.loads(l) for f in (out / "rejected").glob("*.jsonl") for l in f.read_text().splitlines()]
    assert len(lines) == 7 and all({"source", "position", "reason", "record"} <= set(l) for l in lines)
    bad = next(l for l in lines if l["reason"] == "invalid_json")
    assert bad["source"].endswith("bad.jsonl") and bad["position"] == 2
    rows = [r for s in ("train", "valid", "test") for f in sorted((out / s).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert pq.read_schema(next((out / "train").glob("*.parquet"))).equals(DIALOG_SCHEMA)
    assert len(rows) == m.samples_out and all(len(r["input_ids"]) <= 8 for r in rows)
    assert m.truncated["utterances"] + m.truncated["context"] > 0  # "今天天气" + "不错" needs a window of 8+
    assert (out / "tokenizer.json").exists() and m.vocab_size == len((out / "vocab.txt").read_text().splitlines())


def test_cli_refuses_a_non_empty_output_without_overwrite(ray_session, corpus, tmp_path):
    from liaotian.cli import main

    out = tmp_path / "o"
    args = ["data", "dialog", str(corpus / "lccc.json"), "--output", str(out), "--max-len", "16", "--set", "run_dir=" + str(tmp_path)]
    assert main(args) == 0
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(args)
    assert main(args + ["--overwrite"]) == 0
    assert Manifest.load(out).max_len == 16


def test_sentiment_imbalance_touches_train_only(ray_session, tmp_path):
    from liaotian.pipelines.config import SentimentDataConfig
    from liaotian.pipelines.prepare_text import run_texts

    f = tmp_path / "s.csv"
    rows = ["text,label"] + [f"好评{i}号,1" for i in range(300)] + [f"差评{i}号,0" for i in range(300)] + ["坏,x"]
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    m = run_texts("sentiment", SentimentDataConfig(imbalance=10, valid_fraction=0.2, test_fraction=0.2), [(str(f), "csv")],
                  tmp_path / "out")
    cc = m.extra["class_counts"]
    assert cc["train"][0] == -(-cc["train"][1] // 10)  # 1 negative per 10 positives, rounded up
    for split in ("valid", "test"):
        assert abs(cc[split][0] - cc[split][1]) <= 0.5 * max(cc[split])  # untouched: roughly balanced
    assert m.rejected["bad_label"] == 1 and m.rejected["subsampled"] > 0
    assert m.dialogues_in == 601 == m.dialogues_out + sum(m.rejected.values())
    assert pq.read_schema(next((tmp_path / "out" / "train").glob("*.parquet"))).equals(SENTIMENT_SCHEMA)


def test_text_job_and_sentiment_default_to_the_runs_text_vocab(ray_session, tmp_path):
    from liaotian.cli import main
    from liaotian.pipelines.schema import TEXT_SCHEMA
    from liaotian.pipelines.tokenizer import CharTokenizer

    lines = ["今天天气不错", "", "你好", "今天天气不错", "好长好长好长好长好长好长"]  # empty, duplicate, cut to 6
    (tmp_path / "t.txt").write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n")  # + invalid UTF-8
    (tmp_path / "d.jsonl").write_text('["吃 了 吗", "吃 了"]\n{not json}\n', encoding="utf-8")
    run = ["--set", f"run_dir={tmp_path / 'run'}", "--set", "data.text.max_len=8"]
    assert main(["data", "text", str(tmp_path / "t.txt"), str(tmp_path / "d.jsonl"), *run]) == 0
    out = tmp_path / "run" / "data" / "text"
    m = Manifest.load(out)
    assert m.rejected == {"empty_text": 1, "duplicate": 1, "invalid_utf8": 1, "invalid_json": 1}
    assert m.dialogues_in == 6 + 3 == m.dialogues_out + sum(m.rejected.values()) and m.dialogues_out == 5
    assert m.truncated == {"texts": 1}
    tok = CharTokenizer.from_dir(out)
    rows = [r["input_ids"] for s in ("train", "valid", "test") for f in sorted((out / s).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert pq.read_schema(next(out.glob("*/part-*.parquet"))).equals(TEXT_SCHEMA)
    assert sorted(tok.decode(r) for r in rows) == sorted(["今天天气不错", "你好", "好长好长好长", "吃了吗", "吃了"])
    assert all(r[0] == tok.cls_id and r[-1] == tok.sep_id and len(r) <= 8 for r in rows)

    (tmp_path / "s.csv").write_text("text,label\n今天不错,1\n天气好,1\n不好,0\n", encoding="utf-8")
    assert main(["data", "sentiment", str(tmp_path / "s.csv"), *run]) == 0
    s = tmp_path / "run" / "data" / "sentiment"
    assert Manifest.load(s).vocab_source == str(out / "vocab.txt")
    assert (s / "vocab.txt").read_text(encoding="utf-8") == (out / "vocab.txt").read_text(encoding="utf-8")


def test_dialog_byte_ranges_give_the_same_output_as_whole_file_reads(ray_session, tmp_path):
    """The parallel read (byte ranges, C json + Arrow) against the careful per-record read of whole
    files (range_bytes=0), both on Ray, and the in-process run of small inputs: same shards, same
    rejections, same manifest counts."""
    from liaotian.pipelines.config import DialogDataConfig
    from liaotian.pipelines.prepare import run_dialog

    rows = [["你 好", "你 好 呀"], ["今 天 天 气", "不 错", "", "是 啊", "走 吧"], ["ｆｕｌｌ ｗｉｄｔｈ", "ok  good"], ["一"],
            ["他 说 \"好\"", "路 径 C:\\ 盘\t和\n换 行"]]
    rows += [[f"第 {i} 句", "好 的", "再 见"] for i in range(40)] + [["你 好", "你 好 呀"]]  # + a duplicate
    rows += ["not a list", ["x", ["nested"]], ["长" * 30, "短", "长" * 30]]
    d = tmp_path / "in"
    d.mkdir()
    text = json.dumps({"train": rows, "valid": rows[:6], "test": []}, ensure_ascii=False, indent=1).encode()
    text = text.replace("第 7 句".encode(), b"\xff\xfe 7")  # invalid UTF-8 inside one utterance
    (d / "c.json").write_bytes(text)
    (d / "b.json").write_text(json.dumps(rows[:10], ensure_ascii=False))

    def run(range_bytes, in_process_max_bytes=0):
        out = tmp_path / f"out{range_bytes}-{in_process_max_bytes}"
        m = run_dialog(DialogDataConfig(inputs=[str(d / "c.json"), str(d / "b.json")], max_len=16, batch_size=7,
                                        range_bytes=range_bytes, in_process_max_bytes=in_process_max_bytes), out)
        shards = {s: sorted(r for f in sorted((out / s).glob("*.parquet")) for r in
                            map(json.dumps, pq.read_table(f).to_pylist())) for s in ("train", "valid", "test")}
        rejected = {f.name: sorted(f.read_text().splitlines()) for f in (out / "rejected").glob("*.jsonl")}
        manifest = {k: v for k, v in m.to_dict().items() if k not in ("seconds", "shards", "ranges_fallen_back")}
        return shards, rejected, manifest, m.ranges_fallen_back

    careful, fast, in_process = run(0), run(100), run(100, in_process_max_bytes=1 << 20)
    assert careful[:3] == fast[:3] == in_process[:3]
    assert careful[3] == 0 and fast[3] >= 2  # the ranges holding odd records and bad UTF-8 were read record by record, counted
    assert in_process[3] == fast[3]  # the same read tasks, run without Ray
    # valid repeats 5 kept dialogues of train, b.json 9, train 1 of its own; "一" (3 copies) is too short
    assert careful[2]["rejected"] == {"not_a_list": 1, "non_string_utterance": 1, "invalid_utf8": 1, "too_few_utterances": 3,
                                      "duplicate": 15}
    assert careful[2]["dialogues_in"] == len(rows) + 6 + 10
    records = [json.loads(line)["record"] for line in careful[1]["duplicate.jsonl"]]
    assert [['他说"好"', "路径C:\\盘和换行"]] in records  # escapes decoded (the valid copy is a duplicate)
