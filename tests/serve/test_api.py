"""The HTTP protocol without Ray: FastAPI TestClient on serve.api.create_app with the real engines."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from liaotian.serve.api import create_app
from liaotian.serve.config import ServeConfig
from liaotian.serve.engine import ChatEngine, Explainer, LocalBackend

USER = [{"role": "user", "content": "你好，今天天气很不错"}]


@pytest.fixture(scope="module")
def engines(tiny_models):
    return ChatEngine(tiny_models["dialog"], tiny_models["mlm"]), Explainer(tiny_models["classifier"], tiny_models["dialog"], default_steps=24)


def make_client(engines, **cfg) -> TestClient:
    config = ServeConfig(**{"max_body_bytes": 4096, "max_text_chars": 300, "max_messages": 6, "max_new_tokens": 16,
                            "max_n": 4, **cfg})
    backend = LocalBackend(config, *engines)
    return TestClient(create_app(config, chat=backend, attribution=backend))


@pytest.fixture(scope="module")
def client(engines):
    return make_client(engines)


def post(client, body, path="/v1/chat/completions", **kw):
    return client.post(path, json=body, **kw)


def sse_events(text: str) -> list:
    assert text.endswith("data: [DONE]\n\n"), text[-200:]
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [json.loads(e[6:]) for e in events[:-1]]


def test_chat_completion_shape_and_usage(client, engines):
    r = post(client, {"messages": USER, "max_tokens": 5, "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "liaotian"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] == len("你好，今天天气很不错") + 2  # [CLS] u1 [SEP]
    assert 0 <= usage["completion_tokens"] <= 5
    assert (usage["completion_tokens"] == 5) == (choice["finish_reason"] == "length")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_n_choices_and_seed_reproducible(client):
    body = {"messages": USER, "max_tokens": 6, "n": 3, "seed": 7}
    a, b = post(client, body).json(), post(client, body).json()
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]


def test_system_message_is_ignored(client):
    body = {"messages": USER, "max_tokens": 6, "temperature": 0}
    plain = post(client, body).json()
    with_system = post(client, {**body, "messages": [{"role": "system", "content": "你是谁"}] + USER}).json()
    assert plain["choices"][0]["message"] == with_system["choices"][0]["message"]
    assert plain["usage"] == with_system["usage"]


SEEDED = {"temperature": 1.0, "top_p": 1.0, "seed": 11}  # deterministic, and a near-uniform random model says something


def seeded_reply(client, max_tokens=12) -> str:
    r = post(client, {"messages": USER, "max_tokens": max_tokens, **SEEDED})
    return r.json()["choices"][0]["message"]["content"]


def test_stop_string_cuts_and_is_not_returned(client):
    reply = seeded_reply(client)
    assert len(reply) >= 3, "the greedy reply should be long enough to cut"
    stop = reply[2:4]
    r = post(client, {"messages": USER, "max_tokens": 12, **SEEDED, "stop": [stop]}).json()
    assert r["choices"][0]["message"]["content"] == reply[:reply.index(stop)]
    assert r["choices"][0]["finish_reason"] == "stop"


def test_streaming_matches_non_streaming(client):
    reply = seeded_reply(client)
    r = post(client, {"messages": USER, "max_tokens": 12, **SEEDED, "stream": True,
                      "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["delta"].get("content", "") for e in events for c in e["choices"])
    assert text == reply
    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] >= len(reply)


def test_streaming_stop_and_n(client):
    reply = seeded_reply(client)
    stop = reply[3:5]
    body = {"messages": USER, "max_tokens": 12, **SEEDED, "n": 2, "stop": stop}
    whole = post(client, body).json()["choices"]
    assert whole[0]["message"]["content"] == reply[:reply.index(stop)] and whole[0]["finish_reason"] == "stop"
    events = sse_events(post(client, {**body, "stream": True}).text)
    for i in range(2):
        text = "".join(c["delta"].get("content", "") for e in events for c in e["choices"] if c["index"] == i)
        assert text == whole[i]["message"]["content"]
        (finish,) = [c["finish_reason"] for e in events for c in e["choices"] if c["index"] == i and c["finish_reason"]]
        assert finish == whole[i]["finish_reason"]


def test_rerank_returns_n_choices(client):
    r = post(client, {"messages": USER, "max_tokens": 6, "n": 2, "rerank": {"candidates": 4, "alpha": 0.5}, "seed": 3})
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2


def test_models_page_and_static(client):
    assert post.__name__  # noqa: keep the helper used
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "liaotian"
    page = client.get("/")
    assert page.status_code == 200 and 'id="chat-form"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no CDN in <head>
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/..%2fapi.py").status_code == 404
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("body, param", [
    ({"messages": USER, "bogus": 1}, "bogus"),
    ({"messages": USER, "temperature": "hot"}, "temperature"),
    ({"messages": USER, "temperature": 2.5}, "temperature"),
    ({"messages": USER, "top_p": 0}, "top_p"),
    ({"messages": USER, "top_k": -1}, "top_k"),
    ({"messages": USER, "n": 5}, "n"),
    ({"messages": USER, "n": 0}, "n"),
    ({"messages": USER, "max_tokens": 17}, "max_tokens"),
    ({"messages": USER, "seed": -1}, "seed"),
    ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": USER, "stream": "yes please"}, "stream"),
    ({"messages": []}, "messages"),
    ({"messages": USER * 7}, "messages"),
    ({"messages": [{"role": "user", "content": "  "}]}, "messages"),
    ({"messages": [{"role": "user", "content": "好" * 301}]}, "messages"),
    ({"messages": [{"role": "robot", "content": "好"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "好", "extra": 1}]}, "messages"),
    ({"messages": USER + [{"role": "assistant", "content": "好"}]}, "messages"),
    ({"messages": USER, "rerank": {"candidates": 1}}, "rerank"),
    ({}, "messages"),
])
def test_validation_errors_are_422_with_a_message(client, body, param):
    r = post(client, body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"].startswith(param) and err["message"]


def test_body_level_errors(client):
    url = "/v1/chat/completions"
    r = client.post(url, content=b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}')
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_utf8"
    r = client.post(url, content=b'{"messages": [')
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json"
    r = client.post(url, content=b"[1, 2]")
    assert r.status_code == 400
    big = json.dumps({"messages": [{"role": "user", "content": "好" * 2000}]}).encode()
    r = client.post(url, content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = client.post(url, content=(big[i:i + 512] for i in range(0, len(big), 512)))  # chunked, no length
    assert r.status_code == 413
    r = post(client, {"messages": USER, "model": "gpt-4"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = client.get(url)
    assert r.status_code == 405


def test_text_longer_than_the_window_is_400(engines):
    c = make_client(engines, max_text_chars=1000, max_body_bytes=16384)
    r = post(c, {"messages": [{"role": "user", "content": "好" * 120}], "max_tokens": 16})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = post(c, {"text": "好" * 200}, path="/v1/attributions")
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_api_key(engines, monkeypatch):
    c = make_client(engines, api_key="s3cret")
    assert post(c, {"messages": USER, "max_tokens": 2}).status_code == 401
    bad = post(c, {"messages": USER, "max_tokens": 2}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    assert post(c, {"messages": USER, "max_tokens": 2}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/v1/models").status_code == 401
    assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
    monkeypatch.setenv("LIAOTIAN_API_KEY", "from-env")
    c = make_client(engines)
    assert c.get("/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200
    assert c.get("/v1/models").status_code == 401


def check_completeness(a: dict) -> None:
    assert len(a["tokens"]) == len(a["scores"])
    gap = a["f_x"] - a["f_baseline"]
    assert abs(sum(a["scores"]) - gap) == pytest.approx(a["delta"], abs=1e-4)
    assert a["delta"] <= 0.05 * abs(gap) + 1e-3


def test_attribution_classifier(client):
    r = post(client, {"text": "今天很开心", "steps": 16}, path="/v1/attributions")
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["kind"] == "classifier" and a["tokens"] == ["[CLS]", "今", "天", "很", "开", "心", "[SEP]"]
    assert a["label"] in (0, 1) and a["label_name"] == ["negative", "positive"][a["label"]]
    assert a["probability"] == pytest.approx(max(a["probabilities"]))
    assert (a["steps"], a["method"], a["baseline"]) == (16, "gausslegendre", "pad")
    check_completeness(a)
    other = post(client, {"text": "今天很开心", "target": 1 - a["label"], "baseline": "zeros",
                          "method": "riemann_trapezoid"}, path="/v1/attributions").json()
    assert other["label"] == 1 - a["label"] and other["steps"] == 24
    check_completeness(other)


def test_attribution_chat_reply(client):
    r = post(client, {"messages": USER, "reply": "我也喜欢"}, path="/v1/attributions")
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["kind"] == "chat" and a["reply_tokens"] == list("我也喜欢")
    assert a["tokens"][0] == "[CLS]" and len(a["tokens"]) == len("你好，今天天气很不错") + 2
    check_completeness(a)


@pytest.mark.parametrize("body", [
    {"text": "好", "messages": USER, "reply": "好"},
    {},
    {"messages": USER},
    {"reply": "好"},
    {"text": "好", "steps": 1000},
    {"text": "好", "baseline": "noise"},
    {"messages": USER, "reply": "好", "target": 1},
    {"text": "好", "target": -1},
    {"text": ""},
])
def test_attribution_validation(client, body):
    r = post(client, body, path="/v1/attributions")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Inputs that once answered 5xx, strict types, the OpenAI surface, overload
# ---------------------------------------------------------------------------------------------

def test_lone_surrogates_and_deep_json_are_400(client, engines):
    for path, body in (("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800\xe5\xa5\xbd"}]}'),
                       ("/v1/attributions", b'{"text": "\\udfff"}'),
                       ("/v1/chat/completions", b'{"messages": [], "\\ud83d": 1}')):
        r = client.post(path, content=body)
        assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"], r.text
    deep = b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = make_client(engines, max_body_bytes=65536).post("/v1/chat/completions", content=deep)
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", content=b'{"messages": ' + b"[" * 40 + b"]" * 40 + b"}")
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"]


def test_tiny_temperature_is_numerically_safe(client):
    for t in (1e-300, 5e-324, 1e-8):
        r = post(client, {"messages": USER, "max_tokens": 4, "temperature": t, "seed": 1})
        assert r.status_code == 200, r.text
        greedy = post(client, {"messages": USER, "max_tokens": 4, "temperature": 0}).json()
        assert r.json()["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]
        s = post(client, {"messages": USER, "max_tokens": 4, "temperature": t, "stream": True})
        events = sse_events(s.text)
        assert any(c["finish_reason"] for e in events for c in e["choices"])


@pytest.mark.parametrize("method", [None, "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                                    "riemann_middle", "adaptive_trapezoid", "clenshaw_curtis"])
@pytest.mark.parametrize("steps", [None, "auto", 3])
def test_attribution_method_and_steps(engines, method, steps):
    from liaotian.serve.api import IG_NESTED_RULES

    body = {k: v for k, v in {"text": "开心", "method": method, "steps": steps}.items() if v is not None}
    ok = not ((steps == "auto" and method is not None and method not in IG_NESTED_RULES)
              or (method == "adaptive_trapezoid" and steps == 3))
    explainer, served_default = engines[1], engines[1].default_steps
    try:
        for default in ("auto", 8):
            explainer.default_steps = default
            r = post(make_client(engines, ig_steps=default), body, path="/v1/attributions")
            assert r.status_code == (200 if ok else 422), (default, r.text)
            if ok and method is not None:
                assert r.json()["method"] == method
    finally:
        explainer.default_steps = served_default


def test_strict_types(client):
    for field, value in (("max_tokens", "10"), ("max_tokens", True), ("n", 1.0), ("seed", "1"),
                         ("temperature", "0.5"), ("stream", 1), ("logprobs", "true")):
        r = post(client, {"messages": USER, field: value})
        assert r.status_code == 422 and r.json()["error"]["param"].startswith(field), (field, value, r.text)
    assert post(client, {"messages": USER, "temperature": 1, "max_tokens": 2}).status_code == 200  # 1 is a number


def test_static_path_checks(client):
    for name in ("app.js%00.png", "%00", "..%2f..%2fetc%2fpasswd", "nothere.js", "%2e%2e"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (name, r.text)


def test_405_names_the_allowed_methods(client):
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == "bad_method"
    r = client.delete("/v1/models")
    assert r.status_code == 405 and "GET" in r.headers["allow"]


def test_openai_surface(client):
    r = post(client, {"messages": USER, "max_tokens": 4, "user": "someone", "response_format": {"type": "text"},
                      "presence_penalty": 1.5, "frequency_penalty": -0.5, "seed": 2})
    assert r.status_code == 200, r.text
    r = post(client, {"messages": USER, "response_format": {"type": "json_object"}})
    assert r.status_code == 422 and "only {'type': 'text'}" in r.json()["error"]["message"]
    assert post(client, {"messages": USER, "presence_penalty": 2.5}).status_code == 422
    assert post(client, {"messages": USER, "top_logprobs": 2}).status_code == 422  # needs logprobs
    assert client.get("/v1/models/liaotian").json()["id"] == "liaotian"
    assert client.get("/v1/models/liaotian").json()["context_window"] == 128
    assert client.get("/v1/models/gpt-4").status_code == 404
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/ChatCompletionRequest")
    assert {"presence_penalty", "logprobs", "user"} <= set(schema["components"]["schemas"]["ChatCompletionRequest"]["properties"])


def test_penalties_change_the_reply(client):
    base = {"messages": USER, "max_tokens": 12, "temperature": 0}
    plain = post(client, base).json()["choices"][0]["message"]["content"]
    pushed = post(client, dict(base, frequency_penalty=2.0, presence_penalty=2.0)).json()["choices"][0]["message"]["content"]
    assert len(set(pushed)) >= len(set(plain))  # penalised repeats: at least as many distinct characters


def test_overload_is_a_json_503_with_retry_after(engines):
    import asyncio

    import httpx

    from liaotian.serve.config import DeploymentSection

    config = ServeConfig(max_new_tokens=16, chat=DeploymentSection(max_ongoing_requests=1, max_queued_requests=1))
    backend = LocalBackend(config, *engines)
    app = create_app(config, chat=backend)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"messages": USER, "max_tokens": 16, "top_p": 1.0}
            return await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(8)))

    answers = asyncio.run(burst())
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "overloaded_error"


def test_logprobs_in_openai_shape_streamed_too(client):
    body = {"messages": USER, "max_tokens": 6, "seed": 5, "top_p": 1.0, "logprobs": True, "top_logprobs": 3}
    r = post(client, body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"]
    for t in content:
        assert t["logprob"] <= 0 and t["bytes"] == list(t["token"].encode())
        alts = [a["logprob"] for a in t["top_logprobs"]]
        assert len(alts) == 3 and alts == sorted(alts, reverse=True) and t["logprob"] <= alts[0] + 1e-9
    events = sse_events(post(client, dict(body, stream=True)).text)
    streamed = [t for e in events for c in e["choices"] if c.get("logprobs") for t in c["logprobs"]["content"]]
    assert [t["token"] for t in streamed] == [t["token"] for t in content]
    assert [t["logprob"] for t in streamed] == pytest.approx([t["logprob"] for t in content], abs=1e-5)
    plain = post(client, {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}).json()
    assert plain["choices"][0]["logprobs"] is None
    assert plain["choices"][0]["message"]["content"] == choice["message"]["content"]  # logprobs change nothing


def test_tokenize_states_the_window(client):
    r = post(client, {"text": "你好，今天天气很不错"}, path="/v1/tokenize")
    assert r.status_code == 200, r.text
    assert r.json() == {"tokens": 10, "context_window": 128, "max_tokens": 16, "max_input_tokens": 128 - 2 - 16}
    assert post(client, {"text": "", "max_tokens": 4}, path="/v1/tokenize").json()["max_input_tokens"] == 122
    assert post(client, {"text": 5}, path="/v1/tokenize").status_code == 422
    page = client.get("/").text
    assert 'id="window"' in page and "/v1/tokenize" in client.get("/static/app.js").text


def test_healthz_reports_a_replica_that_cannot_serve(engines):
    import time as clock

    from liaotian.serve.app import stall_reason
    from liaotian.serve.request_batching import SerialDecoder

    config = ServeConfig(request_timeout_s=1.0)
    backend = LocalBackend(config, *engines)
    client = TestClient(create_app(config, chat=backend))
    assert client.get("/healthz").json() == {"status": "ok"}
    decoder = SerialDecoder("t")
    backend.health = lambda: stall_reason(config, decoder=decoder)
    assert client.get("/healthz").status_code == 200  # idle
    decoder.busy_since = decoder.last_progress = clock.monotonic() - 10  # a decode stuck for 10 s
    r = client.get("/healthz")
    assert r.status_code == 503 and "no progress" in r.json()["error"]["message"] and r.headers["retry-after"]
