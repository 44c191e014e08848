"""Classifier: a FastMLM or MaskedLM encoder with a pooled head (sentiment task). No Ray.

The loss is the caller's (`models.losses`), so imbalance-aware losses can be swapped in a sweep.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from liaotian.models.fast_mlm import FastMLM, FastMLMConfig
from liaotian.models.layers import ModelOutput, PretrainedMixin, init_weights
from liaotian.models.masked_lm import MaskedLM, MaskedLMConfig

ENCODERS = {"fast_mlm": (FastMLM, FastMLMConfig), "masked_lm": (MaskedLM, MaskedLMConfig)}


@dataclass
class ClassifierConfig:
    model_type: ClassVar[str] = "classifier"
    encoder: str = "fast_mlm"  # "fast_mlm" | "masked_lm"
    encoder_config: dict = field(default_factory=dict)  # the encoder config's fields ({} = defaults)
    num_classes: int = 2
    pooling: str = "mean"  # "mean" over real tokens | "cls" (position 0)
    dropout: float = 0.1

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"ClassifierConfig.encoder must be one of {sorted(ENCODERS)}, got {self.encoder!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"ClassifierConfig.pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.num_classes < 2:
            raise ValueError(f"ClassifierConfig.num_classes must be ≥ 2, got {self.num_classes}")
        if not isinstance(self.encoder_config, dict):  # a config object is accepted and stored as fields
            self.encoder_config = asdict(self.encoder_config)
        self.encoder_config = asdict(ENCODERS[self.encoder][1](**self.encoder_config))  # validates


class Classifier(PretrainedMixin, nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = c = config
        model_cls, cfg_cls = ENCODERS[c.encoder]
        self.encoder = model_cls(cfg_cls(**c.encoder_config))
        d = self.encoder.config.d_model
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(d, d), nn.Tanh(), nn.Dropout(c.dropout), nn.Linear(d, c.num_classes))
        init_weights(self.head)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.encoder.token_embedding

    def forward(self, input_ids, attention_mask=None, token_embeds=None) -> ModelOutput:
        h = self.encoder.encode(input_ids, attention_mask, token_embeds)  # (B, T, D)
        if self.config.pooling == "cls":
            pooled = h[:, 0]
        else:
            m = torch.ones_like(input_ids, dtype=h.dtype) if attention_mask is None else attention_mask.to(h.dtype)
            pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)  # (B, D)
        return ModelOutput(logits=self.head(pooled), hidden_states=pooled)

    @classmethod
    def from_encoder(cls, model_dir, num_classes: int, device="cpu", **config) -> "Classifier":
        """A classifier whose encoder is the pretrained FastMLM/MaskedLM in `model_dir` (head fresh)."""
        from liaotian.models.checkpoint import load_pretrained

        mlm = load_pretrained(model_dir, device=device)
        if mlm.config.model_type not in ENCODERS:
            raise ValueError(f"{model_dir} holds a {mlm.config.model_type}, not an encoder ({sorted(ENCODERS)})")
        cfg = ClassifierConfig(encoder=mlm.config.model_type, encoder_config=asdict(mlm.config), num_classes=num_classes, **config)
        model = cls(cfg).to(device)
        model.encoder.load_state_dict(mlm.state_dict())
        return model
