"""DialogLM: loss on the loss mask, cached decoding == full forward, self-terminating layer."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from liaotian.models.dialog_lm import PRESETS, DialogLM, DialogLMConfig

V = 40


def make(attention="softmax", st=False, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = DialogLMConfig(vocab_size=V, max_len=48, n_layer=2, n_head=2, d_model=32, dropout=0.0,
                         attention=attention, self_terminating=st, linear_chunk_size=4, **kw)
    return DialogLM(cfg).eval()


def sample(B=3, T=14, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, V, (B, T), generator=g)
    ids[:, 0], ids[:, 5], ids[:, 9] = 2, 3, 3  # [CLS] u1 [SEP] u2 [SEP] u3
    seg = torch.zeros_like(ids)
    seg[:, 6:10] = 1
    return ids, seg


def test_loss_is_mean_nll_over_loss_mask_positions_only():
    m = make()
    ids, seg = sample()
    lm = torch.zeros_like(ids)
    lm[:, 6:10] = 1  # u2 and its [SEP]
    out = m(ids, seg, loss_mask=lm)
    full = m(ids, seg).logits  # (B, T, V)
    logp = full[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]  # predicts t+1
    want = -(logp * lm[:, 1:]).sum() / lm[:, 1:].sum()
    torch.testing.assert_close(out.loss, want)
    assert out.logits.shape == (3 * 4, V)
    torch.testing.assert_close(out.token_nll[:, 6:10], -logp[:, 5:9])
    assert (out.token_nll[:, :6] == 0).all()


def test_right_padding_does_not_change_real_positions():
    m = make()
    ids, seg = sample(B=1)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    am = torch.cat([torch.ones(1, 14), torch.zeros(1, 4)], 1).long()
    a = m(ids, seg).logits
    b = m(padded, F.pad(seg, (0, 4)), attention_mask=am).logits[:, :14]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("st", [False, True])
def test_cached_step_equals_full_forward(attention, st):
    m = make(attention, st)
    ids, seg = sample()
    full = m(ids, seg).logits.log_softmax(-1)
    state = m.init_state(3)
    parts = []
    for a, b in ((0, 6), (6, 7), (7, 8), (8, 14)):
        scores, state = m.step(ids[:, a:b], seg[:, a:b], state)
        assert scores.dtype == torch.float32 and scores.shape == (3, b - a, V)
        parts.append(scores.log_softmax(-1))
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("st", [False, True])
def test_left_padded_batch_matches_each_row_alone(attention, st):
    m = make(attention, st)
    ids, seg = sample(B=2, T=12)
    lens = [12, 7]
    padded = torch.zeros(2, 12, dtype=torch.long)
    pseg = torch.zeros(2, 12, dtype=torch.long)
    tm = torch.zeros(2, 12, dtype=torch.bool)
    for i, n in enumerate(lens):
        padded[i, 12 - n :], pseg[i, 12 - n :], tm[i, 12 - n :] = ids[i, :n], seg[i, :n], True
    state = m.init_state(2)
    first, state = m.step(padded, pseg, state, token_mask=tm)
    nxt = torch.tensor([[11], [12]])
    second, state = m.step(nxt, torch.ones_like(nxt), state)
    for i, n in enumerate(lens):
        alone = torch.cat([ids[i : i + 1, :n], nxt[i : i + 1]], 1)
        aseg = torch.cat([seg[i : i + 1, :n], torch.ones(1, 1, dtype=torch.long)], 1)
        ref = m(alone, aseg).logits.log_softmax(-1)
        torch.testing.assert_close(first[i, 12 - n :].log_softmax(-1), ref[0, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(second[i, 0].log_softmax(-1), ref[0, n], atol=1e-5, rtol=1e-5)
    # the same left padding through forward(attention_mask=...) gives the same scores
    fwd = m(padded, pseg, attention_mask=tm.long()).logits
    torch.testing.assert_close(fwd[tm].log_softmax(-1), first[tm].log_softmax(-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("st", [False, True])
def test_last_only_scores_the_last_position_and_leaves_the_state_alike(attention, st):
    m = make(attention, st)
    ids, seg = sample(B=2, T=12)
    tm = torch.ones(2, 12, dtype=torch.bool)
    tm[1, :4] = False  # left padding
    full_state, last_state = m.init_state(2), m.init_state(2)
    full, full_state = m.step(ids, seg, full_state, token_mask=tm)
    last, last_state = m.step(ids, seg, last_state, token_mask=tm, last_only=True)
    assert last.shape == (2, 1, V)
    torch.testing.assert_close(last, full[:, -1:], atol=1e-6, rtol=1e-6)
    nxt = torch.tensor([[11], [12]])  # the next step sees the same cache / recurrent state and carry
    a, _ = m.step(nxt, torch.ones_like(nxt), full_state)
    b, _ = m.step(nxt, torch.ones_like(nxt), last_state)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_reorder_duplicates_rows(attention):
    m = make(attention)
    ids, seg = sample(B=2)
    state = m.init_state(2)
    _, state = m.step(ids[:, :8], seg[:, :8], state)
    state = state.reorder(torch.tensor([1, 1, 0]))
    scores, _ = m.step(ids[[1, 1, 0], 8:9], seg[[1, 1, 0], 8:9], state)
    full = m(ids[:, :9], seg[:, :9]).logits[:, -1]
    torch.testing.assert_close(scores[:, 0], full[[1, 1, 0]], atol=1e-5, rtol=1e-5)


def test_token_embeds_replace_the_lookup():
    m = make()
    ids, seg = sample()
    a = m(ids, seg).logits
    b = m(ids, seg, token_embeds=m.token_embedding(ids)).logits
    torch.testing.assert_close(a, b)


def test_self_terminating_eos_is_monotone_bounded_and_rows_sum_to_one():
    eps = 0.05
    m = make(st=True, st_epsilon=eps)
    ids, seg = sample(T=30)
    ids[:, 10:] = torch.randint(7, V, (3, 20))  # one long reply after the [SEP] at position 9
    out = m(ids, seg)
    logp = out.logits  # (B, T, V) log-probabilities
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, 30), atol=1e-5, rtol=0)
    p_eos = logp[..., 3].exp()
    reply = p_eos[:, 9:]  # steps 1, 2, … of the reply that starts reading the [SEP] at 9
    assert (reply[:, 1:] >= reply[:, :-1] - 1e-6).all()
    t = torch.arange(1, reply.shape[1] + 1)
    assert (reply >= 1 - (1 - eps) ** t - 1e-6).all()
    # Welleck et al. written out: β_t = (1−ε)σ(u_eos·h_t), p(eos) = 1 − Π β over the steps since the [SEP]
    beta = (1 - eps) * torch.sigmoid(out.hidden_states @ m.token_embedding.weight[3])  # (B, T)
    torch.testing.assert_close(reply, 1 - beta[:, 9:].cumprod(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p_eos[:, 6:9], 1 - beta[:, 5:9].cumprod(1)[:, 1:], atol=1e-5, rtol=1e-4)


def test_self_terminating_loss_is_nll_of_its_log_probs():
    m = make(st=True)
    ids, seg = sample()
    lm = torch.ones_like(ids)
    out = m(ids, seg, loss_mask=lm)
    logp = m(ids, seg).logits[:, :-1].gather(2, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(out.loss, -logp.mean(), atol=1e-5, rtol=1e-5)


def test_presets_and_config_validation():
    tiny = DialogLM(DialogLMConfig.preset("tiny"))
    n = sum(p.numel() for p in tiny.parameters())
    assert 2e6 < n < 10e6
    base = DialogLMConfig.preset("base", vocab_size=13088)
    assert (base.n_layer, base.d_model, base.n_head) == (12, 768, 12) and PRESETS["base"]["d_model"] == 768
    with pytest.raises(ValueError, match="preset"):
        DialogLMConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        DialogLMConfig(d_model=30, n_head=4, vocab_size=V)
    with pytest.raises(ValueError, match="attention"):
        DialogLMConfig(attention="sparse")
    with pytest.raises(ValueError, match="eos_id"):
        DialogLMConfig(vocab_size=3, eos_id=3, d_model=32)
    with pytest.warns(UserWarning, match="8.33"):
        DialogLMConfig(vocab_size=13088, d_model=64, n_head=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DialogLMConfig(vocab_size=13088, d_model=80, n_head=4)  # 8.33·ln 13088 ≈ 79.0
    assert math.isclose(8.33 * math.log(13088), 79.0, abs_tol=0.1)


def test_position_beyond_max_len_is_an_error():
    m = make()
    state = m.init_state(1)
    ids = torch.full((1, 48), 9)
    m.step(ids, torch.zeros_like(ids), state)
    with pytest.raises(ValueError, match="max_len"):
        m.step(ids[:, :1], torch.zeros(1, 1, dtype=torch.long), state)


def test_kv_cache_is_preallocated_for_max_len_and_single_token_steps_match_full_forward():
    m = make("softmax")
    ids, seg = sample(B=2, T=48)
    full = m(ids, seg).logits.log_softmax(-1)
    state = m.init_state(2)
    scores, state = m.step(ids[:, :10], seg[:, :10], state)
    first = [layer.k.data_ptr() for layer in state.layers]
    assert all(layer.k.shape[2] == m.config.max_len for layer in state.layers)
    parts = [scores.log_softmax(-1)]
    for t in range(10, 48):  # one token at a time up to max_len: no reallocation on the way
        scores, state = m.step(ids[:, t : t + 1], seg[:, t : t + 1], state)
        parts.append(scores.log_softmax(-1))
    assert [layer.k.data_ptr() for layer in state.layers] == first
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_a_model_built_under_inference_mode_decodes():
    ids, seg = sample()
    with torch.inference_mode():  # its parameters are inference tensors, without version counters
        m = make()
        state = m.init_state(ids.shape[0])
        first, state = m.step(ids[:, :8], seg[:, :8], state)
        nxt, state = m.step(ids[:, 8:9], seg[:, 8:9], state)
    full = make()(ids[:, :9], seg[:, :9]).logits.log_softmax(-1)
    torch.testing.assert_close(nxt[:, 0].log_softmax(-1), full[:, 8], atol=1e-4, rtol=1e-4)
