"""Utterances -> `[CLS] u1 [SEP] u2 [SEP] ...` samples, windows, segment ids and loss masks (contract 2). No Ray here.

Training samples (`dialogue_samples`, and its vectorised batch form `encode_pieces`) and the
chat/serve/eval prompt (`build_context`) are built here and only here, so they cannot drift apart.

Input formats (a model's `config.input_format`; INPUT_FORMATS): "liaotian" is the layout above;
"cdial_gpt" is CDial-GPT's (its infer.py `build_input_from_segments`): `[CLS] [speaker1] u1
[speaker2] u2 … [speakerR] reply [SEP]`, speakers numbered from the first utterance in the sample,
segment 0/1 = speaker1/speaker2 over each speaker token and its utterance, segment 2 = [CLS]
(the model embeds segment s as a token: `DialogLMConfig.segment_tokens`). Shards are always stored
in the liaotian layout; `to_input_format` converts a sample for a model that reads another one.

Windowing: a dialogue whose sample would exceed `max_len` is cut into windows of whole consecutive
utterances. Response k (every utterance but the first) is learnt in exactly one window, the one that
starts as early as still fits with k in it; that window then takes as many following responses as
fit. An utterance longer than `max_len - 4` tokens (room for [CLS], one context token, two [SEP])
is cut to that length ("utterances" truncated); when not even the whole previous utterance fits as
context, only its tail is kept in that window ("context" truncated). What fits is decided by
`fit_newest`, the rule `build_context` applies to a prompt: a training window differs from a prompt
only in that a dialogue gives several, and that one asks for a response plus some context.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from liaotian.pipelines.tokenizer import CLS_MARK, SEP_MARK, CharTokenizer


@dataclass(frozen=True)
class Window:
    start: int  # first utterance in the window (context only unless it is the dialogue's u1)
    first_response: int  # loss starts at this utterance
    end: int  # one past the last utterance
    context_keep: int | None = None  # tokens kept (the tail) of utterance `start`, when cut


class Fit(NamedTuple):
    start: int  # the oldest utterance kept
    keep: int | None  # tokens kept (the tail) of utterance `start` when it is not whole, else None
    tokens: int  # tokens taken, `fixed` ones included


def fit_newest(lengths: list[int], budget: int, fixed: int, at_least: int = 1, end: int | None = None) -> Fit:
    """The windowing rule, for training windows and chat/serve prompts alike: the newest utterances
    (of `lengths` tokens, each costing one more for its separator or speaker token) that fit `budget`
    beside `fixed` other tokens. When fewer than `at_least` fit whole, the newest `at_least` are kept,
    the oldest of them as its tail (the newer ones must fit whole). A prompt needs one utterance to
    reply to (`at_least=1`); a training window a response and some context (`at_least=2`).
    `end`: only `lengths[:end]` count (a training window ends at its response), without a copy:
    `plan_windows` calls this once per response, and slicing made it 1.56x slower."""
    n = len(lengths) if end is None else end
    start, used = n, fixed
    while start > 0 and used + lengths[start - 1] + 1 <= budget:
        start -= 1
        used += lengths[start] + 1
    if n - start >= at_least or n < at_least:
        return Fit(start, None, used)
    start = n - at_least
    used = fixed + sum(lengths[i] + 1 for i in range(start + 1, n))
    return Fit(start, budget - used - 1, budget)


def plan_windows(lengths: list[int], max_len: int) -> list[Window]:
    """Windows over utterances of `lengths` tokens (each <= max_len - 4 from index 1 on).

    Training cuts a dialogue into several windows and a prompt is one, but the rule for what fits is
    the prompt's (`fit_newest`): response k takes the newest utterances before it that fit, at least
    one (its tail when not whole); the window then takes as many following responses as fit."""
    n = len(lengths)
    out, k = [], 1
    while k < n:
        s, keep, used = fit_newest(lengths, max_len, fixed=1, at_least=2, end=k + 1)  # [CLS]
        e = k + 1
        while e < n and used + lengths[e] + 1 <= max_len:
            used += lengths[e] + 1
            e += 1
        out.append(Window(s, k, e, keep))
        k = e
    return out


def window_sample(utterance_ids: list, window: Window, tok: CharTokenizer, offset: int = 0):
    """(input_ids, segment_ids, loss_mask) of one window; `offset` = index of utterance 0 in the
    original dialogue (a piece cut at an empty turn keeps its speakers' parity)."""
    ids, seg, mask = [tok.cls_id], [(offset + window.start) % 2], [0]
    for i in range(window.start, window.end):
        u = list(utterance_ids[i])
        if i == window.start and window.context_keep is not None:
            u = u[len(u) - window.context_keep:]
        learn = int(i >= window.first_response)
        s = (offset + i) % 2
        ids += u + [tok.sep_id]
        seg += [s] * (len(u) + 1)
        mask += [learn] * (len(u) + 1)
    return ids, seg, mask


def dialogue_samples(utterance_ids: list, tok: CharTokenizer, max_len: int, counts: Counter | None = None,
                     offset: int = 0) -> list[tuple[list[int], list[int], list[int], int]]:
    """Every window of one dialogue as (input_ids, segment_ids, loss_mask, n_turns)."""
    limit = max_len - 4
    utterance_ids = [list(u) for u in utterance_ids]
    for i in range(1, len(utterance_ids)):
        if len(utterance_ids[i]) > limit:
            utterance_ids[i] = utterance_ids[i][:limit]
            if counts is not None:
                counts["utterances"] += 1
    windows = plan_windows([len(u) for u in utterance_ids], max_len)
    out = []
    for w in windows:
        if w.context_keep is not None and counts is not None:
            counts["context"] += 1
        ids, seg, mask = window_sample(utterance_ids, w, tok, offset)
        out.append((ids, seg, mask, w.end - w.start))
    return out


INPUT_FORMATS = ("liaotian", "cdial_gpt")
CDIAL_CLS_SEGMENT = 2  # "cdial_gpt": the segment of [CLS] (its token_type_id is [CLS] itself)


def cdial_segment_tokens(tok: CharTokenizer) -> tuple[int, int, int]:
    """The token each "cdial_gpt" segment is embedded as: ([speaker1], [speaker2], [CLS])."""
    return (*tok.speaker_ids, tok.cls_id)


def input_format_of(model) -> str:
    return getattr(getattr(model, "config", None), "input_format", "liaotian")


def reply_token_rules(tok: CharTokenizer, model) -> dict:
    """DecodingConfig fields for `model`'s replies: `banned_ids` (special tokens a reply never holds;
    only ids the model has) and `end_ids` (tokens that end a reply as [SEP] does: CDial-GPT's
    infer.py stops at any of its special tokens)."""
    vocab = model.config.vocab_size
    end_ids = ()
    if input_format_of(model) == "cdial_gpt":
        end_ids = tuple(i for i in (tok.cls_id, *tok.speaker_ids) if i < vocab)
    return dict(banned_ids=tuple(i for i in non_reply_ids(tok) if i < vocab), end_ids=end_ids)


def build_context(utterances: list[str], tok: CharTokenizer, max_len: int, reserve: int = 0,
                  input_format: str = "liaotian"):
    """The prompt `[CLS] u1 [SEP] ... un [SEP]`, oldest utterances dropped until it fits
    `max_len - reserve`; returns (input_ids, segment_ids, reply_segment = len(utterances) % 2).
    Segments follow each utterance's index in `utterances`, so the reply's parity never depends on
    how much history was dropped. A last utterance too long on its own keeps its tail.
    `input_format="cdial_gpt"`: the same history in CDial-GPT's layout (`_cdial_context`)."""
    if input_format == "cdial_gpt":
        return _cdial_context([tok.encode(u) for u in utterances], tok, max_len - reserve)
    if input_format != "liaotian":
        raise ValueError(f"unknown input_format {input_format!r}; known: {INPUT_FORMATS}")
    budget = max_len - reserve
    if budget < 3:
        raise ValueError(f"build_context: max_len - reserve = {budget} leaves no room for an utterance")
    encoded = [tok.encode(u) for u in utterances]
    start = _fit_newest(encoded, budget, fixed=1)  # [CLS]
    first_segment = start % 2 if start < len(encoded) else len(encoded) % 2
    ids, seg = [tok.cls_id], [first_segment]
    for i in range(start, len(encoded)):
        ids += encoded[i] + [tok.sep_id]
        seg += [i % 2] * (len(encoded[i]) + 1)
    return ids, seg, len(utterances) % 2


def _fit_newest(encoded: list[list[int]], budget: int, fixed: int) -> int:
    """`fit_newest` on token lists: the index of the oldest utterance kept; a tail kept is cut in place."""
    start, keep, _ = fit_newest([len(u) for u in encoded], budget, fixed)
    if keep is not None:
        encoded[start] = encoded[start][len(encoded[start]) - keep:]
    return start


def _cdial_context(encoded: list[list[int]], tok: CharTokenizer, budget: int):
    """`[CLS] [speaker1] u1 [speaker2] u2 … [speakerR]`, what CDial-GPT's infer.py feeds before a
    reply (the reply's speaker token included); oldest utterances dropped until it fits `budget`."""
    if budget < 4:
        raise ValueError(f"build_context: max_len - reserve = {budget} leaves no room for an utterance")
    encoded = [list(u) for u in encoded]
    start = _fit_newest(encoded, budget, fixed=2)  # [CLS] and the reply's speaker token
    ids, seg = [tok.cls_id], [CDIAL_CLS_SEGMENT]
    for j, u in enumerate(encoded[start:]):
        ids += [tok.speaker_ids[j % 2]] + u
        seg += [j % 2] * (len(u) + 1)
    reply = (len(encoded) - start) % 2
    return ids + [tok.speaker_ids[reply]], seg + [reply], reply


def context_in_format(input_ids, tok: CharTokenizer, input_format: str, budget: int):
    """A liaotian-layout prompt `[CLS] u1 [SEP] … un [SEP]` as `input_format`'s prompt: (input_ids,
    segment_ids, reply_segment), oldest utterances dropped until it fits `budget`."""
    ids = list(input_ids)
    if not ids or ids[0] != tok.cls_id or ids[-1] != tok.sep_id:
        raise ValueError("context_in_format: a prompt must be [CLS] u1 [SEP] … un [SEP]")
    cuts = [0] + [i for i, t in enumerate(ids) if t == tok.sep_id]
    encoded = [ids[a + 1:b] for a, b in zip(cuts[:-1], cuts[1:])]
    if input_format == "cdial_gpt":
        return _cdial_context(encoded, tok, budget)
    raise ValueError(f"context_in_format: no conversion to {input_format!r}")


def to_input_format(input_ids, segment_ids, loss_mask, tok: CharTokenizer, input_format: str):
    """A liaotian-layout sample (a shard row) in `input_format`'s layout: (input_ids, segment_ids,
    loss_mask). "cdial_gpt": `[CLS] [s1] u1 [s2] u2 … [sX] un [SEP]`, one token longer; a learnt
    utterance is learnt with the token that ends it (the next speaker token, or [SEP] after the last)."""
    if input_format == "liaotian":
        return list(input_ids), list(segment_ids), list(loss_mask)
    if input_format != "cdial_gpt":
        raise ValueError(f"unknown input_format {input_format!r}; known: {INPUT_FORMATS}")
    ids, mask = list(input_ids), list(loss_mask)
    if not ids or ids[0] != tok.cls_id or ids[-1] != tok.sep_id:
        raise ValueError("to_input_format: a sample must be [CLS] u1 [SEP] … un [SEP]")
    out_ids, out_seg, out_mask = [tok.cls_id], [CDIAL_CLS_SEGMENT], [0]
    start, j, prev_learn = 1, 0, 0
    for end in (i for i, t in enumerate(ids) if t == tok.sep_id):
        # the speaker token opening utterance j ends utterance j-1: learnt when that one is
        out_ids += [tok.speaker_ids[j % 2]] + ids[start:end]
        out_seg += [j % 2] * (end - start + 1)
        out_mask += [prev_learn] + mask[start:end]
        prev_learn, start, j = mask[end], end + 1, j + 1  # liaotian learns an utterance with its [SEP]
    return out_ids + [tok.sep_id], out_seg + [(j - 1) % 2], out_mask + [prev_learn]


def encode_pieces(pieces: list[list[str]], offsets: list[int], tok: CharTokenizer, max_len: int,
                  counts: Counter | None = None):
    """A batch of cleaned dialogues -> sample columns, vectorised over the whole batch.

    All pieces become one string `\\x02u1\\x03u2\\x03...\\x03\\x02...` whose marks map to [CLS]/[SEP],
    so tokenising, segment ids and loss masks are a few NumPy passes. Pieces longer than `max_len`
    (rare in chit-chat) go through `dialogue_samples`. Returns (input_ids, segment_ids, loss_mask
    as (offsets, values) pairs, source piece index per sample, n_turns per sample).
    """
    text = "".join(CLS_MARK + SEP_MARK.join(p) + SEP_MARK for p in pieces)
    return _encode_marked(text, np.asarray([len(p) for p in pieces], dtype=np.int16), offsets, tok, max_len, counts)


def encode_piece_array(pieces, offsets, tok: CharTokenizer, max_len: int, counts: Counter | None = None):
    """`encode_pieces` for an Arrow list<string> array of pieces: the marked text is built by Arrow
    kernels, so no utterance becomes a Python object."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(pieces) == 0:
        return encode_pieces([], [], tok, max_len, counts)
    body = pc.binary_join(pieces, SEP_MARK)
    marked = pc.binary_join_element_wise(CLS_MARK, body, SEP_MARK, "")
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(marked)], pa.int32()), marked), "")[0].as_py()
    n_utts = pc.list_value_length(pieces).to_numpy(zero_copy_only=False).astype(np.int16)
    return _encode_marked(text, n_utts, offsets, tok, max_len, counts)


def _encode_marked(text: str, n_utts: np.ndarray, offsets, tok: CharTokenizer, max_len: int, counts: Counter | None):
    ids = tok.encode_marked(text)
    is_cls = ids == tok.cls_id
    is_sep = ids == tok.sep_id
    starts = np.flatnonzero(is_cls)
    if len(starts) != len(n_utts):
        raise RuntimeError(f"encode_pieces: {len(starts)} [CLS] marks for {len(n_utts)} pieces")
    lengths = np.diff(np.append(starts, len(ids)))
    # Turn index of each token inside its piece: [SEP]s before it (its own [SEP] excluded).
    seps_before = np.cumsum(is_sep) - is_sep
    turn = seps_before - np.repeat(seps_before[starts], lengths)
    piece_offset = np.repeat(np.asarray(offsets, dtype=np.int64), lengths)
    segment = ((turn + piece_offset) % 2).astype(np.int8)
    loss = ((turn >= 1) & ~is_cls).astype(np.int8)

    fits = lengths <= max_len
    keep = np.repeat(fits, lengths)
    fast_lengths = lengths[fits]
    out_ids, out_seg, out_mask = [ids[keep]], [segment[keep]], [loss[keep]]
    sample_lengths = [fast_lengths]
    piece_index = [np.flatnonzero(fits)]
    n_turns = [np.asarray(n_utts[piece_index[0]], dtype=np.int16)]

    for i in np.flatnonzero(~fits):  # long pieces: whole-utterance windows
        body = ids[starts[i] + 1: starts[i] + lengths[i]]
        cuts = np.flatnonzero(body == tok.sep_id)
        utterance_ids = np.split(body, cuts + 1)[:-1]
        utterance_ids = [u[:-1] for u in utterance_ids]  # drop each closing [SEP]
        for s_ids, s_seg, s_mask, turns in dialogue_samples(utterance_ids, tok, max_len, counts, int(offsets[i])):
            out_ids.append(np.asarray(s_ids, dtype=np.int32))
            out_seg.append(np.asarray(s_seg, dtype=np.int8))
            out_mask.append(np.asarray(s_mask, dtype=np.int8))
            sample_lengths.append(np.asarray([len(s_ids)]))
            piece_index.append(np.asarray([i]))
            n_turns.append(np.asarray([turns], dtype=np.int16))

    sample_lengths = np.concatenate(sample_lengths).astype(np.int32)
    list_offsets = np.zeros(len(sample_lengths) + 1, dtype=np.int32)
    np.cumsum(sample_lengths, out=list_offsets[1:])
    return {
        "offsets": list_offsets,
        "input_ids": np.concatenate(out_ids).astype(np.int32),
        "segment_ids": np.concatenate(out_seg),
        "loss_mask": np.concatenate(out_mask),
        "piece_index": np.concatenate(piece_index),
        "n_turns": np.concatenate(n_turns),
    }


def non_reply_ids(tok) -> tuple[int, ...]:
    """Special tokens that never occur inside a reply ([SEP], which closes it, is not among them)."""
    return tuple(sorted(tok.special_ids - {tok.sep_id}))
