"""Matrix products for the models' linear layers: fp32 on CPU through oneDNN. No Ray here.

Why: on CPU, `F.linear`/`addmm` in fp32 go to MKL's sgemm, and MKL takes its AVX2 code path on AMD
processors. oneDNN (also shipped inside torch) uses AVX-512 where the CPU has it; on the 2-core AMD
EPYC (Zen 5) of this project a 2048×384·384×1536 product took 25 ms through MKL and 9.5 ms through
oneDNN, single-vector products (decoding) 3.9 vs 2.5 ms per model pass (benchmarks/models.py).
bf16/fp16 products already go to oneDNN, so everything that is not plain fp32 on CPU, and everything
under autocast, keeps `F.linear`. The backward pass uses oneDNN for the same reason.

`linear(x, w, b)` is a drop-in for `F.linear`; `Linear` is an `nn.Linear` (same parameters, same
state-dict keys, same isinstance checks) whose forward calls it; `use_onednn_linears(module)` turns
a module's linear layers into it (DialogLM does, the encoders do not: see there).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_enabled = _ONEDNN


def set_onednn_linear(enabled: bool) -> bool:
    """Turn the oneDNN fp32 path on/off (tests compare both); returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled) and _ONEDNN
    return previous


def onednn_linear_enabled() -> bool:
    return _enabled


def _mm(x2: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x2 (N,K) · w (M,K)ᵀ + b through oneDNN; w may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(x2, w, b, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, w)
        ctx.has_bias = b is not None
        return _mm(x2, w, b).view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2, w = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _mm(g2, w.t(), None).view(*grad.shape[:-1], w.shape[1])  # g · w
        if ctx.needs_input_grad[1]:
            dw = _mm(g2.t(), x2.t(), None)  # gᵀ · x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db


def _use_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
            and x.dim() >= 2 and x.shape[-1] > 0 and x.numel() > 0 and not torch.is_autocast_enabled("cpu"))


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b), through oneDNN for fp32 CPU tensors outside autocast."""
    if not _use_onednn(x, w):
        return F.linear(x, w, b)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
        return _OneDNNLinear.apply(x, w, b)
    return _mm(x.reshape(-1, x.shape[-1]), w, b).view(*x.shape[:-1], w.shape[0])


class Linear(nn.Linear):
    """nn.Linear whose forward uses `linear` (oneDNN for fp32 on CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def use_onednn_linears(module: nn.Module) -> nn.Module:
    """Make every plain `nn.Linear` inside `module` a `Linear` (same parameters and state-dict keys;
    only the forward differs). DialogLM does this for its blocks. The encoders (FastMLM, MaskedLM,
    Classifier) keep torch's default: Integrated Gradients asks autograd for input gradients only,
    which built-in linear layers honour and a custom autograd function cannot (it would also compute
    every weight gradient)."""
    for m in module.modules():
        if type(m) is nn.Linear:
            m.__class__ = Linear
    return module
