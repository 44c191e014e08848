"""`liaotian eval dialog` on tiny test shards and a tiny saved model (no Ray)."""
from __future__ import annotations

import json
import math
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from liaotian.pipelines.evaluate import parse_setting, split_sample

DIALOGUES = [["你好", "你好呀", "吃饭了吗"], ["今天天气不错", "是啊"], ["我很好", "哈哈", "不错", "好的"], ["吃了吗", "吃了"]]


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory):
    from liaotian.models.checkpoint import save_pretrained
    from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
    from liaotian.pipelines.dialogue import dialogue_samples
    from liaotian.pipelines.schema import DIALOG_SCHEMA
    from liaotian.pipelines.tokenizer import build_vocab

    tmp = tmp_path_factory.mktemp("eval")
    tok = build_vocab(Counter("".join(u for d in DIALOGUES for u in d)))
    data = tmp / "data"
    (data / "test").mkdir(parents=True)
    tok.save(data)
    rows = []
    for k, d in enumerate(DIALOGUES):
        for ids, seg, mask, n in dialogue_samples([tok.encode(u) for u in d], tok, 64):
            rows.append({"input_ids": ids, "segment_ids": seg, "loss_mask": mask, "dialogue_id": f"d{k}", "n_turns": n})
    pq.write_table(pa.Table.from_pylist(rows, schema=DIALOG_SCHEMA), data / "test" / "part-0.parquet")
    torch.manual_seed(0)
    cfg = DialogLMConfig(vocab_size=tok.vocab_size, max_len=40, n_layer=1, n_head=2, d_model=32, dropout=0.0,
                         pad_id=tok.pad_id, eos_id=tok.sep_id)
    model_dir = save_pretrained(DialogLM(cfg), tmp / "model", tokenizer_dir=data)
    return tmp, data, model_dir, tok


def test_split_sample_takes_every_turn_before_the_last_response():
    ids = [2, 10, 11, 3, 12, 3, 13, 14, 3]
    segs = [1, 1, 1, 1, 0, 0, 1, 1, 1]
    prompt, ref = split_sample(ids, segs, sep_id=3, cls_id=2, max_len=32)
    assert prompt.input_ids == [2, 10, 11, 3, 12, 3] and prompt.segment_ids == segs[:6]
    assert ref == [13, 14] and prompt.reply_segment == 1
    short, _ = split_sample(ids, segs, sep_id=3, cls_id=2, max_len=3)  # oldest utterance dropped
    assert short.input_ids == [2, 12, 3] and short.segment_ids == [0, 0, 0]
    with pytest.raises(ValueError):
        split_sample([2, 10, 3], [0, 0, 0], sep_id=3, cls_id=2, max_len=32)


def test_parse_setting():
    s = parse_setting("cnuc=sample:top_p=0.9,consistent=true", 64)
    assert (s.name, s.strategy, s.top_p, s.consistent, s.max_new_tokens) == ("cnuc", "sample", 0.9, True, 64)
    assert parse_setting("g=greedy", 16).strategy == "greedy"
    for bad in ["greedy", "x=sample:topp=0.9", "x=sample:top_p"]:
        with pytest.raises(ValueError):
            parse_setting(bad, 16)


def test_eval_dialog_cli_writes_a_report_with_every_setting(run_setup, capsys):
    from liaotian.cli import main

    tmp, data, model_dir, tok = run_setup
    code = main(["eval", "dialog", str(model_dir), "--data", str(data), "--max-new-tokens", "8",
                 "--compare", "greedy=greedy", "--compare", "cnuc=sample:top_p=0.9,consistent=true",
                 "--set", f"run_dir={tmp / 'run'}"])
    assert code == 0
    report = json.loads((tmp / "run" / "eval" / "report.json").read_text())
    table = (tmp / "run" / "eval" / "report.md").read_text()
    assert report["samples"] == 4 and [s["name"] for s in report["settings"]] == ["greedy", "cnuc"]
    ppl = report["perplexity"]
    # an untrained model over a vocabulary of V tokens: perplexity near V
    assert ppl["tokens"] == sum(len("".join(d[1:])) + len(d) - 1 for d in DIALOGUES)
    assert 0.3 * tok.vocab_size < ppl["perplexity"] < 3 * tok.vocab_size and math.isfinite(ppl["perplexity"])
    for s in report["settings"]:
        m = s["metrics"]
        assert s["L"] == 8 and 0 <= m["r_L"] <= 1 and 0 <= m["mean_length"] <= 8
        assert len(s["examples"]) == 4  # every sample: finish "length" <=> L tokens without eos
        assert m["r_L"] == sum(e["reply_tokens"] == 8 for e in s["examples"]) / 4
        assert m["r_L"] == sum(e["finish_reason"] == "length" for e in s["examples"]) / 4
        assert "| cnuc | 8 |" in table
    assert "response perplexity" in capsys.readouterr().out
