"""Shared Transformer pieces: the output record, embeddings, MLP, pre-/post-LN block, MLM head. No Ray here.

Tensor letters: B batch, T time, D model width, H heads, V vocabulary, N scored positions.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from liaotian.models.sizing import check_embedding_dim


@dataclass
class ModelOutput:
    """What every model's `forward` returns.

    `logits` is (B,T,V) when no loss mask/labels are given; in training (a loss mask or labels given)
    only the scored positions are projected, so `logits` is (N,V) in row-major order of those
    positions and `targets` (N,) holds their target ids. `token_nll` (B,T) is the per-token negative
    log-likelihood at the scored positions (0 elsewhere), indexed by the *target* position.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    token_nll: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None


def validate_common(cfg: Any) -> None:
    """Checks shared by every config dataclass (raises ValueError naming the field)."""
    for name in ("vocab_size", "max_len", "n_layer", "n_head", "d_model"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be positive, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.n_head:
        raise ValueError(f"{type(cfg).__name__}: d_model={cfg.d_model} is not divisible by n_head={cfg.n_head}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"{type(cfg).__name__}.dropout must be in [0, 1), got {cfg.dropout}")
    for f in fields(cfg):
        if f.name.endswith("_id") and not 0 <= getattr(cfg, f.name) < cfg.vocab_size:
            raise ValueError(f"{type(cfg).__name__}.{f.name}={getattr(cfg, f.name)} outside vocab_size={cfg.vocab_size}")
    check_embedding_dim(cfg.d_model, cfg.vocab_size)


class PretrainedMixin:
    """`model.save_pretrained(dir)` / `Model.from_pretrained(dir)`, delegating to models.checkpoint."""

    def save_pretrained(self, directory, tokenizer_dir=None, extra=None):
        from liaotian.models.checkpoint import save_pretrained

        return save_pretrained(self, directory, tokenizer_dir=tokenizer_dir, extra=extra)

    @classmethod
    def from_pretrained(cls, directory, device="cpu"):
        from liaotian.models.checkpoint import load_pretrained

        model = load_pretrained(directory, device=device)
        if not isinstance(model, cls):
            raise ValueError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


class Embeddings(nn.Module):
    """token + learned absolute position (+ segment) embeddings, optional LayerNorm, dropout.

    `segment_tokens` (CDial-GPT, HF GPT/GPT-2 `token_type_ids`): no segment table of its own; segment
    s is embedded as the token `segment_tokens[s]` through the token table.
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int, dropout: float, n_segments: int = 0, layer_norm: bool = False,
                 segment_tokens: tuple[int, ...] = ()):
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        self.segment = nn.Embedding(n_segments, d_model) if n_segments and not segment_tokens else None
        tokens = torch.tensor(segment_tokens, dtype=torch.long) if segment_tokens else None
        self.register_buffer("segment_tokens", tokens, persistent=False)  # the config holds it, not the checkpoint
        self.ln = nn.LayerNorm(d_model) if layer_norm else None
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len

    def forward(self, input_ids, positions=None, segment_ids=None, token_embeds=None):
        x = self.token(input_ids) if token_embeds is None else token_embeds  # (B, T, D)
        T = x.shape[1]
        if positions is None:
            if T > self.max_len:
                raise ValueError(f"sequence length {T} exceeds max_len={self.max_len}")
            x = x + self.position.weight[:T]  # broadcast over B, no index tensor needed
        else:  # the caller checks the range (decoding keeps a host-side count: no device sync per token)
            x = x + self.position(positions)
        if self.segment is not None and segment_ids is not None:
            x = x + self.segment(segment_ids.long())
        elif self.segment_tokens is not None and segment_ids is not None:
            x = x + self.token(self.segment_tokens[segment_ids.long()])
        if self.ln is not None:
            x = self.ln(x)
        return self.drop(x)


ACTIVATIONS = ("gelu_tanh", "gelu")  # gelu_tanh = GPT-2's and OpenAI GPT's "gelu_new"; gelu = the exact erf form


class MLP(nn.Module):
    def __init__(self, d_model: int, dropout: float, expansion: int = 4, activation: str = "gelu_tanh"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.fc = nn.Linear(d_model, expansion * d_model)
        self.proj = nn.Linear(expansion * d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.act = nn.GELU(approximate="tanh" if activation == "gelu_tanh" else "none")  # models/fast_train.py may swap it

    def forward(self, x):
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Transformer block. Pre-LN (GPT-2 layout): x + Attn(LN(x)), then x + MLP(LN(x)).
    Post-LN (OpenAI GPT, CDial-GPT): x = LN(x + Attn(x)), then LN(x + MLP(x)).

    `attention` is any module called as `attention(x, kv=None, **kw) -> (out, new_cache)`;
    `kv` (already normalised by the caller) lets T-TA take keys/values from the embeddings.
    """

    def __init__(self, d_model: int, attention: nn.Module, dropout: float, norm_position: str = "pre",
                 activation: str = "gelu_tanh", eps: float = 1e-5):
        super().__init__()
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        self.post_norm = norm_position == "post"
        self.ln1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = attention
        self.ln2 = nn.LayerNorm(d_model, eps=eps)
        self.mlp = MLP(d_model, dropout, activation=activation)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, kv=None, cache=None, **attn_kw):
        if self.post_norm:
            a, cache = self.attn(x, kv=kv, cache=cache, **attn_kw)
            x = self.ln1(x + self.drop(a))
            return self.ln2(x + self.mlp(x)), cache
        a, cache = self.attn(self.ln1(x), kv=kv, cache=cache, **attn_kw)
        x = x + self.drop(a)
        x = x + self.mlp(self.ln2(x))
        return x, cache


class MLMHead(nn.Module):
    """BERT's prediction head: dense + GELU + LN, then the tied token embedding plus a bias."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.ln = nn.LayerNorm(d_model)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h, embedding_weight):
        return F.linear(self.ln(F.gelu(self.dense(h))), embedding_weight, self.bias)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2/BERT initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def row_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,V) logits (any float dtype), (N,) targets -> (N,) float32 negative log-likelihoods."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def scored_cross_entropy(hidden, scored, targets_full, project, row_nll=row_cross_entropy, rows_multiple: int = 1):
    """Loss only where `scored` (B,T) is true: gather the hidden states first, then project.

    Projecting N ≪ B·T rows to the vocabulary is the main saving in training.
    `project(h (N,D), idx (N,)) -> (N,V)` returns logits or log-probabilities; `idx` are the flat
    (row-major) indices of the scored positions, for callers that gather more per-position data.
    `row_nll(logits (N,V), targets (N,)) -> (N,)` (models/fast_train.py has an equal, faster one).
    `rows_multiple` > 1 projects N rows plus copies of the first scored one up to a multiple of it,
    and drops the copies from every output (models/fast_train.py: why).
    Returns (loss, logits (N,V), targets (N,), token_nll (B,T)).
    """
    idx = scored.reshape(-1).nonzero().squeeze(1)  # (N,)
    n = idx.numel()
    gather = idx
    if rows_multiple > 1 and n % rows_multiple:
        gather = torch.cat([idx, idx[:1].expand(rows_multiple - n % rows_multiple)])
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, gather)  # (N', D)
    all_targets = targets_full.reshape(-1).index_select(0, gather)  # (N',)
    logits = project(h, gather)  # (N', V)
    nll = row_nll(logits, all_targets)[:n]  # the copies' NLL is dropped, so they get no gradient
    logits, targets = logits[:n], all_targets[:n]
    token_nll = torch.zeros(scored.numel(), dtype=nll.dtype, device=nll.device).index_copy(0, idx, nll)
    loss = nll.mean() if n else nll.sum()
    return loss, logits, targets, token_nll.view(scored.shape)


def token_prediction_output(h, head, weight, labels=None, attention_mask=None) -> ModelOutput:
    """The encoders' output: full logits without labels; with labels (−100 = not scored, pads never
    scored) the loss, and logits only at the scored positions."""
    if labels is None:
        return ModelOutput(logits=head(h, weight), hidden_states=h)
    scored = labels != -100
    if attention_mask is not None:
        scored = scored & attention_mask.bool()
    loss, logits, targets, nll = scored_cross_entropy(h, scored, labels.clamp(min=0), lambda hs, _: head(hs, weight))
    return ModelOutput(loss=loss, logits=logits, targets=targets, token_nll=nll, hidden_states=h)
