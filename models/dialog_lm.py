"""DialogLM: a DialoGPT-style causal LM over `[CLS] u1 [SEP] u2 [SEP] …` with segment embeddings. No Ray.

Training: right padding, loss only where `loss_mask` is 1 (logits computed only there).
Decoding: `state = model.init_state(B)`; `scores, state = model.step(ids, segs, state, token_mask)`.
Optional self-terminating output layer (Welleck et al., EMNLP 2020, arXiv 2002.02492).
Plain PyTorch: the speed paths (a fast one-token decoding step, int8/bf16 decoding weights, a chunked
loss) live in the opt-in layer beside it, models/fast_decode.py and models/fast_train.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from liaotian.models.attention import KVCache, SoftmaxAttention, causal_mask
from liaotian.models.layers import (Block, Embeddings, ModelOutput, PretrainedMixin, init_weights,
                                    scored_cross_entropy, validate_common)
from liaotian.models.linear_attention import LinearAttention, LinearState


@dataclass
class DialogLMConfig:
    model_type: ClassVar[str] = "dialog_lm"
    vocab_size: int = 13088
    max_len: int = 256
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    dropout: float = 0.1
    attention: str = "softmax"  # "softmax" | "linear"
    self_terminating: bool = False
    st_epsilon: float = 1e-3
    pad_id: int = 0
    eos_id: int = 3  # [SEP]: ends a reply and separates turns
    n_segments: int = 2
    linear_chunk_size: int = 64
    # Imported architectures (models/hf_import.py); the defaults are liaotian's own GPT-2-style model.
    norm_position: str = "pre"  # "pre" (GPT-2) | "post" (OpenAI GPT, CDial-GPT)
    final_norm: bool = True  # a LayerNorm after the last block (GPT-2 has one, OpenAI GPT none)
    activation: str = "gelu_tanh"  # "gelu_tanh" (GPT-2's gelu_new) | "gelu" (erf)
    layer_norm_eps: float = 1e-5
    segment_tokens: tuple[int, ...] = ()  # non-empty: segment s is embedded as token segment_tokens[s]
    input_format: str = "liaotian"  # how dialogues are laid out: pipelines.dialogue.INPUT_FORMATS

    def __post_init__(self):
        if self.attention not in ("softmax", "linear"):
            raise ValueError(f"DialogLMConfig.attention must be 'softmax' or 'linear', got {self.attention!r}")
        if self.norm_position not in ("pre", "post"):
            raise ValueError(f"DialogLMConfig.norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if self.input_format not in ("liaotian", "cdial_gpt"):
            raise ValueError(f"DialogLMConfig.input_format must be 'liaotian' or 'cdial_gpt', got {self.input_format!r}")
        self.segment_tokens = tuple(int(t) for t in self.segment_tokens)  # JSON gives a list
        if self.segment_tokens:
            if len(self.segment_tokens) != self.n_segments:
                raise ValueError(f"DialogLMConfig: {len(self.segment_tokens)} segment_tokens for n_segments={self.n_segments}")
            if not all(0 <= t < self.vocab_size for t in self.segment_tokens):
                raise ValueError(f"DialogLMConfig.segment_tokens {self.segment_tokens} outside vocab_size={self.vocab_size}")
        if not 0.0 < self.st_epsilon < 1.0:
            raise ValueError(f"DialogLMConfig.st_epsilon must be in (0, 1), got {self.st_epsilon}")
        validate_common(self)

    @classmethod
    def preset(cls, name: str, **overrides) -> "DialogLMConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown DialogLM preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS = {
    "tiny": dict(n_layer=4, n_head=4, d_model=256, max_len=256),  # ≈ 6.5M params at vocab 13,088
    "base": dict(n_layer=12, n_head=12, d_model=768, max_len=512),  # CDial-GPT / NEZHA-base size
}


class DecodeState:
    """Per-layer KV caches (softmax) or (S, z) states (linear), plus per-row bookkeeping.

    positions (B,): real tokens seen so far; key_mask (B, S): real cached slots, kept only once
    padding has appeared; st_log_prod (B,): log ∏β of the self-terminating layer since the reply began.
    """

    def __init__(self, layers, batch_size: int, device):
        self.layers = layers
        self.positions = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.key_mask = None
        self.st_log_prod = torch.zeros(batch_size, dtype=torch.float64, device=device)
        self.length = 0  # cached slots (padding included)
        self.seen = 0  # host-side count for the max_len check

    def advance(self, T: int, real: torch.Tensor | None = None) -> "DecodeState":
        """Count T slots fed, of which `real` (B,) per row were real tokens (None: all); returns self."""
        self.positions = self.positions + (T if real is None else real)
        self.length += T
        self.seen += T
        return self

    def reorder(self, index: torch.Tensor) -> "DecodeState":
        """Select/duplicate rows (beam search, n candidates); in place, returns self."""
        index = index.to(self.positions.device)
        for layer in self.layers:
            layer.reorder(index)
        self.positions = self.positions.index_select(0, index)
        self.st_log_prod = self.st_log_prod.index_select(0, index)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, index)
        return self


class DialogLM(PretrainedMixin, nn.Module):
    def __init__(self, config: DialogLMConfig):
        super().__init__()
        self.config = c = config
        self.embed = Embeddings(c.vocab_size, c.max_len, c.d_model, c.dropout, n_segments=c.n_segments,
                                segment_tokens=c.segment_tokens)
        if c.attention == "softmax":
            make = lambda: SoftmaxAttention(c.d_model, c.n_head, c.dropout)  # noqa: E731
        else:
            make = lambda: LinearAttention(c.d_model, c.n_head, c.dropout, c.linear_chunk_size)  # noqa: E731
        self.blocks = nn.ModuleList(Block(c.d_model, make(), c.dropout, c.norm_position, c.activation, c.layer_norm_eps)
                                    for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.final_norm else nn.Identity()
        # the loss at the scored positions (layers.scored_cross_entropy); models/fast_train.py swaps in the
        # same loss with a cache-friendly cross-entropy and bucketed row counts
        self.scored_loss = scored_cross_entropy
        init_weights(self)
        for blk in self.blocks:  # GPT-2: residual projections scaled by 1/√(2L)
            nn.init.normal_(blk.attn.proj.weight, std=0.02 / math.sqrt(2 * c.n_layer))
            nn.init.normal_(blk.mlp.proj.weight, std=0.02 / math.sqrt(2 * c.n_layer))

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.embed.token

    def _run(self, x, caches=None, **attn_kw):
        for i, blk in enumerate(self.blocks):
            x, _ = blk(x, cache=None if caches is None else caches[i], **attn_kw)
        return self.ln_f(x)  # (B, T, D)

    def forward(self, input_ids, segment_ids=None, loss_mask=None, attention_mask=None, token_embeds=None) -> ModelOutput:
        """loss = mean over positions t+1 with loss_mask[t+1] = 1 of −log p(x_{t+1} | x_≤t).

        Without `loss_mask`: logits (B,T,V) for every next token (log-probs if self-terminating).
        `attention_mask` may be right padding (training) or any other padding (then positions
        count real tokens only and pad keys are masked).
        """
        B, T = input_ids.shape
        real = None if attention_mask is None else attention_mask.bool()
        positions, attn_kw = None, dict(is_causal=True)
        if real is not None and not bool((real[:, 1:] <= real[:, :-1]).all()):  # not right padding
            positions = (real.long().cumsum(1) - 1).clamp(min=0)
            attn_kw = dict(is_causal=True, key_mask=real)
            if self.config.attention == "softmax":
                attn_kw["attn_mask"] = causal_mask(real, T, T, input_ids.device)
        if T > self.config.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len={self.config.max_len}")
        x = self.embed(input_ids, positions, segment_ids, token_embeds)  # (B, T, D)
        h = self._run(x, **attn_kw)
        log_prod = None
        if self.config.self_terminating:
            pos = torch.arange(T, device=h.device).expand(B, T) if positions is None else positions
            log_prod, _ = self._st_log_prod(h, input_ids, pos, real, None)  # (B, T)
        W = self.token_embedding.weight
        if loss_mask is None:
            logits = F.linear(h, W)
            if log_prod is not None:
                logits = self._st_log_probs(logits, log_prod)
            return ModelOutput(logits=logits, hidden_states=h)
        scored = loss_mask[:, 1:].bool()  # prediction at t scores token t+1
        if real is not None:
            scored = scored & real[:, 1:]

        def project(hs, idx):
            logits = F.linear(hs, W)  # (N, V)
            if log_prod is None:
                return logits
            return self._st_log_probs(logits, log_prod[:, :-1].reshape(-1).index_select(0, idx))

        loss, logits, targets, nll = self.scored_loss(h[:, :-1], scored, input_ids[:, 1:], project)
        return ModelOutput(loss=loss, logits=logits, targets=targets, token_nll=F.pad(nll, (1, 0)), hidden_states=h)

    # --- self-terminating layer -------------------------------------------------------------------
    def _st_log_prod(self, h, input_ids, positions, real, carry):
        """log ∏_{t'≤t} β_t', β_t = (1−ε)·σ(u_eosᵀh_t), restarting at each reply.

        A reply starts at the position that reads [SEP] (or the first real token), i.e. the
        product covers the steps since the current utterance began.
        Returns (log_prod (B,T) float64, carry for the next call (B,)).
        """
        u_eos = self.token_embedding.weight[self.config.eos_id]
        log_beta = (math.log1p(-self.config.st_epsilon) + F.logsigmoid((h.float() @ u_eos.float()))).double()
        restart = (input_ids == self.config.eos_id) | (positions == 0)
        if real is not None:
            log_beta = log_beta * real
            restart = restart & real
        L = log_beta.cumsum(1) + (0.0 if carry is None else carry[:, None])  # (B, T)
        T = L.shape[1]
        idx = torch.where(restart, torch.arange(T, device=h.device), -1).cummax(1).values  # last restart ≤ t
        safe = idx.clamp(min=0)
        base = L.gather(1, safe) - log_beta.gather(1, safe)  # L just before the restart
        log_prod = torch.where(idx >= 0, L - base, L)
        return log_prod, log_prod[:, -1]

    def _st_log_probs(self, logits, log_prod):
        """p(eos) = 1 − ∏β;  p(v) = ∏β · softmax_{V∖eos}(logits)_v (probabilities clamped ≥ 1e-10)."""
        eos = self.config.eos_id
        logits = logits.float().clone()
        logits[..., eos] = float("-inf")
        lp = log_prod.to(torch.float32)
        out = torch.log_softmax(logits, -1) + lp[..., None]
        out[..., eos] = torch.log((-torch.expm1(log_prod)).clamp(min=1e-10)).to(torch.float32)
        return out

    # --- decoding ----------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None) -> DecodeState:
        device = device or self.token_embedding.weight.device
        if self.config.attention == "softmax":  # preallocated for max_len: no regrowth while decoding
            make = lambda: KVCache(capacity=self.config.max_len)  # noqa: E731
        else:
            make = LinearState
        return DecodeState([make() for _ in self.blocks], batch_size, device)

    def step(self, input_ids, segment_ids, state: DecodeState, token_mask=None, last_only: bool = False):
        """Feed T new tokens; return ((B,T,V) float32 next-token scores, state).

        `token_mask` (B,T) bool marks real tokens (left padding in the first call); positions
        count real tokens only. `last_only`: scores for the last position only, (B,1,V): what
        decoding needs after a context, without a (B,T,V) tensor (T·V·4 bytes a row).
        """
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self.step(input_ids, segment_ids, state, token_mask, last_only)
        B, T = input_ids.shape
        if state.seen + T > self.config.max_len:  # positions ≤ tokens fed so far
            raise ValueError(f"decoding past max_len={self.config.max_len} ({state.seen} + {T} tokens)")
        tm = None if token_mask is None else token_mask.to(input_ids.device).bool()
        if tm is not None and bool(tm.all()):
            tm = None
        if tm is None and T == 1:  # the per-token decoding call: no index tensors to build
            positions = state.positions[:, None]
        elif tm is None:
            positions = state.positions[:, None] + torch.arange(T, device=input_ids.device)
        else:
            positions = state.positions[:, None] + (tm.long().cumsum(1) - 1).clamp(min=0)
        L, S = state.length, state.length + T
        attn_kw = dict(is_causal=True)
        if self.config.attention == "linear":
            attn_kw["key_mask"] = tm
        else:
            if tm is not None or state.key_mask is not None:
                old = state.key_mask if state.key_mask is not None else input_ids.new_ones(B, L, dtype=torch.bool)
                new = tm if tm is not None else input_ids.new_ones(B, T, dtype=torch.bool)
                state.key_mask = torch.cat([old, new], 1)  # (B, S)
                attn_kw["attn_mask"] = causal_mask(state.key_mask, T, S, input_ids.device)
            elif L > 0 and T > 1:  # SDPA's is_causal aligns top-left; with a cache we need bottom-right
                attn_kw["attn_mask"] = causal_mask(None, T, S, input_ids.device)
            elif L > 0:
                attn_kw = {}  # one new query sees every cached key
        h = self._run(self.embed(input_ids, positions, segment_ids), caches=state.layers, **attn_kw)
        scores = F.linear(h[:, -1:] if last_only else h, self.token_embedding.weight).float()  # (B, T|1, V)
        if self.config.self_terminating:
            log_prod, state.st_log_prod = self._st_log_prod(h, input_ids, positions, tm, state.st_log_prod)
            scores = self._st_log_probs(scores, log_prod[:, -scores.shape[1]:])
        return scores, state.advance(T, None if tm is None else tm.sum(1))
