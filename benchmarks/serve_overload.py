"""Overload of the served routes (issue 18): `--concurrent` requests at once per route against one
replica per application with the default limits (`max_ongoing_requests` 32 + `max_queued_requests` 64
admitted per replica; beyond them the app answers a JSON 503 with Retry-After). Loopback only.

Per route (chat JSON, chat streamed to `data: [DONE]`, attribution): the status counts, whether every
non-200 answer is an OpenAI-style JSON error with Retry-After, the slowest answer and the slowest 503,
and that every request came back. Then the Prometheus scrape of Ray's metrics export (the liaotian
series) is written next to the output. Workload and models as benchmarks/serve.py (random-init
demo-sized models; every chat reply decodes `--max-tokens` tokens).

Run: `flock /tmp/liaotian-ray.lock .venv/bin/python benchmarks/serve_overload.py --scrape docs/results/serve/metrics_scrape.txt`
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time
from pathlib import Path

try:
    from benchmarks.common import emit, print_table, result
    from benchmarks.serve import ATTR_BODY, chat_body, make_models, run_config
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import emit, print_table, result
    from serve import ATTR_BODY, chat_body, make_models, run_config


async def burst(url: str, body: dict, total: int, headers: dict) -> dict:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=total + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def one():
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body, headers=headers) as r:
                    data = await r.read()
                    status = r.status
                    if status == 200 and body.get("stream") and not data.rstrip().endswith(b"data: [DONE]"):
                        status = -2  # a stream cut short
                    shaped = True
                    if status != 200:
                        try:
                            err = json.loads(data)["error"]
                            shaped = bool(err["message"]) and "type" in err and (status != 503 or "Retry-After" in r.headers)
                        except (ValueError, KeyError, TypeError):
                            shaped = False
                    return status, time.perf_counter() - t0, shaped
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return -1, time.perf_counter() - t0, False

        t0 = time.perf_counter()
        out = await asyncio.gather(*(one() for _ in range(total)))
        wall = time.perf_counter() - t0
    counts: dict[int, int] = {}
    for status, _, _ in out:
        counts[status] = counts.get(status, 0) + 1
    return {"sent": total, "statuses": dict(sorted(counts.items())), "slowest_s": max(dt for _, dt, _ in out),
            "slowest_503_s": max((dt for s, dt, _ in out if s == 503), default=0.0),
            "not_json_errors": sum(not ok for _, _, ok in out), "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--scrape", help="write the liaotian series of the metrics scrape to this file")
    args = ap.parse_args()

    import ray
    from ray import serve

    from liaotian.serve.app import run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    rows, notes, figures = [], [], {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            models = make_models(Path(tmp))
            cfg = run_config(models, port, batching=True, ongoing=32, queued=64, run_dir=tmp,
                             max_tokens=args.max_tokens)
            run(cfg, blocking=False)
            base = f"http://127.0.0.1:{port}"
            routes = {
                "chat": (f"{base}/v1/chat/completions", chat_body(args.max_tokens)),
                "chat stream": (f"{base}/v1/chat/completions", dict(chat_body(args.max_tokens), stream=True)),
                "attribution": (f"{base}/v1/attributions", ATTR_BODY),
            }
            for name, (url, body) in routes.items():
                asyncio.run(burst(url, body, 4, {}))  # warm-up
                figures[name] = out = asyncio.run(burst(url, body, args.concurrent, {}))
                print(f"{name:<12} {out}", flush=True)
                ok = out["statuses"].get(200, 0)
                rows.append(result(f"{name}: 200 answers", ok, "requests", "admitted per replica (32+64)", 96))
                rows.append(result(f"{name}: 503 answers", out["statuses"].get(503, 0), "requests", "sent",
                                   args.concurrent))
                rows.append(result(f"{name}: slowest answer", out["slowest_s"], "s", "request_timeout_s",
                                   cfg.serve.request_timeout_s, lower_is_better=True))
                rows.append(result(f"{name}: slowest 503", out["slowest_503_s"] or 0.0, "s", "slowest answer",
                                   out["slowest_s"], lower_is_better=True))
                refused = args.concurrent - ok
                rows.append(result(f"{name}: refusals as JSON errors", refused - out["not_json_errors"], "requests",
                                   "refusals", refused))
            if args.scrape:
                import httpx

                node = next(n for n in ray.nodes() if n["Alive"])
                url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
                lines: list[str] = []
                for _ in range(30):  # the agent exports every few seconds
                    lines = [x for x in httpx.get(url, timeout=10).text.splitlines() if "liaotian_" in x]
                    if any("liaotian_ig_quadrature_nodes" in x for x in lines):
                        break
                    time.sleep(2)
                Path(args.scrape).parent.mkdir(parents=True, exist_ok=True)
                Path(args.scrape).write_text("\n".join(lines) + "\n", encoding="utf-8")
                notes.append(f"metrics scrape ({len(lines)} liaotian lines) written to {args.scrape}")
    finally:
        serve.shutdown()
        ray.shutdown()
    notes.append(f"{args.concurrent} requests at once per route; one replica per application; load average "
                 f"{os.getloadavg()[0]:.1f} (a machine shared with other jobs); loopback only")
    print_table("Serve overload: JSON 503 + Retry-After beyond the admitted requests", rows, notes)
    emit("serve_overload", rows, figures=figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
