"""DialogLM's one-token decoding step as one TorchScript function. No Ray here.

Why: one decoding step of the 6 × 384 benchmark model is ~25 matrix–vector products and ~130 small
tensor operations (layer norms, casts, views, cache writes, residual adds). Dispatched one by one
from Python, each small operation pays ~2 µs of interpreter and argument-parsing overhead, 0.25–0.3 ms
of a 1.9 ms bf16 step on the project's 2-core CPU. Run by TorchScript's C++ interpreter, the same
operations cost 1.6 ms a step (benchmarks/models.py, `decode` rows; the products alone are ~1.0 ms,
memory-bound at ~30 GB/s, and attention over the fp32 cache ~0.3 ms).

`token_step` is written once and used two ways: scripted (`scripted_token_step()`) on CPU, and as
plain Python where scripting is unavailable or switched off (`set_scripted_decode(False)`), so both
run exactly the same operations in the same order (tests compare them bit for bit).

Why TorchScript, which torch marks deprecated: `torch.compile` is its replacement, but inductor
cannot lower oneDNN's pre-packed weights with a growing cache length (it fails in lowering), and it
needs a C++ compiler and tens of seconds of compilation at run time. If scripting fails (a future
torch without `torch.jit`), the plain function is used and nothing else changes.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _product(x: Tensor, w: Tensor, b: Optional[Tensor], gelu: bool, onednn: bool) -> Tensor:
    """x (N, K) · wᵀ + b in w's dtype; `gelu`: tanh-GELU applied (fused into the product by oneDNN)."""
    x = x.to(w.dtype)
    if onednn:  # w pre-packed by torch.ops.mkldnn._reorder_linear_weight
        if gelu:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "tanh")
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    y = F.linear(x, w, b)
    if gelu:
        y = F.gelu(y, approximate="tanh")
    return y


def token_step(
    ids: Tensor,  # (B,) the new token of each row
    positions: Tensor,  # (B,) its position
    segments: Optional[Tensor],  # (B,) its segment id, or None (no segment embedding)
    token_table: Tensor,
    position_table: Tensor,
    segment_table: Optional[Tensor],
    weights: List[Tensor],  # 8 per block (see below), then the output (tied embedding) matrix
    norms: List[Tensor],  # 4 per block: ln1 weight, bias, ln2 weight, bias; then the final norm's (fp32)
    keys: List[Tensor],  # per block (B, H, capacity, Dh) fp32; slot `start` is written here
    values: List[Tensor],
    start: int,
    attn_mask: Optional[Tensor],  # (B, 1, 1, start + 1) bool where rows have padding, else None
    n_head: int,
    eps: float,
    onednn: bool,
) -> Tuple[Tensor, Tensor]:
    """One new token per row through embeddings, every softmax block and the output layer.

    Returns (h (B, D) fp32, the final-norm output; scores (B, V) fp32). The residual stream, the
    KV cache and the attention stay fp32; products run in the weights' dtype (fp32 or bf16).
    """
    x = F.embedding(ids, token_table) + F.embedding(positions, position_table)
    if segments is not None and segment_table is not None:
        x = x + F.embedding(segments, segment_table)
    B, D = x.shape[0], x.shape[1]
    Dh = D // n_head
    end = start + 1
    for i in range(len(keys)):
        w = i * 8  # qkv weight, bias, attention-out weight, bias, MLP-in weight, bias, MLP-out weight, bias
        n = i * 4  # (literals: TorchScript reads no module constants)
        h = F.layer_norm(x, [D], norms[n], norms[n + 1], eps)
        qkv = _product(h, weights[w], weights[w + 1], False, onednn).float().view(B, 3, n_head, 1, Dh)
        k, v = keys[i], values[i]
        k[:, :, start:end].copy_(qkv[:, 1])
        v[:, :, start:end].copy_(qkv[:, 2])
        a = F.scaled_dot_product_attention(qkv[:, 0], k[:, :, :end], v[:, :, :end], attn_mask=attn_mask)
        x = x + _product(a.view(B, D), weights[w + 2], weights[w + 3], False, onednn)
        h = F.layer_norm(x, [D], norms[n + 2], norms[n + 3], eps)
        x = x + _product(_product(h, weights[w + 4], weights[w + 5], True, onednn), weights[w + 6], weights[w + 7], False, onednn)
    h = F.layer_norm(x, [D], norms[-2], norms[-1], eps)
    return h, _product(h, weights[-1], None, False, onednn).float()


_scripted = None  # the scripted function, False once scripting has failed
_use_scripted = True


def scripted_token_step():
    """`token_step` compiled by TorchScript (once per process), or None where that is unavailable."""
    global _scripted
    if _scripted is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
                _scripted = torch.jit.script(token_step)
        except Exception as err:  # noqa: BLE001 - any failure leaves the plain function in use
            warnings.warn(f"TorchScript unavailable for the decoding step ({type(err).__name__}: {err}); "
                          "decoding runs the same step as plain Python", RuntimeWarning, stacklevel=2)
            _scripted = False
    return _scripted or None


def set_scripted_decode(enabled: bool) -> bool:
    """Use the scripted step (default) or the plain one (tests compare them); returns the previous setting."""
    global _use_scripted
    previous, _use_scripted = _use_scripted, bool(enabled)
    return previous


def token_step_function(device: torch.device):
    """The step to call on `device`: scripted on CPU when available, else the plain function.

    On CUDA the plain function is used: its kernel launches are asynchronous, so Python's per-op
    overhead overlaps with the GPU work, and the scripted form was not measured there.
    """
    if _use_scripted and device.type == "cpu":
        return scripted_token_step() or token_step
    return token_step
