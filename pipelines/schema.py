"""Shard schemas, the manifest and the rejected-record format of the data stage. No Ray here."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

# Bump when a shard column changes meaning or type; readers of shards check it.
SCHEMA_VERSION = 1

DIALOG_SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())),
    ("segment_ids", pa.list_(pa.int8())),
    ("loss_mask", pa.list_(pa.int8())),
    ("dialogue_id", pa.string()),
    ("n_turns", pa.int16()),
])
SENTIMENT_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("label", pa.int32())])
TEXT_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32()))])
SCHEMAS = {"dialog": DIALOG_SCHEMA, "sentiment": SENTIMENT_SCHEMA, "text": TEXT_SCHEMA}
SPLITS = ("train", "valid", "test")

# Why a record was rejected. Every rejected record carries exactly one of these.
REASONS = {
    "invalid_utf8": "bytes that are not UTF-8",
    "invalid_json": "a JSON value (or JSONL line) that does not parse",
    "truncated_json": "the file ends inside a value; the unparseable tail is one record",
    "not_a_list": "a dialogue that is not a list of utterances",
    "non_string_utterance": "an utterance that is not a string",
    "too_few_utterances": "fewer than 2 utterances left after cleaning",
    "duplicate": "the same cleaned dialogue (or text) seen earlier in the input order",
    "bad_row": "a TSV/CSV row without the fields a dialogue needs (a tab, a dialogue id, an utterance)",
    "bad_label": "a sentiment label that is not an integer class",
    "empty_text": "a text that is empty after cleaning",
    "subsampled": "left out of train by --imbalance (a valid record, counted so that in == out + rejected)",
    "error": "an unexpected exception while processing the record",
}


@dataclass
class RejectedRecord:
    """One quarantined input record: where it was, why, and what it was (JSON-able)."""

    source: str
    position: int  # record index in the file (JSONL: 1-based line number)
    reason: str
    record: Any = None
    detail: str | None = None
    split: str | None = None  # the corpus split it came from, when the corpus has splits

    def __post_init__(self):
        if self.reason not in REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}; known: {sorted(REASONS)}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=repr)


@dataclass
class Manifest:
    """`manifest.json` of a preprocessed directory. `dialogues_in == dialogues_out + sum(rejected)`."""

    kind: str  # dialog | sentiment | text
    inputs: list[dict] = field(default_factory=list)  # {path, format, bytes, sha256}
    dialogues_in: int = 0  # records read (dialogues, or texts for sentiment/text)
    dialogues_out: int = 0  # records that produced at least one sample
    samples_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    truncated: dict[str, int] = field(default_factory=dict)  # what was cut -> count
    cleaning: dict[str, int] = field(default_factory=dict)  # rule -> how often it changed something
    splits: dict[str, int] = field(default_factory=dict)  # split -> samples
    split_dialogues: dict[str, int] = field(default_factory=dict)  # split -> records
    split_source: str = "hash"  # "corpus" when the input carried its own splits
    sources: list[dict] = field(default_factory=list)  # per input: path, format, dialogues_in/out, rejected (dialog job)
    ranges_fallen_back: int = 0  # byte ranges read record by record (or their file read again whole), each logged with its reason
    vocab_size: int = 0
    vocab_source: str = "built"  # built | a vocab.txt path
    max_len: int = 0
    shards: dict[str, list[str]] = field(default_factory=dict)  # split -> relative paths
    schema_version: int = SCHEMA_VERSION
    tool_version: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # sentiment: num_classes, label_names, class_counts

    def check(self) -> None:
        """Raise if the accounting does not balance (it always must)."""
        total = self.dialogues_out + sum(self.rejected.values())
        if self.dialogues_in != total:
            raise ValueError(f"manifest does not balance: dialogues_in={self.dialogues_in} != "
                             f"dialogues_out={self.dialogues_out} + rejected={sum(self.rejected.values())}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))  # sentiment's num_classes/label_names/class_counts sit at top level
        return d

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "manifest.json"
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Manifest":
        d = json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__) - {"extra"}
        extra = {k: d.pop(k) for k in list(d) if k not in known}
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{directory}: schema version {d.get('schema_version')} != {SCHEMA_VERSION}; re-run `liaotian data`")
        return cls(**d, extra=extra)
