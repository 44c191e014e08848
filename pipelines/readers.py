"""Dialogue corpora on disk -> `RawDialogue` | `RejectedRecord`, streamed record by record. No Ray here.

Formats: LCCC JSON (a bare list of dialogues, or an object of splits, parsed incrementally with
ijson so a multi-GB file never sits in memory; a plain file is also planned into byte ranges that
are read in parallel, each into Arrow straight from its bytes: `lccc_plan`, `lccc_range_utterances`), JSONL (a list or {"dialog": [...]} per line),
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
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ijson
import numpy as np

from liaotian.pipelines.schema import RejectedRecord

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


# ------------------------------------------------------------------ LCCC JSON in byte ranges (parallel reads)
# A plan of a whole LCCC file: for each split (or the bare list), byte ranges that each hold a whole
# number of dialogues, with the index of their first dialogue. One streaming NumPy scan of the bytes
# (16 MiB at a time: memory does not grow with the file) that also *validates* the file: strings and
# escapes, the JSON grammar of the tokens, no literal other than strings, one top-level object at most.
# Only a file that passes reads in ranges; any other file (truncated, corrupt, numbers, nested
# objects, a BOM...) is read by `read_lccc` exactly as before, so bad input behaves as it always did.

@dataclass(frozen=True)
class LcccRange:
    start: int  # byte offset of the range's first byte (just after a '[' or a ',')
    end: int  # one past its last byte (the next ',' or the closing ']')
    first: int  # index in its split of the range's first dialogue (the records' `position`)
    count: int  # dialogues in the range


_SCAN_BLOCK = 16 << 20
_OPEN_L, _CLOSE_L, _OPEN_O, _CLOSE_O, _COMMA, _COLON, _STR = range(1, 8)
_QUOTE, _WS, _OTHER = 8, 9, 10
_CLS = np.full(256, _OTHER, np.uint8)
for _c, _k in ((b"[", _OPEN_L), (b"]", _CLOSE_L), (b"{", _OPEN_O), (b"}", _CLOSE_O), (b",", _COMMA), (b":", _COLON),
               (b'"', _QUOTE), (b" ", _WS), (b"\t", _WS), (b"\n", _WS), (b"\r", _WS)):
    _CLS[_c[0]] = _k
# JSON grammar on token pairs: which token may follow which (row: previous, column: next; 0 = start).
_FOLLOWS = np.zeros((8, 8), bool)
for _prev, _nexts in ((0, (_OPEN_L, _OPEN_O)), (_OPEN_L, (_STR, _OPEN_L, _CLOSE_L, _OPEN_O)), (_OPEN_O, (_STR, _CLOSE_O)),
                      (_STR, (_COMMA, _CLOSE_L, _CLOSE_O, _COLON)), (_COLON, (_STR, _OPEN_L, _OPEN_O)),
                      (_COMMA, (_STR, _OPEN_L, _OPEN_O)), (_CLOSE_L, (_COMMA, _CLOSE_L, _CLOSE_O)),
                      (_CLOSE_O, (_COMMA, _CLOSE_L, _CLOSE_O))):
    _FOLLOWS[_prev, list(_nexts)] = True
_TOKEN = np.arange(16, dtype=np.int64)
_TOKEN[_QUOTE] = _STR  # an opening quote is the string's token
_DELTA = np.zeros(8, np.int64)
_DELTA[[_OPEN_L, _OPEN_O]], _DELTA[[_CLOSE_L, _CLOSE_O]] = 1, -1
_ESCAPES = np.zeros(256, bool)
_ESCAPES[list(b'"\\/bfnrtu')] = True
_HEX = np.zeros(256, bool)
_HEX[list(b"0123456789abcdefABCDEF")] = True


def _escapes(b: np.ndarray, n: int, carried: bool = False) -> tuple[np.ndarray, bool]:
    """Positions (< n) of the bytes of `b[:n]` that a backslash escapes, and whether `b[n]` is escaped
    too (`carried`: whether `b[0]` is). Raises _NotSimple for an invalid escape or a \\u surrogate half."""
    head = b[:n]
    is_bs = head == 0x5C
    if not carried and not is_bs.any():
        return np.zeros(0, np.int64), False
    bs = np.flatnonzero(is_bs)
    pos = np.concatenate([[-1], bs]) if carried else bs  # a carried odd run ends at -1
    breaks = np.flatnonzero(np.diff(pos) != 1) + 1
    run_start = pos[np.concatenate([[0], breaks])]
    run_end = pos[np.concatenate([breaks - 1, [len(pos) - 1]])]
    escaped = run_end[((run_end - run_start + 1) % 2) == 1] + 1
    carry = bool(len(escaped) and escaped[-1] == n)
    escaped = escaped[escaped < n]
    if len(escaped):
        tb = head[escaped]
        if not _ESCAPES[tb].all():
            raise _NotSimple("invalid escape")
        for u in escaped[tb == ord("u")]:  # \uXXXX: four hex digits, no surrogate halves
            digits = b[u + 1:u + 5]
            if len(digits) < 4 or not _HEX[digits].all() or bytes(digits[:1]).lower() == b"d" and digits[1] >= ord("8"):
                raise _NotSimple("\\u escape")
    return escaped, carry


class _NotSimple(Exception):
    """The file is not a plain LCCC file of strings: read it the careful way."""


def lccc_plan(path: str | Path, range_bytes: int = 4 << 20) -> dict[str | None, list[LcccRange]] | None:
    """{split key (None for a bare list): [LcccRange, ...]} in file order, or None when the file must
    be read whole by `read_lccc` (anything but a complete, plain LCCC file). Raises CorpusError for a
    top-level key that is not a split, as `lccc_splits` does."""
    try:
        plan = _LcccScanner(range_bytes).scan(path)
    except _NotSimple:
        return None
    for k in plan:
        if k is not None and k not in SPLIT_NAMES:
            raise CorpusError(f"{path}: top-level key {k!r} is not a split ({sorted(SPLIT_NAMES)})")
    return plan


class _LcccScanner:
    def __init__(self, range_bytes: int):
        self.range_bytes = max(1, int(range_bytes))
        self.in_str = False  # the next byte lies inside a string
        self.escaped_next = False  # the next byte is escaped (a backslash run of odd length ended the block)
        self.last = 0  # last token (0: none yet)
        self.depth = 0
        self.kind = None  # "list" | "object"
        self.closed = False  # the top-level value has ended
        self.plan: dict = {}
        self.key = None  # the split being read (object kind)
        self.unit_start = None  # byte after the '[' of the open unit (None: no unit open)
        self.range_start = self.first = self.records = 0
        self.pending_key = None

    def scan(self, path) -> dict:
        with open(path, "rb") as f:
            self.fd = f.fileno()
            buf, base = b"", 0  # base: file offset of buf[0]
            while True:
                chunk = f.read(_SCAN_BLOCK)
                buf += chunk
                final = not chunk
                n = len(buf) if final else max(0, len(buf) - 8)  # keep 8 bytes: escapes are read ahead
                if n:
                    self._block(np.frombuffer(buf, np.uint8), n, base)
                buf, base = buf[n:], base + n
                if final:
                    break
        if not self.closed or self.in_str or self.kind is None:
            raise _NotSimple("the top-level value does not end")  # truncated (or empty)
        return self.plan

    def _block(self, b: np.ndarray, n: int, base: int) -> None:
        head = b[:n]
        # --- escapes: a byte after a run of backslashes of odd length
        escaped, self.escaped_next = _escapes(b, n, self.escaped_next)
        # --- strings: unescaped quotes toggle. Only the bytes between strings (few) are looked at:
        # each gap from a closing quote to the next opening quote, that quote included, in file order.
        quotes = np.flatnonzero(head == 0x22)
        if len(escaped):
            quotes = quotes[~np.isin(quotes, escaped)]
        first_open = 1 if self.in_str else 0  # quote k opens a string when k - first_open is even
        opening, closing = quotes[first_open::2], quotes[1 - first_open::2]
        starts = closing + 1 if self.in_str else np.concatenate([[0], closing + 1])
        ends = opening if (len(quotes) + first_open) % 2 else np.append(opening, n - 1)  # inclusive
        self.in_str = bool((len(quotes) + first_open) % 2)
        lengths = ends - starts + 1
        keep = lengths > 0
        starts, lengths = starts[keep], lengths[keep]
        idx = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        cls = _CLS[head[idx]]
        if (cls == _OTHER).any():
            raise _NotSimple("a byte outside strings that is not structure (number, literal, BOM, bad UTF-8...)")
        if np.count_nonzero(head < 0x20) != np.count_nonzero(head[idx] < 0x20):  # newlines, tabs: between strings only
            raise _NotSimple("a control character inside a string")
        # --- tokens: structure outside strings, and each opening quote as one string token
        is_tok = cls <= _QUOTE
        tok_pos = idx[is_tok]
        tok = _TOKEN[cls[is_tok]]
        if not len(tok):
            return
        prev = np.concatenate([[self.last], tok[:-1]])
        if self.closed or not _FOLLOWS[prev, tok].all():
            raise _NotSimple("JSON grammar")
        if self.kind is None:
            self.kind = "list" if tok[0] == _OPEN_L else "object"
        delta = _DELTA[tok]
        after = self.depth + np.cumsum(delta)
        before = after - delta
        if (after < 0).any():
            raise _NotSimple("unbalanced")
        # one object at most, and only at the top; '}' closes it; ':' only as its key separator
        is_o = (tok == _OPEN_O) | (tok == _CLOSE_O)
        if is_o.any() and (self.kind != "object" or (before[tok == _OPEN_O] != 0).any() or (after[tok == _CLOSE_O] != 0).any()):
            raise _NotSimple("a nested object")
        if self.kind == "list" and (tok == _COLON).any():
            raise _NotSimple("':' in a list")
        ends = np.flatnonzero(after == 0)
        if len(ends) and ends[0] != len(tok) - 1:
            raise _NotSimple("content after the top-level value")
        level = 2 if self.kind == "object" else 1  # depth at which dialogues live
        if self.kind == "object":  # depth 1: "key" : [ ... ] , "key" : [ ... ]
            nxt = np.append(tok[1:], -1)  # -1: the next token lies in the next block (checked there by pairs)
            at1 = before == 1
            if ((tok == _COLON) & ~at1).any():
                raise _NotSimple("':' inside a split")
            bad = at1 & (((tok == _STR) & (nxt != _COLON) & (nxt != -1)) | ((tok == _COLON) & (nxt != _OPEN_L) & (nxt != -1))
                         | ((tok == _COMMA) & (nxt != _STR) & (nxt != -1)))
            # a ':' at the end of a block followed by a non-'[' is caught by the unit event below
            if bad.any():
                raise _NotSimple("an object that is not {split: [dialogues]}")
        self.last, self.depth = int(tok[-1]), int(after[-1])
        if len(ends):
            self.closed = True
        # --- events: units open/close, keys; dialogue separators in bulk between them
        opens = tok_pos[(tok == _OPEN_L) & (before == level - 1)]
        closes = tok_pos[(tok == _CLOSE_L) & (after == level - 1)]
        keys = tok_pos[(tok == _STR) & (before == 1)] if self.kind == "object" else np.zeros(0, np.int64)
        commas = tok_pos[(tok == _COMMA) & (before == level)]
        colons = tok_pos[(tok == _COLON)] if self.kind == "object" else np.zeros(0, np.int64)
        empty_close = set(tok_pos[(tok == _CLOSE_L) & (after == level - 1) & (prev == _OPEN_L)].tolist())  # '[]'
        events = sorted([(int(p), "open") for p in opens] + [(int(p), "close") for p in closes]
                        + [(int(p), "key") for p in keys] + [(int(p), "colon") for p in colons])
        done = 0  # commas consumed
        for p, what in events:
            upto = int(np.searchsorted(commas, p))
            self._commas(commas[done:upto] + base)
            done = upto
            if what == "key":
                if self.last_event == "colon":
                    raise _NotSimple("a string where a split's list belongs")
                self.pending_key = base + p
            elif what == "colon":  # the key: the bytes from its opening quote to here (maybe in an earlier block)
                text = os.pread(self.fd, base + p - self.pending_key, self.pending_key)
                self.key = json.loads(text.decode("utf-8", "strict"))
            elif what == "open":
                if self.kind == "object":
                    if self.last_event != "colon":
                        raise _NotSimple("a split list without a key")
                    if self.key in self.plan:
                        raise _NotSimple("a split key twice")
                self.plan[self.key] = []
                self.unit_start = self.range_start = base + p + 1
                self.first = self.records = 0
            elif what == "close":
                if p not in empty_close:
                    self.plan[self.key].append(LcccRange(self.range_start, base + p, self.first, self.records + 1))
                self.unit_start = None
            self.last_event = what
        self._commas(commas[done:] + base)

    last_event = None

    def _commas(self, commas: np.ndarray) -> None:
        """Dialogue separators (file offsets, sorted) of the open unit: cut a range when it is big enough."""
        while len(commas):
            target = self.range_start + self.range_bytes
            i = int(np.searchsorted(commas, target))
            if i >= len(commas):
                self.records += len(commas)
                return
            self.records += i  # the commas before the cut separate records inside the range
            cut = int(commas[i])
            self.plan[self.key].append(LcccRange(self.range_start, cut, self.first, self.records + 1))
            self.first += self.records + 1
            self.records = 0
            self.range_start = cut + 1
            commas = commas[i + 1:]


class _RangeStream:
    """`[` + bytes [start, end) of a file + `]`, as a binary stream (the careful reader of one range)."""

    def __init__(self, f, rng: LcccRange):
        self.f, self.left, self.parts = f, rng.end - rng.start, [b"["]
        f.seek(rng.start)

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson probes the stream's type with read(0)
            return b""
        if self.parts:
            return self.parts.pop()
        if self.left <= 0:
            if self.left == 0:
                self.left = -1
                return b"]"
            return b""
        raw = self.f.read(min(self.left, n if n > 0 else self.left))
        self.left -= len(raw)
        return raw


def read_lccc_range(path: str | Path, split_key: str | None, rng: LcccRange) -> Iterator[RawDialogue | RejectedRecord]:
    """The dialogues of one planned range, each checked by `to_record` (invalid UTF-8 marked as in `read_lccc`)."""
    source = str(path)
    split = SPLIT_NAMES[split_key] if split_key is not None else None
    with open(path, "rb") as f:
        for i, value in enumerate(ijson.items(_Utf8Marked(_RangeStream(f, rng)), "item", use_float=True)):
            yield to_record(source, rng.first + i, split, value)


_BAD_BYTE_UTF8 = BAD_BYTE.encode("utf-8")


def lccc_range_utterances(path: str | Path, rng: LcccRange):
    """The fast read of one planned range: a pyarrow list<string> array of its dialogues, built from
    the bytes with NumPy (string contents sliced out between their quotes; only strings holding an
    escape go through `json.loads`). None unless every dialogue is a flat list of strings in valid
    UTF-8; `read_lccc_range` then reads the range record by record."""
    import pyarrow as pa

    with open(path, "rb") as f:
        f.seek(rng.start)
        raw = f.read(rng.end - rng.start)
    if _BAD_BYTE_UTF8 in raw:
        return None
    b = np.frombuffer(raw, np.uint8)
    try:
        escaped, _ = _escapes(b, len(b))
    except _NotSimple:
        return None
    quotes = np.flatnonzero(b == 0x22)
    if len(escaped):
        quotes = quotes[~np.isin(quotes, escaped)]
    if len(quotes) % 2:
        return None
    opening, closing = quotes[0::2], quotes[1::2]
    starts, ends = np.concatenate([[0], closing + 1]), np.append(opening, len(b))  # between strings
    lengths = ends - starts
    gap = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    brackets = gap[(b[gap] == 0x5B) | (b[gap] == 0x5D)]
    kinds = b[brackets]
    if len(brackets) != 2 * rng.count or not (kinds[0::2] == 0x5B).all() or not (kinds[1::2] == 0x5D).all():
        return None  # a record that is not a list, or a nested list
    lo, hi = brackets[0::2], brackets[1::2]
    record = np.searchsorted(lo, opening) - 1
    if len(record) and ((record < 0).any() or (opening > hi[record]).any()):
        return None  # a string between the lists
    keep = np.ones(len(b), bool)
    keep[gap] = False
    keep[quotes] = False
    sizes = closing - opening - 1
    offsets = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] >= 2**31 - 1:
        return None
    strings = pa.StringArray.from_buffers(len(sizes), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b[keep].tobytes()))
    try:
        strings.validate(full=True)  # UTF-8
    except pa.ArrowInvalid:
        return None
    backslashes = np.flatnonzero(b == 0x5C) if b"\\" in raw else ()
    if len(backslashes):  # strings with escapes: decoded one by one, put back in place
        owners = np.unique(np.searchsorted(opening, backslashes) - 1)
        try:
            fixed = pa.array([json.loads(raw[opening[i]:closing[i] + 1]) for i in owners], pa.string())
        except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        take = np.arange(len(sizes))
        take[owners] = len(sizes) + np.arange(len(owners))
        strings = pa.concat_arrays([strings, fixed]).take(pa.array(take))
    list_offsets = np.zeros(rng.count + 1, np.int32)
    np.cumsum(np.bincount(record, minlength=rng.count), out=list_offsets[1:])
    return pa.ListArray.from_arrays(pa.array(list_offsets), strings)
