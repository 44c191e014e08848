"""Opt-in training speed paths for DialogLM, equal to the plain model up to rounding. No Ray here.

`accelerate_training(model)` (what pipelines/train_loop.py calls for a dialogue model) swaps three
pieces of the model for faster ones that compute the same up to bf16 rounding, through the model's
own seams (`DialogLM.scored_loss`, `SoftmaxAttention.attend`, `MLP.act`); the model classes stay plain
PyTorch and a model without this call trains the same way, only slower. Each piece helps on CPU and
hands everything else to the plain reference, so GPU training and fp32 training are unchanged except
for the chunked loss, which is exact:

- `fast_scored_cross_entropy`: the loss over the scored positions in row chunks that stay in cache,
  their count rounded up to a multiple of 64 (copies dropped from every output).
- `bf16_cpu_attention`: causal self-attention in bf16 on CPU as two batched products.
- `BF16GeluTanh`: GPT-2's tanh GELU on bf16 CPU activations through torch's faster erf kernel.

The fp32 matrix products keep torch's default kernels on every machine (the benchmark's
`train_kernel_choice` row measures what a oneDNN swap would change on the machine it runs on).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from liaotian.models.attention import SoftmaxAttention
from liaotian.models.layers import scored_cross_entropy


class _ChunkedRowCrossEntropy(torch.autograd.Function):
    """−log softmax(logits)[target] per row, in row chunks that stay in cache.

    Same value as `F.cross_entropy(logits.float(), targets, reduction="none")`, without its full-size
    fp32 copy of the logits, fp32 log-probabilities and zero-filled one-hot gradient: forward keeps
    only the logsumexp per row; backward writes (softmax − onehot)·g chunk by chunk in the logits'
    dtype. On a (1430, 13088) bf16 block, forward + backward took 55 ms here against 164 ms.
    """

    CHUNK = 16  # rows per chunk: 16 × 13,088 fp32 = 0.8 MB, inside L2

    @staticmethod
    def forward(ctx, logits, targets):
        with torch.autocast("cpu", enabled=False):
            N, step = logits.shape[0], _ChunkedRowCrossEntropy.CHUNK
            lse = torch.empty(N, dtype=torch.float32, device=logits.device)
            for s in range(0, N, step):
                lse[s : s + step] = torch.logsumexp(logits[s : s + step].float(), -1)
            picked = logits.gather(1, targets[:, None]).squeeze(1).float()
            ctx.save_for_backward(logits, targets, lse)
            return lse - picked

    @staticmethod
    def backward(ctx, grad):
        logits, targets, lse = ctx.saved_tensors
        N, step = logits.shape[0], _ChunkedRowCrossEntropy.CHUNK
        g = grad.float()
        out = torch.empty_like(logits)
        rows = torch.arange(min(step, N), device=logits.device)
        for s in range(0, N, step):
            e = min(s + step, N)
            p = logits[s:e] - lse[s:e, None]  # a new fp32 block (lse is fp32): the saved logits stay untouched
            p.exp_().mul_(g[s:e, None])
            p[rows[: e - s], targets[s:e]] -= g[s:e]
            out[s:e] = p
        return out, None


def chunked_row_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`models.layers.row_cross_entropy`, chunked on CPU: (N,V) logits, (N,) targets -> (N,) float32 NLL."""
    if logits.dim() != 2:
        raise ValueError(f"chunked_row_cross_entropy expects (N, V) logits, got shape {tuple(logits.shape)}")
    if logits.device.type != "cpu":  # cache-sized chunks are a CPU matter; on a GPU they are ~2,000 tiny launches a step
        return F.cross_entropy(logits.float(), targets, reduction="none")
    return _ChunkedRowCrossEntropy.apply(logits, targets)


SCORED_ROWS_MULTIPLE = 64


def fast_scored_cross_entropy(hidden, scored, targets_full, project):
    """`layers.scored_cross_entropy` with `chunked_row_cross_entropy`, projecting a multiple of 64 rows
    when the products run in bf16 on the CPU.

    Why the multiple: the number of scored positions differs in nearly every batch, and oneDNN (torch's
    CPU bf16 matrix products) builds a kernel for each new shape: the three vocabulary products of a
    step (forward, both gradients) then paid that build every step, and their stream of new shapes
    pushed the other layers' kernels out of oneDNN's cache too. Measured here: a (330, 256) × (256,
    3416) bf16 product took 1.8 ms at a shape seen before and 4.3 ms at a new one; in a tiny-preset
    step at 24 tokens per row the three took 10–17 ms each. With ≤ 63 extra rows a run sees at most
    a few dozen row counts. The copies repeat the first scored row and are dropped from the loss,
    the logits and the targets, so the result is the same.
    """
    multiple = SCORED_ROWS_MULTIPLE if _cpu_bf16_products(hidden) else 1  # fp32 products (MKL) build no per-shape kernel
    return scored_cross_entropy(hidden, scored, targets_full, project, chunked_row_cross_entropy, rows_multiple=multiple)


def _cpu_bf16_products(x: torch.Tensor) -> bool:
    """Will products of `x` run in bf16 on the CPU (x bf16, or bf16 autocast on)?"""
    if x.device.type != "cpu":
        return False
    return x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def bf16_cpu_attention(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0):
    """`F.scaled_dot_product_attention`; bf16 self-attention on CPU without a mask or cache runs as
    softmax(QKᵀ/√d + M)V, two batched products around a bf16 softmax.

    torch's CPU flash-attention kernel runs bf16 no faster than fp32: forward + backward of
    8 × 6 heads × 256 × 64 took 32 ms here, this plain form 12.5 ms (its (B,H,T,T) scores are
    small at these lengths). The scale goes on Q (T·Dh values, not T·T); the causal mask is an
    additive −inf upper triangle. Equals SDPA up to bf16 rounding of the probabilities. Anything
    else (fp32, a mask, a KV cache, a GPU) is SDPA's case, not a fallback from this one.
    """
    T = q.shape[2]
    if not (q.dtype == torch.bfloat16 and q.device.type == "cpu" and attn_mask is None and T > 1 and k.shape[2] == T):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p)
    with torch.autocast(q.device.type, enabled=False):  # q, k, v are bf16 already; keep the softmax bf16
        scores = torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-1, -2))  # (B, H, T, T)
        if is_causal:
            scores = scores + torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        p = torch.softmax(scores, dim=-1)
        if dropout_p:
            p = F.dropout(p, dropout_p)
        return torch.matmul(p, v)


class BF16GeluTanh(nn.GELU):
    """`nn.GELU(approximate="tanh")`; a bf16 CPU input goes through the exact (erf) GELU kernel.

    Why: torch's CPU tanh-GELU kernel is slow (forward of 4M bf16 values 16.8 ms here, the erf
    kernel 3.4 ms; backward likewise), and the two functions differ by at most 4.7e-4 (at x = 2.70),
    well inside bf16's rounding of the output. Over every finite bf16 input the erf kernel's bf16
    result is at most 0.0082 from the exact tanh-GELU, the tanh kernel's own bf16 result 0.0078; the
    gradients 0.0046 and 0.0039 (tests/models/test_fast_train.py measures both). fp32 inputs, and
    any other device, keep the tanh kernel: there the difference would not be hidden by rounding.
    """

    def __init__(self):
        super().__init__(approximate="tanh")

    def forward(self, x):
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            return F.gelu(x)
        return F.gelu(x, approximate="tanh")


def accelerate_training(model: nn.Module) -> nn.Module:
    """Give `model` (a DialogLM) the chunked loss, the bf16 CPU attention and the bf16 CPU GELU;
    returns it (in place)."""
    if hasattr(model, "scored_loss"):
        model.scored_loss = fast_scored_cross_entropy
    for m in model.modules():
        if isinstance(m, SoftmaxAttention):
            m.attend = bf16_cpu_attention
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.GELU and child.approximate == "tanh":
                setattr(parent, name, BF16GeluTanh())
    return model
