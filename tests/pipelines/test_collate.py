"""Collate, length bucketing and MLM masking (no Ray)."""
import numpy as np
import pytest
import torch

from liaotian.pipelines.collate import (IGNORE_INDEX, MLMMasker, bucket_indices, bucketed, collate_classifier, collate_dialog,
                                collate_mlm, make_collate, pad, padding_share)


def test_pad_right_with_attention_mask():
    ids, mask = pad([[5, 6, 7], [8]], value=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collate_dialog_pads_every_column_and_never_scores_padding():
    rows = {"input_ids": [np.array([2, 10, 3, 11, 3]), np.array([2, 12, 3])],
            "segment_ids": [np.array([0, 0, 0, 1, 1]), np.array([1, 1, 1])],
            "loss_mask": [np.array([0, 0, 0, 1, 1]), np.array([0, 0, 0])]}
    b = collate_dialog(rows, pad_id=0)
    assert b["input_ids"].shape == (2, 5) and b["input_ids"].dtype == torch.int64
    assert b["segment_ids"][1].tolist() == [1, 1, 1, 0, 0]
    assert b["loss_mask"][1].tolist() == [0, 0, 0, 0, 0]
    assert b["attention_mask"].sum().item() == 8


def test_collate_classifier_and_fast_mlm_labels():
    rows = {"input_ids": [np.array([2, 9, 3]), np.array([2, 3])], "label": np.array([1, 0])}
    b = collate_classifier(rows, pad_id=0)
    assert b["labels"].tolist() == [1, 0] and b["input_ids"][1].tolist() == [2, 3, 0]
    m = collate_mlm({"input_ids": rows["input_ids"]}, pad_id=0)
    assert m["labels"][1].tolist() == [2, 3, IGNORE_INDEX]  # T-TA: every real token is its own target


def test_standard_mlm_masking_through_the_model_rule():
    pytest.importorskip("liaotian.models.masked_lm")
    rows = {"input_ids": [np.array([2] + list(range(10, 60)) + [3])] * 40}
    masker = MLMMasker(mask_id=4, vocab_size=80, special_ids=(0, 1, 2, 3, 4), seed=0)
    b = make_collate("mlm", 0, masker)(rows)
    chosen = b["labels"] != IGNORE_INDEX
    share = chosen.float().mean().item()
    assert 0.10 < share < 0.20  # 15 % of real tokens
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # [CLS]/[SEP] never masked
    assert (b["input_ids"][chosen] == 4).float().mean().item() > 0.7  # 80 % become [MASK]
    again = make_collate("mlm", 0, MLMMasker(4, 80, (0, 1, 2, 3, 4), seed=0))(rows)
    assert torch.equal(again["input_ids"], b["input_ids"])  # seeded: reproducible


def test_bucketing_keeps_every_sample_once_and_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=512).tolist()
    plain = bucket_indices(lengths, 16, None, bucket=False)
    sorted_ = bucket_indices(lengths, 16, np.random.default_rng(1), bucket=True)
    assert sorted(np.concatenate(sorted_).tolist()) == list(range(512))
    share_plain = padding_share([[lengths[i] for i in b] for b in plain])
    share_bucket = padding_share([[lengths[i] for i in b] for b in sorted_])
    assert share_plain > 0.3 and share_bucket < 0.05 and share_bucket < share_plain / 5
    # the batch order is shuffled: not ascending in length
    firsts = [lengths[b[0]] for b in sorted_]
    assert firsts != sorted(firsts)


def test_bucketed_windows_yield_row_batches():
    windows = [{"input_ids": [np.arange(n) for n in (5, 1, 4, 2, 3)], "label": np.arange(5)}]
    batches = list(bucketed(windows, 2, np.random.default_rng(0)))
    assert sorted(len(b["input_ids"]) for b in batches) == [1, 2, 2]
    assert sorted(l for b in batches for l in b["label"]) == [0, 1, 2, 3, 4]
    for b in batches:  # neighbours in length share a batch
        lens = [len(x) for x in b["input_ids"]]
        assert max(lens) - min(lens) <= 1


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown model kind"):
        make_collate("gpt", 0)
