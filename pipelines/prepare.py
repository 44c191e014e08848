"""`liaotian data dialog|sentiment|text`: corpora -> Parquet shards with Ray Data (the only Ray in pipelines' data path).

Dialog job: ONE Ray Data pass, then the driver and one round of shard tasks (memory stays flat as the corpus grows):
  1. read (a Datasource: one streaming read task per file/split, or per byte range of a plain LCCC
     JSON file planned by one validating scan, `readers.lccc_plan`), and inside the same task clean +
     encode (Arrow/NumPy kernels per batch) -> `_work/clean/*.arrow` (Arrow IPC, lz4): one row per
     sample, token ids as code points (a character is one token whatever the vocabulary), plus one
     row per rejected record with its reason; batch counts and sparse code point counts on row 0
  2. duplicates: the 64-bit content keys of first samples, sorted once (see `find_duplicates`)
  3. vocabulary: the per-batch code point counts summed in the driver (or the user's vocab.txt)
  4. Ray tasks write the shards of `train/ valid/ test/` from groups of work files (duplicates left
     out, code points -> ids through one lookup table); the driver writes `rejected/*.jsonl`, manifest
Every stage catches per record and emits a reason column; `max_errored_blocks` is never used.
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from liaotian.pipelines import readers
from liaotian.pipelines.cleaning import clean_dialogue_lists, clean_dialogues, content_key
from liaotian.pipelines.config import DialogDataConfig
from liaotian.pipelines.dialogue import encode_piece_array, encode_pieces
from liaotian.pipelines.tokenizer import CLS_MARK, SEP_MARK, _WHITESPACE_CPS
from liaotian.pipelines.schema import DIALOG_SCHEMA, Manifest, RejectedRecord
from liaotian.pipelines.shards import (CLEAN_COUNTERS, arrow_file_sink, assign_split, check_output_dir, input_bytes, input_info, read_units,
                              tokenizer_for, write_rejected, write_sample_shards, write_units_in_process)

TRUNC_COUNTERS = ("trunc_utterances", "trunc_context")


# ------------------------------------------------------------------ pass 1: clean (Ray Data task)

def clean_batch(batch: pa.Table, max_chars: int, valid_fraction: float, test_fraction: float) -> pa.Table:
    """Raw records -> cleaned pieces + key + split, or the rejection; batch cleaning counts and the
    code point counts of the kept text (the vocabulary's input) on row 0.

    The whole batch goes through Arrow/NumPy kernels (`clean_dialogue_lists`); only when that path
    raises does the batch fall back to the per-record path, which rejects just the record(s) at fault."""
    n = batch.num_rows
    reason = batch.column("reason").combine_chunks()
    ok = np.asarray(reason.is_null())
    counts: Counter = Counter()
    try:
        lists = batch.column("utterances").combine_chunks().filter(pa.array(ok))
        got = clean_dialogue_lists(lists, max_chars, counts)
    except Exception:
        return _clean_batch_per_record(batch, max_chars, valid_fraction, test_fraction)
    idx = np.flatnonzero(ok)
    kept = np.zeros(n, bool)
    kept[idx] = np.asarray(got["key"].is_valid())
    scatter = np.full(n, -1, np.int64)  # row -> position in the ok arrays (null elsewhere)
    scatter[idx] = np.arange(len(idx))
    take = pa.array(scatter, pa.int64(), mask=scatter < 0)
    key = got["key"] if len(idx) == n else got["key"].take(take)
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
    u = (keys % 1_000_003) / 1_000_003  # assign_split, vectorised (same split for the same key)
    split_of_key = np.where(u < test_fraction, "test", np.where(u < test_fraction + valid_fraction, "valid", "train"))
    split = pc.if_else(pa.array(kept & np.asarray(batch.column("split").is_null())), pa.array(split_of_key, pa.string()),
                       batch.column("split").combine_chunks())
    if len(idx) == n:  # no reader rejection in the batch (the usual case): rows are already in place
        return _clean_table(batch, got["pieces"], got["offsets"], key, split, reasons, details, records, counts, got["pieces"])
    return _clean_table(batch, got["pieces"].take(take), got["offsets"].take(take), key, split, reasons, details, records,
                        counts, got["pieces"])


def _clean_table(batch, pieces, offsets, key, split, reasons, details, records, counts, kept_pieces) -> pa.Table:
    n = batch.num_rows
    unit = np.asarray(batch.column("unit"), dtype=np.int64)
    position = np.asarray(batch.column("position"), dtype=np.int64)
    cols = {
        "order": pa.array((unit << 40) | position, pa.int64()),  # input order: the first copy wins
        "source": batch.column("source"), "position": batch.column("position"), "split": split,
        "dialogue_id": pc.binary_join_element_wise(pc.cast(batch.column("unit"), pa.string()),
                                                   pc.cast(batch.column("position"), pa.string()), "-"),
        "pieces": pieces, "offsets": offsets, "key": key, "reason": reasons, "detail": details, "record": records,
    }
    for name in CLEAN_COUNTERS:
        cols[name] = pa.array([counts.get(name, 0)] + [0] * (n - 1), pa.int64())
    cps, cp_counts = _codepoint_counts(kept_pieces)
    cols["vocab_cp"] = pa.array([cps.tolist()] + [None] * (n - 1), pa.list_(pa.int32()))
    cols["vocab_count"] = pa.array([cp_counts.tolist()] + [None] * (n - 1), pa.list_(pa.int64()))
    return pa.table(cols)


def _codepoint_counts(pieces: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Sparse code point counts of every utterance in `pieces` (list<list<string>>, nulls skipped)."""
    from liaotian.pipelines.tokenizer import codepoint_counts

    flat = pieces.flatten().flatten() if len(pieces) else pa.array([], pa.string())
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(flat)], pa.int32()), flat), "")[0].as_py() if len(flat) else ""
    counts = codepoint_counts(text)
    cps = np.flatnonzero(counts)
    return cps, counts[cps]


def _clean_batch_per_record(batch: pa.Table, max_chars: int, valid_fraction: float, test_fraction: float) -> pa.Table:
    """The per-record path: each dialogue cleaned alone; one that raises is rejected as `error`."""
    n = batch.num_rows
    reasons = batch.column("reason").to_pylist()
    utterances = batch.column("utterances").to_pylist()
    counts: Counter = Counter()
    details = batch.column("detail").to_pylist()
    records = batch.column("record").to_pylist()
    splits = batch.column("split").to_pylist()
    pieces_out, offsets_out, keys = [None] * n, [None] * n, [None] * n
    for i in range(n):
        if reasons[i] is not None:
            continue
        try:
            result = clean_dialogues([utterances[i]], max_chars, counts)[0]
        except Exception as e:
            reasons[i], details[i], records[i] = "error", f"{type(e).__name__}: {e}", json.dumps(utterances[i], ensure_ascii=False)
            continue
        if result is None:
            reasons[i], records[i] = "too_few_utterances", json.dumps(utterances[i], ensure_ascii=False)
            details[i] = "fewer than 2 non-empty utterances in a row after cleaning"
        else:
            pieces_out[i] = [p for _, p in result]
            offsets_out[i] = [o for o, _ in result]
            keys[i] = content_key(result)
            if splits[i] is None:
                splits[i] = assign_split(keys[i], valid_fraction, test_fraction)
    pieces = pa.array(pieces_out, pa.list_(pa.list_(pa.string())))
    return _clean_table(batch, pieces, pa.array(offsets_out, pa.list_(pa.int16())), pa.array(keys, pa.int64()),
                        pa.array(splits, pa.string()), pa.array(reasons, pa.string()), pa.array(details, pa.string()),
                        pa.array(records, pa.string()), counts, pieces)


# ------------------------------------------------------------------ vocabulary

def clean_vocab_counts(clean) -> Counter:
    """The vocabulary's counts, summed in the driver from the per-batch sparse counts that the clean
    pass left on row 0 (no extra pass over the text)."""
    total = np.zeros(0x110000, dtype=np.int64)  # fixed size: memory does not grow with the corpus
    for b in clean.to_batches(columns=["vocab_cp", "vocab_count"], filter=pc.field("vocab_cp").is_valid()):
        np.add.at(total, b.column("vocab_cp").flatten().to_numpy(), b.column("vocab_count").flatten().to_numpy())
    return Counter({chr(int(c)): int(total[c]) for c in np.flatnonzero(total)})


# ------------------------------------------------------------------ encode (same Ray Data pass)

class _CodepointIds:
    """Token ids before the vocabulary exists: each token is its code point, [CLS]/[SEP] are the marks.
    A character is one token whatever the vocabulary (whitespace none), so windows and masks are final
    here; the driver maps code points to ids with one table lookup when it writes the shards."""

    cls_id, sep_id = ord(CLS_MARK), ord(SEP_MARK)
    _keep = None

    def encode_marked(self, text: str) -> np.ndarray:
        if _CodepointIds._keep is None:
            keep = np.ones(0x110000, bool)
            keep[_WHITESPACE_CPS] = False
            _CodepointIds._keep = keep
        cps = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int32)
        return cps[self._keep[cps]]


def encode_batch(clean: pa.Table, max_len: int) -> pa.Table:
    """Cleaned rows -> one row per sample (code point ids) plus one row per rejected record; counts on row 0."""
    tok, counts, errors = _CodepointIds(), Counter(), {}
    ok = np.asarray(clean.column("reason").is_null())
    kept = clean.filter(pa.array(ok))
    try:
        pieces = kept.column("pieces").combine_chunks()
        owner = np.repeat(np.arange(len(pieces)), pc.list_value_length(pieces).to_numpy(zero_copy_only=False))
        offsets = kept.column("offsets").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        out = encode_piece_array(pieces.flatten(), offsets, tok, max_len, counts)
        sample_owner = owner[out["piece_index"]]
    except Exception:  # find the dialogue(s) that break the batch path; reject only them
        counts, parts, owners = Counter(), [], []
        for i, (ps, os_) in enumerate(zip(kept.column("pieces").to_pylist(), kept.column("offsets").to_pylist())):
            try:
                parts.append(encode_pieces(ps, os_, tok, max_len, counts))
                owners.append(np.full(len(parts[-1]["n_turns"]), i))
            except Exception as e:
                errors[i] = f"{type(e).__name__}: {e}"
        out = _concat(parts)
        sample_owner = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    n = len(sample_owner)
    new_dialogue = np.ones(n, dtype=bool)  # one sample per dialogue is its first: dialogues_out, duplicates
    if n:  # long pieces' windows come after the batch's short pieces: order by dialogue first
        order = np.argsort(sample_owner, kind="stable")
        new_dialogue[order[1:]] = sample_owner[order][1:] != sample_owner[order][:-1]
    ids, seg, mask = _lists(out)
    identity = n == kept.num_rows and np.array_equal(sample_owner, np.arange(n))  # one sample per dialogue (usual)
    take = None if identity else pa.array(sample_owner, pa.int64())
    samples = {name: kept.column(name) if identity else kept.column(name).take(take)
               for name in ("order", "source", "position", "split", "dialogue_id", "key")}
    samples.update(input_ids=ids, segment_ids=seg, loss_mask=mask, n_turns=pa.array(out["n_turns"], pa.int16()),
                   new_dialogue=pa.array(new_dialogue.astype(np.int8)),
                   pieces=kept.column("pieces") if identity else pc.if_else(pa.array(new_dialogue), kept.column("pieces").take(take), None))
    samples = pa.table(samples)
    rejected = clean.filter(pa.array(~ok))
    if errors:
        idx = pa.array(sorted(errors), pa.int64())
        bad = kept.take(idx).drop_columns(["reason", "detail", "record"])
        rejected = pa.concat_tables([rejected, bad.append_column("reason", pa.array(["error"] * len(idx))).append_column(
            "detail", pa.array([errors[i] for i in sorted(errors)])).append_column(
            "record", pa.array([json.dumps(p, ensure_ascii=False) for p in bad.column("pieces").to_pylist()]))],
            promote_options="permissive")
    rejected = rejected.select([c for c in rejected.column_names if c in _REJECTED_COLUMNS])
    table = pa.concat_tables([samples, rejected], promote_options="permissive")
    extra = {name: clean.column(name)[:1] for name in CLEAN_COUNTERS + ("vocab_cp", "vocab_count")}
    extra.update({name: pa.array([counts.get(key, 0)], pa.int64()) for name, key in zip(TRUNC_COUNTERS, ("utterances", "context"))})
    for name, first in extra.items():  # batch totals on row 0, nothing elsewhere
        col = pa.concat_arrays([first.combine_chunks() if isinstance(first, pa.ChunkedArray) else first,
                                pa.nulls(table.num_rows - 1, first.type)])
        table = table.append_column(name, col)
    return table


_REJECTED_COLUMNS = ("order", "source", "position", "split", "dialogue_id", "reason", "detail", "record")


def clean_encode_batch(batch: pa.Table, max_chars: int, valid_fraction: float, test_fraction: float, max_len: int) -> pa.Table:
    """The one Ray Data pass of the dialog job: raw records -> cleaned -> samples (and rejections)."""
    return encode_batch(clean_batch(batch, max_chars, valid_fraction, test_fraction), max_len)


def _concat(parts: list[dict]) -> dict:
    if not parts:
        return {"offsets": np.zeros(1, np.int32), "input_ids": np.zeros(0, np.int32), "segment_ids": np.zeros(0, np.int8),
                "loss_mask": np.zeros(0, np.int8), "n_turns": np.zeros(0, np.int16)}
    lengths = np.concatenate([np.diff(p["offsets"]) for p in parts])
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return {"offsets": offsets, **{k: np.concatenate([p[k] for p in parts])
                                   for k in ("input_ids", "segment_ids", "loss_mask", "n_turns")}}


def _lists(out: dict):
    offsets = pa.array(out["offsets"], pa.int32())
    return (pa.ListArray.from_arrays(offsets, pa.array(out["input_ids"], pa.int32())),
            pa.ListArray.from_arrays(offsets, pa.array(out["segment_ids"], pa.int8())),
            pa.ListArray.from_arrays(offsets, pa.array(out["loss_mask"], pa.int8())))


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
    work = out / "_work"

    encode = functools.partial(clean_encode_batch, max_chars=cfg.max_utterance_chars, valid_fraction=cfg.valid_fraction,
                               test_fraction=cfg.test_fraction, max_len=cfg.max_len)
    if in_process:
        write_units_in_process(units, cfg.batch_size, work / "clean", ranges=ranges, transform=encode)
    else:
        read_units(units, cfg.batch_size, ranges=ranges, transform=encode).write_datasink(arrow_file_sink(str(work / "clean")))
    clean = pads.dataset(str(work / "clean"), format="arrow")  # scanned column-wise, batch by batch

    dup_keys, dup_orders = find_duplicates(clean, pc.field("new_dialogue") == 1)
    tok, vocab_source = tokenizer_for(cfg.vocab, lambda: clean_vocab_counts(clean), cfg.min_count, cfg.max_vocab)
    tok.save(out)

    manifest = Manifest(kind="dialog", inputs=[input_info(p, f) for p, f in inputs], vocab_size=tok.vocab_size,
                        vocab_source=vocab_source, max_len=cfg.max_len)
    totals = column_totals(clean, CLEAN_COUNTERS + TRUNC_COUNTERS + ("new_dialogue",))
    manifest.dialogues_in = totals.pop("new_dialogue") + clean.count_rows(filter=pc.field("reason").is_valid())
    manifest.cleaning = {k: totals[k] for k in CLEAN_COUNTERS}
    write_sample_shards(out, manifest, clean, DIALOG_SCHEMA, tok.marked_table,
                        functools.partial(is_duplicate, dup_keys=dup_keys, dup_orders=dup_orders),
                        cfg.rows_per_shard, in_process=in_process)
    manifest.truncated = {"utterances": totals["trunc_utterances"], "context": totals["trunc_context"]}
    manifest.rejected = dict(write_rejected(out / "rejected", _rejected_rows(clean, dup_keys, dup_orders)))
    manifest.split_source = "corpus" if any(k is not None for _, _, k in units) else "hash"
    manifest.seconds = round(time.time() - t0, 3)
    manifest.check()
    manifest.save(out)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def plan_units(inputs: list[tuple[str, str]], range_bytes: int):
    """Read units (path, format, split key) of the inputs, and the byte ranges of those that a plain
    LCCC JSON file splits into ({unit index: [LcccRange, ...]}; other units are read whole, and so is
    every unit when `range_bytes` is 0)."""
    units, ranges = [], {}
    for path, f in inputs:
        fmt = readers.detect_format(path) if f == "auto" else f
        plan = readers.lccc_plan(path, range_bytes) if range_bytes and fmt == "lccc" and Path(path).is_file() else None
        if plan is None:
            units += [(path, unit_fmt, key) for unit_fmt, key in readers.units(path, fmt)]
            continue
        for key, rngs in plan.items():
            ranges[len(units)] = rngs
            units.append((path, fmt, key))
    return units, ranges


def column_totals(clean, names) -> dict[str, int]:
    """Sums of small count columns over the whole cleaned dataset (nulls count as 0)."""
    totals = Counter()
    for b in clean.to_batches(columns=list(names)):
        for name in names:
            totals[name] += pc.sum(b.column(name)).as_py() or 0
    return {k: int(totals[k]) for k in names}


def clean_totals(clean) -> tuple[int, dict[str, int]]:
    """Records read and cleaning counts, summed from the cleaned dataset's small columns."""
    n, totals = 0, Counter()
    for b in clean.to_batches(columns=list(CLEAN_COUNTERS)):
        n += b.num_rows
        for name in CLEAN_COUNTERS:
            totals[name] += int(np.asarray(b.column(name)).sum())
    return n, {k: totals[k] for k in CLEAN_COUNTERS}


def _rejected_rows(clean, dup_keys, dup_orders):
    """Rejected records, streamed: reader/cleaning rejections, then duplicates (with their record)."""
    for b in clean.to_batches(columns=["source", "position", "reason", "record", "detail", "split"],
                              filter=pc.field("reason").is_valid()):
        for r in b.to_pylist():
            yield RejectedRecord(r["source"], r["position"], r["reason"], _loads(r["record"]), r["detail"], r["split"])
    if len(dup_keys):
        first = (pc.field("new_dialogue") == 1) & pc.field("key").isin(pa.array(dup_keys, pa.int64()))
        for b in clean.to_batches(columns=["source", "position", "pieces", "dialogue_id", "split", "key", "order"], filter=first):
            b = duplicates_batch(pa.Table.from_batches([b]), dup_keys, dup_orders)
            for r in b.select(["source", "position", "pieces", "dialogue_id", "split"]).to_pylist():
                yield RejectedRecord(r["source"], r["position"], "duplicate", r["pieces"],
                                     f"same cleaned dialogue as an earlier record ({r['dialogue_id']})", r["split"])


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
                       description="Read LCCC JSON / JSONL / chatterbot YAML / HF datasets, clean, build a character "
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
