"""What the three `liaotian data` jobs share: the streaming Ray Data source, splits, output dir,
shard writing, rejected files. Ray is imported inside the functions that need it."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
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
    ("unit", pa.int64()), ("source", pa.string()), ("position", pa.int64()), ("split", pa.string()),
    ("utterances", pa.list_(pa.string())), ("label", pa.int64()), ("reason", pa.string()), ("detail", pa.string()), ("record", pa.string()),
])


# ------------------------------------------------------------------ reading

def read_units(units: list[tuple[str, str, str | None]], rows_per_block: int, reader=None,
               ranges: dict[int, list] | None = None, transform: Callable[[pa.Table], pa.Table] | None = None):
    """A Ray Dataset of raw records: one streaming read task per (file, split), or per byte range of
    it where `ranges[unit index]` lists them (`readers.lccc_plan`); each task yields blocks of
    `rows_per_block` records as it parses, so no task ever holds a whole file. `transform`, when
    given, runs on each block inside the read task (the dialog job cleans and encodes there: no
    hand-off of raw blocks between tasks)."""
    import ray
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    specs = _read_specs(units, ranges)

    class CorpusSource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [ReadTask(lambda i=i, u=u, r=r: _transformed(_blocks(i, *u, rows_per_block, reader or readers.read_unit, r),
                                                                transform),
                             BlockMetadata(num_rows=r.count if r else None, size_bytes=None, exec_stats=None, input_files=[u[0]]),
                             schema=RAW_SCHEMA if transform is None else None)
                    for i, u, r in specs]

    # one output per task, no re-splitting: the blocks are already the batches of the downstream step
    return ray.data.read_datasource(CorpusSource(), override_num_blocks=max(1, len(specs)))


def _read_specs(units, ranges) -> list[tuple[int, tuple, object]]:
    """(unit index, unit, byte range or None): one read task each."""
    ranges = ranges or {}
    return [(i, u, r) for i, u in enumerate(units) for r in ranges.get(i, [None])]


def input_bytes(paths: Iterable[str]) -> int:
    """Bytes on disk of the input files (a directory: all its files); a missing path counts 0 (the reader names it)."""
    total = 0
    for p in map(Path, paths):
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def write_units_in_process(units, rows_per_block: int, out_dir: Path, ranges: dict[int, list] | None = None,
                           transform: Callable[[pa.Table], pa.Table] | None = None) -> None:
    """What `read_units(...).write_datasink(arrow_file_sink(out_dir))` does, run in this process: the same
    read tasks one after another, each block one Arrow file. For inputs so small that starting Ray and
    its workers (5-10 s on 2 cores) costs more than the work itself."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for task, (i, u, r) in enumerate(_read_specs(units, ranges)):
        for b, table in enumerate(_transformed(_blocks(i, *u, rows_per_block, readers.read_unit, r), transform)):
            _write_arrow_file(table, out_dir / f"{task:06d}_{b:06d}.arrow")


def _write_arrow_file(table: pa.Table, path) -> None:
    with pa.ipc.new_file(path, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table, max_chunksize=65536)


def arrow_file_sink(path: str):
    """A Ray Data datasink writing each write task's rows as one Arrow IPC file (lz4): the work files
    of a job, written and read back once, need no Parquet encoding (pyarrow.dataset reads them with
    format="arrow": filters and column projection as for Parquet)."""
    from ray.data.datasource import BlockBasedFileDatasink

    class ArrowFileSink(BlockBasedFileDatasink):
        def __init__(self, path: str):
            super().__init__(path, file_format="arrow")

        def write_block_to_file(self, block, file) -> None:
            _write_arrow_file(block.to_arrow(), file)

    return ArrowFileSink(path)


def _transformed(blocks: Iterable[pa.Table], transform) -> Iterable[pa.Table]:
    return blocks if transform is None else (transform(b) for b in blocks)


def _blocks(unit: int, path: str, fmt: str, split_key: str | None, rows: int, reader, rng=None) -> Iterable[pa.Table]:
    if rng is not None:  # one byte range of an LCCC file: fast when it is plain, else record by record
        table = _range_table(unit, path, split_key, rng)
        if table is not None:
            for start in range(0, table.num_rows, rows):
                yield table.slice(start, rows)
            return
        records = readers.read_lccc_range(path, split_key, rng)
    else:
        records = reader(path, fmt, split_key)
    buf: list = []
    for rec in records:
        buf.append(rec)
        if len(buf) >= rows:
            yield _raw_table(unit, buf)
            buf = []
    if buf:
        yield _raw_table(unit, buf)


def _range_table(unit: int, path: str, split_key: str | None, rng) -> pa.Table | None:
    """The raw table of a plain range without a Python object per record (None: not plain)."""
    utterances = readers.lccc_range_utterances(path, rng)
    if utterances is None:
        return None  # a string record, a nested list, bad UTF-8...: the careful path names the record and the reason
    n = len(utterances)
    split = readers.SPLIT_NAMES[split_key] if split_key is not None else None
    none = pa.nulls(n, pa.string())
    return pa.table({
        "unit": pa.array(np.full(n, unit, np.int64)), "source": _repeat(str(path), n),
        "position": pa.array(np.arange(rng.first, rng.first + n, dtype=np.int64)),
        "split": none if split is None else _repeat(split, n),
        "utterances": utterances, "label": pa.nulls(n, pa.int64()), "reason": none, "detail": none, "record": none,
    }, schema=RAW_SCHEMA)


def _repeat(value: str, n: int) -> pa.Array:
    return pa.array([value], pa.string()).take(pa.array(np.zeros(n, np.int64)))


def _raw_table(unit: int, recs: list) -> pa.Table:
    ok = [not isinstance(r, RejectedRecord) for r in recs]
    return pa.table({
        "unit": pa.array([unit] * len(recs), pa.int64()),
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


def write_sample_shards(out: Path, manifest: Manifest, clean, schema: pa.Schema, lookup, drop: Callable[[pa.Table], object],
                        rows_per_shard: int, in_process: bool = False) -> None:
    """Shards per split from the single pass's output (`clean`, a pyarrow dataset of sample rows in
    code points, plus rejected rows), written by Ray tasks in parallel: each takes consecutive work files of at most
    about `rows_per_shard` rows and writes one shard per split. Rows where `drop(table)` is True
    (duplicates) are left out, code points become ids through `lookup` (one NumPy take), columns are
    cast to the contract `schema`. Shards are then numbered in input order: `<split>/part-NNNNN.parquet`.
    `in_process`: the same groups, written one after another here (small inputs, no Ray)."""
    fragments = sorted(clean.get_fragments(), key=lambda f: f.path)
    files, sizes = [f.path for f in fragments], [f.count_rows() for f in fragments]
    fmt = clean.format.default_extname
    if in_process:
        cpus = 1
    else:
        import ray

        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    target = max(1, min(rows_per_shard, -(-sum(sizes) // (2 * cpus))))  # >= 2 tasks per CPU: no idle tail
    groups, current, rows = [], [], 0
    for f, n in zip(files, sizes):
        if current and rows + n > target:
            groups.append(current)
            current, rows = [], 0
        current.append(f)
        rows += n
    if current:
        groups.append(current)
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    if in_process:
        results = [_shard_group(g, fmt, i, str(out), schema, lookup, drop) for i, g in enumerate(groups)]
    else:
        task = ray.remote(num_cpus=1)(_shard_group)
        lookup_ref = ray.put(lookup)
        results = ray.get([task.remote(g, fmt, i, str(out), schema, lookup_ref, drop) for i, g in enumerate(groups)])
    for split in SPLITS:
        manifest.splits[split], manifest.shards[split], manifest.split_dialogues[split] = 0, [], 0
        for written in results:  # input order
            if split in written:
                rows, dialogues, tmp = written[split]
                manifest.shards[split].append(f"{split}/part-{len(manifest.shards[split]):05d}.parquet")
                Path(tmp).rename(out / manifest.shards[split][-1])
                manifest.splits[split] += rows
                manifest.split_dialogues[split] += dialogues
    manifest.dialogues_out = sum(manifest.split_dialogues.values())
    manifest.samples_out = sum(manifest.splits.values())
    manifest.tool_version = liaotian.__version__


def _shard_group(files: list[str], fmt: str, index: int, out: str, schema: pa.Schema, lookup, drop) -> dict:
    """One Ray task of `write_sample_shards`: {split: (rows, dialogues, temporary shard path)}."""
    import pyarrow.dataset as pads

    parts: dict[str, list[pa.Table]] = {s: [] for s in SPLITS}
    for f in files:
        t = pads.dataset(f, format=fmt).to_table(columns=list(schema.names) + ["split", "key", "order", "new_dialogue"],
                                                filter=pc.field("reason").is_null())
        if not t.num_rows:
            continue
        t = t.filter(pa.array(~np.asarray(drop(t), bool)))
        ids = t.column("input_ids").combine_chunks()
        mapped = lookup[ids.flatten().to_numpy(zero_copy_only=False)]
        t = t.set_column(t.schema.get_field_index("input_ids"), "input_ids",
                         pa.ListArray.from_arrays(pc.subtract(ids.offsets, ids.offsets[0]), pa.array(mapped, pa.int32())))
        split = t.column("split").to_numpy(zero_copy_only=False)
        for s in SPLITS:
            mask = split == s
            if mask.any():
                parts[s].append(t.filter(pa.array(mask)))
    written = {}
    for s, tables in parts.items():
        if tables:
            t = pa.concat_tables(tables)
            tmp = Path(out) / s / f".group-{index:05d}.parquet"
            pq.write_table(t.select(schema.names).cast(schema), tmp, **SHARD_WRITE_OPTIONS)
            written[s] = (t.num_rows, int(pc.sum(t.column("new_dialogue")).as_py() or 0), str(tmp))
    return written
