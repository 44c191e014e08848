"""What the three `liaotian data` jobs share: the streaming Ray Data source, splits, output dir,
shard writing, rejected files. Ray is imported inside the functions that need it."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import liaotian
from liaotian.pipelines import readers
from liaotian.pipelines.cleaning import TEXT_RULES
from liaotian.pipelines.schema import SPLITS, Manifest, RejectedRecord

CLEAN_COUNTERS = TEXT_RULES + ("utterances_truncated", "empty_utterances", "fragments_dropped")
OUR_ENTRIES = ("train", "valid", "test", "rejected", "_work", "manifest.json", "tokenizer.json", "vocab.txt")
# Sample shards: zstd without dictionary pages: within 10% of the default's size, written faster and
# read 3x faster by the training loaders (token-id lists gain little from a dictionary, or from min/max
# statistics, which are kept for the scalar columns only).
SHARD_WRITE_OPTIONS = dict(use_dictionary=False, compression="zstd", compression_level=1, write_statistics=["dialogue_id", "n_turns"])
RAW_SCHEMA = pa.schema([
    ("unit", pa.int64()), ("range_id", pa.int64()), ("source", pa.string()), ("position", pa.int64()), ("split", pa.string()),
    ("utterances", pa.list_(pa.string())), ("label", pa.int64()), ("reason", pa.string()), ("detail", pa.string()), ("record", pa.string()),
])


# ------------------------------------------------------------------ reading

@dataclass
class ReadInfo:
    """What one block of a read task says about its range besides its rows."""

    range_id: int
    records: int  # records read into this block
    fallback: str | None = None  # why the range was read record by record instead of by orjson (first block only)
    plan_error: str | None = None  # the range does not parse at all: its unit is read again whole


def read_specs(units: list[tuple[str, str, str | None]], ranges: dict[int, list] | None = None) -> list[dict]:
    """One read task per (file, split) unit, or per planned byte range of it (`ranges[unit index]`,
    from `readers.lccc_plan`); `range_id` numbers the tasks in input order."""
    specs = []
    for unit, (path, fmt, key, *_) in enumerate(units):
        for rng in (ranges or {}).get(unit, [None]):
            specs.append({"range_id": len(specs), "unit": unit, "path": str(path), "format": fmt, "split_key": key,
                          "start": -1 if rng is None else rng.start, "end": -1 if rng is None else rng.end})
    return specs


def input_bytes(paths: Iterable[str]) -> int:
    """Bytes on disk of the input files (a directory: all its files); a missing path counts 0 (the reader names it)."""
    total = 0
    for p in map(Path, paths):
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def map_items(items: list[dict], fn: Callable, in_process: bool, **fn_kwargs):
    """`fn` (a table of one item -> tables) over `items`: a Ray Dataset (`from_items` -> `map_batches`,
    one task per item), or, with `in_process`, the same calls one after another in this process, as a
    list of tables. Small inputs take the second way: starting Ray and its workers (5-10 s on 2 cores)
    costs more than their work."""
    if in_process:
        return [t for item in items for t in _as_tables(fn(pa.Table.from_pylist([item]), **fn_kwargs))]
    import ray

    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        fn, batch_size=1, batch_format="pyarrow", fn_kwargs=fn_kwargs)


def _as_tables(out) -> list[pa.Table]:
    return [out] if isinstance(out, pa.Table) else list(out)


def read_units(specs: list[dict], rows_per_block: int, reader=None, transform: Callable | None = None, in_process: bool = False):
    """A Ray Dataset of raw records (`RAW_SCHEMA`): one task per spec (`read_specs`), each streaming
    its file, split or byte range in blocks of `rows_per_block` records, so no task ever holds a whole
    file. `transform(raw_block, ReadInfo) -> table`, when given, runs on each block inside the read
    task (the dialog job cleans and encodes there: no hand-off of raw blocks between tasks)."""
    return map_items(specs, _read_spec_blocks, in_process, rows=rows_per_block, reader=reader or readers.read_unit,
                     transform=transform)


def write_work_files(blocks, out_dir: Path) -> None:
    """The output of `read_units` as Parquet work files: Ray Data's `write_parquet`, or (in process) one
    file per table."""
    if isinstance(blocks, list):
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, table in enumerate(blocks):
            pq.write_table(table, out_dir / f"{i:06d}.parquet")
    else:
        blocks.write_parquet(str(out_dir))


def _read_spec_blocks(specs: pa.Table, rows: int, reader, transform) -> Iterable[pa.Table]:
    for spec in specs.to_pylist():
        for table, info in spec_blocks(spec, rows, reader):
            yield table if transform is None else transform(table, info)


def spec_blocks(spec: dict, rows: int, reader=readers.read_unit) -> Iterable[tuple[pa.Table, ReadInfo]]:
    """(raw table, ReadInfo) blocks of one read task. A byte range's positions count from 0 in the
    range (the driver adds the range's first index once every range is counted); a whole unit's
    are the reader's own."""
    unit, range_id, path = spec["unit"], spec["range_id"], spec["path"]
    fallback = None
    if spec["start"] >= 0:
        try:
            records, fallback = readers.read_lccc_range(path, spec["split_key"], readers.LcccRange(spec["start"], spec["end"]))
        except readers.RangePlanError as e:
            yield _raw_table(unit, range_id, []), ReadInfo(range_id, 0, plan_error=str(e))
            return
        if fallback is None:  # a list<string> array of plain dialogues: no Python object per record
            for start in range(0, len(records), rows):
                part = records.slice(start, rows)
                yield _plain_table(unit, range_id, path, spec["split_key"], start, part), ReadInfo(range_id, len(part))
            return
    else:
        records = reader(path, spec["format"], spec["split_key"])
    buf: list = []
    for rec in records:
        buf.append(rec)
        if len(buf) >= rows:
            yield _raw_table(unit, range_id, buf), ReadInfo(range_id, len(buf), fallback)
            buf, fallback = [], None
    if buf or fallback:
        yield _raw_table(unit, range_id, buf), ReadInfo(range_id, len(buf), fallback)


def _plain_table(unit: int, range_id: int, path: str, split_key: str | None, first: int, dialogues: pa.Array) -> pa.Table:
    n = len(dialogues)
    split = readers.SPLIT_NAMES[split_key] if split_key is not None else None
    none = pa.nulls(n, pa.string())
    return pa.table({
        "unit": pa.array(np.full(n, unit, np.int64)), "range_id": pa.array(np.full(n, range_id, np.int64)),
        "source": _repeat(str(path), n), "position": pa.array(np.arange(first, first + n, dtype=np.int64)),
        "split": none if split is None else _repeat(split, n),
        "utterances": dialogues, "label": pa.nulls(n, pa.int64()), "reason": none, "detail": none, "record": none,
    }, schema=RAW_SCHEMA)


def _repeat(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int64)))


def _raw_table(unit: int, range_id: int, recs: list) -> pa.Table:
    ok = [not isinstance(r, RejectedRecord) for r in recs]
    return pa.table({
        "unit": pa.array([unit] * len(recs), pa.int64()),
        "range_id": pa.array([range_id] * len(recs), pa.int64()),
        "source": pa.array([r.source for r in recs], pa.string()),
        "position": pa.array([r.position for r in recs], pa.int64()),
        "split": pa.array([r.split for r in recs], pa.string()),
        "utterances": pa.array([r.utterances if k else None for r, k in zip(recs, ok)], pa.list_(pa.string())),
        "label": pa.array([getattr(r, "label", None) if k else None for r, k in zip(recs, ok)], pa.int64()),
        "reason": pa.array([None if k else r.reason for r, k in zip(recs, ok)], pa.string()),
        "detail": pa.array([None if k else r.detail for r, k in zip(recs, ok)], pa.string()),
        "record": pa.array([None if k else json.dumps(r.record, ensure_ascii=False, default=repr)
                            for r, k in zip(recs, ok)], pa.string()),
    }, schema=RAW_SCHEMA)


# ------------------------------------------------------------------ splits, vocabulary, inputs

def assign_split(key: int, valid_fraction: float, test_fraction: float) -> str:
    """A stable split from a content key: the same record lands in the same split on every run."""
    u = (key % 1_000_003) / 1_000_003
    return "test" if u < test_fraction else "valid" if u < test_fraction + valid_fraction else "train"


def tokenizer_for(vocab: str | None, count: Callable[[], Counter], min_count: int, max_vocab: int | None):
    """The user's vocab.txt (ids kept) or one built from `count()` (run only when needed)."""
    from liaotian.pipelines.tokenizer import CharTokenizer, build_vocab

    if vocab:
        return CharTokenizer.from_vocab_file(vocab), str(vocab)
    return build_vocab(count(), min_count, max_vocab), "built"


def input_info(path: str, fmt: str) -> dict:
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    size = 0
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    return {"path": str(path), "format": fmt, "bytes": size, "sha256": h.hexdigest()}


# ------------------------------------------------------------------ output

def check_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse to mix runs: a non-empty dir needs `overwrite`, which removes only our own entries."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace it")
        for name in OUR_ENTRIES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_rejected(directory: Path, records: Iterable[RejectedRecord]) -> Counter:
    """`rejected/<reason>.jsonl`, streamed; returns counts by reason."""
    directory.mkdir(parents=True, exist_ok=True)
    files, counts = {}, Counter()
    try:
        for r in records:
            if r.reason not in files:
                files[r.reason] = open(directory / f"{r.reason}.jsonl", "w", encoding="utf-8")
            files[r.reason].write(r.to_json() + "\n")
            counts[r.reason] += 1
    finally:
        for f in files.values():
            f.close()
    return counts


def write_split(src: Path, dst: Path, schema: pa.Schema, rows_per_shard: int,
                on_batch: Callable[[pa.Table], None]) -> tuple[int, list[str]]:
    """Stream `src/*.parquet` into `dst/part-NNNNN.parquet` shards of the contract schema."""
    dst.mkdir(parents=True, exist_ok=True)
    rows, shards, writer, in_shard = 0, [], None, 0
    for f in sorted(src.rglob("*.parquet")) if src.exists() else []:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
            table = pa.Table.from_batches([batch])
            on_batch(table)
            table = table.select(schema.names).cast(schema)
            if writer is None or in_shard >= rows_per_shard:
                if writer is not None:
                    writer.close()
                shards.append(f"{dst.name}/part-{len(shards):05d}.parquet")
                writer, in_shard = pq.ParquetWriter(dst.parent / shards[-1], schema), 0
            writer.write_table(table)
            rows += table.num_rows
            in_shard += table.num_rows
    if writer is not None:
        writer.close()
    return rows, shards


def finish_output(out: Path, manifest: Manifest, schema: pa.Schema, rejected: Iterable[RejectedRecord],
                  rows_per_shard: int, truncation: dict[str, str], on_batch: Callable[[str, pa.Table], None] | None = None) -> None:
    """Shards per split, rejected files, and the counts of the manifest (all read back, not assumed)."""
    samples = out / "_work" / "samples"
    truncated: Counter = Counter()
    dialogues_out = 0

    def tally(split: str, t: pa.Table) -> None:
        nonlocal dialogues_out
        n = pc.sum(t.column("new_dialogue")).as_py() or 0
        manifest.split_dialogues[split] = manifest.split_dialogues.get(split, 0) + n
        dialogues_out += n
        for what, column in truncation.items():
            truncated[what] += pc.sum(t.column(column)).as_py() or 0
        if on_batch is not None:
            on_batch(split, t)

    for split in SPLITS:
        rows, shards = write_split(samples / f"split={split}", out / split, schema, rows_per_shard, lambda t, s=split: tally(s, t))
        manifest.splits[split], manifest.shards[split] = rows, shards
        manifest.split_dialogues.setdefault(split, 0)
    manifest.rejected = dict(write_rejected(out / "rejected", _chain(_error_rows(samples / "split=_error"), rejected)))
    manifest.dialogues_out = dialogues_out
    manifest.samples_out = sum(manifest.splits.values())
    manifest.truncated = {k: int(truncated[k]) for k in truncation}
    manifest.tool_version = liaotian.__version__


def _chain(*its):
    for it in its:
        yield from it


def _error_rows(directory: Path):
    for f in sorted(directory.rglob("*.parquet")) if directory.exists() else []:
        for r in pq.read_table(f, columns=["dialogue_id", "error"]).to_pylist():
            yield RejectedRecord(str(f), 0, "error", r["dialogue_id"], r["error"])


def write_sample_shards(out: Path, manifest: Manifest, work, schema: pa.Schema, lookup, rows: pc.Expression,
                        finish: Callable[[pa.Table], tuple[pa.Table, np.ndarray]], rows_per_shard: int, n_inputs: int,
                        in_process: bool = False) -> np.ndarray:
    """Shards per split from the work files of the single pass (`work`, a pyarrow dataset; the rows
    matching `rows` are samples in code points), written by a Ray Data pass over groups of
    consecutive work files of at most about `rows_per_shard` rows, one shard per group and split.
    `finish(table) -> (table, input index per row)` leaves duplicates out and adds `dialogue_id`;
    code points become ids through `lookup` (one NumPy take); columns are cast to the contract
    `schema`. Shards are numbered in input order: `<split>/part-NNNNN.parquet`. Returns the
    dialogues written per input. `in_process`: the same groups written here, one after another."""

    # Work files in input order: by their first sample's `order` (file names follow Ray's write tasks, not the input)
    firsts, data_rows = {}, {}
    for f in work.get_fragments():
        t = f.to_table(columns=["order", "reason"], filter=pc.field("row_kind") != "counts")
        firsts[f.path] = pc.min(t.filter(pc.is_null(t.column("reason"))).column("order")).as_py()
        data_rows[f.path] = t.num_rows  # samples and rejected rows: the size of a group
    files = sorted(firsts, key=lambda path: (firsts[path] is None, firsts[path] or 0, path))
    sizes = [data_rows[f] for f in files]
    if in_process:
        cpus = 1
    else:
        import ray

        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    target = max(1, min(rows_per_shard, -(-sum(sizes) // (2 * cpus))))  # >= 2 tasks per CPU: no idle tail
    groups, current, n = [], [], 0
    for f, size in zip(files, sizes):
        if current and n + size > target:
            groups.append(current)
            current, n = [], 0
        current.append(f)
        n += size
    if current:
        groups.append(current)
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    written = map_items([{"index": i, "files": g} for i, g in enumerate(groups)], _shard_groups, in_process,
                        out=str(out), schema=schema, lookup=lookup, rows=rows, finish=finish, n_inputs=n_inputs)
    written = [row for t in written for row in t.to_pylist()] if in_process else written.take_all()
    written.sort(key=lambda w: w["index"])  # input order
    per_input = np.zeros(n_inputs, np.int64)
    for split in SPLITS:
        manifest.splits[split], manifest.shards[split], manifest.split_dialogues[split] = 0, [], 0
        for w in written:
            if w["split"] == split:
                manifest.shards[split].append(f"{split}/part-{len(manifest.shards[split]):05d}.parquet")
                Path(w["path"]).rename(out / manifest.shards[split][-1])
                manifest.splits[split] += w["rows"]
                manifest.split_dialogues[split] += w["dialogues"]
                per_input += np.asarray(w["per_input"], np.int64)
    manifest.dialogues_out = sum(manifest.split_dialogues.values())
    manifest.samples_out = sum(manifest.splits.values())
    manifest.tool_version = liaotian.__version__
    return per_input


def _shard_groups(groups: pa.Table, out: str, schema: pa.Schema, lookup, rows, finish, n_inputs: int) -> pa.Table:
    """One task of `write_sample_shards`: one temporary shard per split of its group of work files."""
    import pyarrow.dataset as pads

    written = []
    for group in groups.to_pylist():
        parts: dict[str, list[tuple[pa.Table, np.ndarray]]] = {s: [] for s in SPLITS}
        dataset = pads.dataset(group["files"], format="parquet")
        t = dataset.to_table(columns=[n for n in schema.names if n != "dialogue_id"] + ["range_id", "position", "split", "key", "order",
                                                                                        "new_dialogue"], filter=rows)
        if not t.num_rows:
            continue
        t, input_of = finish(t)
        ids = t.column("input_ids").combine_chunks()
        mapped = lookup[ids.flatten().to_numpy(zero_copy_only=False)]
        t = t.set_column(t.schema.get_field_index("input_ids"), "input_ids",
                         pa.ListArray.from_arrays(pc.subtract(ids.offsets, ids.offsets[0]), pa.array(mapped, pa.int32())))
        split = t.column("split").to_numpy(zero_copy_only=False)
        for s in SPLITS:
            mask = split == s
            if mask.any():
                parts[s].append((t.filter(pa.array(mask)), input_of[mask]))
        for s, tables in parts.items():
            if tables:
                t = pa.concat_tables([p for p, _ in tables])
                new = np.asarray(t.column("new_dialogue"), np.int64)
                per_input = np.bincount(np.concatenate([i for _, i in tables]), weights=new, minlength=n_inputs).astype(np.int64)
                tmp = Path(out) / s / f".group-{group['index']:05d}.parquet"
                pq.write_table(t.select(schema.names).cast(schema), tmp, **SHARD_WRITE_OPTIONS)
                written.append({"index": group["index"], "split": s, "rows": t.num_rows, "dialogues": int(new.sum()),
                                "path": str(tmp), "per_input": per_input.tolist()})
    return pa.Table.from_pylist(written, schema=pa.schema([("index", pa.int64()), ("split", pa.string()), ("rows", pa.int64()),
                                                           ("dialogues", pa.int64()), ("path", pa.string()),
                                                           ("per_input", pa.list_(pa.int64()))]))
