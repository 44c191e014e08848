"""Cleaning rules for utterances and dialogues, one function per rule, each counted. No Ray here.

Text rules (`remove_control`, `fullwidth_to_ascii`, `normalize_whitespace`, `restore_lccc_spacing`,
`strip_ends`) take a string and return `(text, edits)`; they never touch `JOIN`, so a whole batch
can be cleaned as one joined string (one regex pass per rule instead of one per utterance: this is
where the pipeline's throughput comes from). Dialogue rules (`cap_length`, `split_at_empty`,
`drop_short`) work on lists of utterances. Counts are numbers of edits: characters removed or
mapped, whitespace runs rewritten, utterances cut.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np

from pipelines.readers import _LCCC_SPACE

# Joins the utterances of a batch into one string. Private use, not whitespace, not a control char:
# no rule below matches it. Text that contains it anyway takes the slow per-utterance path.
JOIN = "\ue000"
# C0/C1 controls (whitespace controls are spaces first), zero-width and bidi formatting characters.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_FULLWIDTH = re.compile("[\uff01-\uff5e]")  # full-width ASCII; U+3000 (ideographic space) is whitespace
_FULLWIDTH_MAP = {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}
_WHITESPACE = re.compile(r"\s*[^\S ]\s*|  +")  # any run holding a non-space whitespace char, or 2+ spaces
_ENDS = re.compile(f"(?:^|(?<={JOIN})) +| +(?={JOIN}|$)")

TEXT_RULES = ("control_chars_removed", "fullwidth_normalised", "whitespace_normalised",
              "lccc_spaces_removed", "ends_stripped")


def remove_control(text: str) -> tuple[str, int]:
    return _CONTROL.subn("", text)


def fullwidth_to_ascii(text: str) -> tuple[str, int]:
    """'ＡＢＣ１２３，？' -> 'ABC123,?' (the ASCII block of U+FF01..U+FF5E)."""
    return _FULLWIDTH.subn(lambda m: _FULLWIDTH_MAP[m.group()], text)


def normalize_whitespace(text: str) -> tuple[str, int]:
    """Tabs, newlines, U+3000 and runs of spaces -> one ASCII space."""
    return _WHITESPACE.subn(" ", text)


def restore_lccc_spacing(text: str) -> tuple[str, int]:
    """Remove spaces next to non-ASCII characters: LCCC's per-character spacing, not text."""
    return _LCCC_SPACE.subn("", text)


def strip_ends(text: str) -> tuple[str, int]:
    return _ENDS.subn("", text)


_TEXT_PIPELINE = (  # order matters: controls go before whitespace is collapsed around them
    ("control_chars_removed", remove_control),
    ("fullwidth_normalised", fullwidth_to_ascii),
    ("whitespace_normalised", normalize_whitespace),
    ("lccc_spaces_removed", restore_lccc_spacing),
    ("ends_stripped", strip_ends),
)


def clean_text(text: str, counts: Counter | None = None) -> str:
    """Every text rule on one string (what `CharTokenizer.encode` applies too)."""
    for name, rule in _TEXT_PIPELINE:
        text, n = rule(text)
        if counts is not None and n:
            counts[name] += n
    return text


def clean_texts(texts: list[str], counts: Counter | None = None) -> list[str]:
    """`clean_text` over many strings as ONE joined string; same result, a fraction of the calls."""
    if not texts:
        return []
    joined = JOIN.join(texts)
    if joined.count(JOIN) != len(texts) - 1:  # the marker occurs in the text itself: go one by one
        return [clean_text(t, counts) for t in texts]
    out = clean_text(joined, counts).split(JOIN)
    if len(out) != len(texts):  # cannot happen (no rule touches JOIN); never misalign silently
        raise RuntimeError("clean_texts: joined cleaning changed the number of texts")
    return out


# ------------------------------------------------------------------ dialogue rules

def cap_length(utterances: list[str], max_chars: int) -> tuple[list[str], int]:
    """Cut utterances to `max_chars` characters (keep the head); returns how many were cut."""
    n = sum(len(u) > max_chars for u in utterances)
    return ([u[:max_chars] for u in utterances] if n else utterances), n


def split_at_empty(utterances: list[str]) -> tuple[list[tuple[int, list[str]]], int]:
    """[a, b, '', c, d] -> [(0, [a, b]), (3, [c, d])]: a missing turn breaks the alternation of
    speakers, so the dialogue is cut there rather than merged across it. Each piece keeps the index
    of its first utterance in the original dialogue (speaker parity). Returns (pieces, empty count)."""
    if all(utterances):
        return [(0, utterances)], 0
    pieces, current, start, empty = [], [], 0, 0
    for i, u in enumerate(utterances):
        if u:
            if not current:
                start = i
            current.append(u)
        else:
            empty += 1
            if current:
                pieces.append((start, current))
            current = []
    if current:
        pieces.append((start, current))
    return pieces, empty


def drop_short(pieces: list[tuple[int, list[str]]], min_utterances: int = 2) -> tuple[list[tuple[int, list[str]]], int]:
    """Drop pieces with fewer than `min_utterances` (nothing to learn a response from)."""
    kept = [p for p in pieces if len(p[1]) >= min_utterances]
    return kept, len(pieces) - len(kept)


def clean_dialogues(dialogues: list[list[str]], max_chars: int, counts: Counter,
                    min_utterances: int = 2) -> list[list[tuple[int, list[str]]] | None]:
    """Each dialogue -> its kept (start, utterances) pieces, or None when nothing is left
    (`too_few_utterances`)."""
    flat = clean_texts([u for d in dialogues for u in d], counts)
    out, i = [], 0
    for d in dialogues:
        utterances = flat[i:i + len(d)]
        i += len(d)
        utterances, n_cut = cap_length(utterances, max_chars)
        pieces, n_empty = split_at_empty(utterances)
        pieces, n_short = drop_short(pieces, min_utterances)
        if n_cut:
            counts["utterances_truncated"] += n_cut
        if n_empty:
            counts["empty_utterances"] += n_empty
        if pieces and n_short:
            counts["fragments_dropped"] += n_short  # the rest of the dialogue survives
        out.append(pieces or None)
    return out


# ------------------------------------------------------------------ duplicates

def content_key(pieces: list[tuple[int, list[str]]]) -> int:
    """A stable 64-bit key of a cleaned dialogue (the same on every worker and run, unlike hash())."""
    text = "\x1d".join(f"{start}\x1f" + "\x1e".join(p) for start, p in pieces)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def duplicate_mask(keys: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """True for every record whose key occurred at a smaller `order` (input order): the first copy
    is kept, later copies are duplicates, independently of how records were spread over workers."""
    keys, orders = np.asarray(keys), np.asarray(orders)
    idx = np.lexsort((orders, keys))  # by key, then by input order
    sorted_keys = keys[idx]
    later = np.zeros(len(keys), dtype=bool)
    later[1:] = sorted_keys[1:] == sorted_keys[:-1]
    mask = np.zeros(len(keys), dtype=bool)
    mask[idx] = later
    return mask
