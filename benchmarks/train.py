"""Ray Train throughput (issue 6): tokens/s with 1 and 2 workers, time waiting for data, padding share.

The same `pipelines.train_job.run` a user runs, on the same data and model config, with 1 and then 2 CPU
workers on one local Ray cluster; tokens/s (real tokens, padding excluded) and the share of step time
spent waiting for the next batch come from the runs' own reports (the first report, which includes
worker start-up, is left out). The padding share with and without length bucketing is computed over
the whole training split with the batching code the workers use.

Data: `--data DIR` (a `liaotian data dialog` dir), else synthetic dialogues with chit-chat-like
utterance lengths (log-normal, 2-6 turns) written as contract-2 shards.

Run: `.venv/bin/python benchmarks/train.py [--quick] [--data DIR]`. On a 2-core machine the 2-worker
run cannot be faster than 1 worker by much: both workers share the same cores (DDP adds all-reduce).
"""
from __future__ import annotations

import argparse
import json
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


def synthetic_dialogues(root: Path, n_train: int, seed: int = 0) -> Path:
    """Contract-2 dialogue shards with realistic length spread (most samples short, a long tail)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from liaotian.pipelines.tokenizer import build_vocab, count_chars

    tok = build_vocab(count_chars([CHARS]))
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", 256)):
        ids, seg, lm = [], [], []
        for _ in range(n):
            row_ids, row_seg, row_lm = [tok.cls_id], [0], [0]
            for turn in range(int(rng.integers(2, 7))):
                length = int(np.clip(rng.lognormal(2.2, 0.6), 1, 40))
                body = [tok.token_to_id[CHARS[int(i)]] for i in rng.integers(len(CHARS), size=length)] + [tok.sep_id]
                if len(row_ids) + len(body) > 128:
                    break
                row_ids += body; row_seg += [turn % 2] * len(body); row_lm += [int(turn > 0)] * len(body)
            ids.append(row_ids); seg.append(row_seg); lm.append(row_lm)
        (root / split).mkdir(parents=True)
        pq.write_table(pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())), "segment_ids": pa.array(seg, pa.list_(pa.int8())),
                                 "loss_mask": pa.array(lm, pa.list_(pa.int8()))}), root / split / "part-00000.parquet")
    tok.save(root)
    (root / "manifest.json").write_text(json.dumps({"kind": "dialog"}), encoding="utf-8")
    return root


def padding_shares(data_dir: Path, batch_size: int, window: int) -> tuple[float, float]:
    """(without bucketing, with bucketing) over the training split, windows as the workers cut them."""
    import numpy as np
    import pyarrow.parquet as pq

    from liaotian.pipelines.collate import bucket_indices, padding_share

    lengths = [len(x) for x in pq.read_table(data_dir / "train", columns=["input_ids"]).column("input_ids").to_pylist()]
    rng = np.random.default_rng(0)
    lengths = [lengths[i] for i in rng.permutation(len(lengths))]  # the shuffle the workers see
    out = []
    for bucket in (False, True):
        batches = []
        for start in range(0, len(lengths), batch_size * window):
            win = lengths[start:start + batch_size * window]
            batches += [[win[i] for i in b] for b in bucket_indices(win, batch_size, rng, bucket)]
        out.append(padding_share(batches))
    return out[0], out[1]


def train_once(data_dir: Path, storage: Path, workers: int, steps: int, batch_size: int, model: dict, bucket: bool) -> dict:
    from liaotian.config import load_run_config
    from liaotian.pipelines.train_job import run

    job = {"model": model, "max_steps": steps, "batch_size": batch_size, "eval_every": steps, "checkpoint_every": steps,
           "log_every": max(1, steps // 5), "eval_batches": 2, "bucket_by_length": bucket,
           "optim": {"lr": 1e-3, "warmup_steps": 2}, "scaling": {"num_workers": workers}}
    cfg = load_run_config(None, {"run_dir": str(storage), "precision": "fp32", "train.dialog": job})
    t0 = time.perf_counter()
    res = run("dialog", cfg, data_dir=data_dir, export_dir=storage / "model")
    wall = time.perf_counter() - t0
    reports = [json.loads(line) for line in (Path(res.run_path) / "metrics.jsonl").read_text().splitlines()][1:]
    return {"tokens_per_s": statistics.mean(m["tokens_per_s"] for m in reports),
            "data_wait_share": statistics.mean(m["data_wait_share"] for m in reports), "wall_s": wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller model, fewer steps")
    ap.add_argument("--data", type=Path, help="a `liaotian data dialog` dir (default: synthetic shards)")
    args = ap.parse_args(argv)
    from liaotian.cluster import connect
    from liaotian.config import RayConfig

    steps, batch_size, window = (30, 16, 16) if args.quick else (60, 32, 16)
    model = {"preset": "tiny", "n_layer": 2, "d_model": 128, "n_head": 4, "dropout": 0.0} if args.quick else {"preset": "tiny", "dropout": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = args.data or synthetic_dialogues(tmp / "data", 4000)
        pad_plain, pad_bucketed = padding_shares(data_dir, batch_size, window)
        connect(RayConfig(include_dashboard=False))
        runs = {w: train_once(data_dir, tmp / f"w{w}", w, steps, batch_size, model, True) for w in (1, 2)}
        plain = train_once(data_dir, tmp / "plain", 2, steps, batch_size, model, False)
    rows = [
        result("tokens/s, 2 workers", runs[2]["tokens_per_s"], "tok/s", "tokens/s, 1 worker", runs[1]["tokens_per_s"]),
        result("tokens/s, 2 workers, bucketed", runs[2]["tokens_per_s"], "tok/s", "tokens/s, 2 workers, unbucketed", plain["tokens_per_s"]),
        result("data wait share, 1 worker", runs[1]["data_wait_share"], "share", "whole step time", 1.0, lower_is_better=True),
        result("data wait share, 2 workers", runs[2]["data_wait_share"], "share", "whole step time", 1.0, lower_is_better=True),
        result("padding share, bucketed", pad_bucketed, "share", "padding share, unbucketed", pad_plain, lower_is_better=True),
    ]
    notes = [f"{steps} steps x batch {batch_size}/worker, model {model}, window {window} batches",
             f"wall time incl. Ray start-up and export: 1 worker {runs[1]['wall_s']:.0f}s, 2 workers {runs[2]['wall_s']:.0f}s",
             "tokens/s counts real tokens only; both workers share this machine's cores"]
    print_table("Ray Train: throughput, data wait, padding", rows, notes)
    emit("train", rows, steps=steps, batch_size=batch_size, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
