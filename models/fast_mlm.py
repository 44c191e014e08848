"""FastMLM: T-TA, the Transformer-based text autoencoder (Shin et al., ACL 2020; Su, kexue.fm 7661). No Ray.

    E   = LN(Tok(x) + Pos)                       keys and values of *every* layer (own W_K, W_V)
    H_0 = LN(Tok([MASK]) + Pos)                  queries start from positions only
    H_l = Block(H_{l-1}; K = V = E), mask = padding ∧ (j ≠ i)

Token i reaches position i only through the key/value at j = i, which the diagonal mask removes in
every layer, so every token is predicted from the others in one pass (one-pass pseudo-likelihood).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from liaotian.models.attention import SoftmaxAttention, encoder_mask
from liaotian.models.layers import Block, Embeddings, MLMHead, ModelOutput, PretrainedMixin, init_weights, scored_cross_entropy, token_prediction_output, validate_common


@dataclass
class EncoderConfig:
    """Fields shared by FastMLM and MaskedLM (token ids as in ARCHITECTURE.md Contract 1)."""

    vocab_size: int = 13088
    max_len: int = 128
    n_layer: int = 3
    n_head: int = 4
    d_model: int = 256
    dropout: float = 0.1
    pad_id: int = 0
    cls_id: int = 2
    sep_id: int = 3
    mask_id: int = 4

    def __post_init__(self):
        validate_common(self)

    @classmethod
    def preset(cls, name: str, **overrides):
        if name not in ENCODER_PRESETS:
            raise ValueError(f"unknown encoder preset {name!r}; choose from {sorted(ENCODER_PRESETS)}")
        return cls(**{**ENCODER_PRESETS[name], **overrides})


ENCODER_PRESETS = {
    "tiny": dict(n_layer=3, n_head=4, d_model=256, max_len=128),  # T-TA's depth, narrower
    "base": dict(n_layer=12, n_head=12, d_model=768, max_len=512),
}


@dataclass
class FastMLMConfig(EncoderConfig):
    model_type: ClassVar[str] = "fast_mlm"


def pll_scored(input_ids, attention_mask, cfg) -> torch.Tensor:
    """(B,T) bool: the tokens a pseudo-log-likelihood sums over (real, not [CLS]/[SEP]/[PAD])."""
    keep = (input_ids != cfg.cls_id) & (input_ids != cfg.sep_id) & (input_ids != cfg.pad_id)
    return keep if attention_mask is None else keep & attention_mask.bool()


class FastMLM(PretrainedMixin, nn.Module):
    def __init__(self, config: FastMLMConfig):
        super().__init__()
        self.config = c = config
        self.embed = Embeddings(c.vocab_size, c.max_len, c.d_model, c.dropout, layer_norm=True)
        self.query_ln = nn.LayerNorm(c.d_model)
        self.query_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.d_model, SoftmaxAttention(c.d_model, c.n_head, c.dropout), c.dropout) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = MLMHead(c.d_model, c.vocab_size)
        init_weights(self)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.embed.token

    def encode(self, input_ids, attention_mask=None, token_embeds=None) -> torch.Tensor:
        """(B,T,D): the representation at i of everything but token i."""
        B, T = input_ids.shape
        E = self.embed(input_ids, token_embeds=token_embeds)  # (B, T, D) keys/values of every layer
        q0 = self.embed.position.weight[:T] + self.token_embedding.weight[self.config.mask_id]  # (T, D)
        h = self.query_drop(self.query_ln(q0)).expand(B, T, -1)
        attn_mask, row_mask = encoder_mask(attention_mask, T, input_ids.device, exclude_diagonal=True)
        for blk in self.blocks:
            h, _ = blk(h, kv=E, attn_mask=attn_mask, row_mask=row_mask)
        return self.ln_f(h)

    def forward(self, input_ids, attention_mask=None, labels=None, token_embeds=None) -> ModelOutput:
        """T-TA's target is the input itself: pass `labels=input_ids` (−100 = ignore; pads are ignored)."""
        h = self.encode(input_ids, attention_mask, token_embeds)
        return token_prediction_output(h, self.head, self.token_embedding.weight, labels, attention_mask)

    @torch.no_grad()
    def pseudo_log_likelihood(self, input_ids, attention_mask=None) -> torch.Tensor:
        """(B,): Σ_i log p(x_i | x_∖i) over real tokens except [CLS]/[SEP], in one forward pass."""
        scored = pll_scored(input_ids, attention_mask, self.config)
        h = self.encode(input_ids, attention_mask)
        W = self.token_embedding.weight
        _, _, _, nll = scored_cross_entropy(h, scored, input_ids, lambda hs, _: self.head(hs, W))
        return -nll.sum(1)
