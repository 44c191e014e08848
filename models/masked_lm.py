"""MaskedLM: the BERT baseline (Devlin et al. 2019): 15 % of tokens chosen, 80 % [MASK] / 10 % random /
10 % kept, predicted by a bidirectional pre-LN encoder built from the same blocks as FastMLM. No Ray.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from liaotian.models.attention import SoftmaxAttention, encoder_mask
from liaotian.models.fast_mlm import EncoderConfig, pll_scored
from liaotian.models.layers import Block, Embeddings, MLMHead, ModelOutput, PretrainedMixin, init_weights, token_prediction_output


@dataclass
class MaskedLMConfig(EncoderConfig):
    model_type: ClassVar[str] = "masked_lm"
    mask_prob: float = 0.15

    def __post_init__(self):
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"MaskedLMConfig.mask_prob must be in (0, 1), got {self.mask_prob}")
        super().__post_init__()


def mask_tokens(input_ids, mask_id: int, vocab_size: int, special_ids=(), attention_mask=None,
                prob: float = 0.15, random_low: int = 0, generator=None):
    """BERT masking. Returns (masked input_ids, labels with −100 where not chosen).

    Each real, non-special token is chosen with probability `prob`; a chosen token becomes [MASK]
    with p 0.8, a uniform random id in [random_low, vocab_size) with p 0.1, and stays with p 0.1.
    """
    dev = input_ids.device
    can = torch.ones_like(input_ids, dtype=torch.bool)
    for s in special_ids:
        can &= input_ids != s
    if attention_mask is not None:
        can &= attention_mask.bool()
    u = torch.rand(input_ids.shape, generator=generator, device=dev)
    chosen = can & (u < prob)
    action = torch.rand(input_ids.shape, generator=generator, device=dev)
    randoms = torch.randint(random_low, vocab_size, input_ids.shape, generator=generator, device=dev)
    out = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(chosen & (action >= 0.8) & (action < 0.9), randoms, out)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return out, labels


class MaskedLM(PretrainedMixin, nn.Module):
    def __init__(self, config: MaskedLMConfig):
        super().__init__()
        self.config = c = config
        self.embed = Embeddings(c.vocab_size, c.max_len, c.d_model, c.dropout, layer_norm=True)
        self.blocks = nn.ModuleList(Block(c.d_model, SoftmaxAttention(c.d_model, c.n_head, c.dropout), c.dropout) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = MLMHead(c.d_model, c.vocab_size)
        init_weights(self)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.embed.token

    def mask_tokens(self, input_ids, attention_mask=None, generator=None):
        c = self.config
        specials = (c.pad_id, c.cls_id, c.sep_id, c.mask_id)
        return mask_tokens(input_ids, c.mask_id, c.vocab_size, specials, attention_mask, c.mask_prob,
                           random_low=max(specials) + 1, generator=generator)

    def encode(self, input_ids, attention_mask=None, token_embeds=None) -> torch.Tensor:
        T = input_ids.shape[1]
        h = self.embed(input_ids, token_embeds=token_embeds)  # (B, T, D)
        attn_mask, row_mask = encoder_mask(attention_mask, T, input_ids.device)
        for blk in self.blocks:
            h, _ = blk(h, attn_mask=attn_mask, row_mask=row_mask)
        return self.ln_f(h)

    def forward(self, input_ids, attention_mask=None, labels=None, token_embeds=None) -> ModelOutput:
        """`labels` from `mask_tokens` (−100 = not scored); logits only at scored positions then."""
        h = self.encode(input_ids, attention_mask, token_embeds)
        return token_prediction_output(h, self.head, self.token_embedding.weight, labels, attention_mask)

    @torch.no_grad()
    def pseudo_log_likelihood(self, input_ids, attention_mask=None, batch_size: int = 64) -> torch.Tensor:
        """(B,): Σ_i log p(x_i | x with x_i masked): one masked copy per scored position (Salazar et
        al. 2020), copies run `batch_size` at a time, logits only at the masked position."""
        scored = pll_scored(input_ids, attention_mask, self.config)
        rows, cols = scored.nonzero(as_tuple=True)  # one copy per scored token
        pll = torch.zeros(input_ids.shape[0], device=input_ids.device)
        W = self.token_embedding.weight
        for s in range(0, rows.numel(), batch_size):
            r, c = rows[s : s + batch_size], cols[s : s + batch_size]
            ids = input_ids[r].clone()
            ids[torch.arange(r.numel()), c] = self.config.mask_id
            am = None if attention_mask is None else attention_mask[r]
            h = self.encode(ids, am)[torch.arange(r.numel()), c]  # (n, D)
            logp = torch.log_softmax(self.head(h, W).float(), -1).gather(1, input_ids[r, c][:, None])[:, 0]
            pll.index_add_(0, r, logp)
        return pll
