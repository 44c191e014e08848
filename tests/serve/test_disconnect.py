"""Streams whose clients leave early must release what they held: after hundreds of dropped streams of
every kind (one choice, n > 1, rerank, attribution), every replica still answers full streams ending
in `data: [DONE]`, and /healthz says ok. Loopback only; the number of streams and the time are bounded."""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "你好，今天天气很不错"}]


def chat_replicas() -> int:
    from ray import serve

    status = serve.status().applications["chat"].deployments["ChatBot"]
    return sum(n for state, n in status.replica_states.items() if str(state).endswith("RUNNING"))

KINDS = {
    "n1": {"messages": USER, "max_tokens": 32, "top_p": 1.0, "stream": True},
    "n4": {"messages": USER, "max_tokens": 32, "top_p": 1.0, "stream": True, "n": 4},
    "rerank": {"messages": USER, "max_tokens": 32, "top_p": 1.0, "stream": True, "n": 2, "rerank": True},
}


def drop_after(base: str, path: str, body: dict, chunks: int, timeout: float = 20.0) -> None:
    """POST over a raw socket, read until `chunks` SSE events (or any bytes for a plain answer) arrived,
    then close the connection without reading the rest."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: {AUTH['Authorization']}\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head + payload)
        seen = b""
        while seen.count(b"\n\n") < chunks:
            data = s.recv(4096)
            if not data:
                break
            seen += data
            if chunks == 0:
                break


def full_stream(base: str, body: dict) -> tuple[str, list[str]]:
    """(the replica that answered, the stream's events) of a stream read to its end."""
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=AUTH, timeout=30) as r:
        assert r.status_code == 200, r.read()
        return r.headers["x-liaotian-replica"], [line for line in r.iter_lines() if line]


def test_dropped_streams_release_the_replica(served):
    base, _ = served
    # The reported wedge: three concurrent n=4 streams dropped after three chunks, twenty times over;
    # then hundreds more of each kind, and attribution requests dropped before their answer.
    jobs = [("/v1/chat/completions", KINDS["n4"], 3)] * 60
    for kind in ("n1", "n4", "rerank"):
        jobs += [("/v1/chat/completions", KINDS[kind], 3)] * 100
    jobs += [("/v1/attributions", {"text": "今天很开心", "steps": 32}, 0)] * 100
    t0 = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda job: drop_after(base, *job), jobs))
    assert time.monotonic() - t0 < 240
    # every replica: full streams of each kind ending in [DONE] (rounds of parallel requests until
    # each kind was answered by every running replica; bounded)
    seen: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for _ in range(10):
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda kind: (kind, full_stream(base, KINDS[kind])), list(KINDS) * 2))
        for kind, (replica, lines) in results:
            assert lines[-1] == "data: [DONE]", (kind, lines[-3:])
            finals = [c for line in lines[:-1] for c in json.loads(line[6:])["choices"] if c["finish_reason"]]
            assert len(finals) == KINDS[kind].get("n", 1) and all(c["finish_reason"] in ("stop", "length") for c in finals)
            seen[kind].add(replica)
        if all(len(ids) >= chat_replicas() for ids in seen.values()):
            break
    assert all(len(ids) >= chat_replicas() for ids in seen.values()), (seen, chat_replicas())
    r = httpx.post(f"{base}/v1/attributions", json={"text": "今天很开心"}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    health = httpx.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
