"""Throughput of `liaotian data dialog` vs a CDial-GPT-style single-process BertTokenizer reference.

Generates N synthetic LCCC-format dialogues (2-15 utterances, mean ~3.7, ~8 characters each, a space
between characters), runs the Ray Data pipeline on them (Ray started beforehand, and a small warm-up
job run to start the worker processes; both reported apart), and times the reference —
`transformers.BertTokenizer` per utterance plus the same sample assembly — on a subsample (its rate is per dialogue, so it extrapolates linearly). Peak memory is
the sampled RSS of this process and every Ray worker, at N/10 and at N, to show it stays flat.
    .venv/bin/python benchmarks/preprocess.py --n 20000
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import common  # noqa: F401
from common import emit, print_table, result


def synth(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)] + list("，。？！")
    with open(path, "w", encoding="utf-8") as f:  # streamed: never the whole corpus in memory
        f.write("[\n")
        for i in range(n):
            k = min(15, 2 + int(rng.expovariate(1 / 1.7)))  # 2..15, mean ~3.7
            d = [" ".join(rng.choices(chars, k=max(1, int(rng.gauss(8, 3))))) for _ in range(k)]
            f.write(("," if i else "") + json.dumps(d, ensure_ascii=False) + "\n")
        f.write("]\n")


def _rss_tree(root: int) -> int:
    """RSS bytes of `root` and all its descendants, from /proc (no psutil)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(d.name))
            rss[int(d.name)] = int(fields[21]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


PAGE = __import__("os").sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the RSS of this process and its descendants (Ray's raylet and workers) every 0.2 s."""

    def __init__(self):
        import os
        self.pid, self.peak, self.stop = os.getpid(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, _rss_tree(self.pid))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def reference_rate(path: Path, vocab: Path, n: int) -> float:
    """Dialogues/s of the CDial-GPT way: BertTokenizer per utterance, then [CLS] u1 [SEP] ... ids."""
    from transformers import BertTokenizer

    tok = BertTokenizer(str(vocab), do_lower_case=True)
    dialogues = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip().lstrip(",")
            if line.startswith("[\""):
                dialogues.append(json.loads(line))
                if len(dialogues) >= n:
                    break
    t = time.perf_counter()
    for d in dialogues:
        ids, seg = [tok.cls_token_id], [0]
        for i, u in enumerate(d):
            u_ids = tok.convert_tokens_to_ids(tok.tokenize(u.replace(" ", "")))
            ids += u_ids + [tok.sep_token_id]
            seg += [i % 2] * (len(u_ids) + 1)
    return len(dialogues) / (time.perf_counter() - t)


def run_pipeline(path: Path, out: Path, **cfg):
    from liaotian.pipelines.config import DialogDataConfig
    from liaotian.pipelines.prepare import run_dialog

    with PeakRSS() as mem:
        t = time.perf_counter()
        m = run_dialog(DialogDataConfig(inputs=[str(path)], batch_size=8192, **cfg), out, overwrite=True)
        seconds = time.perf_counter() - t
    return m, seconds, mem.peak


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="dialogues at full size (memory is also taken at n/10)")
    ap.add_argument("--reference-n", type=int, default=20_000, help="dialogues the reference is timed on")
    args = ap.parse_args(argv)

    from liaotian.cluster import connect
    from liaotian.config import RayConfig

    tmp = Path(tempfile.mkdtemp(prefix="liaotian-bench-"))
    small, full, warm = tmp / "small.json", tmp / "full.json", tmp / "warm.json"
    synth(small, max(1, args.n // 10))
    synth(full, args.n)
    synth(warm, 20_000, seed=1)
    t = time.perf_counter()
    connect(RayConfig(include_dashboard=False))
    startup = time.perf_counter() - t
    # Start-up, part 2: one small job, cut into many small read tasks, starts as many worker processes
    # (and their imports) as the cluster runs at once; every later job reuses them. Timed and reported
    # apart, like Ray's own start-up.
    t = time.perf_counter()
    run_pipeline(warm, tmp / "out_warm", range_bytes=64 << 10)
    warmup = time.perf_counter() - t
    m_small, s_small, mem_small = run_pipeline(small, tmp / "out_small")
    m, seconds, mem = run_pipeline(full, tmp / "out")
    rate = m.dialogues_in / seconds
    ref = reference_rate(full, tmp / "out" / "vocab.txt", min(args.reference_n, args.n))
    rows = [
        result("pipeline dialogues/s", rate, "dlg/s", "BertTokenizer reference", ref),
        result("pipeline dialogues/s at n/10", m_small.dialogues_in / s_small, "dlg/s", "BertTokenizer reference", ref),
        result("peak RSS at n", mem / 2**20, "MiB", "peak RSS at n/10", mem_small / 2**20, lower_is_better=True),
    ]
    notes = [f"n={args.n}: {seconds:.1f}s, {m.samples_out} samples, vocab {m.vocab_size}; Ray start-up {startup:.1f}s and "
             f"worker warm-up (a 20,000-dialogue job) {warmup:.1f}s, not counted",
             f"reference timed on {min(args.reference_n, args.n)} dialogues, rate extrapolated",
             f"memory = sampled RSS of the driver + Ray processes (object store included)"]
    print_table("benchmarks/preprocess.py: liaotian data dialog", rows, notes)
    emit("preprocess", rows, n=args.n, seconds=seconds, startup_s=startup, warmup_s=warmup)


if __name__ == "__main__":
    main()
