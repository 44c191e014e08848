"""`liaotian data dialog|sentiment|text`: corpora -> Parquet shards with Ray Data (the only Ray in pipelines' data path).

The dialog job reads in one direction, read -> clean -> encode -> shards:
  1. plan: a plain LCCC JSON file is cut into byte ranges (`readers.lccc_plan`); every other input
     (and every split of an object of splits) is one read unit.
  2. one Ray Data pass: `from_items(read specs)` -> `map_batches` reads a range or unit in blocks,
     cleans (`cleaning.clean_dialogue_lists`) and encodes (`dialogue.encode_piece_array`) each block
     -> `write_parquet(_work/clean)`. Each block gives sample rows (token ids as code points: a
     character is one token whatever the vocabulary), rejected rows, and ONE counts row of its own
     (`row_kind` says which): records read, cleaning and truncation counts, the sparse code point
     counts of the kept text, and why a range fell back to the careful reader.
  3. driver: positions (each range's first index, once every range is counted), duplicates (the
     64-bit content keys of first samples, sorted once, see `find_duplicates`), vocabulary (the
     counts rows summed, or the user's vocab.txt).
  4. a second Ray Data pass writes the shards `train/ valid/ test/` from groups of work files
     (duplicates left out, code points -> ids through one lookup table); the driver writes
     `rejected/*.jsonl` and the manifest.
A bug in a batch kernel fails the job with its traceback (no silent fall back to a slower path); a
byte range that msgspec cannot decode is read record by record, counted in `ranges_fallen_back` and
logged with its reason.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from liaotian.pipelines import readers
from liaotian.pipelines.cleaning import clean_dialogue_lists
from liaotian.pipelines.config import DialogDataConfig
from liaotian.pipelines.dialogue import encode_piece_array
from liaotian.pipelines.schema import DIALOG_SCHEMA, Manifest, RejectedRecord
from liaotian.pipelines.shards import (CLEAN_COUNTERS, ReadInfo, check_output_dir, input_bytes, input_info, read_specs, read_units,
                                       tokenizer_for, write_rejected, write_sample_shards, write_work_files)
from liaotian.pipelines.tokenizer import CLS_MARK, SEP_MARK, _WHITESPACE_CPS, codepoint_counts

log = logging.getLogger(__name__)
TRUNC_COUNTERS = ("trunc_utterances", "trunc_context")
# The work files of the dialog job: sample rows, rejected rows and one counts row per block.
WORK_SCHEMA = pa.schema([
    ("row_kind", pa.string()), ("range_id", pa.int64()), ("position", pa.int64()), ("order", pa.int64()),
    ("source", pa.string()), ("split", pa.string()), ("key", pa.int64()),
    ("input_ids", pa.list_(pa.int32())), ("segment_ids", pa.list_(pa.int8())), ("loss_mask", pa.list_(pa.int8())),
    ("n_turns", pa.int16()), ("new_dialogue", pa.int8()), ("pieces", pa.list_(pa.list_(pa.string()))),
    ("reason", pa.string()), ("detail", pa.string()), ("record", pa.string()),
    ("records", pa.int64()), *[(name, pa.int64()) for name in CLEAN_COUNTERS + TRUNC_COUNTERS],
    ("vocab_cp", pa.list_(pa.int32())), ("vocab_count", pa.list_(pa.int64())), ("fallback", pa.string()), ("plan_error", pa.string()),
])


# ------------------------------------------------------------------ pass 1: read -> clean -> encode (one Ray Data task per range)

def clean_batch(batch: pa.Table, max_chars: int, valid_fraction: float, test_fraction: float, counts: Counter) -> pa.Table:
    """Raw records -> cleaned pieces + key + split, or the rejection (cleaning counts added to `counts`)."""
    n = batch.num_rows
    reason = batch.column("reason").combine_chunks()
    ok = np.asarray(reason.is_null())
    got = clean_dialogue_lists(batch.column("utterances").combine_chunks().filter(pa.array(ok)), max_chars, counts)
    idx = np.flatnonzero(ok)
    kept = np.zeros(n, bool)
    kept[idx] = np.asarray(got["key"].is_valid())
    take = None
    if len(idx) != n:  # reader rejections in the batch: cleaned rows back to their places (null elsewhere)
        scatter = np.full(n, -1, np.int64)
        scatter[idx] = np.arange(len(idx))
        take = pa.array(scatter, pa.int64(), mask=scatter < 0)
    key = got["key"] if take is None else got["key"].take(take)
    short = ok & ~kept  # nothing left after cleaning
    reasons = pc.if_else(pa.array(short), "too_few_utterances", reason)
    details = pc.if_else(pa.array(short), "fewer than 2 non-empty utterances in a row after cleaning",
                         batch.column("detail").combine_chunks())
    records = batch.column("record").combine_chunks()
    if short.any():
        original = batch.column("utterances").combine_chunks().filter(pa.array(short)).to_pylist()
        records = records.to_numpy(zero_copy_only=False).astype(object)
        records[short] = [json.dumps(u, ensure_ascii=False) for u in original]
        records = pa.array(records, pa.string())
    keys = np.asarray(key.fill_null(0), np.int64)
    u = (keys % 1_000_003) / 1_000_003  # shards.assign_split, vectorised (same split for the same key)
    split_of_key = np.where(u < test_fraction, "test", np.where(u < test_fraction + valid_fraction, "valid", "train"))
    split = pc.if_else(pa.array(kept & np.asarray(batch.column("split").is_null())), pa.array(split_of_key, pa.string()),
                       batch.column("split").combine_chunks())
    range_id = np.asarray(batch.column("range_id"), dtype=np.int64)
    position = np.asarray(batch.column("position"), dtype=np.int64)
    return pa.table({
        "range_id": batch.column("range_id"), "position": batch.column("position"),
        "order": pa.array((range_id << 32) | position, pa.int64()),  # input order: the first copy wins
        "source": batch.column("source"), "split": split, "key": key,
        "pieces": got["pieces"] if take is None else got["pieces"].take(take),
        "offsets": got["offsets"] if take is None else got["offsets"].take(take),
        "reason": reasons, "detail": details, "record": records,
    })


def codepoint_counts_of(pieces: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Sparse code point counts of every utterance in `pieces` (list<list<string>>, nulls skipped)."""
    flat = pieces.flatten().flatten() if len(pieces) else pa.array([], pa.string())
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(flat)], pa.int32()), flat), "")[0].as_py() if len(flat) else ""
    counts = codepoint_counts(text)
    cps = np.flatnonzero(counts)
    return cps, counts[cps]


class _CodepointIds:
    """Token ids before the vocabulary exists: each token is its code point, [CLS]/[SEP] are the marks.
    A character is one token whatever the vocabulary (whitespace none), so windows and masks are final
    here; the shard writer maps code points to ids with one table lookup."""

    cls_id, sep_id = ord(CLS_MARK), ord(SEP_MARK)
    _keep = None

    def encode_marked(self, text: str) -> np.ndarray:
        if _CodepointIds._keep is None:
            keep = np.ones(0x110000, bool)
            keep[_WHITESPACE_CPS] = False
            _CodepointIds._keep = keep
        cps = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int32)
        return cps[self._keep[cps]]


def encode_batch(clean: pa.Table, max_len: int, counts: Counter) -> tuple[pa.Table, pa.Table]:
    """Cleaned rows -> (one row per sample in code point ids, the rejected rows); truncations added to `counts`."""
    ok = np.asarray(clean.column("reason").is_null())
    kept = clean.filter(pa.array(ok))
    pieces = kept.column("pieces").combine_chunks()
    owner = np.repeat(np.arange(len(pieces)), pc.list_value_length(pieces).to_numpy(zero_copy_only=False))
    offsets = kept.column("offsets").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    trunc: Counter = Counter()
    out = encode_piece_array(pieces.flatten(), offsets, _CodepointIds(), max_len, trunc)
    counts["trunc_utterances"] += trunc["utterances"]
    counts["trunc_context"] += trunc["context"]
    sample_owner = owner[out["piece_index"]]
    n = len(sample_owner)
    new_dialogue = np.ones(n, dtype=bool)  # one sample per dialogue is its first: dialogues_out, duplicates
    if n:  # long pieces' windows come after the batch's short pieces: order by dialogue first
        order = np.argsort(sample_owner, kind="stable")
        new_dialogue[order[1:]] = sample_owner[order][1:] != sample_owner[order][:-1]
    list_offsets = pa.array(out["offsets"], pa.int32())
    identity = n == kept.num_rows and np.array_equal(sample_owner, np.arange(n))  # one sample per dialogue (usual)
    take = None if identity else pa.array(sample_owner, pa.int64())
    samples = {name: kept.column(name) if identity else kept.column(name).take(take)
               for name in ("range_id", "position", "order", "source", "split", "key")}
    samples.update(input_ids=pa.ListArray.from_arrays(list_offsets, pa.array(out["input_ids"], pa.int32())),
                   segment_ids=pa.ListArray.from_arrays(list_offsets, pa.array(out["segment_ids"], pa.int8())),
                   loss_mask=pa.ListArray.from_arrays(list_offsets, pa.array(out["loss_mask"], pa.int8())),
                   n_turns=pa.array(out["n_turns"], pa.int16()), new_dialogue=pa.array(new_dialogue.astype(np.int8)),
                   pieces=kept.column("pieces") if identity else pc.if_else(pa.array(new_dialogue), kept.column("pieces").take(take), None))
    return pa.table(samples), clean.filter(pa.array(~ok)).drop_columns(["pieces", "offsets", "key"])


def clean_encode_block(raw: pa.Table, info: ReadInfo, max_chars: int, valid_fraction: float, test_fraction: float,
                       max_len: int) -> pa.Table:
    """The one Ray Data pass of the dialog job: a block of raw records -> its sample rows, its rejected
    rows and its counts row (`row_kind` sample | rejected | counts)."""
    counts: Counter = Counter()
    clean = clean_batch(raw, max_chars, valid_fraction, test_fraction, counts)
    samples, rejected = encode_batch(clean, max_len, counts)
    cps, cp_counts = codepoint_counts_of(clean.column("pieces").combine_chunks())
    tally = {"range_id": [info.range_id], "records": [info.records], "fallback": [info.fallback], "plan_error": [info.plan_error],
             "vocab_cp": [cps.tolist()], "vocab_count": [cp_counts.tolist()],
             **{name: [counts.get(name, 0)] for name in CLEAN_COUNTERS + TRUNC_COUNTERS}}
    return pa.concat_tables([_work_rows("sample", samples), _work_rows("rejected", rejected), _work_rows("counts", pa.table(tally))])


def _work_rows(kind: str, table: pa.Table) -> pa.Table:
    n = table.num_rows
    cols = {"row_kind": pa.array([kind] * n, pa.string())}
    for f in WORK_SCHEMA:
        if f.name != "row_kind":
            cols[f.name] = table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
    return pa.table(cols, schema=WORK_SCHEMA)


# ------------------------------------------------------------------ driver: counts, positions, vocabulary

class RangeTally:
    """Per read task (range_id): records read, fallbacks, plan errors; and the totals of the counters."""

    def __init__(self, work):
        t = work.to_table(columns=["range_id", "records", "fallback", "plan_error", *CLEAN_COUNTERS, *TRUNC_COUNTERS],
                          filter=pc.field("row_kind") == "counts")
        n = int(pc.max(t.column("range_id")).as_py() or 0) + 1 if t.num_rows else 0
        range_id = np.asarray(t.column("range_id"), np.int64)
        self.records = np.bincount(range_id, weights=np.asarray(t.column("records"), np.int64), minlength=n).astype(np.int64)
        self.totals = {name: int(pc.sum(t.column(name)).as_py() or 0) for name in CLEAN_COUNTERS + TRUNC_COUNTERS}
        self.fallbacks = {int(r): f for r, f in zip(range_id, t.column("fallback").to_pylist()) if f}
        self.plan_errors = {int(r): e for r, e in zip(range_id, t.column("plan_error").to_pylist()) if e}


def first_positions(specs: list[dict], records: np.ndarray) -> np.ndarray:
    """Position of each read task's first record in its unit: 0 for a whole unit (its reader's own
    positions), the records of the unit's earlier ranges for a byte range."""
    first = np.zeros(len(specs), np.int64)
    seen: Counter = Counter()
    for s in specs:
        if s["start"] >= 0:
            first[s["range_id"]] = seen[s["unit"]]
            seen[s["unit"]] += int(records[s["range_id"]]) if s["range_id"] < len(records) else 0
    return first


def clean_vocab_counts(work) -> Counter:
    """The vocabulary's counts: the counts rows' sparse code point counts summed in the driver."""
    total = np.zeros(0x110000, dtype=np.int64)  # fixed size: memory does not grow with the corpus
    for b in work.to_batches(columns=["vocab_cp", "vocab_count"], filter=pc.field("row_kind") == "counts"):
        np.add.at(total, b.column("vocab_cp").flatten().to_numpy(), b.column("vocab_count").flatten().to_numpy())
    return Counter({chr(int(c)): int(total[c]) for c in np.flatnonzero(total)})


def is_duplicate(batch: pa.Table, dup_keys: np.ndarray, dup_orders: np.ndarray) -> np.ndarray:
    """Rows whose key is duplicated and that are not the first copy in input order."""
    keys = np.asarray(batch.column("key").fill_null(0), dtype=np.int64)
    if len(dup_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.clip(np.searchsorted(dup_keys, keys), 0, len(dup_keys) - 1)
    hit = dup_keys[pos] == keys
    return hit & (np.asarray(batch.column("order"), dtype=np.int64) != dup_orders[pos])


def find_duplicates(clean, kept=None) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys that occur more than once, input order of their first copy).

    Only the two int64 columns of kept records reach the driver (16 bytes per kept dialogue: 190 MB for LCCC-large's
    12M), then one sort. Ray Data's hash-shuffle groupby on the same two columns took 43 s for 1,400
    rows on the 2-core dev box (200 shuffle partitions), so the sort runs here instead."""
    keys, orders = [], []
    for b in clean.to_batches(columns=["key", "order"], filter=pc.field("reason").is_null() if kept is None else kept):
        keys.append(np.asarray(b.column("key"), dtype=np.int64))
        orders.append(np.asarray(b.column("order"), dtype=np.int64))
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys, orders = np.concatenate(keys), np.concatenate(orders)
    idx = np.lexsort((orders, keys))
    keys, orders = keys[idx], orders[idx]
    repeated = np.zeros(len(keys), dtype=bool)
    repeated[1:] = keys[1:] == keys[:-1]
    first_of_dup = ~repeated & np.append(repeated[1:], False)  # first copy of a key that repeats
    return keys[first_of_dup], orders[first_of_dup]


def duplicates_batch(batch: pa.Table, dup_keys, dup_orders) -> pa.Table:
    return batch.filter(pa.array(is_duplicate(batch, dup_keys, dup_orders)))


# ------------------------------------------------------------------ the job

def run_dialog(cfg: DialogDataConfig, out_dir: str | Path, overwrite: bool = False, ray_cfg=None) -> Manifest:
    """Preprocess `cfg.inputs` (default: chatterbot's Chinese files) into `out_dir`; returns the manifest."""
    t0 = time.time()
    inputs = [(str(p), "chatterbot") for p in readers.chatterbot_files()] if not cfg.inputs else [(p, cfg.format) for p in cfg.inputs]
    in_process = input_bytes(p for p, _ in inputs) <= cfg.in_process_max_bytes
    if not in_process:
        from liaotian.cluster import connect

        connect(ray_cfg)
    out = check_output_dir(out_dir, overwrite)
    units, ranges = plan_units(inputs, cfg.range_bytes)
    encode = functools.partial(clean_encode_block, max_chars=cfg.max_utterance_chars, valid_fraction=cfg.valid_fraction,
                               test_fraction=cfg.test_fraction, max_len=cfg.max_len)
    work_dir = out / "_work" / "clean"
    fallen_back = 0
    while True:
        specs = read_specs(units, ranges)
        reader = functools.partial(readers.read_unit, csv_columns=tuple(cfg.csv_columns))
        write_work_files(read_units(specs, cfg.batch_size, reader=reader, transform=encode, in_process=in_process), work_dir)
        work = pads.dataset(str(work_dir), format="parquet", schema=WORK_SCHEMA)  # scanned column-wise, batch by batch
        tally = RangeTally(work)
        for range_id, reason in sorted(tally.fallbacks.items()):
            s = specs[range_id]
            log.warning("%s bytes %d-%d read record by record: %s", s["path"], s["start"], s["end"], reason)
        fallen_back += len(tally.fallbacks)
        if not tally.plan_errors:
            break
        # a range that does not parse at all: its unit is read again whole by the careful reader, which
        # names the byte where the JSON stops parsing (a truncated or corrupt file, or a cut inside a string)
        broken = {specs[r]["unit"] for r in tally.plan_errors}
        for range_id, error in sorted(tally.plan_errors.items()):
            log.warning("reading %s again whole: %s", specs[range_id]["path"], error)
        fallen_back += sum(len(ranges[u]) for u in broken)
        ranges = {u: r for u, r in ranges.items() if u not in broken}
        shutil.rmtree(work_dir)

    first = first_positions(specs, tally.records)
    unit_of = np.asarray([s["unit"] for s in specs], np.int64)
    input_of = np.asarray([units[s["unit"]][3] for s in specs], np.int64)
    sample_rows = pc.field("row_kind") == "sample"
    dup_keys, dup_orders = find_duplicates(work, sample_rows & (pc.field("new_dialogue") == 1))
    tok, vocab_source = tokenizer_for(cfg.vocab, lambda: clean_vocab_counts(work), cfg.min_count, cfg.max_vocab)
    tok.save(out)

    manifest = Manifest(kind="dialog", inputs=[input_info(p, f) for p, f in inputs], vocab_size=tok.vocab_size,
                        vocab_source=vocab_source, max_len=cfg.max_len)
    manifest.dialogues_in = int(tally.records.sum())
    manifest.cleaning = {k: tally.totals[k] for k in CLEAN_COUNTERS}
    per_input_out = write_sample_shards(
        out, manifest, work, DIALOG_SCHEMA, tok.marked_table, sample_rows,
        functools.partial(finish_samples, dup_keys=dup_keys, dup_orders=dup_orders, unit_of=unit_of, first=first, input_of=input_of),
        cfg.rows_per_shard, len(inputs), in_process=in_process)
    manifest.truncated = {"utterances": tally.totals["trunc_utterances"], "context": tally.totals["trunc_context"]}
    rejected_by_input: Counter = Counter()
    manifest.rejected = dict(write_rejected(out / "rejected", _rejected_rows(work, dup_keys, dup_orders, unit_of, first, input_of,
                                                                             rejected_by_input)))
    records_in = np.bincount(input_of, weights=tally.records, minlength=len(inputs)).astype(np.int64)
    manifest.sources = [{"path": p, "format": f, "dialogues_in": int(records_in[i]), "dialogues_out": int(per_input_out[i]),
                         "rejected": int(rejected_by_input[i])} for i, (p, f) in enumerate(inputs)]
    manifest.ranges_fallen_back = fallen_back
    manifest.split_source = "corpus" if any(k is not None for _, _, k, _ in units) else "hash"
    manifest.seconds = round(time.time() - t0, 3)
    manifest.check()
    manifest.save(out)
    shutil.rmtree(out / "_work", ignore_errors=True)
    return manifest


def finish_samples(t: pa.Table, dup_keys, dup_orders, unit_of, first, input_of) -> tuple[pa.Table, np.ndarray]:
    """Sample rows of the work files -> rows of the shards (duplicates left out, `dialogue_id` =
    "<unit>-<position in the unit>"), and the input index of each row."""
    t = t.filter(pa.array(~is_duplicate(t, dup_keys, dup_orders)))
    range_id = np.asarray(t.column("range_id"), np.int64)
    position = first[range_id] + np.asarray(t.column("position"), np.int64)
    ids = pc.binary_join_element_wise(pc.cast(pa.array(unit_of[range_id]), pa.string()), pc.cast(pa.array(position), pa.string()), "-")
    return t.append_column("dialogue_id", ids), input_of[range_id]


def plan_units(inputs: list[tuple[str, str]], range_bytes: int):
    """Read units (path, format, split key, input index) of the inputs, and the byte ranges of those
    that a plain LCCC JSON file splits into ({unit index: [LcccRange, ...]}; other units are read
    whole, and so is every unit when `range_bytes` is 0)."""
    units, ranges = [], {}
    for i, (path, f) in enumerate(inputs):
        fmt = readers.detect_format(path) if f == "auto" else f
        plan = readers.lccc_plan(path, range_bytes) if range_bytes and fmt == "lccc" and Path(path).is_file() else None
        if plan is None:
            units += [(path, unit_fmt, key, i) for unit_fmt, key in readers.units(path, fmt)]
            continue
        for key, rngs in plan.items():
            if rngs:
                ranges[len(units)] = rngs
            units.append((path, fmt, key, i))
    return units, ranges


def _rejected_rows(work, dup_keys, dup_orders, unit_of, first, input_of, by_input: Counter):
    """Rejected records, streamed: reader/cleaning rejections, then duplicates (with their record)."""
    for b in work.to_batches(columns=["range_id", "source", "position", "reason", "record", "detail", "split"],
                             filter=pc.field("row_kind") == "rejected"):
        for r in b.to_pylist():
            by_input[int(input_of[r["range_id"]])] += 1
            yield RejectedRecord(r["source"], int(first[r["range_id"]]) + r["position"], r["reason"], _loads(r["record"]), r["detail"],
                                 r["split"])
    if len(dup_keys):
        firsts = (pc.field("row_kind") == "sample") & (pc.field("new_dialogue") == 1) & pc.field("key").isin(pa.array(dup_keys, pa.int64()))
        for b in work.to_batches(columns=["range_id", "source", "position", "pieces", "split", "key", "order"], filter=firsts):
            b = duplicates_batch(pa.Table.from_batches([b]), dup_keys, dup_orders)
            for r in b.select(["range_id", "source", "position", "pieces", "split"]).to_pylist():
                unit, position, i = int(unit_of[r["range_id"]]), int(first[r["range_id"]]) + r["position"], int(input_of[r["range_id"]])
                by_input[i] += 1
                yield RejectedRecord(r["source"], position, "duplicate", r["pieces"],
                                     f"same cleaned dialogue as an earlier record ({unit}-{position})", r["split"])


def _loads(text):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# ------------------------------------------------------------------ CLI

def add_cli(parser: argparse.ArgumentParser) -> None:
    from liaotian.cli import add_common_arguments
    from liaotian.pipelines import prepare_text

    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    p = sub.add_parser("dialog", help="dialogue corpora -> turn-concatenated samples",
                       description="Read LCCC JSON / JSONL / chatterbot YAML / HF datasets / post<TAB>response pairs (.tsv/.txt) / "
                                   "CSV with a dialogue id and an utterance column (CPED) / KdConv JSON, clean, build a character "
                                   "vocabulary, and write [CLS] u1 [SEP] u2 [SEP] ... Parquet shards.")
    p.add_argument("inputs", nargs="*", help="corpus files or dataset dirs (default: chatterbot-corpus Chinese)")
    p.add_argument("--format", choices=["auto", *readers.FORMATS], help="input format (default: detect)")
    p.add_argument("--max-len", type=int, help="tokens per sample, specials included (data.dialog.max_len)")
    p.add_argument("--min-count", type=int, help="keep characters seen at least this often")
    p.add_argument("--max-vocab", type=int, help="vocabulary size cap, specials included")
    p.add_argument("--vocab", help="an existing BERT-style vocab.txt instead of building one")
    _output_flags(p)
    add_common_arguments(p)
    p.set_defaults(run=_run_dialog_cli)
    prepare_text.add_cli(sub, _output_flags, add_common_arguments)


def _output_flags(p):
    p.add_argument("--output", help="output directory (default: <run_dir>/data/<kind>)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous output in that directory")


def _run_dialog_cli(args) -> int:
    from liaotian.cli import load_config_from_args

    cfg = load_config_from_args(args, extra={
        "data.dialog.inputs": args.inputs or None, "data.dialog.format": args.format, "data.dialog.max_len": args.max_len,
        "data.dialog.min_count": args.min_count, "data.dialog.max_vocab": args.max_vocab, "data.dialog.vocab": args.vocab})
    out = Path(args.output) if args.output else cfg.paths.data("dialog")
    cfg.data.dialog.vocab = dialog_vocab(cfg)
    return report(run_dialog(cfg.data.dialog, out, args.overwrite, cfg.ray), out)


def dialog_vocab(cfg) -> str | None:
    """The vocab.txt the dialog job uses: data.dialog.vocab, else with shared_vocab the run's text vocabulary."""
    from liaotian.config import ConfigError

    d = cfg.data.dialog
    if d.vocab or not d.shared_vocab:
        return d.vocab
    shared = cfg.paths.data("text") / "vocab.txt"
    if not shared.exists():
        raise ConfigError(f"data.dialog.shared_vocab: {shared} does not exist; run `liaotian data text` first")
    return str(shared)


def report(m: Manifest, out: Path) -> int:
    print(f"{m.kind}: {m.dialogues_in} in, {m.dialogues_out} out, {m.samples_out} samples {m.splits}, "
          f"rejected {m.rejected or 'none'}, vocab {m.vocab_size}, {m.seconds:.1f}s -> {out}")
    return 0
