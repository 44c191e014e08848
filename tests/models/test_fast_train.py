"""models/fast_train.py against the plain model: the chunked loss and the bf16 CPU attention are
the same computation, and a model given them trains to the same loss and gradients."""
import copy

import pytest
import torch
import torch.nn.functional as F

from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.fast_train import (BF16GeluTanh, _ChunkedRowCrossEntropy, accelerate_training, bf16_cpu_attention,
                                        chunked_row_cross_entropy, fast_scored_cross_entropy)
from liaotian.models.layers import scored_cross_entropy


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


@pytest.mark.parametrize("n_scored", [0, 1, 63, 64, 65, 130])
def test_padded_rows_give_the_same_loss_logits_targets_and_gradients(n_scored):
    torch.manual_seed(n_scored)
    hidden = torch.randn(3, 50, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    flat = torch.zeros(150, dtype=torch.bool)
    flat[torch.randperm(150)[:n_scored]] = True
    scored, targets = flat.view(3, 50), torch.randint(0, 40, (3, 50))
    seen = []

    def project(h, idx):
        seen.append(h.shape[0])
        return F.linear(h, weight)

    outs = []
    for multiple in (1, 64):
        loss, logits, tgt, token_nll = scored_cross_entropy(hidden, scored, targets, project, rows_multiple=multiple)
        grads = torch.autograd.grad(loss, (hidden, weight)) if n_scored else (None, None)
        outs.append((loss, logits, tgt, token_nll, *grads))
    assert seen[0] == n_scored and seen[1] % 64 == 0 and seen[1] - n_scored < 64
    for a, b in zip(*outs):
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert outs[1][1].shape[0] == n_scored


def test_fast_scored_loss_pads_rows_only_for_cpu_bf16_products():
    hidden, scored, targets = torch.randn(2, 40, 8), torch.rand(2, 40) > 0.5, torch.randint(0, 30, (2, 40))
    weight, rows = torch.randn(30, 8), []
    project = lambda h, idx: rows.append(h.shape[0]) or F.linear(h, weight)  # noqa: E731
    fast_scored_cross_entropy(hidden, scored, targets, project)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_scored_cross_entropy(hidden, scored, targets, project)
    assert rows == [int(scored.sum()), 64]


def every_finite_bf16(limit=50.0):
    values = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    return values[torch.isfinite(values) & (values.float().abs() < limit)]


def test_bf16_gelu_tanh_is_as_close_to_the_tanh_gelu_as_torchs_own_bf16_kernel():
    """Over every finite bf16 input in (−50, 50), elementwise: the swapped kernel's value is within half
    a bf16 step of the exact (float64) tanh-GELU plus the two functions' 4.7e-4 gap; its gradient is
    within the tanh kernel's own largest gradient error plus 1e-3."""
    x = every_finite_bf16().requires_grad_()
    exact_x = x.detach().double().requires_grad_()
    exact = F.gelu(exact_x, approximate="tanh")
    (exact_grad,) = torch.autograd.grad(exact.sum(), exact_x)
    exact = exact.detach()
    fast, torch_tanh = BF16GeluTanh()(x), F.gelu(x, approximate="tanh")
    assert fast.dtype == torch.bfloat16
    half_step = torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(2.0 ** -126))) - 8)  # bf16 keeps 8 significant bits
    assert bool(((fast.detach().double() - exact).abs() <= half_step + 4.8e-4).all())
    (fast_grad,) = torch.autograd.grad(fast.float().sum(), x)
    (tanh_grad,) = torch.autograd.grad(torch_tanh.float().sum(), x)
    assert float((fast_grad.double() - exact_grad).abs().max()) <= float((tanh_grad.double() - exact_grad).abs().max()) + 1e-3
    # fp32 keeps the tanh kernel exactly
    xf = torch.linspace(-6, 6, 1001)
    assert torch.equal(BF16GeluTanh()(xf), F.gelu(xf, approximate="tanh"))


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
    assert fast.scored_loss is fast_scored_cross_entropy and plain.scored_loss is scored_cross_entropy
    assert all(isinstance(b.mlp.act, BF16GeluTanh) for b in fast.blocks)
    assert not any(isinstance(b.mlp.act, BF16GeluTanh) for b in plain.blocks)
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
