"""ChatEngine / Explainer without Ray or HTTP, and the explain views (ANSI, HTML, CLI)."""
from __future__ import annotations

import re
import sys

import pytest
import torch

from liaotian.serve.api import AttributionRequest, ChatCompletionRequest
from liaotian.serve.config import ServeConfig
from liaotian.serve.engine import ChatEngine, Explainer, _holdback, _stop_cut
from liaotian.serve.explain import heat_rgb, render_ansi, render_html, render_terminal

CFG = ServeConfig(max_new_tokens=16)


@pytest.fixture(scope="module")
def engine(tiny_models):
    return ChatEngine(tiny_models["dialog"], tiny_models["mlm"])


def request(text, **kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": text}], **kw})


def test_batch_gives_each_request_its_own_reply(engine):
    reqs = [request("你好", seed=1, max_tokens=8), request("今天天气很不错", seed=2, max_tokens=8),
            request("你好", seed=1, max_tokens=8, n=2), request("你是谁", max_tokens=4, temperature=0)]
    items = [engine.prepare(r, CFG) for r in reqs]
    together = engine.run_batch(items)
    alone = [engine.run_batch([it])[0] for it in items]
    assert [[c.text for c in r.choices] for r in together] == [[c.text for c in r.choices] for r in alone]
    assert together[0].choices[0].text == together[2].choices[0].text  # same seed, same first candidate
    assert [len(r.choices) for r in together] == [1, 1, 2, 1]
    assert all(c.completion_tokens <= 8 for r in together for c in r.choices)


def test_history_is_formatted_with_build_context(engine, tiny_models):
    from liaotian.pipelines.dialogue import build_context

    req = ChatCompletionRequest.model_validate({"messages": [
        {"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"},
        {"role": "user", "content": "吃饭了吗"}, {"role": "user", "content": "嗯"}], "max_tokens": 8})
    item = engine.prepare(req, CFG)
    ids, seg, reply_seg = build_context(["你好", "好", "吃饭了吗 嗯"], engine.tok, engine.max_len, reserve=8)
    assert (item.prompt.input_ids, item.prompt.segment_ids, item.prompt.reply_segment) == (ids, seg, reply_seg)
    assert item.decoding.consistent and item.decoding.strategy == "sample" and item.decoding.top_p == 0.9


def test_stream_equals_batch(engine):
    item = engine.prepare(request("你好", seed=5, max_tokens=12, top_p=1.0, n=2), CFG)
    whole = engine.run_batch([item])[0]
    deltas = list(engine.stream(item))
    for j, c in enumerate(whole.choices):
        assert "".join(d.text for d in deltas if d.index == j) == c.text
        assert [d.finish_reason for d in deltas if d.index == j and d.finish_reason] == [c.finish_reason]
        assert sum(d.tokens for d in deltas if d.index == j) == c.completion_tokens


def test_stop_helpers():
    assert _stop_cut("你好吗我", ["好吗", "我"]) == 1 and _stop_cut("abc", ["x"]) is None
    assert _holdback("今天天", ["天气"]) == 1 and _holdback("今天", ["天气很"]) == 1 and _holdback("今天", ["x"]) == 0


def test_rerank_orders_candidates(engine):
    item = engine.prepare(request("你好", seed=3, max_tokens=6, n=2, rerank={"candidates": 5, "alpha": 0.0}), CFG)
    assert item.decoding.n == 5
    result = engine.run_batch([item])[0]
    assert len(result.choices) == 2


def test_explainer_batch_matches_single(tiny_models):
    ex = Explainer(tiny_models["classifier"], tiny_models["dialog"], default_steps=16)
    items = [ex.prepare(AttributionRequest.model_validate(b)) for b in (
        {"text": "开心"}, {"messages": [{"role": "user", "content": "你好"}], "reply": "好的"})]
    batch = ex.explain(items)
    assert [r["kind"] for r in batch] == ["classifier", "chat"]
    assert batch[1] == ex.explain([items[1]])[0]
    for r in batch:
        assert abs(sum(r["scores"]) - (r["f_x"] - r["f_baseline"])) == pytest.approx(r["delta"], abs=1e-5)


def test_heat_colour_shows_sign_and_size():
    assert heat_rgb(0.0, 1.0) == (255, 255, 255)
    reds = [heat_rgb(s, 1.0) for s in (0.1, 0.5, 1.0)]
    blues = [heat_rgb(-s, 1.0) for s in (0.1, 0.5, 1.0)]
    assert all(r == 255 and g == b for r, g, b in reds) and [g for _, g, _ in reds] == sorted([g for _, g, _ in reds], reverse=True)
    assert all(b == 255 and r == g for r, g, b in blues) and [r for r, _, _ in blues] == [g for _, g, _ in reds]


def test_ansi_and_html_views():
    line = render_ansi(["今", "天"], [0.2, -1.0])
    colours = re.findall(r"\x1b\[48;2;(\d+);(\d+);(\d+)m", line)
    assert colours == [("255", "212", "212"), ("38", "38", "255")]  # red toward, blue against
    assert "\x1b[4m天" in line  # the negative score is also underlined
    plain = render_ansi(["今", "天"], [0.2, -1.0], colour=False)
    assert "\x1b" not in plain and "今(+0.200)" in plain and "天(-1.000)" in plain
    result = {"tokens": ["[CLS]", "今", "<b>"], "scores": [0.0, 0.5, -0.25], "f_x": 1.0, "f_baseline": 0.2,
              "delta": 0.05, "steps": 8, "method": "gausslegendre", "baseline": "pad", "label": 1,
              "label_name": "positive", "probability": 0.7, "test_metrics": {"test_accuracy": 0.8125}}
    page = render_html(result)
    assert page.count('class="tok') == 3 and "&lt;b&gt;" in page and "positive (p = 0.700)" in page
    assert "red: pushes toward the predicted class «positive»; blue: pushes against it" in page
    assert "accuracy 0.812 on its test split" in page and "rgb(147, 147, 255)" in page
    assert ".heatmap .tok" in page and "http" not in page  # styles inlined, nothing fetched
    assert "not recorded" in render_terminal(dict(result, test_metrics=None), colour=False)
    with pytest.raises(ValueError):
        render_ansi(["a"], [0.1, 0.2])


def test_explain_cli(tiny_models, tmp_path, capsys, monkeypatch):
    from liaotian.cli import main

    out = tmp_path / "view.html"
    assert main(["explain", str(tiny_models["classifier"]), "--text", "今天很开心", "--steps", "8", "--html", str(out)]) == 0
    printed = capsys.readouterr().out  # not a terminal: signed scores as text, no escape codes
    assert "\x1b" not in printed and "F(x)" in printed and "8 steps" in printed and "(+" in printed
    assert out.read_text(encoding="utf-8").count('class="tok') == 7
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["explain", str(tiny_models["classifier"]), "--text", "今天很开心", "--steps", "8"]) == 0
    assert "\x1b[48;2;" in capsys.readouterr().out  # on a terminal, colours
    assert main(["explain", str(tiny_models["dialog"]), "--context", "你好", "--reply", "好的", "--json"]) == 0
    assert '"kind": "chat"' in capsys.readouterr().out
    assert main(["explain", str(tiny_models["dialog"]), "--text", "x"]) == 2


def test_posthoc_logit_adjustment_applies_at_prediction_time_only_for_that_loss():
    import math

    import torch

    from liaotian.serve.engine import _prediction_rule

    logits = torch.zeros(1, 2)
    adjusted = _prediction_rule({"train": {"loss": {"name": "posthoc_la", "tau": 1.0}}, "class_counts": [1, 9]})(logits)
    assert torch.allclose(adjusted, torch.tensor([[-math.log(0.1), -math.log(0.9)]]), atol=1e-5)
    assert adjusted.argmax().item() == 0  # the minority class wins a tie of raw logits
    same = _prediction_rule({"train": {"loss": {"name": "weighted_ce"}}, "class_counts": [1, 9]})(logits)
    assert torch.equal(same, logits)


def test_default_explanation_is_adaptive_and_explains_the_predicted_class_log_odds(tiny_models):
    import math

    from liaotian.serve.api import AttributionRequest

    ex = Explainer(tiny_models["classifier"])  # default_steps="auto"
    out = ex.explain([ex.prepare(AttributionRequest.model_validate({"text": "今天天气不错"}))])[0]
    assert out["method"] == "adaptive_trapezoid"
    assert out["error_bound"] <= 0.01 * max(abs(s) for s in out["scores"]) + 1e-9 or out["steps"] >= 257
    assert abs(sum(out["scores"]) - (out["f_x"] - out["f_baseline"])) == pytest.approx(out["delta"], abs=1e-5)
    p = out["probability"]  # F(x) is the predicted class's log-odds (no post-hoc adjustment in this model)
    assert out["f_x"] == pytest.approx(math.log(p / (1 - p)), abs=1e-4) and out["objective"] == "log_odds"


def test_stream_many_equals_each_stream(engine):
    reqs = [request("你好", seed=7, max_tokens=12, top_p=1.0), request("今天天气很不错", seed=7, max_tokens=12, top_p=1.0),
            request("你是谁", seed=7, max_tokens=12, top_p=1.0, stop=["的", "我"]), request("吃饭了吗", max_tokens=5, temperature=0),
            request("电影", seed=7, max_tokens=12, top_p=1.0)]
    items = [engine.prepare(r, CFG) for r in reqs]
    assert all(engine.streams_together(it) for it in items)
    assert not engine.streams_together(engine.prepare(request("你好", n=2), CFG))
    events = list(engine.stream_many(items))
    for i, item in enumerate(items):
        mine = [d for k, d in events if k == i]
        alone = list(engine.stream(item))
        assert [(d.text, d.finish_reason, d.tokens) for d in mine] == [(d.text, d.finish_reason, d.tokens) for d in alone]
        assert mine[-1].finish_reason is not None and all(d.finish_reason is None for d in mine[:-1])

    with_lp = [engine.prepare(request("你是谁", seed=7, max_tokens=12, top_p=1.0, stop=["的", "我"], logprobs=True,
                                      top_logprobs=2), CFG), engine.prepare(request("你好", seed=3, max_tokens=8,
                                                                                   logprobs=True), CFG)]
    events = list(engine.stream_many(with_lp))
    for i, item in enumerate(with_lp):
        together = [t for k, d in events if k == i for t in d.logprobs or []]
        alone = [t for d in engine.stream(item) for t in d.logprobs or []]
        assert [t[0] for t in together] == [t[0] for t in alone] and together
        assert [t[1] for t in together] == pytest.approx([t[1] for t in alone], abs=1e-4)


def test_decode_precision_reaches_the_model_and_is_validated(tiny_models):
    from liaotian.config import ConfigError
    from liaotian.models.precision import resolve_precision

    bf16 = ChatEngine(tiny_models["dialog"], decode_precision="bf16")
    assert bf16.decoder.precision == "bf16" and bf16.decoder.model is bf16.model
    assert ChatEngine(tiny_models["dialog"]).decoder.precision == "fp32"
    assert ServeConfig().decode_precision == "auto"  # the served default: bf16 where the device runs it natively (and faster)
    auto = ChatEngine(tiny_models["dialog"], decode_precision="auto")
    assert auto.decoder.precision in (("fp32",) if resolve_precision("auto") is None else ("fp32", "bf16"))
    for engine in (bf16, ChatEngine(tiny_models["dialog"], decode_precision="int8")):
        reply = engine.run_batch([engine.prepare(request("你好", seed=3, max_tokens=6), CFG)])[0]
        assert 1 <= reply.choices[0].completion_tokens <= 6
        assert not engine.decoder.fallbacks
    with pytest.raises(ConfigError, match="decode_precision"):
        ServeConfig(decode_precision="fp16")
