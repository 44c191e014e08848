"""`liaotian chat` driven with scripted stdin on a tiny saved model."""
from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from liaotian.models.checkpoint import save_pretrained
    from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
    from liaotian.pipelines.tokenizer import build_vocab

    tmp = tmp_path_factory.mktemp("chat")
    tok = build_vocab(Counter("你好我很好今天天气不错吃饭了吗哈"))
    tok.save(tmp / "tok")
    torch.manual_seed(0)
    cfg = DialogLMConfig(vocab_size=tok.vocab_size, max_len=48, n_layer=1, n_head=2, d_model=32, dropout=0.0,
                         pad_id=tok.pad_id, eos_id=tok.sep_id)
    return save_pretrained(DialogLM(cfg), tmp / "model", tokenizer_dir=tmp / "tok")


def run_chat(monkeypatch, capsys, argv, script):
    from liaotian.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code = main(["chat", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def reply_lines(out: str) -> list[str]:
    return [line.split("机器人> ", 1)[1] for line in out.splitlines() if "机器人> " in line]


def test_chat_prints_streamed_replies_and_reset_clears_history(model_dir, monkeypatch, capsys):
    argv = [str(model_dir), "--strategy", "greedy", "--max-new-tokens", "6"]
    code, out, _ = run_chat(monkeypatch, capsys, argv, "你好\n今天天气不错\n/reset\n你好\n/quit\n")
    assert code == 0
    replies = reply_lines(out)
    assert len(replies) == 3 and "(history cleared)" in out
    assert replies[0] == replies[2]  # after /reset the context is ["你好"] again

    from liaotian.models.checkpoint import load_pretrained
    from liaotian.models.generate import DecodingConfig, generate
    from liaotian.pipelines.tokenizer import load_tokenizer
    from liaotian.chat import ChatSession

    model, tok = load_pretrained(model_dir).eval(), load_tokenizer(model_dir)
    session = ChatSession(model, tok, DecodingConfig(strategy="greedy", max_new_tokens=6))
    (gen,), = generate(model, [session.prompt(["你好"])], session.decoding, tok.sep_id)
    assert replies[0] == tok.decode(gen.token_ids)  # what was printed is the model's greedy reply
    assert "".join(session.reply("你好")) == replies[0]
    assert session.history == ["你好", replies[0]]
    second = session.prompt(session.history + ["今天天气不错"])
    assert second.input_ids[:len(tok.encode("你好")) + 2] == [tok.cls_id] + tok.encode("你好") + [tok.sep_id]
    assert second.reply_segment == 1 and second.segment_ids[-1] == 0
    session.reset()
    assert session.history == []


def test_chat_seeded_sampling_repeats_and_end_of_input_quits(model_dir, monkeypatch, capsys):
    argv = [str(model_dir), "--seed", "3", "--max-new-tokens", "5"]
    _, first, _ = run_chat(monkeypatch, capsys, argv, "吃饭了吗\n")
    _, again, _ = run_chat(monkeypatch, capsys, argv, "吃饭了吗\n")
    assert reply_lines(first) == reply_lines(again) and len(reply_lines(first)) == 1


def test_chat_rejects_bad_flags(model_dir, monkeypatch, capsys):
    code, _, err = run_chat(monkeypatch, capsys, [str(model_dir), "--top-p", "0"], "")
    assert code == 2 and "top_p" in err
    code, _, err = run_chat(monkeypatch, capsys, [str(model_dir), "--strategy", "greedy", "--rerank", str(model_dir)], "")
    assert code == 2 and "--rerank" in err


def test_chat_module_does_not_import_ray():
    code = "import sys, liaotian.chat, liaotian.cli; liaotian.cli.build_parser(only='chat'); print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_chat_with_rerank_prints_one_of_the_candidates(model_dir, monkeypatch, capsys):
    from liaotian.models.checkpoint import save_pretrained
    from liaotian.models.fast_mlm import FastMLM, FastMLMConfig
    from liaotian.pipelines.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir)
    torch.manual_seed(1)
    mlm_cfg = FastMLMConfig(vocab_size=tok.vocab_size, max_len=64, n_layer=1, n_head=2, d_model=32, dropout=0.0)
    mlm_dir = save_pretrained(FastMLM(mlm_cfg), Path(model_dir).parent / "mlm", tokenizer_dir=model_dir)
    argv = [str(model_dir), "--rerank", str(mlm_dir), "--n", "4", "--seed", "2", "--max-new-tokens", "5"]
    code, out, _ = run_chat(monkeypatch, capsys, argv, "你好\n")
    from liaotian.models.checkpoint import load_pretrained
    from liaotian.models.generate import DecodingConfig, generate
    from liaotian.chat import ChatSession

    model = load_pretrained(model_dir).eval()
    from liaotian.pipelines.dialogue import non_reply_ids

    session = ChatSession(model, tok, DecodingConfig(n=4, seed=2, max_new_tokens=5, banned_ids=non_reply_ids(tok)))
    candidates = {tok.decode(g.token_ids) for g in generate(model, [session.prompt(["你好"])], session.decoding, tok.sep_id)[0]}
    assert code == 0 and reply_lines(out)[0] in candidates
