"""Rows of the Parquet shards -> padded training batches (collate, length buckets, MLM masking). No Ray here.

Right padding to the longest sample of each batch with an `attention_mask` (1 = real token), the
convention of ARCHITECTURE.md contract 3. Length bucketing sorts samples by length inside a window of
several batches, cuts the sorted window into batches and shuffles the batch order, so batches hold
samples of similar length (little compute goes to padding) while the data order stays random.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

Rows = Mapping[str, Sequence]  # column name -> one entry per sample (Ray Data's numpy batch format)
Batch = dict[str, torch.Tensor]

KINDS = ("dialog", "mlm", "classifier")
IGNORE_INDEX = -100  # label of positions that carry no loss (torch's cross_entropy default)


def pad(seqs: Sequence[Sequence[int]], value: int, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) right-padded array with T = the longest sequence, and its (B, T) attention mask."""
    lengths = [len(s) for s in seqs]
    width = max(lengths, default=0)
    out = np.full((len(seqs), width), value, dtype=dtype)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        out[i, :n] = s
        mask[i, :n] = 1
    return out, mask


def _tensors(**arrays: np.ndarray) -> Batch:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def collate_dialog(rows: Rows, pad_id: int) -> Batch:
    """Dialogue samples (contract 2): input_ids, segment_ids, loss_mask, attention_mask."""
    ids, attention_mask = pad(rows["input_ids"], pad_id)
    segment_ids, _ = pad(rows["segment_ids"], 0)
    loss_mask, _ = pad(rows["loss_mask"], 0)  # padding never carries loss
    return _tensors(input_ids=ids, segment_ids=segment_ids, loss_mask=loss_mask, attention_mask=attention_mask)


def collate_classifier(rows: Rows, pad_id: int) -> Batch:
    """Sentiment samples: input_ids, attention_mask, labels (class index)."""
    ids, attention_mask = pad(rows["input_ids"], pad_id)
    labels = np.asarray(rows["label"], dtype=np.int64)
    return _tensors(input_ids=ids, attention_mask=attention_mask, labels=labels)


def collate_mlm(rows: Rows, pad_id: int, masker: Callable[[Batch], Batch] | None = None) -> Batch:
    """Text samples for an MLM: input_ids, attention_mask, labels.

    Without a masker (the fast MLM, T-TA) every real token is its own target: the model never sees
    the token it predicts. With a masker (the standard MLM) the masker corrupts inputs and sets labels.
    """
    ids, attention_mask = pad(rows["input_ids"], pad_id)
    labels = np.where(attention_mask == 1, ids, IGNORE_INDEX)
    batch = _tensors(input_ids=ids, attention_mask=attention_mask, labels=labels)
    return masker(batch) if masker is not None else batch


@dataclass
class MLMMasker:
    """BERT masking (15 %, 80/10/10) via `models.masked_lm.mask_tokens`, seeded for reproducibility."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    seed: int = 0
    prob: float = 0.15

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, batch: Batch) -> Batch:
        from liaotian.models.masked_lm import mask_tokens  # the model owns its corruption rule

        ids, labels = mask_tokens(
            batch["input_ids"], mask_id=self.mask_id, vocab_size=self.vocab_size,
            special_ids=self.special_ids, prob=self.prob, generator=self.generator,
            attention_mask=batch["attention_mask"],
        )
        return {**batch, "input_ids": ids, "labels": labels}


def make_collate(kind: str, pad_id: int, masker: Callable[[Batch], Batch] | None = None) -> Callable[[Rows], Batch]:
    """The collate function of one model kind (`dialog`, `mlm`, `classifier`)."""
    if kind == "dialog":
        return lambda rows: collate_dialog(rows, pad_id)
    if kind == "mlm":
        return lambda rows: collate_mlm(rows, pad_id, masker)
    if kind == "classifier":
        return lambda rows: collate_classifier(rows, pad_id)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


# ------------------------------------------------------------------ length bucketing

def bucket_indices(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None, bucket: bool = True) -> list[np.ndarray]:
    """Split one window of samples into batches of `batch_size` (the last may be smaller).

    With `bucket`, samples are sorted by length first (stable, so ties keep their shuffled order) and
    the order of the resulting batches is shuffled with `rng`, so no epoch walks short-to-long.
    """
    order = np.argsort(np.asarray(lengths), kind="stable") if bucket else np.arange(len(lengths))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket and rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def take(rows: Rows, index: np.ndarray) -> dict[str, list]:
    """The rows at `index` (one sub-batch of a window)."""
    return {k: [v[i] for i in index] for k, v in rows.items()}


def bucketed(windows: Iterable[Rows], batch_size: int, rng: np.random.Generator | None, bucket: bool = True) -> Iterator[dict[str, list]]:
    """Windows of rows (e.g. Ray Data batches of `window * batch_size` rows) -> batches of rows."""
    for rows in windows:
        lengths = [len(x) for x in rows["input_ids"]]
        for index in bucket_indices(lengths, batch_size, rng, bucket):
            yield take(rows, index)


def padding_share(batches: Iterable[Sequence[int]]) -> float:
    """Share of padding positions when each batch (given as its sample lengths) pads to its longest."""
    real = total = 0
    for lengths in batches:
        if len(lengths):
            real += int(sum(lengths))
            total += int(max(lengths)) * len(lengths)
    return 1.0 - real / total if total else 0.0
