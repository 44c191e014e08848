"""models/fast_train.py against the plain model: the chunked loss and the bf16 CPU attention are
the same computation, and a model given them trains to the same loss and gradients."""
import copy

import pytest
import torch
import torch.nn.functional as F

from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.fast_train import _ChunkedRowCrossEntropy, accelerate_training, bf16_cpu_attention, chunked_row_cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [0, 1, _ChunkedRowCrossEntropy.CHUNK, 2 * _ChunkedRowCrossEntropy.CHUNK + 3])
def test_chunked_row_cross_entropy_equals_f_cross_entropy(dtype, n):
    torch.manual_seed(n)
    logits = (torch.randn(n, 50) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (n,))
    upstream = torch.rand(n)
    kept = logits.detach().clone()
    nll = chunked_row_cross_entropy(logits, targets)
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
def test_bf16_cpu_attention_matches_sdpa(causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8) for _ in range(3))
    g = torch.randn(2, 3, 17, 8)
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    y = bf16_cpu_attention(qb, kb, vb, is_causal=causal)
    y.backward(g.bfloat16())
    q32, k32, v32 = (t.clone().requires_grad_() for t in (q, k, v))
    want = F.scaled_dot_product_attention(q32, k32, v32, is_causal=causal)
    want.backward(g)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), want, atol=3e-2, rtol=3e-2)
    for a, b in ((qb, q32), (kb, k32), (vb, v32)):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=6e-2, rtol=5e-2)
    # fp32, or a mask: SDPA itself
    torch.testing.assert_close(bf16_cpu_attention(q, k, v, is_causal=causal), F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                               atol=0, rtol=0)


def make(seed=0):
    torch.manual_seed(seed)
    cfg = DialogLMConfig(vocab_size=300, max_len=96, n_layer=2, n_head=4, d_model=64, dropout=0.0)
    return DialogLM(cfg)


def batch(seed=1):
    ids = torch.randint(7, 300, (3, 40), generator=torch.Generator().manual_seed(seed))
    lm = torch.ones_like(ids)
    lm[:, :12] = 0
    return ids, torch.zeros_like(ids), lm


def loss_and_grads(m, dtype=None):
    ids, seg, lm = batch()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = m(ids, seg, loss_mask=lm).loss
    return loss, torch.autograd.grad(loss, list(m.parameters()))


def test_accelerated_model_trains_like_the_plain_one_in_fp32():
    plain = make()
    fast = accelerate_training(copy.deepcopy(plain))
    assert fast.row_nll is chunked_row_cross_entropy and plain.row_nll is not chunked_row_cross_entropy
    (l0, g0), (l1, g1) = loss_and_grads(plain), loss_and_grads(fast)
    torch.testing.assert_close(l1, l0, atol=1e-6, rtol=1e-6)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_accelerated_bf16_autocast_loss_and_gradients_follow_plain_fp32():
    plain = make()
    fast = accelerate_training(copy.deepcopy(plain))
    (l32, g32), (l16, g16) = loss_and_grads(plain), loss_and_grads(fast, torch.bfloat16)
    torch.testing.assert_close(l16, l32, atol=0.0, rtol=2e-2)
    for a, b in zip(g16, g32):
        if b.abs().sum() > 0:
            assert F.cosine_similarity(a.float().flatten(), b.flatten(), dim=0) > 0.98
