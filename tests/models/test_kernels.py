"""The fast paths against their plain references: oneDNN linear, row-chunked cross-entropy, bf16
attention, and DialogLM's one-token decoding step in fp32 and bf16."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from liaotian.models import kernels
from liaotian.models.attention import _bf16_attention
from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.layers import _RowCrossEntropy, cross_entropy_rows

needs_onednn = pytest.mark.skipif(not kernels._ONEDNN, reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("shape", [(3, 5, 16), (7, 16), (2, 1, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_f_linear_values_and_gradients(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(8, requires_grad=True) if bias else None
    g = torch.randn(*shape[:-1], 8)
    y = kernels.linear(x, w, b)
    y.backward(g)
    got = [x.grad, w.grad] + ([b.grad] if bias else [])
    for t in (x, w, b):
        if t is not None:
            t.grad = None
    want_y = F.linear(x, w, b)
    want_y.backward(g)
    torch.testing.assert_close(y, want_y, atol=1e-5, rtol=1e-5)
    for a, t in zip(got, (x, w, b)):
        torch.testing.assert_close(a, t.grad, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_onednn_linear_is_used_for_fp32_only_and_can_be_switched_off():
    x, w = torch.randn(4, 16), torch.randn(8, 16)
    assert kernels._use_onednn(x, w)
    assert not kernels._use_onednn(x.bfloat16(), w.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernels._use_onednn(x, w)
        assert kernels.linear(x, w).dtype == torch.bfloat16  # autocast still applies
    previous = kernels.set_onednn_linear(False)
    try:
        assert not kernels._use_onednn(x, w)
        torch.testing.assert_close(kernels.linear(x, w), F.linear(x, w))
    finally:
        kernels.set_onednn_linear(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [0, 1, _RowCrossEntropy.CHUNK, 2 * _RowCrossEntropy.CHUNK + 3])
def test_row_cross_entropy_equals_f_cross_entropy(dtype, n):
    torch.manual_seed(n)
    logits = (torch.randn(n, 50) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (n,))
    upstream = torch.rand(n)
    kept = logits.detach().clone()
    nll = cross_entropy_rows(logits, targets)
    nll.backward(upstream)
    got = logits.grad
    logits.grad = None
    want = F.cross_entropy(logits.float(), targets, reduction="none")
    want.backward(upstream)
    assert nll.dtype == torch.float32 and got.dtype == dtype
    torch.testing.assert_close(nll, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.float(), logits.grad.float(), atol=1e-2 if dtype == torch.bfloat16 else 1e-6, rtol=1e-2)
    assert torch.equal(logits.detach(), kept)  # the saved logits are not overwritten by backward


@pytest.mark.parametrize("causal", [True, False])
def test_bf16_attention_matches_sdpa(causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8) for _ in range(3))
    g = torch.randn(2, 3, 17, 8)
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    y = _bf16_attention(qb, kb, vb, causal, 0.0)
    y.backward(g.bfloat16())
    q32, k32, v32 = (t.clone().requires_grad_() for t in (q, k, v))
    want = F.scaled_dot_product_attention(q32, k32, v32, is_causal=causal)
    want.backward(g)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), want, atol=3e-2, rtol=3e-2)
    for a, b in ((qb, q32), (kb, k32), (vb, v32)):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=6e-2, rtol=5e-2)


def make(seed=0, n_layer=2, d_model=64, n_head=4, vocab=300):
    torch.manual_seed(seed)
    cfg = DialogLMConfig(vocab_size=vocab, max_len=96, n_layer=n_layer, n_head=n_head, d_model=d_model, dropout=0.0)
    m = DialogLM(cfg).eval()
    with torch.no_grad():  # sharper than the N(0, 0.02) initialisation, so the greedy choice is not a near-tie
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m


def test_bf16_autocast_training_loss_and_gradients_follow_fp32():
    m = make()
    m.train()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(7, 300, (3, 40), generator=g)
    lm = torch.ones_like(ids)
    lm[:, :12] = 0
    loss32 = m(ids, torch.zeros_like(ids), loss_mask=lm).loss
    grads32 = torch.autograd.grad(loss32, [m.blocks[0].attn.qkv.weight, m.token_embedding.weight])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16 = m(ids, torch.zeros_like(ids), loss_mask=lm).loss
    grads16 = torch.autograd.grad(loss16, [m.blocks[0].attn.qkv.weight, m.token_embedding.weight])
    torch.testing.assert_close(loss16, loss32, atol=0.0, rtol=2e-2)
    for a, b in zip(grads16, grads32):
        cos = F.cosine_similarity(a.float().flatten(), b.flatten(), dim=0)
        assert cos > 0.98, float(cos)


def greedy(m, ctx, new):
    state = m.init_state(ctx.shape[0])
    scores, state = m.step(ctx, torch.zeros_like(ctx), state)
    out, all_scores = [], []
    for _ in range(new):
        nxt = scores[:, -1].argmax(-1, keepdim=True)
        out.append(nxt)
        scores, state = m.step(nxt, torch.ones_like(nxt), state)
        all_scores.append(scores[:, -1])
    return torch.cat(out, 1), torch.stack(all_scores, 1)


def test_decode_precision_bf16_tracks_fp32_greedy():
    m32, m16 = make().set_decode_precision("fp32"), make().set_decode_precision("bf16")
    ctx = torch.randint(7, 300, (2, 16), generator=torch.Generator().manual_seed(3))
    tokens32, _ = greedy(m32, ctx, 40)
    tokens16, _ = greedy(m16, ctx, 40)
    assert m16._decode_weights.dtype == torch.bfloat16 and m32._decode_weights.dtype is None
    assert (tokens16 == tokens32).float().mean() >= 0.9
    # Step by step on the same (fp32-chosen) prefix, the bf16 scores stay within bf16 rounding
    state32, state16 = m32.init_state(2), m16.init_state(2)
    s32, state32 = m32.step(ctx, torch.zeros_like(ctx), state32)
    s16, state16 = m16.step(ctx, torch.zeros_like(ctx), state16)
    torch.testing.assert_close(s16, s32)  # the context (several tokens) always runs in fp32
    for t in range(10):
        nxt = tokens32[:, t : t + 1]
        s32, state32 = m32.step(nxt, torch.ones_like(nxt), state32)
        s16, state16 = m16.step(nxt, torch.ones_like(nxt), state16)
        assert (s16 - s32).abs().max() < 0.05 * s32.std(), float((s16 - s32).abs().max())  # ≈ 0.02 here
        assert not torch.equal(s16, s32)  # bf16 weights really were used


def test_decode_weights_follow_parameter_updates_and_models_still_pickle():
    m = make().set_decode_precision("bf16")
    ctx = torch.randint(7, 300, (1, 8), generator=torch.Generator().manual_seed(4))
    before, _ = greedy(m, ctx, 3)
    with torch.no_grad():
        m.token_embedding.weight[before[0, 1]] += 100.0  # make that token win every step
    after, _ = greedy(m, ctx, 3)
    assert (after[0, 1:] == before[0, 1]).all()
    clone = pickle.loads(pickle.dumps(m))
    assert clone._decode_weights is None
    torch.testing.assert_close(greedy(clone, ctx, 3)[0], after)
    assert copy.deepcopy(m)._decode_weights is None
    with pytest.raises(ValueError):
        m.set_decode_precision("fp16")


def test_one_token_fast_path_with_padding_matches_full_forward_fp32():
    """Left-padded rows (key mask) through the one-token path equal the unpadded full forward."""
    m = make().set_decode_precision("fp32")
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(7, 300, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :5] = False
    state = m.init_state(2)
    m.step(ids[:, :10], torch.zeros(2, 10, dtype=torch.long), state, token_mask=mask[:, :10])
    for t in (10, 11):
        scores, state = m.step(ids[:, t : t + 1], torch.zeros(2, 1, dtype=torch.long), state)
    for row in range(2):
        real = ids[row][mask[row]][None]
        full = m(real, torch.zeros_like(real)).logits[0, -1]
        torch.testing.assert_close(scores[row, 0], full, atol=1e-4, rtol=1e-4)
