"""Linear attention with φ(x) = elu(x) + 1 (Katharopoulos et al., ICML 2020; Su, kexue.fm 7546). No Ray.

    Att_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j)             (bidirectional: j over all keys)
    causal: S_i = S_{i-1} + φ(k_i) v_iᵀ,  z_i = z_{i-1} + φ(k_i),  Att_i = φ(q_i)ᵀS_i / φ(q_i)ᵀz_i

No 1/√d scaling (as fast-transformers). φ(k) is zeroed at padded keys (φ > 0 everywhere, so padding
would otherwise count). Everything is accumulated in float32: bf16 elu+1 cancels (fla #1261).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x.float()) + 1.0


def _masked_features(q, k, key_mask):
    fq, fk = feature_map(q), feature_map(k)  # (B, H, T, Dh) float32
    if key_mask is not None:
        fk = fk * key_mask[:, None, :, None].to(fk.dtype)
    return fq, fk


def linear_attention(q, k, v, key_mask=None):
    """Bidirectional form; q, k, v (B,H,T,Dh), key_mask (B,T) bool (True = real). O(T·Dh²)."""
    fq, fk = _masked_features(q, k, key_mask)
    kv = torch.einsum("bhtd,bhte->bhde", fk, v.float())  # (B, H, Dh, Dh)
    num = torch.einsum("bhtd,bhde->bhte", fq, kv)
    den = torch.einsum("bhtd,bhd->bht", fq, fk.sum(2))
    return (num / (den[..., None] + EPS)).to(v.dtype)


def causal_linear_attention(q, k, v, key_mask=None, state=None, chunk_size: int = 64):
    """Causal form, chunked: inside a chunk the masked quadratic form, across chunks the carried sums.

    With C = chunk_size and Nc = T/C chunks, the per-chunk sums φ(K_c)ᵀV_c take B·H·Nc·Dh² memory —
    O(T·Dh²/C) instead of the O(T·Dh²) of a cumulative sum over every position — and the intra-chunk
    scores B·H·T·C. `state` = (S (B,H,Dh,Dh), z (B,H,Dh)) continues a sequence (decoding);
    returns (out (B,H,T,Dh), (S, z)) with the state after the last position.
    """
    B, H, T, Dh = q.shape
    fq, fk = _masked_features(q, k, key_mask)
    vf = v.float()
    if state is None:
        S0 = fq.new_zeros(B, H, Dh, Dh)
        z0 = fq.new_zeros(B, H, Dh)
    else:
        S0, z0 = state
    if T == 1:  # the O(Dh²) recurrent step: no chunk bookkeeping
        S = S0 + fk[:, :, 0, :, None] * vf[:, :, 0, None, :]  # (B, H, Dh, Dh)
        z = z0 + fk[:, :, 0]
        num = torch.einsum("bhd,bhde->bhe", fq[:, :, 0], S)
        den = (fq[:, :, 0] * z).sum(-1, keepdim=True)
        return (num / (den + EPS))[:, :, None].to(v.dtype), (S, z)
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:  # padded keys get φ(k) = 0, so they add nothing to the sums
        fq, fk, vf = (F.pad(t, (0, 0, 0, pad)) for t in (fq, fk, vf))
    Nc = (T + pad) // C
    fq, fk, vf = (t.view(B, H, Nc, C, Dh) for t in (fq, fk, vf))
    kv = torch.einsum("bhncd,bhnce->bhnde", fk, vf)  # (B, H, Nc, Dh, Dh) per-chunk sums
    ksum = fk.sum(3)  # (B, H, Nc, Dh)
    S_before = S0[:, :, None] + kv.cumsum(2) - kv  # state entering each chunk
    z_before = z0[:, :, None] + ksum.cumsum(2) - ksum
    num = torch.einsum("bhncd,bhnde->bhnce", fq, S_before)  # (B, H, Nc, C, Dh)
    den = torch.einsum("bhncd,bhnd->bhnc", fq, z_before)
    scores = fq @ fk.transpose(-1, -2)  # (B, H, Nc, C, C)
    scores = scores * torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    num = num + scores @ vf
    den = den + scores.sum(-1)
    out = (num / (den[..., None] + EPS)).view(B, H, Nc * C, Dh)[:, :, :T]
    S = S_before[:, :, -1] + kv[:, :, -1]
    z = z_before[:, :, -1] + ksum[:, :, -1]
    return out.to(v.dtype), (S, z)


class LinearState:
    """One layer's recurrent state (S, z) in float32; size independent of the context length."""

    def __init__(self):
        self.S = self.z = None
        self.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        if self.S is not None:
            self.S = self.S.index_select(0, index)
            self.z = self.z.index_select(0, index)


class LinearAttention(nn.Module):
    """Drop-in for SoftmaxAttention (same fused QKV and output projection, same call)."""

    def __init__(self, d_model: int, n_head: int, dropout: float, chunk_size: int = 64):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.chunk_size = chunk_size

    def _heads(self, t):  # (B, T, D) -> (B, H, T, Dh)
        B, T, D = t.shape
        return t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2)

    def forward(self, x, kv=None, cache: LinearState | None = None, is_causal=False, key_mask=None, **_):
        B, T, D = x.shape
        if kv is None:
            q, k, v = self.qkv(x).split(D, dim=2)
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:D], b[:D])
            k, v = F.linear(kv, w[D:], b[D:]).split(D, dim=2)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, H, T, Dh)
        if is_causal or cache is not None:
            state = None if cache is None or cache.S is None else (cache.S, cache.z)
            y, (S, z) = causal_linear_attention(q, k, v, key_mask, state, self.chunk_size)
            if cache is not None:
                cache.S, cache.z, cache.length = S, z, cache.length + T
        else:
            y = linear_attention(q, k, v, key_mask)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.drop(self.proj(y)), cache
