"""Softmax multi-head attention through `F.scaled_dot_product_attention`, with a growable KV cache.

No Ray here. Masks follow SDPA: a bool `attn_mask` (B,1,T,S) is True where a query may attend.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class KVCache:
    """One layer's keys and values, preallocated for `capacity` slots (DialogLM passes its max_len,
    so decoding never reallocates) and grown geometrically beyond that (amortised O(1) append).

    Rows are aligned: every row holds `length` slots; left padding is masked by the caller.
    """

    def __init__(self, capacity: int = 64):
        self.k = self.v = None  # (B, H, capacity, Dh)
        self.length = 0
        self.capacity = capacity

    def reserve(self, T: int, like: torch.Tensor | None = None) -> int:
        """Make room for T more slots and count them as filled; returns the first new slot. The
        caller writes them (the one-token decoding step). An empty cache is allocated like `like`
        (B,H,·,Dh)."""
        start, need = self.length, self.length + T
        if self.k is None or need > self.k.shape[2]:
            k = like if self.k is None else self.k
            cap = max(self.capacity, need)
            while cap < need:
                cap *= 2
            if self.k is not None:
                cap = max(cap, 2 * self.k.shape[2])
            new_k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            new_v = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            if self.k is not None:
                new_k[:, :, :start] = self.k[:, :, :start]
                new_v[:, :, :start] = self.v[:, :, :start]
            self.k, self.v = new_k, new_v
        self.length = need
        return start

    def append(self, k: torch.Tensor, v: torch.Tensor):
        """Write (B,H,T,Dh) new keys/values; return views of all keys/values so far."""
        start = self.reserve(k.shape[2], like=k)
        self.k[:, :, start : self.length] = k
        self.v[:, :, start : self.length] = v
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def reorder(self, index: torch.Tensor) -> None:
        """Select/duplicate rows; only the `length` filled slots are copied (the capacity is kept)."""
        if self.k is not None:
            self.k, self.v = self._select(self.k, index), self._select(self.v, index)

    def _select(self, t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = t.new_empty(index.shape[0], *t.shape[1:])
        torch.index_select(t[:, :, : self.length], 0, index, out=out[:, :, : self.length])
        return out


class SoftmaxAttention(nn.Module):
    """Multi-head scaled dot-product attention, softmax(QKᵀ/√d)V (Vaswani et al. 2017), fused QKV.

    `kv` given: queries come from `x`, keys/values from `kv` (T-TA); the fused weight is split.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.attend = F.scaled_dot_product_attention  # models/fast_train.py may swap in an equal, faster one

    def _heads(self, t):  # (B, T, D) -> (B, H, T, Dh)
        B, T, D = t.shape
        return t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2)

    def forward(self, x, kv=None, cache: KVCache | None = None, attn_mask=None, is_causal=False, row_mask=None, **_):
        """`row_mask` (B,1,T,1) bool: queries whose every key is masked get a zero output, not NaN."""
        B, T, D = x.shape
        if kv is None:
            q, k, v = self.qkv(x).split(D, dim=2)  # 3 × (B, T, D)
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:D], b[:D])
            k, v = F.linear(kv, w[D:], b[D:]).split(D, dim=2)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, T, Dh)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, Dh), S = cached + T
        dropout_p = self.dropout if self.training else 0.0
        y = self.attend(q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None,
                        dropout_p=dropout_p)  # (B, H, T, Dh)
        if row_mask is not None:
            y = y.masked_fill(~row_mask, 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.proj(y), cache


def causal_mask(key_mask: torch.Tensor | None, T: int, S: int, device) -> torch.Tensor:
    """(B|1, 1, T, S) bool: query i (the last T of S positions) sees key j ≤ S−T+i that is real.

    A query always sees itself, so rows of padding never become empty (SDPA would return NaN).
    """
    offset = S - T
    i = torch.arange(T, device=device)[:, None] + offset
    j = torch.arange(S, device=device)[None, :]
    allowed = (j <= i)[None, None]  # (1, 1, T, S)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :S] | (j == i)[None, None]
    return allowed


def encoder_mask(attention_mask: torch.Tensor | None, T: int, device, exclude_diagonal: bool = False):
    """Bidirectional mask for an encoder: (attn_mask, row_mask) for SoftmaxAttention.

    Keys must be real tokens; `exclude_diagonal` (T-TA) also hides each token from itself.
    A query left with no key (a one-token sequence under T-TA) attends everywhere and has its
    output zeroed through `row_mask`, so it is neither NaN nor told its own token.
    """
    if attention_mask is None and not exclude_diagonal:
        return None, None
    keys = torch.ones(1, T, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()
    allowed = keys[:, None, None, :].expand(keys.shape[0], 1, T, T)  # (B, 1, T, T)
    if exclude_diagonal:
        allowed = allowed & ~torch.eye(T, dtype=torch.bool, device=device)
    empty = ~allowed.any(-1, keepdim=True)  # (B, 1, T, 1)
    if not bool(empty.any()):
        return allowed, None
    return allowed | empty, ~empty
