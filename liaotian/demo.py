"""`liaotian demo`: every stage in order on the embedded corpora, reusing what is already built.

The demo only sequences the stages' own CLI commands (in this process, sharing one Ray session), so
it exercises exactly what a user types. A step is skipped when its artefact exists, unless --fresh.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from liaotian.cli import add_common_arguments, load_config_from_args


@dataclass
class Step:
    name: str
    argv: list[str]  # the `liaotian ...` command line, without --config/--set (appended)
    artefact: Callable[[object], Path]  # exists => the step is done


def demo_steps(cfg) -> list[Step]:
    p = cfg.paths
    return [
        Step("data text", ["data", "text"], lambda c: p.data("text") / "manifest.json"),
        Step("data dialog", ["data", "dialog"], lambda c: p.data("dialog") / "manifest.json"),
        Step("data sentiment", ["data", "sentiment"], lambda c: p.data("sentiment") / "manifest.json"),
        Step("train mlm (fast MLM, 2 workers)", ["train", "mlm"], lambda c: p.model("mlm") / "config.json"),
        Step("train dialog (dialogue LM, 2 workers)", ["train", "dialog"], lambda c: p.model("dialog") / "config.json"),
        Step("tune (losses x regularisers)", ["tune"], lambda c: p.model("sentiment") / "config.json"),
        Step("eval dialog (decoding comparison)", ["eval", "dialog", str(p.model("dialog"))], lambda c: p.eval / "report.json"),
    ]


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def run_steps(steps: list[Step], cfg, common: list[str], fresh: bool, start: float) -> list[str]:
    """Each step's own progress lines come from the stage; no time-left guess here (stage times vary
    5x with the machine's load, and early stopping ends training when it ends)."""
    from liaotian.cli import main as cli_main

    ran = []
    for i, step in enumerate(steps, 1):
        done = step.artefact(cfg).exists()
        if done and not fresh:
            print(f"[demo {i}/{len(steps)}] {step.name}: already built ({step.artefact(cfg)}), skipped", flush=True)
            continue
        print(f"\n[demo {i}/{len(steps)}] {step.name}  (elapsed {_fmt(time.time() - start)})", flush=True)
        print(f"  $ liaotian {' '.join(step.argv + common)}", flush=True)
        t0 = time.time()
        argv = step.argv + common + (["--overwrite"] if step.argv[0] == "data" else [])
        rc = cli_main(argv)
        if rc != 0:
            raise SystemExit(f"demo: step '{step.name}' failed with exit code {rc}")
        print(f"[demo {i}/{len(steps)}] {step.name}: done in {_fmt(time.time() - t0)}", flush=True)
        ran.append(step.argv[0])
    return ran


def show_eval(cfg) -> None:
    """The eval table of an earlier run (a step that runs prints its own)."""
    table = cfg.paths.eval / "report.md"
    if table.exists():
        print(f"\nDecoding comparison (liaotian eval dialog, {table}):")
        print(table.read_text(encoding="utf-8"))


EXPECT = """
What to expect from these models: the dialogue LM learned from about 470 short chatterbot-corpus
dialogues in a few minutes of CPU time, and training stopped at its best validation loss{ppl}.
At that size it answers greetings and common phrases, and much else off the point: it shows the
system end to end (data, training, tuning, serving, attribution), not a conversationalist. The
README section "Trained on real dialogue" shows what the same code learns from LCCC."""


def expectations(cfg) -> str:
    ppl = ""
    report = cfg.paths.eval / "report.json"
    if report.exists():
        value = json.loads(report.read_text(encoding="utf-8")).get("perplexity")
        value = value.get("perplexity") if isinstance(value, dict) else value
        if isinstance(value, (int, float)):
            ppl = f" (test perplexity {value:.0f})"
    return EXPECT.format(ppl=ppl)


def _as_messages(history: list[str]) -> list[dict]:
    """Alternate roles so that the last utterance is the user's."""
    n = len(history)
    return [{"role": "user" if (n - 1 - j) % 2 == 0 else "assistant", "content": u} for j, u in enumerate(history)]


def serve_and_probe(cfg, common: list[str], keep_serving: bool) -> None:
    """Start both applications, send a few requests, print replies and an attribution."""
    import httpx

    from ray import serve as ray_serve

    from liaotian.serve.app import run as serve_run
    from liaotian.serve.explain import render_terminal

    urls = serve_run(cfg, blocking=False)
    base = urls["chat"].rstrip("/")
    headers = {"Authorization": f"Bearer {cfg.serve.api_key}"} if cfg.serve.api_key else {}
    with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
        for history in (["你好"], ["今天天气怎么样？"], ["你喜欢什么电影", "我喜欢科幻片", "为什么呢"]):
            r = client.post("/v1/chat/completions", json={
                "model": "liaotian", "messages": _as_messages(history),
                "max_tokens": 32, "seed": 0})
            r.raise_for_status()
            reply = r.json()["choices"][0]["message"]["content"]
            print(f"  chat  {' / '.join(history)}  ->  {reply}")
        review = "这个手机质量很好，物流也快，非常满意"
        r = client.post("/v1/attributions", json={"text": review})
        r.raise_for_status()
        att = r.json()
        print(f"\n  attribution of the review «{review}»:")
        # prediction, the classifier's test accuracy, F(x), F(baseline) and what the colours (or signs) mean;
        # colour only on a terminal: no escape codes in a log file
        print("  " + render_terminal(att, colour=sys.stdout.isatty()).replace("\n", "\n  "), flush=True)
    if not keep_serving:
        ray_serve.shutdown()
        print("\nServers stopped (--no-serve); `liaotian serve` starts them again, with the web page.", flush=True)
        return
    print(f"\nThe web page (chat + explain) is at {base}/", flush=True)
    print("Serving until Ctrl-C ...", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        ray_serve.shutdown()


def run(args: argparse.Namespace) -> int:
    cfg = load_config_from_args(args)
    common = (["--config", args.config] if args.config else []) + [x for o in args.overrides for x in ("--set", o)]
    run_dir = Path(cfg.run_dir)
    if args.fresh and run_dir.exists():
        print(f"demo: --fresh: removing {run_dir}", flush=True)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from liaotian.config import save
    save(cfg, run_dir / "config.yaml")
    from liaotian.cluster import connect
    t0 = time.time()
    connect(cfg.ray)
    print(f"demo: Ray ready in {time.time() - t0:.1f}s; artefacts under {run_dir}/", flush=True)
    ran = run_steps(demo_steps(cfg), cfg, common, fresh=args.fresh, start=t0)
    if "eval" not in ran:
        show_eval(cfg)
    print(expectations(cfg), flush=True)
    if args.no_serve and args.skip_serve_probe:
        return 0
    serve_and_probe(cfg, common, keep_serving=not args.no_serve)
    print(f"demo: finished in {_fmt(time.time() - t0)}", flush=True)
    return 0


def add_cli(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--fresh", action="store_true", help="delete the run directory and rebuild every stage")
    parser.add_argument("--no-serve", action="store_true", help="stop the servers after the probe requests instead of serving until Ctrl-C")
    parser.add_argument("--skip-serve-probe", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(run=run)
