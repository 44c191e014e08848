"""Both Serve applications on the shared local Ray cluster: HTTP, the openai client, limits,
autoscaling and overload. Tiny random-init models; every assertion is about the protocol."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "你好，今天天气很不错"}]


def chat(base, body, **kw):
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=AUTH, timeout=60, **kw)


def test_chat_over_http(served):
    base, _ = served
    r = chat(base, {"messages": USER, "max_tokens": 8, "n": 2, "seed": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["choices"]) == 2 and body["usage"]["prompt_tokens"] == 12
    assert all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
    with httpx.stream("POST", f"{base}/v1/chat/completions", headers=AUTH, timeout=60,
                      json={"messages": USER, "max_tokens": 8, "seed": 4, "stream": True}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in s.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["delta"].get("content", "") for ch in chunks for c in ch["choices"])
    assert text == body["choices"][0]["message"]["content"]  # same seed, same first candidate


def test_openai_client(served):
    from openai import OpenAI, AuthenticationError

    base, _ = served
    client = OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["liaotian"]
    out = client.chat.completions.create(model="liaotian", messages=USER, max_tokens=6, n=2, seed=1)
    assert len(out.choices) == 2 and out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model="liaotian", messages=USER, max_tokens=6, seed=1, stream=True):
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(pieces) == out.choices[0].message.content and finish in ("stop", "length")
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()


def test_limits_through_the_proxy(served):
    base, cfg = served
    url = f"{base}/v1/chat/completions"
    assert httpx.post(url, json={"messages": USER}).status_code == 401
    assert chat(base, {"messages": USER, "top_p": 1.5}).status_code == 422
    assert httpx.post(url, content=b"\xff{", headers=AUTH).status_code == 400
    big = json.dumps({"messages": [{"role": "user", "content": "好" * 30000}]}).encode()
    assert len(big) > cfg.serve.max_body_bytes
    r = httpx.post(url, content=(big[i:i + 4096] for i in range(0, len(big), 4096)), headers=AUTH)
    assert r.status_code == 413
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and "chat-form" in page.text
    assert httpx.get(f"{base}/static/app.js").status_code == 200


def test_attribution_app(served):
    base, _ = served
    r = httpx.post(f"{base}/v1/attributions", json={"text": "今天很开心"}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["kind"] == "classifier" and a["steps"] == 16 and len(a["tokens"]) == len(a["scores"]) == 7
    assert abs(sum(a["scores"]) - (a["f_x"] - a["f_baseline"])) == pytest.approx(a["delta"], abs=1e-4)
    r = httpx.post(f"{base}/v1/attributions", json={"messages": USER, "reply": "好的"}, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["reply_tokens"] == ["好", "的"]
    r = httpx.post(f"{base}/v1/attributions", json={"text": "好", "steps": 9999}, headers=AUTH)
    assert r.status_code == 422


def chat_replicas() -> int:
    from ray import serve

    status = serve.status().applications["chat"].deployments["ChatBot"]
    return sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))


def wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.5)
    return False


def test_autoscaling_grows_and_shrinks(served):
    base, _ = served
    assert wait_for(lambda: chat_replicas() == 1, 30), "starts at min_replicas"
    stop = threading.Event()
    codes: list[int] = []

    def load():
        with httpx.Client(headers=AUTH, timeout=60) as c:
            while not stop.is_set():
                codes.append(c.post(f"{base}/v1/chat/completions",
                                    json={"messages": USER, "max_tokens": 32, "top_p": 1.0}).status_code)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        grew = wait_for(lambda: chat_replicas() >= 2, 45)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert grew, "sustained load should add a replica"
    assert codes.count(200) > 0
    assert wait_for(lambda: chat_replicas() == 1, 60), "idle: back to min_replicas"


def test_overload_answers_503_fast(served):
    base, _ = served

    def one(_):
        t0 = time.monotonic()
        r = httpx.post(f"{base}/v1/chat/completions", headers=AUTH, timeout=60,
                       json={"messages": USER, "max_tokens": 32, "top_p": 1.0})
        return r.status_code, time.monotonic() - t0

    t0 = time.monotonic()
    with ThreadPoolExecutor(48) as pool:
        results = list(pool.map(one, range(48)))
    elapsed = time.monotonic() - t0
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) >= 16, codes  # 48 at once against (4 ongoing + 4 queued) per replica
    assert codes.count(200) >= 4
    assert max(dt for c, dt in results if c == 503) < 5.0
    assert elapsed < 60  # nothing stuck


def test_build_app_and_serve_config(tiny_models, tmp_path):
    """The application builder behind `serve run liaotian.serve.app:build_app` and serve/serve_config.yaml."""
    from pathlib import Path

    import yaml

    from liaotian.config import ConfigError
    from liaotian.serve.app import build_app

    sets = [f"serve.chat_model={tiny_models['dialog']}", f"serve.classifier_model={tiny_models['classifier']}",
            f"run_dir={tmp_path}"]
    for name in ("chat", "attribution"):
        app = build_app({"app": name, "set": sets})
        assert type(app).__name__ == "Application"
    with pytest.raises(ConfigError, match="unknown arguments"):
        build_app({"app": "chat", "bogus": 1})
    with pytest.raises(ConfigError, match="no dialogue model"):
        build_app({"set": [f"run_dir={tmp_path}"]})
    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve" / "serve_config.yaml").read_text())
    assert spec["http_options"]["host"] == "127.0.0.1"
    assert {a["name"]: a["route_prefix"] for a in spec["applications"]} == {"chat": "/", "attribution": "/v1/attributions"}
