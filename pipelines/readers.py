"""Dialogue corpora on disk -> `RawDialogue` | `RejectedRecord`, streamed record by record. No Ray here.

Formats: LCCC JSON (a bare list of dialogues, or an object of splits, parsed incrementally with
ijson so a multi-GB file never sits in memory; a plain file is also planned into byte ranges that
are parsed in parallel with msgspec: `lccc_plan`, `read_lccc_range`), JSONL (a list or {"dialog": [...]} per line),
chatterbot YAML, and a Hugging Face dataset directory (`save_to_disk`, memory-mapped Arrow).

Bad input policy: a bad *record* becomes a `RejectedRecord` (source, position, reason, record) and
reading goes on. Bytes that are not UTF-8 are decoded to a marker so that the record holding them is
rejected as `invalid_utf8` while its neighbours survive. When a JSON file stops parsing (truncated
or corrupt), everything read so far is kept and the unparseable tail becomes ONE rejected record
(`truncated_json` / `invalid_json`) naming the byte offset and the index of the record it hit; JSON
cannot be resynchronised after a syntax error, so nothing after it is guessed at. A file that cannot
be opened or whose format cannot be recognised raises `CorpusError` naming the file.
"""
from __future__ import annotations

import codecs
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ijson
import msgspec

from liaotian.pipelines.schema import RejectedRecord

FORMATS = ("lccc", "jsonl", "chatterbot", "hf", "pairs", "csv", "kdconv")
# CSV dialogues (CPED's layout): the default columns of the dialogue id and of the utterance.
CSV_COLUMNS = ("Dialogue_ID", "Utterance")
# JSONL / HF rows may wrap the utterance list in an object under one of these keys.
DIALOGUE_KEYS = ("dialog", "dialogue", "utterances", "conversation", "turns")
# Corpus split names -> ours. Anything else is an error naming the key (never silently merged).
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}

# Undecodable bytes become this noncharacter: JSON parsers accept it, no real text contains it, so
# the record that holds it can be rejected after parsing without losing the rest of the file.
BAD_BYTE = "\U0010fffe"
codecs.register_error("liaotian-mark", lambda e: (BAD_BYTE, e.end))


class CorpusError(ValueError):
    """A whole input cannot be read (missing, unknown format, unknown split); names file and position."""


@dataclass
class RawDialogue:
    source: str
    position: int  # record index in the file (JSONL: 1-based line number)
    split: str | None  # the corpus's own split, or None
    utterances: list[str]


# ------------------------------------------------------------------ detection

def detect_format(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"{p}: no such file or directory")
    if p.is_dir():
        if any((p / n).exists() for n in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return "hf"
        raise CorpusError(f"{p}: a directory but not a Hugging Face dataset saved with save_to_disk")
    suffix = p.suffix.lower()
    if suffix in (".yml", ".yaml"):
        return "chatterbot"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    with open(p, "rb") as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8", "liaotian-mark").lstrip("\ufeff \t\r\n")
    if not text:
        raise CorpusError(f"{p}: empty file")
    if suffix in (".tsv", ".txt"):
        if "\t" in text.split("\n", 1)[0]:
            return "pairs"
        raise CorpusError(f"{p}: a text file whose first line has no tab; dialogue pairs are post<TAB>response lines")
    if text[0] in "[{" and re.match(r'[\[{]\s*(?:"[^"]*"\s*:\s*)?\{\s*"messages"\s*:', text):
        return "kdconv"
    if text[0] == "{":
        # An object on its own first line is a JSONL row; LCCC's object of splits spans lines.
        return "jsonl" if _first_line_is_value(text) else "lccc"
    if text[0] == "[":
        return "jsonl" if _first_line_is_value(text, need_flat_list=True) else "lccc"
    raise CorpusError(f"{p}: cannot detect the format (starts with {text[:20]!r}); pass --format")


def _first_line_is_value(text: str, need_flat_list: bool = False) -> bool:
    line = text.split("\n", 1)[0]
    try:
        value = json.loads(line)
    except ValueError:
        return False
    if need_flat_list:  # [["a","b"]] on one line is a one-line LCCC file, ["a","b"] is a JSONL row
        return isinstance(value, list) and all(not isinstance(v, list) for v in value)
    # {"train": [[...]]} on one line is a one-line LCCC file, {"dialog": [...]} a JSONL row
    return not (isinstance(value, dict) and value and all(k in SPLIT_NAMES and isinstance(v, list) for k, v in value.items()))


# ------------------------------------------------------------------ validation

def to_record(source: str, position: int, split: str | None, value) -> RawDialogue | RejectedRecord:
    """Check one parsed dialogue: a list of strings (or an object wrapping one)."""
    checked = _check(source, position, split, value)
    if isinstance(checked, RejectedRecord):
        checked.split = split
    return checked


def _check(source: str, position: int, split: str | None, value) -> RawDialogue | RejectedRecord:
    if isinstance(value, dict):
        key = next((k for k in DIALOGUE_KEYS if k in value), None)
        if key is None:
            return RejectedRecord(source, position, "not_a_list", value, f"object without any of {DIALOGUE_KEYS}")
        value = value[key]
    if not isinstance(value, list):
        return RejectedRecord(source, position, "not_a_list", value, f"got {type(value).__name__}")
    for i, u in enumerate(value):
        if not isinstance(u, str):
            return RejectedRecord(source, position, "non_string_utterance", value, f"utterance {i} is {type(u).__name__}")
        if BAD_BYTE in u:
            shown = [v.replace(BAD_BYTE, "\ufffd") for v in value]
            return RejectedRecord(source, position, "invalid_utf8", shown, f"utterance {i} holds bytes that are not UTF-8")
    return RawDialogue(source, position, split, value)


# ------------------------------------------------------------------ LCCC JSON (streamed)

class _Utf8Marked:
    """A binary file wrapper that re-encodes its bytes, replacing invalid UTF-8 with BAD_BYTE."""

    def __init__(self, f):
        self.f, self.offset = f, 0
        self.decoder = codecs.getincrementaldecoder("utf-8")("liaotian-mark")

    def read(self, n: int = -1) -> bytes:
        raw = self.f.read(n)
        self.offset += len(raw)
        return self.decoder.decode(raw, final=not raw).encode("utf-8")


def lccc_splits(path: str | Path) -> list[str | None]:
    """[None] for a bare list; the top-level keys (in file order) for an object of splits."""
    with open(path, "rb") as f:
        stream = _Utf8Marked(f)
        first = stream.read(1 << 12).decode("utf-8").lstrip("\ufeff \t\r\n")[:1]
        if first != "{":
            return [None]
        f.seek(0)
        stream = _Utf8Marked(f)
        keys = []
        try:  # one pass over the events, keeping only the top-level keys (constant memory)
            for prefix, event, value in ijson.parse(stream):
                if prefix == "" and event == "map_key":
                    keys.append(value)
        except ijson.JSONError:
            pass  # a truncated file: the keys seen so far; read_lccc reports the break
    for k in keys:
        if k not in SPLIT_NAMES:
            raise CorpusError(f"{path}: top-level key {k!r} is not a split ({sorted(SPLIT_NAMES)})")
    return keys


def read_lccc(path: str | Path, split_key: str | None = None) -> Iterator[RawDialogue | RejectedRecord]:
    """One split (`split_key`, a top-level key) or the whole bare list of an LCCC JSON file."""
    return _read_json_items(path, f"{split_key}.item" if split_key is not None else "item", split_key)


def _read_json_items(path, prefix: str, split_key: str | None, items=None) -> Iterator[RawDialogue | RejectedRecord]:
    """The values under `prefix` of a JSON file, streamed, each checked by `to_record`. With
    `items(stream)` (yielding (key, value) pairs of an object of records) the values come back
    unchecked, wrapped in a `RawDialogue`, for the caller to check."""
    source = str(path)
    split = SPLIT_NAMES[split_key] if split_key is not None else None
    position = 0
    with open(path, "rb") as f:
        stream = _Utf8Marked(f)
        try:
            if items is None:
                for value in ijson.items(stream, prefix, use_float=True):
                    yield to_record(source, position, split, value)
                    position += 1
            else:
                for _, value in items(stream):
                    yield RawDialogue(source, position, split, value)
                    position += 1
        except ijson.JSONError as e:
            message = str(e).strip().splitlines()[0]
            reason = "truncated_json" if "premature EOF" in message or "Incomplete" in message else "invalid_json"
            where = f"{split_key}[{position}]" if split_key is not None else f"[{position}]"
            yield RejectedRecord(source, position, reason, None,
                                 f"JSON stops parsing at dialogue {where}, before byte {stream.offset}: {message}",
                                 split=split)


# ------------------------------------------------------------------ JSONL

def read_jsonl(path: str | Path) -> Iterator[RawDialogue | RejectedRecord]:
    source = str(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines are layout, not records
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RejectedRecord(source, lineno, "invalid_utf8", raw.decode("utf-8", "replace").rstrip("\n"),
                                     f"line {lineno}, byte {e.start} of the line")
                continue
            try:
                value = json.loads(line)
            except ValueError as e:
                reason = "truncated_json" if not raw.endswith(b"\n") else "invalid_json"
                yield RejectedRecord(source, lineno, reason, line.rstrip("\n"), f"line {lineno}: {e}")
                continue
            yield to_record(source, lineno, None, value)


# ------------------------------------------------------------------ chatterbot YAML

def read_chatterbot(path: str | Path) -> Iterator[RawDialogue | RejectedRecord]:
    import yaml

    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 at byte {e.start}") from None
    try:
        # BaseLoader keeps every scalar a string: "42" is an utterance, not an int (YAML typing is
        # an accident of the format here, not bad data).
        doc = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as e:
        raise CorpusError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("conversations"), list):
        raise CorpusError(f"{path}: a chatterbot file needs a top-level 'conversations' list")
    for i, conv in enumerate(doc["conversations"]):
        yield to_record(source, i, None, conv)


def chatterbot_files(language: str = "chinese") -> list[Path]:
    """The Chinese conversations shipped with the chatterbot-corpus package."""
    import chatterbot_corpus

    root = Path(chatterbot_corpus.__file__).parent / "data" / language
    files = sorted(root.glob("*.yml"))
    if not files:
        raise CorpusError(f"{root}: no chatterbot YAML files found")
    return files


# ------------------------------------------------------------------ post/response pairs (TSV)

def read_pairs(path: str | Path) -> Iterator[RawDialogue | RejectedRecord]:
    """`post<TAB>response` lines (STC, CDial-GPT's toy data); more tab-separated fields are more turns.
    Positions are 1-based line numbers; a line without a tab is rejected as `bad_row`."""
    source = str(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", "liaotian-mark").rstrip("\r\n")
            if not line.strip():
                continue  # blank lines are layout, not records
            fields = line.split("\t")
            if len(fields) < 2:
                yield RejectedRecord(source, lineno, "bad_row", line, f"line {lineno} has no tab between post and response")
                continue
            yield to_record(source, lineno, None, fields)


# ------------------------------------------------------------------ CSV, one utterance per row (CPED)

def read_csv_dialogues(path: str | Path, columns: tuple[str, str] = CSV_COLUMNS) -> Iterator[RawDialogue | RejectedRecord]:
    """Rows of one dialogue share a dialogue id and follow each other in the file; a dialogue is the
    run of rows with the same id (an id seen again later starts a new dialogue). Position: the line
    number of the dialogue's first row. A row without the id or the utterance is rejected as
    `bad_row` and ends the dialogue it would have continued."""
    import csv

    source = str(path)
    id_col, utt_col = columns
    with open(path, encoding="utf-8-sig", errors="liaotian-mark", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise CorpusError(f"{path}: no column {missing} among {reader.fieldnames} (set data.dialog.csv_columns)")
        current, start, utterances = None, 0, []
        for row in reader:
            lineno = reader.line_num
            dialogue_id, utterance = row.get(id_col), row.get(utt_col)
            if not dialogue_id or utterance is None:
                if utterances:
                    yield to_record(source, start, None, utterances)
                current, utterances = None, []
                yield RejectedRecord(source, lineno, "bad_row", row, f"line {lineno}: no {id_col if not dialogue_id else utt_col}")
                continue
            if dialogue_id != current:
                if utterances:
                    yield to_record(source, start, None, utterances)
                current, start, utterances = dialogue_id, lineno, []
            utterances.append(utterance)
        if utterances:
            yield to_record(source, start, None, utterances)


# ------------------------------------------------------------------ KdConv-style JSON

def read_kdconv(path: str | Path) -> Iterator[RawDialogue | RejectedRecord]:
    """`[{"messages": [{"message": "..."}, ...]}, ...]`, or an object of such dialogues, streamed
    like LCCC JSON (the same rejections for a file that stops parsing)."""
    with open(path, "rb") as f:
        first = f.read(1 << 12).decode("utf-8", "liaotian-mark").lstrip("\ufeff \t\r\n")[:1]
    if first == "{":
        items = lambda stream: ijson.kvitems(stream, "", use_float=True)  # noqa: E731
    else:
        items = lambda stream: enumerate(ijson.items(stream, "item", use_float=True))  # noqa: E731
    for rec in _read_json_items(path, "item", None, items):
        yield rec if isinstance(rec, RejectedRecord) else _kdconv_record(rec)


def _kdconv_record(rec: RawDialogue) -> RawDialogue | RejectedRecord:
    value = rec.utterances
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "message" in m for m in messages):
        return RejectedRecord(rec.source, rec.position, "not_a_list", value, 'expected {"messages": [{"message": ...}, ...]}')
    return to_record(rec.source, rec.position, None, [m["message"] for m in messages])


# ------------------------------------------------------------------ Hugging Face datasets

def hf_splits(path: str | Path) -> list[str | None]:
    p = Path(path)
    if (p / "dataset_dict.json").exists():
        names = json.loads((p / "dataset_dict.json").read_text())["splits"]
        for k in names:
            if k not in SPLIT_NAMES:
                raise CorpusError(f"{path}: split {k!r} is not one of {sorted(SPLIT_NAMES)}")
        return names
    return [None]


def read_hf(path: str | Path, split_key: str | None = None, batch_size: int = 4096) -> Iterator[RawDialogue | RejectedRecord]:
    """Rows of a `save_to_disk` dataset (memory-mapped: only one batch is materialised at a time)."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if split_key is not None:
        ds = ds[split_key]
    elif isinstance(ds, datasets.DatasetDict):
        raise CorpusError(f"{path}: a DatasetDict; read it split by split")
    column = next((k for k in DIALOGUE_KEYS if k in ds.column_names), None)
    if column is None:
        if len(ds.column_names) != 1:
            raise CorpusError(f"{path}: no dialogue column (one of {DIALOGUE_KEYS}) among {ds.column_names}")
        column = ds.column_names[0]
    split = SPLIT_NAMES[split_key] if split_key is not None else None
    source = str(path)
    for start in range(0, len(ds), batch_size):
        for i, value in enumerate(ds[start:start + batch_size][column]):
            yield to_record(source, start + i, split, value)


# ------------------------------------------------------------------ entry points

def units(path: str | Path, fmt: str = "auto") -> list[tuple[str, str | None]]:
    """(format, split_key) read units of one input; each is read independently (in parallel)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise CorpusError(f"{path}: unknown format {fmt!r}; known: {FORMATS}")
    if fmt == "lccc":
        return [(fmt, k) for k in lccc_splits(path)]
    if fmt == "hf":
        return [(fmt, k) for k in hf_splits(path)]
    return [(fmt, None)]


def read_unit(path: str | Path, fmt: str, split_key: str | None = None,
              csv_columns: tuple[str, str] = CSV_COLUMNS) -> Iterator[RawDialogue | RejectedRecord]:
    if not Path(path).exists():
        raise CorpusError(f"{path}: no such file or directory")
    if fmt == "pairs":
        return read_pairs(path)
    if fmt == "csv":
        return read_csv_dialogues(path, tuple(csv_columns))
    if fmt == "kdconv":
        return read_kdconv(path)
    if fmt == "lccc":
        return read_lccc(path, split_key)
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "chatterbot":
        return read_chatterbot(path)
    if fmt == "hf":
        return read_hf(path, split_key)
    raise CorpusError(f"{path}: unknown format {fmt!r}; known: {FORMATS}")


def read_corpus(path: str | Path, fmt: str = "auto") -> Iterator[RawDialogue | RejectedRecord]:
    """Every record of one input, all splits in file order."""
    for unit_fmt, key in units(path, fmt):
        yield from read_unit(path, unit_fmt, key)


# ------------------------------------------------------------------ LCCC JSON in byte ranges (parallel reads)
# A plain LCCC file is cut into byte ranges of about `range_bytes` that are parsed in parallel, each
# with msgspec. The cuts are not found by a scan of the file: at every `range_bytes` the planner looks
# for the next `] , [` (a dialogue's end and the next one's start) and cuts at its comma. Such a cut
# can land inside a string only if an utterance holds `], [` literally; then the range before it ends
# inside that string and cannot parse, so a wrong cut is never silent: the range is read again by the
# careful reader (ijson, record by record), and when that fails too, the whole unit is re-read the
# careful way (`RangePlanError`). Parsers measured on this machine (benchmarks/lccc_parsers.py, CPU
# time of one thread, docs/results/benchmarks/lccc_parsers.txt), MiB/s on LCCC-base valid (2.8 MiB) /
# 1M synthetic dialogues (104 MiB). Whole file to Python lists: pysimdjson 179 / 66, orjson 170 / 79,
# msgspec 143 / 63, ijson (yajl2_c) 117 / 48. In 4 MiB ranges with the check the job needs (every
# dialogue a list of strings): msgspec typed as list[list[str]] (parse and check in one C pass)
# 145 / 93, orjson + the check in Python 117 / 74 (orjson alone, unchecked, 175 / 109). So msgspec, typed.

# `]`, whitespace, the comma between two dialogues, whitespace, `[`.
_DIALOGUE_BOUNDARY = re.compile(rb"\][ \t\r\n]*(,)[ \t\r\n]*\[")
# A split of an object-of-splits file: its key and the `[` that opens its list (a key pattern cannot
# occur inside a JSON string: its quotes would be escaped).
_SPLIT_START = re.compile(rb'"([^"\\]*)"[ \t\r\n]*:[ \t\r\n]*\[')
_SPLIT_AFTER = re.compile(rb'\][ \t\r\n]*,[ \t\r\n]*"([^"\\]*)"[ \t\r\n]*:[ \t\r\n]*\[')
_WHITESPACE_BYTES = b" \t\r\n"
_NOT_WHITESPACE = re.compile(rb"[^ \t\r\n]")


@dataclass(frozen=True)
class LcccRange:
    start: int  # byte offset of the range's first byte (just after a '[' or a ',')
    end: int  # one past its last byte (the next ',' or the closing ']')


_PLAIN_LCCC = msgspec.json.Decoder(list[list[str]])


class RangePlanError(Exception):
    """A planned range does not parse even record by record: the cut or the file is broken, so the
    whole unit is read again by `read_lccc` (which names the byte where the JSON stops parsing)."""


def lccc_plan(path: str | Path, range_bytes: int = 4 << 20) -> dict[str | None, list[LcccRange]] | None:
    """{split key (None for a bare list): [LcccRange, ...]} in file order, or None when the file is
    read whole by `read_lccc` (it does not start with '[' or '{', does not end with ']' or '}', or its
    object is not {split: [dialogues], ...}: a truncated file, a BOM, a key that is not a split)."""
    import mmap

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            first, last = _skip_ws(data, 0), _last_byte(data)
            if first >= len(data) or (data[first], data[last]) not in ((ord("["), ord("]")), (ord("{"), ord("}"))):
                return None
            if data[first] == ord("["):
                return {None: _cut(data, first + 1, last, range_bytes)}
            units = _split_units(data, first, last)
            if units is None:
                return None
            return {key: _cut(data, start, end, range_bytes) for key, start, end in units}


def _last_byte(data, i: int | None = None) -> int:
    i = len(data) - 1 if i is None else i
    while i > 0 and data[i] in _WHITESPACE_BYTES:
        i -= 1
    return i


def _split_units(data, first: int, last: int) -> list[tuple[str, int, int]] | None:
    """(key, start, end) of each split's list in an object of splits, or None when it is not one."""
    m = _SPLIT_START.match(data, _skip_ws(data, first + 1))
    if m is None:
        return None
    after = list(_SPLIT_AFTER.finditer(data, m.end(), last))
    close = _last_byte(data, last - 1)  # the `]` closing the last split
    if data[close] != ord("]"):
        return None
    starts = [(m.group(1), m.end())] + [(a.group(1), a.end()) for a in after]
    ends = [a.start() for a in after] + [close]
    units = []
    for (key, start), end in zip(starts, ends):
        try:
            key = json.loads(b'"' + key + b'"')
        except ValueError:
            return None
        if key not in SPLIT_NAMES or key in {k for k, _, _ in units}:
            return None  # a record that is an object, a key twice...: `read_lccc` reads it and names the key
        units.append((key, start, end))
    return units


def _skip_ws(data, i: int) -> int:
    m = _NOT_WHITESPACE.search(data, i)
    return m.start() if m else len(data)


def _cut(data, start: int, end: int, range_bytes: int) -> list[LcccRange]:
    """Ranges [start, end) of one list's body, cut at the first dialogue boundary after every `range_bytes`."""
    if _NOT_WHITESPACE.search(data, start, end) is None:
        return []
    ranges, step = [], max(1, int(range_bytes))
    while start + step < end:
        m = _DIALOGUE_BOUNDARY.search(data, start + step, end)
        if m is None:
            break
        ranges.append(LcccRange(start, m.start(1)))
        start = m.start(1) + 1
    ranges.append(LcccRange(start, end))
    return ranges


def read_lccc_range(path: str | Path, split_key: str | None, rng: LcccRange):
    """The dialogues of one planned range, and why the fast read did not apply (None when it did).

    Fast: msgspec decodes the range as `list[list[str]]`, parsing and checking types in one C pass,
    and the dialogues come back as one pyarrow list<string> array. A range holding a record that is
    not a list of strings is decoded untyped and each record checked by `to_record`; one that does
    not decode (bytes that are not UTF-8, a lone surrogate escape, a broken cut) is read record by
    record by ijson with invalid UTF-8 marked, as `read_lccc` does. Those two return a list of
    `RawDialogue | RejectedRecord`, positions counted from 0 in the range. Raises `RangePlanError`
    when even ijson cannot read the range."""
    import pyarrow as pa
    import pyarrow.compute as pc

    source = str(path)
    split = SPLIT_NAMES[split_key] if split_key is not None else None
    with open(path, "rb") as f:
        f.seek(rng.start)
        text = b"[" + f.read(rng.end - rng.start) + b"]"
    try:
        dialogues = pa.array(_PLAIN_LCCC.decode(text), pa.list_(pa.string()))
        if not pc.any(pc.match_substring(dialogues.flatten(), BAD_BYTE)).as_py():
            return dialogues, None
        reason = "a string holding U+10FFFE (the marker of undecodable bytes)"
    except msgspec.ValidationError as e:
        reason = f"a record that is not a list of strings: {e}"
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        reason = f"msgspec: {e}"
    if not reason.startswith("msgspec"):
        values = msgspec.json.decode(text)
        return [to_record(source, i, split, v) for i, v in enumerate(values)], reason
    try:
        values = list(ijson.items(_Utf8Marked(io.BytesIO(text)), "item", use_float=True))
    except ijson.JSONError as e:
        raise RangePlanError(f"{path} bytes {rng.start}-{rng.end}: {reason}; ijson: {str(e).strip().splitlines()[0]}") from None
    return [to_record(source, i, split, v) for i, v in enumerate(values)], reason

