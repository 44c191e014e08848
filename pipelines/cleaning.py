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
import pyarrow as pa
import pyarrow.compute as pc

from liaotian.pipelines.readers import _LCCC_SPACE

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


# ------------------------------------------------------------------ the batch path (Arrow, vectorised)
# The same rules, in the same order, with the same counts, on a whole batch at once: RE2 kernels of
# `pyarrow.compute` (each rule is first *counted*: a rule with nothing to fix costs one scan and no
# rewrite), NumPy for full-width mapping and the empty-turn/short-piece rules. `clean_text` stays the
# definition; tests check the two agree.

def _re2_class(codepoints) -> str:
    return "".join(f"\\x{{{c:x}}}" for c in codepoints)


def _control_class() -> str:
    ranges = re.findall(r"(.)(?:-(.))?", _CONTROL.pattern[1:-1], re.S)
    return "[" + "".join(f"\\x{{{ord(a):x}}}" + (f"-\\x{{{ord(b):x}}}" if b else "") for a, b in ranges) + "]"


_WS_CPS = [c for c in range(0x3001) if re.match(r"\s", chr(c))]  # what Python's \s matches (none above U+3000)
_RE2_WS, _RE2_WS_NOT_SPACE = _re2_class(_WS_CPS), _re2_class(c for c in _WS_CPS if c != 0x20)
_RE2_RULES = (  # (counter, [(pattern, replacement), ...]) applied in _TEXT_PIPELINE's order
    ("control_chars_removed", [(_control_class(), "")]),
    ("fullwidth_normalised", None),  # NumPy on the UTF-8 bytes (a 3-byte -> 1-byte map)
    ("whitespace_normalised", [(f"[{_RE2_WS}]*[{_RE2_WS_NOT_SPACE}][{_RE2_WS}]*|  +", " ")]),
    # one regex with lookaround in Python; RE2 has none: runs after a non-ASCII char, then runs before one
    ("lccc_spaces_removed", [("([^\\x00-\\x7f]) +", "\\1"), (" +([^\\x00-\\x7f])", "\\1")]),
    ("ends_stripped", [("^ +| +$", "")]),
)


def _fullwidth_bytes(arr: pa.StringArray) -> tuple[pa.StringArray, int]:
    """U+FF01..U+FF5E (UTF-8 EF BC 81..BF, EF BD 80..9E) -> ASCII 0x21..0x7E, on the data buffer."""
    offsets, data = _bytes(arr)
    i = np.flatnonzero(data[:-2] == 0xEF)
    if not len(i):
        return arr, 0
    data = data.copy()
    b2, b3 = data[i + 1], data[i + 2]
    lo, hi = (b2 == 0xBC) & (b3 >= 0x81) & (b3 <= 0xBF), (b2 == 0xBD) & (b3 >= 0x80) & (b3 <= 0x9E)
    i, b3, lo = i[lo | hi], b3[lo | hi], lo[lo | hi]
    if not len(i):
        return arr, 0
    data[i] = np.where(lo, b3 - 0x60, b3 - 0x20)  # 0xBC81 -> '!' (0x21), 0xBD80 -> '`' (0x60)
    keep = np.ones(len(data), bool)
    keep[i + 1] = keep[i + 2] = False
    new_offsets = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])[offsets].astype(np.int32)
    out = pa.StringArray.from_buffers(len(arr), pa.py_buffer(new_offsets), pa.py_buffer(data[keep].tobytes()))
    return out, len(i)


def _bytes(arr: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, UTF-8 data) of a null-free string array, without copying."""
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2] or b"", np.uint8)[offsets[0]: offsets[-1]]
    return offsets - offsets[0], data


def _string_flags(offsets: np.ndarray, byte_flags: np.ndarray) -> np.ndarray:
    """Per string: does any of its bytes carry a flag?"""
    cs = np.concatenate([[0], np.cumsum(byte_flags, dtype=np.int64)])
    return cs[offsets[1:]] > cs[offsets[:-1]]


def _rare_rule_strings(arr: pa.StringArray) -> np.ndarray:
    """Strings that any rule other than full-width mapping and LCCC spacing may touch: a control or
    non-space whitespace character, a double space, a space at either end. Byte tests, a superset."""
    offsets, d = _bytes(arr)
    if not len(d):
        return np.zeros(len(arr), bool)
    padded = np.concatenate([d, np.zeros(2, np.uint8)])
    nxt, nxt2 = padded[1:len(d) + 1], padded[2:len(d) + 2]
    flag = (d < 0x20) | (d == 0x7F) | (d == 0xC2) | ((d == 0x20) & (nxt == 0x20))  # C0, C1/NBSP/NEL, "  "
    flag |= (d == 0xE1) & (nxt == 0x9A)  # U+1680
    flag |= (d == 0xE2) & (((nxt == 0x80) & ((nxt2 <= 0x8F) | (nxt2 >= 0xA8))) | ((nxt == 0x81) & (nxt2 >= 0x9F) & (nxt2 <= 0xA4)))
    flag |= (d == 0xE3) & (nxt == 0x80) & (nxt2 == 0x80)  # U+3000
    flag |= (d == 0xEF) & (nxt == 0xBB) & (nxt2 == 0xBF)  # U+FEFF
    ends = _string_flags(offsets, flag)
    nonempty = offsets[1:] > offsets[:-1]
    ends[nonempty] |= (d[offsets[:-1][nonempty]] == 0x20) | (d[offsets[1:][nonempty] - 1] == 0x20)
    return ends


def _lccc_bytes(arr: pa.StringArray) -> tuple[pa.StringArray, int]:
    """`restore_lccc_spacing` on the UTF-8 bytes: a run of spaces with a non-ASCII byte right before
    or after it, inside the same string, is removed (one edit per run)."""
    offsets, d = _bytes(arr)
    sp = d == 0x20
    if not sp.any():
        return arr, 0
    first = np.zeros(len(d) + 1, bool)
    first[offsets[:-1]] = True  # the first byte of each string (empty strings mark their neighbour: harmless)
    last = np.zeros(len(d) + 1, bool)
    last[offsets[1:] - 1] = True
    prev_sp = np.concatenate([[False], sp[:-1]]) & ~first[:-1]
    next_sp = np.append(sp[1:], False) & ~last[:-1]
    starts, ends = np.flatnonzero(sp & ~prev_sp), np.flatnonzero(sp & ~next_sp)
    before = np.where(first[starts], 0, d[np.maximum(starts - 1, 0)])
    after = np.where(last[ends], 0, d[np.minimum(ends + 1, len(d) - 1)])
    drop = (before >= 0x80) | (after >= 0x80)
    if not drop.any():
        return arr, 0
    delta = np.zeros(len(d) + 1, np.int8)
    delta[starts[drop]] = 1  # runs are maximal: a start is never another run's end + 1
    delta[ends[drop] + 1] = -1
    keep = np.cumsum(delta[:-1]) == 0
    new_offsets = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])[offsets].astype(np.int32)
    out = pa.StringArray.from_buffers(len(arr), pa.py_buffer(new_offsets), pa.py_buffer(d[keep].tobytes()))
    return out, int(drop.sum())


def clean_text_array(arr: pa.StringArray, counts: Counter) -> pa.StringArray:
    """`clean_text` on every string of a null-free array, counts added to `counts`. Strings that only
    full-width mapping and LCCC spacing can touch (nearly all) take two NumPy passes over the batch's
    bytes; the rest take every rule as an RE2 kernel."""
    rare = _rare_rule_strings(arr)
    if not rare.any():
        return _common_rules(arr, counts)
    idx_rare, idx_common = np.flatnonzero(rare), np.flatnonzero(~rare)
    a = _common_rules(arr.take(pa.array(idx_common)), counts)
    b = _all_rules(arr.take(pa.array(idx_rare)), counts)
    inverse = np.empty(len(arr), np.int64)
    inverse[np.concatenate([idx_common, idx_rare])] = np.arange(len(arr))
    return pa.concat_arrays([a, b]).take(pa.array(inverse))


def _common_rules(arr: pa.StringArray, counts: Counter) -> pa.StringArray:
    arr, n = _fullwidth_bytes(arr)
    counts["fullwidth_normalised"] += n
    arr, n = _lccc_bytes(arr)
    counts["lccc_spaces_removed"] += n
    return arr


def _all_rules(arr: pa.StringArray, counts: Counter) -> pa.StringArray:
    for name, steps in _RE2_RULES:
        if steps is None:
            arr, n = _fullwidth_bytes(arr)
            counts[name] += n
            continue
        for pattern, replacement in steps:
            n = pc.sum(pc.count_substring_regex(arr, pattern)).as_py() or 0
            if n:
                counts[name] += n
                arr = pc.replace_substring_regex(arr, pattern, replacement)
    return arr


def clean_dialogue_lists(dialogues: pa.ListArray, max_chars: int, counts: Counter, min_utterances: int = 2) -> dict:
    """`clean_dialogues` on a null-free list<string> array, without a Python loop per record.

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



def _keys(pieces: pa.ListArray, starts: np.ndarray, dlg_off: np.ndarray, has: np.ndarray) -> pa.Array:
    """`content_key` of every kept dialogue: the same bytes hashed, built by Arrow kernels."""
    text = pc.binary_join_element_wise(pc.cast(pa.array(starts, pa.int16()), pa.string()), pc.binary_join(pieces, "\x1e"), "\x1f")
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array(dlg_off), text), "\x1d")
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset: text.offset + len(text) + 1].tolist()
    data = memoryview(text.buffers()[2] or b"")
    b2 = hashlib.blake2b
    digests = b"".join([b2(data[a:b], digest_size=8).digest() for a, b in zip(offsets[:-1], offsets[1:])])
    return pa.array(np.frombuffer(digests, "<i8"), pa.int64(), mask=~has)  # "" hashed for none: masked
