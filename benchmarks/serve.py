"""Ray Serve under load: the chatbot and the attribution service, batching on against off (issue 8).

Both applications run on one local Ray cluster, one replica each (autoscaling off, so batching is the
only difference: same replica count, torch threads, `max_ongoing_requests` and queue bound), on loopback
only. For each setting (batching on, then off, redeployed in the same run) and each concurrency (1, 8,
32), a fixed number of requests is sent with exactly `c` in flight (c closed-loop workers of one
asyncio + aiohttp client in this process; its CPU share is reported): requests/s, p50/p99 latency and
errors. The on/off pair is repeated `--rounds` times (on, off, on, off) and the rounds are pooled, so
both settings see the same drift in the load of this shared machine. Then overload: `--overload` requests at once against a replica whose queue is bounded
(`max_ongoing_requests` + `max_queued_requests`): how many answer 503, how fast, and whether every
request came back (none stuck).

Chat is measured twice: plain JSON replies and the same request streamed (`stream: true`, server-sent
events read to `data: [DONE]`).

Workload: a demo-sized dialogue model (the `tiny` preset, 4 layers x 256, vocabulary 1,302 and window
256 as `liaotian demo` trains) and a FastMLM classifier of the same width, random init, saved with
`save_pretrained` and loaded from their directories. Random weights rarely emit eos, so every chat
request (one user turn, consistent sampling with top_p=1) decodes exactly `--max-tokens` tokens (default
32, a typical chat reply): a fixed amount of work per request. Attribution: adaptive IG of a 12-character
review (`steps` 16). Two ceilings are measured in the same run: in this process, the chat engine's
batch-32 generate against 32 single generates (what batching can give without HTTP), and the HTTP floor
(requests with max_tokens=1 through the same proxy and replica).

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
    from benchmarks.common import best_of, emit, print_table, result
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import best_of, emit, print_table, result

PROMPT = "你好，今天天气很不错"
REVIEW = "今天天气很不错，我很开心"
VOCAB_SIZE = 1302  # the demo dialogue model's vocabulary (chatterbot corpus, char tokenizer)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SPK1]", "[SPK2]"]


def chat_body(max_tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "top_p": 1.0}


ATTR_BODY = {"text": REVIEW, "steps": 16}


def make_models(root: Path) -> dict[str, str]:
    import torch

    from liaotian.models.checkpoint import save_pretrained
    from liaotian.models.classifier import Classifier, ClassifierConfig
    from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
    from liaotian.pipelines.tokenizer import CharTokenizer

    chars = list(dict.fromkeys(PROMPT + REVIEW + "，。？！"))
    chars += [c for c in map(chr, range(0x4E00, 0x9FFF)) if c not in chars][: VOCAB_SIZE - len(SPECIALS) - len(chars)]
    (root / "vocab.txt").write_text("\n".join(SPECIALS + chars) + "\n", encoding="utf-8")
    tok = CharTokenizer.from_vocab_file(root / "vocab.txt")
    tok.save(root / "tok")
    torch.manual_seed(0)
    dialog = DialogLM(DialogLMConfig.preset("tiny", vocab_size=tok.vocab_size, pad_id=tok.pad_id, eos_id=tok.sep_id,
                                            dropout=0.0))
    enc = dict(vocab_size=tok.vocab_size, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id, mask_id=tok.mask_id,
               n_layer=4, n_head=4, d_model=256, max_len=128, dropout=0.0)
    clf = Classifier(ClassifierConfig(encoder="fast_mlm", encoder_config=enc, num_classes=2, dropout=0.0))
    save_pretrained(dialog, root / "dialog", tokenizer_dir=root / "tok")
    save_pretrained(clf, root / "classifier", tokenizer_dir=root / "tok")
    return {"dialog": str(root / "dialog"), "classifier": str(root / "classifier"), "vocab_size": tok.vocab_size}


def run_config(models: dict, port: int, batching: bool, ongoing: int, queued: int, run_dir: str, max_tokens: int,
               batch: int = 32, wait_s: float = 0.01):
    from liaotian.config import load_run_config

    one = {"min_replicas": 1, "max_replicas": 1}
    section = lambda batch: {"num_cpus": 1, "batching": batching, "max_ongoing_requests": ongoing,  # noqa: E731
                             "max_queued_requests": queued, "max_batch_size": batch, "batch_wait_timeout_s": wait_s,
                             "autoscaling": one}
    return load_run_config(None, {"run_dir": run_dir, "serve": {
        "host": "127.0.0.1", "port": port, "max_new_tokens": max(64, max_tokens), "request_timeout_s": 120,
        "chat_model": models["dialog"], "classifier_model": models["classifier"],
        "chat": section(batch), "attribution": section(batch)}})


async def load(url: str, body: dict, concurrency: int, total: int) -> dict:
    """`total` requests, exactly `concurrency` in flight (closed loop); the client's own CPU share too."""
    import aiohttp

    latencies, codes = [], []
    todo = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=180)) as session:
        async def worker():
            for _ in todo:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, json=body) as r:
                        data = await r.read()
                        complete = not body.get("stream") or data.rstrip().endswith(b"data: [DONE]")
                        codes.append(r.status if complete else -2)  # -2: a stream cut short
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    codes.append(-1)
                latencies.append(time.perf_counter() - t0)

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return summarise([{"latencies": latencies, "codes": codes, "wall_s": wall, "cpu_s": cpu}])


def summarise(runs: list[dict]) -> dict:
    """Rounds of one measurement pooled: requests/s = successes / total wall time; latency percentiles
    over every request; the load generator's CPU time as a share of the wall time."""
    lat = sorted(x for r in runs for x in r["latencies"])
    codes = [c for r in runs for c in r["codes"]]
    wall, cpu = sum(r["wall_s"] for r in runs), sum(r["cpu_s"] for r in runs)
    ok = sum(c == 200 for c in codes)
    return {"rps": ok / wall, "p50_s": statistics.median(lat), "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "errors": len(codes) - ok, "n": len(codes), "wall_s": wall, "codes": sorted(set(codes)),
            "client_cpu": cpu / wall, "rounds": [sum(c == 200 for c in r["codes"]) / r["wall_s"] for r in runs],
            "runs": runs}


async def overload(url: str, body: dict, total: int) -> dict:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=total + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=180)) as session:
        async def one():
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body) as r:
                    await r.read()
                    return r.status, time.perf_counter() - t0
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return -1, time.perf_counter() - t0

        t0 = time.perf_counter()
        out = await asyncio.gather(*(one() for _ in range(total)))
        wall = time.perf_counter() - t0
    rejected = sorted(dt for c, dt in out if c == 503)
    return {"sent": total, "ok": sum(c == 200 for c, _ in out), "n503": len(rejected),
            "other": sum(c not in (200, 503) for c, _ in out), "p50_503_s": statistics.median(rejected) if rejected else None,
            "max_503_s": rejected[-1] if rejected else None, "wall_s": wall}


def in_process_ceiling(model_dir: str, max_tokens: int, rows: int = 32, repeats: int = 3) -> dict:
    """The chat engine without Ray or HTTP, one torch thread (as in a replica): `rows` requests as one
    batch against the same requests one at a time (best of `repeats`)."""
    import torch

    from liaotian.serve.api import ChatCompletionRequest
    from liaotian.serve.config import ServeConfig
    from liaotian.serve.engine import ChatEngine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = ServeConfig(max_new_tokens=max(64, max_tokens))
        engine = ChatEngine(model_dir, decode_precision=cfg.decode_precision)  # as the deployment decodes
        items = [engine.prepare(ChatCompletionRequest.model_validate(chat_body(max_tokens)), cfg)
                 for i in range(rows)]
        engine.run_batch(items[:4]), engine.run_batch(items[:1])  # warm-up

        single = best_of(lambda: [engine.run_batch([it]) for it in items], repeats)
        batched = best_of(lambda: engine.run_batch(items), repeats)
    finally:
        torch.set_num_threads(threads)
    return {"rows": rows, "single_s": single, "batch_s": batched, "ratio": single / batched,
            "single_ms_per_token": 1000 * single / rows / max_tokens, "batch_ms_per_step": 1000 * batched / max_tokens}


def attribution_ceiling(classifier_dir: str, rows: int = 32, repeats: int = 2) -> dict:
    """The explainer without Ray or HTTP, one torch thread: `rows` requests as one batch (shared
    forward/backward passes) against the same requests one at a time (best of `repeats`)."""
    import torch

    from liaotian.serve.api import AttributionRequest
    from liaotian.serve.engine import Explainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ex = Explainer(classifier_dir, None)
        items = [ex.prepare(AttributionRequest.model_validate(ATTR_BODY)) for _ in range(rows)]
        ex.explain(items[:2])
        single = best_of(lambda: [ex.explain([it]) for it in items], repeats)
        batched = best_of(lambda: ex.explain(items), repeats)
    finally:
        torch.set_num_threads(threads)
    return {"rows": rows, "single_s": single, "batch_s": batched, "ratio": single / batched}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (CI smoke run)")
    ap.add_argument("--overload", type=int, default=200, help="requests sent at once in the overload phase")
    ap.add_argument("--max-tokens", type=int, default=32, help="new tokens per chat request (default 32)")
    ap.add_argument("--max-batch-size", type=int, default=32, help="@serve.batch max_batch_size (default 32)")
    ap.add_argument("--rounds", type=int, default=2, help="on/off alternations, pooled (default 2)")
    ap.add_argument("--only", choices=["chat", "attribution"], help="measure one service only (chat: with streaming)")
    args = ap.parse_args()
    counts = {1: 8, 8: 32, 32: 64} if args.quick else {1: 16, 8: 64, 32: 192}

    from ray import serve

    from liaotian.cluster import connect
    from liaotian.config import RayConfig
    from liaotian.serve.app import run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    body = chat_body(args.max_tokens)
    targets = {"chat": (f"{base}/v1/chat/completions", body),
               "chat stream": (f"{base}/v1/chat/completions", dict(body, stream=True)),
               "attribution": (f"{base}/v1/attributions", ATTR_BODY)}
    if args.only:
        targets = {k: v for k, v in targets.items() if k.startswith(args.only)}
    measured: dict = {}
    floor: dict = {}
    over = ceiling = None
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        if "chat" in targets:
            ceiling = in_process_ceiling(models["dialog"], args.max_tokens)
            print(f"in-process chat engine, 1 thread: {ceiling}", flush=True)
        attr_ceiling = None
        if "attribution" in targets:
            attr_ceiling = attribution_ceiling(models["classifier"])
            print(f"in-process explainer, 1 thread: {attr_ceiling}", flush=True)
        connect(RayConfig(include_dashboard=False))
        try:
            for rnd in range(args.rounds):  # on, off, on, off...: both settings see the same drift in machine load
                for batching in (True, False):
                    run(run_config(models, port, batching, 64, 256, tmp, args.max_tokens, args.max_batch_size),
                        blocking=False)
                    for name, (url, req) in targets.items():
                        asyncio.run(load(url, req, 4, 8))  # warm-up
                        for c, n in counts.items():
                            m = asyncio.run(load(url, req, c, n))
                            measured.setdefault((name, batching, c), []).extend(m["runs"])
                            print(f"round {rnd + 1} {name:<13} batching={'on ' if batching else 'off'} c={c:<3} "
                                  f"{m['rps']:8.2f} req/s  p50 {m['p50_s']:.3f}s  p99 {m['p99_s']:.3f}s  "
                                  f"errors {m['errors']}  client CPU {100 * m['client_cpu']:.0f}%", flush=True)
                    if "chat" in targets:  # the HTTP floor: one new token per request, same proxy and replica
                        f = asyncio.run(load(targets["chat"][0], chat_body(1), 32, counts[32]))
                        floor.setdefault(batching, []).extend(f["runs"])
                        print(f"round {rnd + 1} HTTP floor (max_tokens=1) batching={'on ' if batching else 'off'} c=32 "
                              f"{f['rps']:8.2f} req/s ({1000 / f['rps']:.1f} ms/request)", flush=True)
            measured = {k: summarise(v) for k, v in measured.items()}
            floor = {k: summarise(v) for k, v in floor.items()}
            if "chat" in targets:  # overload: batching on, a small bound (8 in flight + 8 queued), many requests at once
                run(run_config(models, port, True, 8, 8, tmp, args.max_tokens), blocking=False)
                asyncio.run(load(targets["chat"][0], body, 2, 2))
                over = asyncio.run(overload(targets["chat"][0], body, args.overload))
                print(f"overload: {over}", flush=True)
        finally:
            serve.shutdown()

    rows, notes = [], []

    def decode_precision() -> str:
        from liaotian.models.precision import resolve_precision
        from liaotian.serve.config import ServeConfig

        name = ServeConfig().decode_precision
        return f"{name} -> {'bf16' if resolve_precision(name) is not None else 'fp32'} (serve.decode_precision)"

    notes.append(f"workload: chat = 1 user turn ({len(PROMPT)} chars), max_tokens={args.max_tokens} (random weights: every "
                 f"reply is {args.max_tokens} tokens), top_p=1, consistent sampling; DialogLM tiny 4x256, vocab "
                 f"{models['vocab_size']}, decoding weights {decode_precision()}; attribution = IG steps 16 on a {len(REVIEW)}-char text, FastMLM "
                 f"classifier 4x256; 1 replica per app, num_cpus=1, max_ongoing_requests=64, max_queued_requests=256, "
                 f"max_batch_size={args.max_batch_size}, batch_wait_timeout_s=0.01; requests per concurrency {counts} "
                 f"in each of {args.rounds} rounds (on, off, on, off...), pooled; 'chat stream' = the chat request with "
                 f"stream=true (server-sent events, the whole stream read)")
    for name in targets:
        for c in counts:
            on, off = measured[(name, True, c)], measured[(name, False, c)]
            rows.append(result(f"{name} c={c} batching", on["rps"], "req/s", f"{name} c={c} no batching", off["rps"],
                               p50_s=on["p50_s"], p99_s=on["p99_s"], errors=on["errors"], client_cpu=on["client_cpu"],
                               rounds_rps=on["rounds"], anchor_p50_s=off["p50_s"], anchor_p99_s=off["p99_s"],
                               anchor_errors=off["errors"], anchor_client_cpu=off["client_cpu"],
                               anchor_rounds_rps=off["rounds"]))
            notes.append(f"{name} c={c}: p50/p99 {on['p50_s']:.3f}/{on['p99_s']:.3f}s batching vs "
                         f"{off['p50_s']:.3f}/{off['p99_s']:.3f}s not; errors {on['errors']}/{off['errors']}; "
                         f"load-generator CPU {100 * on['client_cpu']:.0f}%/{100 * off['client_cpu']:.0f}% of one core")
    if ceiling:
        rows.append(result("in-process chat batch-32 generate", ceiling["batch_s"], "s", "32 single generates",
                           ceiling["single_s"], lower_is_better=True, **ceiling))
        notes.append(f"ceiling without HTTP: batch-32 generate {1000 * ceiling['batch_s']:.0f} ms vs 32 single generates "
                     f"{1000 * ceiling['single_s']:.0f} ms = {ceiling['ratio']:.2f}x ({ceiling['single_ms_per_token']:.2f} ms "
                     f"per token alone, {ceiling['batch_ms_per_step']:.2f} ms per batch-32 step)")
    if attr_ceiling:
        rows.append(result("in-process IG batch-32", attr_ceiling["batch_s"], "s", "32 single IG explanations",
                           attr_ceiling["single_s"], lower_is_better=True, **attr_ceiling))
        notes.append(f"attribution ceiling without HTTP: 32 IG requests as one batch {1000 * attr_ceiling['batch_s']:.0f} ms "
                     f"vs one by one {1000 * attr_ceiling['single_s']:.0f} ms = {attr_ceiling['ratio']:.2f}x (each request "
                     f"is already a batch of interpolation points: compute-bound either way)")
    for batching, f in floor.items():
        notes.append(f"HTTP floor, batching {'on' if batching else 'off'}: max_tokens=1 at c=32 = {f['rps']:.1f} req/s, "
                     f"{1000 / f['rps']:.1f} ms per request of proxy + replica + client on 2 cores")
    if over and over["n503"]:
        rows.append(result("overload 503 max latency", over["max_503_s"], "s", "request_timeout_s", 120.0,
                           lower_is_better=True, **over))
    notes.append(f"overload: {over}")
    print_table("Ray Serve: batching on vs off (1 replica each, loopback)", rows, notes)
    target_met = None
    if "chat" in targets:
        chat32 = next(r for r in rows if r["name"] == "chat c=32 batching")
        target_met = (chat32["ratio"] >= 4.0 and chat32["errors"] == 0 and chat32["anchor_errors"] == 0)
    emit("serve", rows, target_met=target_met, overload=over, requests=counts, rounds=args.rounds,
         max_tokens=args.max_tokens, ceiling=ceiling, attribution_ceiling=attr_ceiling,
         http_floor={("on" if k else "off"): {x: y for x, y in v.items() if x != "runs"} for k, v in floor.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
