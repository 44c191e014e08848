"""T-TA never sees the token it predicts; MaskedLM masking and PLL follow BERT."""
import pytest
import torch

from liaotian.models.fast_mlm import FastMLM, FastMLMConfig
from liaotian.models.masked_lm import MaskedLM, MaskedLMConfig, mask_tokens

V = 40
SMALL = dict(vocab_size=V, max_len=24, n_layer=2, n_head=2, d_model=32, dropout=0.0)


def fast(seed=0):
    torch.manual_seed(seed)
    return FastMLM(FastMLMConfig(**SMALL)).eval()


def sentence(B=2, T=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, V, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    return ids


def test_prediction_at_i_ignores_token_i_but_not_its_neighbours():
    m = fast()
    ids = sentence()
    base = m(ids).logits
    for i in (0, 4, 9):
        changed = ids.clone()
        changed[:, i] = (changed[:, i] + 5) % V
        out = m(changed).logits
        torch.testing.assert_close(out[:, i], base[:, i], atol=1e-6, rtol=1e-6)
        others = [j for j in range(10) if j != i]
        assert (out[:, others] - base[:, others]).abs().amax(-1).min() > 1e-4


def test_padding_is_neither_attended_nor_scored():
    m = fast()
    ids = sentence(B=1)
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
    am = torch.cat([torch.ones(1, 10), torch.zeros(1, 5)], 1).long()
    torch.testing.assert_close(m(padded, am).logits[:, :10], m(ids).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.pseudo_log_likelihood(padded, am), m.pseudo_log_likelihood(ids), atol=1e-5, rtol=1e-5)


def test_one_token_sequence_gives_finite_output_without_its_token():
    m = fast()
    a = m(torch.tensor([[9]])).logits
    b = m(torch.tensor([[17]])).logits
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


def test_fast_pll_is_sum_of_log_probs_of_inner_tokens():
    m = fast()
    ids = sentence()
    logp = m(ids).logits.log_softmax(-1).gather(2, ids[..., None])[..., 0]
    torch.testing.assert_close(m.pseudo_log_likelihood(ids), logp[:, 1:-1].sum(1), atol=1e-5, rtol=1e-5)


def test_loss_with_labels_equals_full_cross_entropy():
    m = fast()
    ids = sentence()
    out = m(ids, labels=ids)
    full = m(ids).logits
    want = torch.nn.functional.cross_entropy(full.reshape(-1, V), ids.reshape(-1))
    torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=1e-5)


def test_mask_tokens_follows_15_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 1000, (200, 100), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    am = torch.ones_like(ids)
    am[:, 90:] = 0
    out, labels = mask_tokens(ids, 4, 1000, special_ids=(0, 2, 3, 4), attention_mask=am, prob=0.15, random_low=7, generator=g)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 90:].any()
    eligible = 200 * 88
    assert abs(chosen.sum().item() / eligible - 0.15) < 0.01
    assert (labels[chosen] == ids[chosen]).all() and (out[~chosen] == ids[~chosen]).all()
    n = chosen.sum().item()
    masked = (out[chosen] == 4).sum().item() / n
    kept = (out[chosen] == ids[chosen]).sum().item() / n
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # random tokens rarely hit the original
    assert (out[chosen] >= 4).all()


def test_masked_lm_pll_equals_one_masked_pass_per_position():
    torch.manual_seed(0)
    m = MaskedLM(MaskedLMConfig(**SMALL)).eval()
    ids = sentence(T=8)
    want = torch.zeros(2)
    for i in range(1, 7):
        x = ids.clone()
        x[:, i] = 4
        want += m(x).logits[:, i].log_softmax(-1).gather(1, ids[:, i : i + 1])[:, 0]
    for bs in (1, 5, 64):
        torch.testing.assert_close(m.pseudo_log_likelihood(ids, batch_size=bs), want, atol=1e-5, rtol=1e-5)


def test_masked_lm_loss_scores_only_labelled_positions():
    torch.manual_seed(0)
    m = MaskedLM(MaskedLMConfig(**SMALL)).eval()
    ids = sentence()
    masked, labels = m.mask_tokens(ids, generator=torch.Generator().manual_seed(3))
    labels[0, 3] = ids[0, 3]  # make sure something is scored
    out = m(masked, labels=labels)
    full = m(masked).logits
    want = torch.nn.functional.cross_entropy(full.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=1e-5)
    assert out.logits.shape == ((labels != -100).sum().item(), V)


def test_encoder_config_validation():
    with pytest.raises(ValueError, match="mask_id"):
        FastMLMConfig(vocab_size=4, mask_id=4, d_model=32, n_head=2)
    with pytest.raises(ValueError, match="mask_prob"):
        MaskedLMConfig(mask_prob=0.0)
    assert FastMLMConfig.preset("base").d_model == 768
