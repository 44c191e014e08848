"""Dialogue corpora on disk -> `RawDialogue` | `RejectedRecord`, streamed record by record. No Ray here.

Formats: LCCC JSON (a bare list of dialogues, or an object of splits, parsed incrementally with
ijson so a multi-GB file never sits in memory), JSONL (a list or {"dialog": [...]} per line),
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
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ijson

from pipelines.schema import RejectedRecord

FORMATS = ("lccc", "jsonl", "chatterbot", "hf")
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


# ------------------------------------------------------------------ LCCC spacing

# A space with a non-ASCII character on either side is LCCC's tokenisation, not text: remove it.
# Spaces between two ASCII words ("hello world") are kept.
_LCCC_SPACE = re.compile(r"(?<=[^\x00-\x7f]) +| +(?=[^\x00-\x7f])")


def restore_spacing(text: str) -> str:
    """'今 天 天 气 ok good' -> '今天天气ok good' (LCCC separates every character/word by spaces)."""
    return _LCCC_SPACE.sub("", text)


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
    with open(p, "rb") as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8", "liaotian-mark").lstrip("\ufeff \t\r\n")
    if not text:
        raise CorpusError(f"{p}: empty file")
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
    source = str(path)
    split = SPLIT_NAMES[split_key] if split_key is not None else None
    prefix = f"{split_key}.item" if split_key is not None else "item"
    position = 0
    with open(path, "rb") as f:
        stream = _Utf8Marked(f)
        try:
            for value in ijson.items(stream, prefix, use_float=True):
                yield to_record(source, position, split, value)
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


def read_unit(path: str | Path, fmt: str, split_key: str | None = None) -> Iterator[RawDialogue | RejectedRecord]:
    if not Path(path).exists():
        raise CorpusError(f"{path}: no such file or directory")
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
