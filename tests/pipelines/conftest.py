"""Fixtures of the training tests: tiny preprocessed data dirs written directly per contract 2.

Built with pyarrow and the tokenizer only (not `pipelines/prepare.py`), so the training tests pin the
shard contract itself. The corpora are learnable on purpose: each prompt has one fixed response and
each review's label follows its words, so a few dozen steps visibly lower the validation loss.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

PAIRS = [("你好", "你好呀很高兴认识你"), ("今天天气怎么样", "天气很好阳光明媚"), ("你吃饭了吗", "我吃过了谢谢"),
         ("晚安", "晚安祝你好梦"), ("你喜欢什么电影", "我喜欢科幻电影"), ("周末去哪里玩", "去公园散步吧"),
         ("最近忙吗", "有点忙但是很充实"), ("我有点累", "早点休息吧")]
POSITIVE, NEGATIVE = "好棒喜欢满意赞快", "差烂失望糟糕退慢"
FILLER = "这个东西手机物流质量服务"
SPLITS = {"train": 320, "valid": 64, "test": 64}


def _dialogue_rows(tok, n, rng):
    rows = {"input_ids": [], "segment_ids": [], "loss_mask": [], "dialogue_id": [], "n_turns": []}
    for k in range(n):
        turns = []
        for _ in range(int(rng.integers(1, 3))):
            turns += list(PAIRS[int(rng.integers(len(PAIRS)))])
        ids, seg, lm = [tok.cls_id], [0], [0]
        for i, utt in enumerate(turns):
            body = tok.encode(utt) + [tok.sep_id]
            ids += body; seg += [i % 2] * len(body); lm += [int(i > 0)] * len(body)
        rows["input_ids"].append(ids); rows["segment_ids"].append(seg); rows["loss_mask"].append(lm)
        rows["dialogue_id"].append(f"d{k}"); rows["n_turns"].append(len(turns))
    return pa.table({"input_ids": pa.array(rows["input_ids"], pa.list_(pa.int32())),
                     "segment_ids": pa.array(rows["segment_ids"], pa.list_(pa.int8())),
                     "loss_mask": pa.array(rows["loss_mask"], pa.list_(pa.int8())),
                     "dialogue_id": pa.array(rows["dialogue_id"], pa.string()),
                     "n_turns": pa.array(rows["n_turns"], pa.int16())})


def _review(rng, label):
    words = POSITIVE if label else NEGATIVE
    chars = [FILLER[int(i)] for i in rng.integers(len(FILLER), size=int(rng.integers(2, 12)))]
    chars += [words[int(i)] for i in rng.integers(len(words), size=int(rng.integers(1, 4)))]
    rng.shuffle(chars)
    return "".join(chars)


def _sentiment_rows(tok, n, rng, split):
    labels = (rng.random(n) < (0.25 if split == "train" else 0.5)).astype(np.int32)  # class 1 is the minority in train
    ids = [[tok.cls_id] + tok.encode(_review(rng, int(y))) + [tok.sep_id] for y in labels]
    return pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())), "label": pa.array(labels, pa.int32())})


def _text_rows(tok, n, rng):
    texts = [u for pair in PAIRS for u in pair]
    ids = [[tok.cls_id] + tok.encode(texts[int(rng.integers(len(texts)))]) + [tok.sep_id] for _ in range(n)]
    return pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32()))})


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> dict[str, Path]:
    """{"dialog": dir, "text": dir, "sentiment": dir}: train/valid/test shards, vocab, manifest."""
    from liaotian.pipelines.tokenizer import build_vocab, count_chars

    root = tmp_path_factory.mktemp("train_data")
    tok = build_vocab(count_chars([u for p in PAIRS for u in p] + [POSITIVE, NEGATIVE, FILLER]))
    rng = np.random.default_rng(0)
    out = {}
    for kind in ("dialog", "text", "sentiment"):
        d = root / kind
        manifest = {"kind": kind, "splits": {}}
        for split, n in SPLITS.items():
            table = {"dialog": lambda: _dialogue_rows(tok, n, rng), "text": lambda: _text_rows(tok, n, rng),
                     "sentiment": lambda: _sentiment_rows(tok, n, rng, split)}[kind]()
            (d / split).mkdir(parents=True)
            half = table.num_rows // 2  # two shards per split: the readers see a real multi-file dir
            pq.write_table(table.slice(0, half), d / split / "part-00000.parquet")
            pq.write_table(table.slice(half), d / split / "part-00001.parquet")
            manifest["splits"][split] = table.num_rows
            if kind == "sentiment":
                counts = np.bincount(table.column("label").to_numpy(), minlength=2).tolist()
                manifest.setdefault("class_counts", {})[split] = counts
        if kind == "sentiment":
            manifest.update(num_classes=2, label_names=["negative", "positive"])
        tok.save(d)
        (d / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        out[kind] = d
    return out
