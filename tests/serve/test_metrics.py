"""The Prometheus metrics the services export through Ray's metrics agent: scraped while requests of
every kind run, each series is there with a sane value."""
from __future__ import annotations

import re
import threading
import time

import httpx

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "你好，今天天气很不错"}]


def metrics_url() -> str:
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"


def samples(text: str) -> dict[str, list[tuple[str, float]]]:
    """{metric name: [(labels, value), ...]} of the liaotian series in a Prometheus text scrape."""
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        m = re.match(r"^(ray_liaotian_[a-z_]+)(\{[^}]*\})? ([-+0-9.eEinfNa]+)$", line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def labelled(found, name, **labels) -> list[float]:
    return [v for lab, v in found.get(name, []) if all(f'{k}="{w}"' in lab for k, w in labels.items())]


def value(found, name, **labels) -> float:
    rows = labelled(found, name, **labels)
    assert rows, (name, labels, sorted(found))
    return sum(rows)


# The labelled series the assertions below read: the scrape loop waits for all of them, since each
# replica exports its series on Ray's own reporting interval (a name can appear before every label has).
AWAITED = [("ray_liaotian_requests_total", {"status": "422"}), ("ray_liaotian_mean_reply_tokens", {"setting": "sample"}),
           ("ray_liaotian_non_termination_rate", {"setting": "greedy"}), ("ray_liaotian_replies_total", {"setting": "sample+rerank"}),
           ("ray_liaotian_requests_total", {"route": "/v1/attributions", "status": "200"})]


def test_metrics_are_exported_during_requests(served):
    base, _ = served
    stop = threading.Event()

    def traffic():
        with httpx.Client(headers=AUTH, timeout=30) as c:
            while not stop.is_set():
                c.post(f"{base}/v1/chat/completions", json={"messages": USER, "max_tokens": 8, "top_p": 1.0})
                with c.stream("POST", f"{base}/v1/chat/completions",
                              json={"messages": USER, "max_tokens": 8, "stream": True}) as r:
                    r.read()
                c.post(f"{base}/v1/chat/completions", json={"messages": USER, "max_tokens": 4, "n": 2, "rerank": True})
                c.post(f"{base}/v1/chat/completions", json={"messages": USER, "max_tokens": 4, "temperature": 0})
                c.post(f"{base}/v1/attributions", json={"text": "今天很开心"})
                c.post(f"{base}/v1/chat/completions", json={"messages": USER, "top_p": 7})  # a 422

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        url, found, deadline = metrics_url(), {}, time.monotonic() + 90
        wanted = ["ray_liaotian_requests_total", "ray_liaotian_prompt_tokens_total", "ray_liaotian_completion_tokens_total",
                  "ray_liaotian_time_to_first_token_seconds_bucket", "ray_liaotian_inter_token_latency_seconds_bucket",
                  "ray_liaotian_batch_size_bucket", "ray_liaotian_queue_wait_seconds_bucket",
                  "ray_liaotian_replies_total", "ray_liaotian_non_termination_rate", "ray_liaotian_repetition_rate",
                  "ray_liaotian_mean_reply_tokens", "ray_liaotian_ig_completeness_delta_bucket",
                  "ray_liaotian_ig_quadrature_nodes_bucket", "ray_liaotian_requests_in_flight"]
        while time.monotonic() < deadline:
            found = samples(httpx.get(url, timeout=10).text)
            if all(name in found for name in wanted) and all(labelled(found, n, **lab) for n, lab in AWAITED):
                break
            time.sleep(2)
    finally:
        stop.set()
        worker.join()
    missing = [name for name in wanted if name not in found]
    assert not missing, (missing, sorted(found))
    assert value(found, "ray_liaotian_requests_total", route="/v1/chat/completions", status="200") >= 3
    assert value(found, "ray_liaotian_requests_total", route="/v1/attributions", status="200") >= 1
    assert value(found, "ray_liaotian_prompt_tokens_total") >= 12
    assert value(found, "ray_liaotian_completion_tokens_total") >= 1
    for name in ("ray_liaotian_non_termination_rate", "ray_liaotian_repetition_rate"):
        assert all(0.0 <= v <= 1.0 for _, v in found[name]), found[name]
    assert 0 < value(found, "ray_liaotian_mean_reply_tokens", setting="sample") <= 8
    assert value(found, "ray_liaotian_non_termination_rate", setting="greedy") >= 0
    assert value(found, "ray_liaotian_replies_total", setting="sample+rerank") >= 2
    nodes = value(found, "ray_liaotian_ig_quadrature_nodes_sum") / value(found, "ray_liaotian_ig_quadrature_nodes_count")
    assert 2 <= nodes <= 256  # per explanation, within the served bounds
    assert value(found, "ray_liaotian_ig_completeness_delta_count") >= 1
    assert value(found, "ray_liaotian_time_to_first_token_seconds_count") >= 1
    assert value(found, "ray_liaotian_batch_size_count") >= 1


def test_grafana_dashboard_uses_the_exported_series():
    """docs/grafana/liaotian.json plots every series ServeMetrics defines and names no other."""
    import json
    from pathlib import Path

    from liaotian.serve.metrics import ServeMetrics

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana" / "liaotian.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = set(re.findall(r"ray_(liaotian_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", exprs))
    defined = {m.name for m in ServeMetrics(local_only=True).m.values()}
    assert used == defined, (used ^ defined)
