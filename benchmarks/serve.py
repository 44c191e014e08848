"""Ray Serve under load: the chatbot and the attribution service, batching on against off (issue 8).

Both applications run on one local Ray cluster, one replica each (autoscaling off, so batching is the
only difference), on loopback only. For each setting (batching on, then off, redeployed in the same
run) and each concurrency (1, 8, 32), a fixed number of requests is sent with at most `c` in flight:
requests/s, p50/p99 latency and errors. Then overload: `--overload` requests at once against a
replica whose queue is bounded (`max_ongoing_requests` + `max_queued_requests`): how many answer
503, how fast, and whether every request came back (none stuck).

Models: random-init `tiny` DialogLM (4 layers, 256 wide) and a FastMLM classifier of the same width,
saved with `save_pretrained` and loaded from their directories. Random weights rarely emit eos, so
every chat request decodes `max_tokens` tokens: a fixed amount of work per request.

Run: `.venv/bin/python benchmarks/serve.py [--quick]`. Target: at concurrency 32 the batched chatbot
serves >= 4x the requests/s of the unbatched one, with zero errors.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks.common import emit, print_table, result
except ImportError:  # run as a script: common puts the repo root on sys.path
    from common import emit, print_table, result

CHARS = "你好我是谁今天天气很不错吃饭了吗喜欢讨厌电影音乐开心难过哈嗯啊呢吧的一在有人这中大为上个国和也子时道说出要就下以生会自着去"
CHAT_BODY = {"messages": [{"role": "user", "content": "你好，今天天气很不错"}], "max_tokens": 32, "top_p": 1.0}
ATTR_BODY = {"text": "今天天气很不错，我很开心", "steps": 16}


def make_models(root: Path) -> dict[str, str]:
    import torch

    from models.checkpoint import save_pretrained
    from models.classifier import Classifier, ClassifierConfig
    from models.dialog_lm import DialogLM, DialogLMConfig
    from pipelines.tokenizer import CharTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SPK1]", "[SPK2]"]
    (root / "vocab.txt").write_text("\n".join(specials + list(dict.fromkeys(CHARS + "，。"))) + "\n", encoding="utf-8")
    tok = CharTokenizer.from_vocab_file(root / "vocab.txt")
    tok.save(root / "tok")
    torch.manual_seed(0)
    dialog = DialogLM(DialogLMConfig.preset("tiny", vocab_size=tok.vocab_size, pad_id=tok.pad_id, eos_id=tok.sep_id,
                                            max_len=128, dropout=0.0))
    enc = dict(vocab_size=tok.vocab_size, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id, mask_id=tok.mask_id,
               n_layer=4, n_head=4, d_model=256, max_len=128, dropout=0.0)
    clf = Classifier(ClassifierConfig(encoder="fast_mlm", encoder_config=enc, num_classes=2, dropout=0.0))
    save_pretrained(dialog, root / "dialog", tokenizer_dir=root / "tok")
    save_pretrained(clf, root / "classifier", tokenizer_dir=root / "tok")
    return {"dialog": str(root / "dialog"), "classifier": str(root / "classifier")}


def run_config(models: dict, port: int, batching: bool, ongoing: int, queued: int, run_dir: str):
    from liaotian.config import load_run_config

    one = {"min_replicas": 1, "max_replicas": 1}
    section = lambda batch: {"num_cpus": 1, "batching": batching, "max_ongoing_requests": ongoing,  # noqa: E731
                             "max_queued_requests": queued, "max_batch_size": batch, "batch_wait_timeout_s": 0.01,
                             "autoscaling": one}
    return load_run_config(None, {"run_dir": run_dir, "serve": {
        "host": "127.0.0.1", "port": port, "max_new_tokens": 32, "request_timeout_s": 120,
        "chat_model": models["dialog"], "classifier_model": models["classifier"],
        "chat": section(32), "attribution": section(32)}})


async def load(url: str, body: dict, concurrency: int, total: int) -> dict:
    import httpx

    latencies, codes = [], []
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(timeout=180, limits=limits) as client:
        async def one():
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                    codes.append(r.status_code)
                except httpx.HTTPError:
                    codes.append(-1)
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    ok = [c for c in codes if c == 200]
    return {"rps": len(ok) / wall, "p50_s": statistics.median(lat), "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "errors": len(codes) - len(ok), "n": total, "wall_s": wall, "codes": sorted(set(codes))}


async def overload(url: str, body: dict, total: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=total + 8)) as client:
        async def one():
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=body)
                return r.status_code, time.perf_counter() - t0
            except httpx.HTTPError:
                return -1, time.perf_counter() - t0

        t0 = time.perf_counter()
        out = await asyncio.gather(*(one() for _ in range(total)))
        wall = time.perf_counter() - t0
    rejected = sorted(dt for c, dt in out if c == 503)
    return {"sent": total, "ok": sum(c == 200 for c, _ in out), "n503": len(rejected),
            "other": sum(c not in (200, 503) for c, _ in out), "p50_503_s": statistics.median(rejected) if rejected else None,
            "max_503_s": rejected[-1] if rejected else None, "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (CI smoke run)")
    ap.add_argument("--overload", type=int, default=200, help="requests sent at once in the overload phase")
    args = ap.parse_args()
    counts = {1: 8, 8: 32, 32: 64} if args.quick else {1: 16, 8: 64, 32: 128}

    from ray import serve

    from liaotian.cluster import connect
    from liaotian.config import RayConfig
    from serve.app import run

    connect(RayConfig(include_dashboard=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    targets = {"chat": (f"{base}/v1/chat/completions", CHAT_BODY), "attribution": (f"{base}/v1/attributions", ATTR_BODY)}
    measured: dict = {}
    over = None
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        try:
            for batching in (True, False):
                run(run_config(models, port, batching, ongoing=64, queued=256, run_dir=tmp), blocking=False)
                for name, (url, body) in targets.items():
                    asyncio.run(load(url, body, 4, 4))  # warm-up
                    for c, n in counts.items():
                        m = asyncio.run(load(url, body, c, n))
                        measured[(name, batching, c)] = m
                        print(f"{name:<12} batching={'on ' if batching else 'off'} c={c:<3} {m['rps']:8.2f} req/s  "
                              f"p50 {m['p50_s']:.3f}s  p99 {m['p99_s']:.3f}s  errors {m['errors']}", flush=True)
            # overload: batching on, a small bound (8 in flight + 8 queued), many requests at once
            run(run_config(models, port, True, ongoing=8, queued=8, run_dir=tmp), blocking=False)
            asyncio.run(load(targets["chat"][0], CHAT_BODY, 2, 2))
            over = asyncio.run(overload(targets["chat"][0], CHAT_BODY, args.overload))
            print(f"overload: {over}", flush=True)
        finally:
            serve.shutdown()

    rows, notes = [], []
    for name in targets:
        for c in counts:
            on, off = measured[(name, True, c)], measured[(name, False, c)]
            rows.append(result(f"{name} c={c} batching", on["rps"], "req/s", f"{name} c={c} no batching", off["rps"],
                               p50_s=on["p50_s"], p99_s=on["p99_s"], errors=on["errors"],
                               anchor_p50_s=off["p50_s"], anchor_p99_s=off["p99_s"], anchor_errors=off["errors"]))
            notes.append(f"{name} c={c}: p50/p99 {on['p50_s']:.3f}/{on['p99_s']:.3f}s batching vs "
                         f"{off['p50_s']:.3f}/{off['p99_s']:.3f}s not; errors {on['errors']}/{off['errors']}")
    if over and over["n503"]:
        rows.append(result("overload 503 max latency", over["max_503_s"], "s", "request_timeout_s", 120.0,
                           lower_is_better=True, **over))
    notes.append(f"overload: {over}")
    print_table("Ray Serve: batching on vs off (1 replica each, loopback)", rows, notes)
    chat32 = measured[("chat", True, 32)]
    target_met = (rows[2]["ratio"] >= 4.0 and chat32["errors"] == 0 and measured[("chat", False, 32)]["errors"] == 0)
    emit("serve", rows, target_met=target_met, overload=over, requests=counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
