"""`liaotian serve` with an imported CDial-GPT checkpoint (random-init OpenAIGPTLMHeadModel made by
transformers, then `liaotian import hf`): the OpenAI client gets replies and the attribution
endpoint explains one. Runs its own Serve applications on the shared Ray session: it shuts Serve down
first and last, and the `served` fixture deploys its applications again for the tests that follow."""
from __future__ import annotations

import socket

import httpx
import pytest
import torch

transformers = pytest.importorskip("transformers")

API_KEY = "test-key"
CHARS = "你好我是谁今天气很不错吃饭了吗喜欢电影音乐开心难过哈嗯啊呢吧的一在有人这中大为上个，。？！"
USER = [{"role": "user", "content": "你好，今天天气很不错"}]


@pytest.fixture(scope="module")
def served_import(ray_session, tmp_path_factory):
    from ray import serve

    from liaotian.config import load_run_config
    from liaotian.hf import import_hf
    from liaotian.serve.app import run

    root = tmp_path_factory.mktemp("hf_served")
    vocab = ["[CLS]", "[PAD]", "[SEP]", "[UNK]"] + list(dict.fromkeys(CHARS)) + ["[speaker1]", "[speaker2]"]
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        vocab_size=len(vocab), n_positions=128, n_embd=64, n_layer=2, n_head=4, afn="gelu"))
    with torch.no_grad():  # random weights repeat their last input, a speaker token (an end token): shrink those
        hf.transformer.tokens_embed.weight[[0, len(vocab) - 2, len(vocab) - 1]] *= 0.1
    hf.save_pretrained(root / "cdial")
    (root / "cdial" / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    model_dir = import_hf(root / "cdial", root / "imported")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_run_config(None, {
        "run_dir": str(root / "run"),
        "serve": {"port": port, "api_key": API_KEY, "max_new_tokens": 16, "request_timeout_s": 30,
                  "chat_model": str(model_dir), "ig_steps": 16,
                  "chat": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
                  "attribution": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}},
    })
    serve.shutdown()  # another module's applications hold the routes
    run(cfg, blocking=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def test_imported_model_answers_and_explains(served_import):
    from openai import OpenAI

    base = served_import
    client = OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0)
    out = client.chat.completions.create(model="liaotian", messages=USER, max_tokens=6, temperature=0)
    reply = out.choices[0].message.content
    assert reply and out.choices[0].finish_reason in ("stop", "length")
    # CDial-GPT's layout: [CLS] [speaker1] 你好，今天天气很不错 [speaker2] -> 13 prompt tokens
    assert out.usage.prompt_tokens == 13
    r = httpx.post(f"{base}/v1/attributions", json={"messages": USER, "reply": reply},
                   headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["kind"] == "chat" and a["reply_tokens"] == list(reply)
    assert a["tokens"][:2] == ["[CLS]", "[speaker1]"] and a["tokens"][-1] == "[speaker2]"
    assert len(a["tokens"]) == len(a["scores"]) == 13
    assert abs(sum(a["scores"]) - (a["f_x"] - a["f_baseline"])) == pytest.approx(a["delta"], abs=1e-4)
