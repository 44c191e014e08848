"""Cleaning rules for utterances and dialogues, each counted. No Ray here.

The text rules are data: `RULES`, in the order they apply, each a counter and a regular expression
written in the syntax Python's `re` and RE2 (the engine of `pyarrow.compute`) read alike: character
classes of literal characters, no lookaround. One string (chat, serve, `CharTokenizer.encode`) goes
through them with `re` (`clean_text`); a column of strings (the preprocessing jobs) with RE2 kernels
(`clean_text_array`), so both apply the same expressions and a rule is written once. (A string sent
through the column code as a one-element array costs ~40x what `re` does on LCCC utterances: every
kernel's fixed cost.) Dialogue rules (`clean_dialogue_lists`): utterances cut to
`max_chars`, a dialogue split at an empty turn, pieces of fewer than two utterances dropped. Counts
are numbers of edits: characters removed or mapped, whitespace runs rewritten, utterances cut.
"""
from __future__ import annotations

import hashlib
import operator
import re
from collections import Counter
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# ------------------------------------------------------------------ the characters the rules act on

# C0/C1 controls (the whitespace ones are left to the whitespace rule), zero-width and bidi formatting
# characters, as (first, last) code points.
CONTROL_CHARS = ((0x00, 0x08), (0x0E, 0x1B), (0x7F, 0x84), (0x86, 0x9F), (0x200B, 0x200F), (0x202A, 0x202E),
                 (0x2060, 0x2064), (0xFEFF, 0xFEFF))
WHITESPACE_CHARS = tuple(c for c in range(0x3001) if chr(c).isspace())  # all of them lie below U+3001
FULLWIDTH_CHARS = range(0xFF01, 0xFF5F)  # '！'..'～': ASCII '!'..'~' moved up by 0xFEE0 (U+3000 is whitespace)
FULLWIDTH_SHIFT = 0xFEE0


def char_class(ranges, negate: bool = False) -> str:
    """`[...]` of literal characters from (first, last) code point pairs: what `re` and RE2 both read."""
    def literal(c: int) -> str:
        return "\\" + chr(c) if chr(c) in "\\[]^-" else chr(c)
    return "[" + "^" * negate + "".join(literal(a) + (f"-{literal(b)}" if b > a else "") for a, b in ranges) + "]"


def _ranges(codepoints) -> list[tuple[int, int]]:
    """Sorted code points -> (first, last) runs of consecutive ones."""
    out: list[list[int]] = []
    for c in codepoints:
        if out and c == out[-1][1] + 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return [(a, b) for a, b in out]


CONTROL = char_class(CONTROL_CHARS)
_WS = char_class(_ranges(WHITESPACE_CHARS))
_WS_NOT_SPACE = char_class(_ranges(c for c in WHITESPACE_CHARS if c != 0x20))
_NON_ASCII = r"[^\x00-\x7f]"

# ------------------------------------------------------------------ the text rules


class Rule(NamedTuple):
    counter: str  # what one edit of this rule is counted as
    pattern: str  # read alike by `re` and RE2: character classes of literal characters, no lookaround
    replacement: str = ""  # "\\1": the first group
    shift: int = 0  # instead of `replacement`: each match, one character of `chars`, moves down this many code points
    chars: range = range(0)
    # "matches", or "chars_removed": a deletion rule counted by the characters it removes, which a column
    # gets from its lengths instead of a counting pass over every match (LCCC text has a match every other
    # character). The LCCC rules follow whitespace_normalised, which leaves single spaces only, so each
    # of their matches removes one character and the two counts are the same number.
    counted: str = "matches"


RULES = (  # in this order: controls go before whitespace is collapsed around them
    Rule("control_chars_removed", CONTROL),
    Rule("fullwidth_normalised", char_class([(FULLWIDTH_CHARS[0], FULLWIDTH_CHARS[-1])]), shift=FULLWIDTH_SHIFT,
         chars=FULLWIDTH_CHARS),  # 'ＡＢＣ１２３，？' -> 'ABC123,?'
    # a whitespace run that holds anything but a plain space, or two spaces or more -> one space
    Rule("whitespace_normalised", f"{_WS}*{_WS_NOT_SPACE}{_WS}*|  +", " "),
    # LCCC separates every character by a space: a space run next to a non-ASCII character is not text
    # ('今 天 ok good' -> '今天ok good'). Two steps, RE2 having no lookaround: runs after such a
    # character, then runs before one (each run is counted once: the first step leaves none of its own).
    Rule("lccc_spaces_removed", f"({_NON_ASCII}) +", "\\1", counted="chars_removed"),
    Rule("lccc_spaces_removed", f" +({_NON_ASCII})", "\\1", counted="chars_removed"),
    # `$` is the end of the text in both engines here (Python's also matches before a final newline:
    # none is left after whitespace_normalised)
    Rule("ends_stripped", "^ +| +$"),
)
TEXT_RULES = tuple(dict.fromkeys(r.counter for r in RULES))  # the counters, in order


def _python_step(rule: Rule):
    """(counter, compiled pattern, replacement, counted) of one rule for `re.subn`."""
    if rule.shift:
        shifted = {chr(c): chr(c - rule.shift) for c in rule.chars}
        replacement = lambda m: shifted[m[0]]  # noqa: E731
    elif group := re.fullmatch(r"\\(\d)", rule.replacement):
        # the group read in C: Python 3.11 expands a template in Python per match (3x slower on LCCC text)
        replacement = operator.itemgetter(int(group[1]))
    else:
        replacement = rule.replacement
    return rule.counter, re.compile(rule.pattern), replacement, rule.counted


def _edits(before: str, after: str, matches: int, counted: str) -> int:
    return len(before) - len(after) if counted == "chars_removed" else matches


_PYTHON_STEPS = tuple(_python_step(r) for r in RULES)


def clean_text(text: str, counts: Counter | None = None) -> str:
    """Every text rule on one string, with `re` (what `CharTokenizer.encode` applies too)."""
    return _apply(_PYTHON_STEPS, text, counts)[0]


def apply_rule(counter: str, text: str) -> tuple[str, int]:
    """One rule (every step counted as `counter`) on one string: (text, edits)."""
    return _apply([step for step in _PYTHON_STEPS if step[0] == counter], text)


def _apply(steps, text: str, counts: Counter | None = None) -> tuple[str, int]:
    """`steps` in order on `text`: (text, edits), each step's edits also added to `counts` under its counter."""
    total = 0
    for counter, pattern, replacement, counted in steps:
        new, n = pattern.subn(replacement, text)
        if n:
            edits = _edits(text, new, n, counted)
            total += edits
            if counts is not None:
                counts[counter] += edits
        text = new
    return text, total


def clean_text_array(arr: pa.StringArray, counts: Counter) -> pa.StringArray:
    """Every text rule on every string of a null-free array, with RE2 kernels; counts added to
    `counts`. A rule counted by matches is counted first (one with nothing to fix costs one scan and
    no rewrite); one counted by characters removed is rewritten at once and counted from the lengths.
    The full-width shift rewrites only the strings that hold a match.
    (RE2 pays ~100 ns per match and LCCC text has a space to remove every other character: the
    NumPy byte code that applied the full-width and LCCC rules here before took 0.58x the CPU time
    of the first version of this function on LCCC-base valid, and 1M-dialogue preprocessing lost
    ~18 % end to end; the two savings above are what was measured back.)"""
    for rule in RULES:
        if rule.counted == "chars_removed":
            before = pc.sum(pc.utf8_length(arr)).as_py() or 0
            arr = pc.replace_substring_regex(arr, rule.pattern, rule.replacement)
            n = before - (pc.sum(pc.utf8_length(arr)).as_py() or 0)
            if n:
                counts[rule.counter] += n
            continue
        per_string = pc.count_substring_regex(arr, rule.pattern)
        n = pc.sum(per_string).as_py() or 0
        if n:
            counts[rule.counter] += n
            arr = (_shift_chars(arr, rule.chars, rule.shift, per_string) if rule.shift
                   else pc.replace_substring_regex(arr, rule.pattern, rule.replacement))
    return arr


def clean_texts(texts: list[str], counts: Counter | None = None) -> list[str]:
    """`clean_text_array` on a list of strings."""
    return clean_text_array(pa.array(texts, pa.string()), Counter() if counts is None else counts).to_pylist()


def _shift_chars(arr: pa.StringArray, chars: range, by: int, matches: pa.Array | None = None) -> pa.StringArray:
    """Every character of `chars` moved down by `by` code points, on the array's code points (RE2
    replaces by fixed text only). A character stays one character: only byte offsets move. With
    `matches` (per string), only the strings that hold one are decoded and rewritten."""
    if matches is not None:
        rows = np.flatnonzero(matches.to_numpy(zero_copy_only=False))
        if len(rows) < len(arr):
            shifted = _shift_chars(arr.take(pa.array(rows, pa.int64())), chars, by)
            slot = np.full(len(arr), -1, np.int64)
            slot[rows] = np.arange(len(rows))
            merged = pc.if_else(pa.array(slot >= 0), pc.take(shifted, pa.array(np.clip(slot, 0, None), pa.int64())), arr)
            return merged if isinstance(merged, pa.StringArray) else pa.concat_arrays(merged.chunks)
    offsets, data = _bytes(arr)
    cps = np.frombuffer(data.tobytes().decode("utf-8").encode("utf-32-le"), np.uint32)
    cps = np.where((cps >= chars.start) & (cps < chars.stop), cps - np.uint32(by), cps)
    char_offsets = np.concatenate([[0], np.cumsum(pc.utf8_length(arr).to_numpy(zero_copy_only=False), dtype=np.int64)])
    utf8_lengths = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
    new_offsets = np.concatenate([[0], np.cumsum(utf8_lengths)])[char_offsets].astype(np.int32)
    text = cps.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")
    return pa.StringArray.from_buffers(len(arr), pa.py_buffer(new_offsets), pa.py_buffer(text))


def _bytes(arr: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, UTF-8 data) of a null-free string array, without copying."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2] or b"", np.uint8)[offsets[0]: offsets[-1]]
    return offsets - offsets[0], data


# ------------------------------------------------------------------ dialogue rules

def clean_dialogue_lists(dialogues: pa.ListArray, max_chars: int, counts: Counter, min_utterances: int = 2) -> dict:
    """The text rules on every utterance of a null-free list<string> array, then the dialogue rules,
    without a Python loop per record: utterances cut to `max_chars` characters (the head kept), each
    dialogue split at its empty turns (a missing turn breaks the alternation of speakers, so pieces are
    not merged across it), pieces of fewer than `min_utterances` dropped (counted in
    `fragments_dropped` when the rest of the dialogue survives).

    Returns {"pieces": list<list<string>> per dialogue (null when none is left), "offsets":
    list<int16> (index of each piece's first utterance), "key": int64 (null when none is left)}."""
    lengths = pc.list_value_length(dialogues).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = dialogues.flatten()
    flat = clean_text_array(flat if isinstance(flat, pa.StringArray) else flat.cast(pa.string()), counts)
    char_len = pc.utf8_length(flat).to_numpy(zero_copy_only=False)
    n_cut = int((char_len > max_chars).sum())
    if n_cut:
        counts["utterances_truncated"] += n_cut
        flat = pc.utf8_slice_codeunits(flat, 0, max_chars)
    n_dlg, n_utt = len(lengths), len(flat)
    owner = np.repeat(np.arange(n_dlg), lengths)
    index_in_dlg = np.arange(n_utt) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    full = char_len > 0
    counts["empty_utterances"] += int(n_utt - full.sum())
    # pieces: maximal runs of non-empty utterances inside a dialogue
    run_start = full & ((index_in_dlg == 0) | ~np.concatenate([[False], full[:-1]]))
    run_id = np.cumsum(run_start) - 1
    run_len = np.bincount(run_id[full], minlength=int(run_start.sum()))
    run_owner, run_first = owner[run_start], index_in_dlg[run_start]
    kept_run = run_len >= min_utterances
    kept_per_dlg = np.bincount(run_owner[kept_run], minlength=n_dlg)
    short_per_dlg = np.bincount(run_owner[~kept_run], minlength=n_dlg)
    counts["fragments_dropped"] += int(short_per_dlg[kept_per_dlg > 0].sum())
    take = np.flatnonzero(full & kept_run[np.clip(run_id, 0, None)]) if len(run_len) else np.zeros(0, np.int64)
    utt = flat.take(pa.array(take, pa.int64()))
    piece_off = np.concatenate([[0], np.cumsum(run_len[kept_run])]).astype(np.int32)
    pieces = pa.ListArray.from_arrays(pa.array(piece_off), utt)
    has = kept_per_dlg > 0
    dlg_off = np.concatenate([[0], np.cumsum(kept_per_dlg)]).astype(np.int32)
    none = pa.array(~has)  # null where nothing is left
    out_pieces = pa.ListArray.from_arrays(pa.array(dlg_off), pieces, mask=none)
    starts = run_first[kept_run].astype(np.int16)
    out_offsets = pa.ListArray.from_arrays(pa.array(dlg_off), pa.array(starts, pa.int16()), mask=none)
    return {"pieces": out_pieces, "offsets": out_offsets, "key": _keys(pieces, starts, dlg_off, has)}


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

def _keys(pieces: pa.ListArray, starts: np.ndarray, dlg_off: np.ndarray, has: np.ndarray) -> pa.Array:
    """`content_key` of every kept dialogue: the same bytes hashed, built by Arrow kernels."""
    text = pc.binary_join_element_wise(pc.cast(pa.array(starts, pa.int16()), pa.string()), pc.binary_join(pieces, "\x1e"), "\x1f")
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array(dlg_off), text), "\x1d")
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset: text.offset + len(text) + 1].tolist()
    data = memoryview(text.buffers()[2] or b"")
    b2 = hashlib.blake2b
    digests = b"".join([b2(data[a:b], digest_size=8).digest() for a, b in zip(offsets[:-1], offsets[1:])])
    return pa.array(np.frombuffer(digests, "<i8"), pa.int64(), mask=~has)  # "" hashed for none: masked
