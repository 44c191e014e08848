"""Weight regularisers selectable by name (Contract 5): `none`, `l2`, `decoupled_wd`, `weissi`.

`build_regularizer(name, strength) -> Regularizer`; the training loop adds `reg.penalty(model)` to the
loss and gives the optimiser `reg.param_groups(model)` (AdamW's decoupled decay `reg.weight_decay`
on the regularised matrices, 0 elsewhere). Source: Su's post
7681, 2020-08-14, on Liu, Cui & Chan, "Improve generalization and robustness of neural networks via
weight scale shifting invariant regularizations", arXiv 2008.02965).

- `l2`:           λ Σ_l ‖W_l‖²_F, added to the loss (with Adam it is divided by √v̂, hence not
                  equivalent to weight decay).
- `decoupled_wd`: penalty 0; weight_decay = λ for AdamW: θ ← θ − η(m̂/(√v̂+ε) + λθ).
- `weissi`:       λ1 Σ_l log max(‖W_l‖_F, ε) + λ2 Σ_l ‖W_l / ‖W_l‖_F‖_1 (Su's statement of WEISSI;
                  λ1 = strength, λ2 = `direction_l1`, default 0). For a positively homogeneous network
                  (ReLU, linear, max-pool) rescaling W_l → γ_l W_l with Π γ_l = 1 leaves the function
                  unchanged, and Σ log‖γ_l W_l‖ = Σ log‖W_l‖ + log Π γ_l leaves the penalty unchanged,
                  whereas L2 Σ γ_l²‖W_l‖² changes. ∇_W log‖W‖ = W/‖W‖², i.e. per-layer decay at
                  rate λ1/‖W_l‖². ‖W‖ is clamped at ε because log‖W‖ → −∞ as W → 0.

Regularised parameters ("weight matrices"): the `weight` of every `nn.Linear` and `nn.ConvNd`, each
counted once (tied weights are shared). Biases, LayerNorm/RMSNorm gains and embeddings are left
alone, as the notes advise (norm layers make the preceding weights scale-invariant anyway).
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

_MATRIX_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def regularized_weights(model: nn.Module) -> Iterator[nn.Parameter]:
    """The weight matrices the regularisers act on (deduplicated, trainable only)."""
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, _MATRIX_MODULES):
            w = module.weight
            if w.requires_grad and id(w) not in seen:
                seen.add(id(w))
                yield w


class Regularizer:
    """Base: no penalty, no decay."""

    name = "none"

    def __init__(self, strength: float = 0.0):
        if strength < 0:
            raise ValueError(f"regulariser strength must be >= 0, got {strength}")
        self.strength = float(strength)

    @property
    def weight_decay(self) -> float:
        return 0.0

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return _zero(model)

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimiser groups: regularised matrices get `weight_decay`, everything else 0."""
        decay_ids = {id(w) for w in regularized_weights(model)}
        decay = [p for p in model.parameters() if p.requires_grad and id(p) in decay_ids]
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in decay_ids]
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(strength={self.strength})"


def _zero(model: nn.Module) -> torch.Tensor:
    p = next(model.parameters(), None)
    return torch.zeros((), device=p.device if p is not None else "cpu")


class L2(Regularizer):
    name = "l2"

    def penalty(self, model):
        total = _zero(model)
        for w in regularized_weights(model):
            total = total + w.float().pow(2).sum()
        return self.strength * total


class DecoupledWeightDecay(Regularizer):
    name = "decoupled_wd"

    @property
    def weight_decay(self) -> float:
        return self.strength


class Weissi(Regularizer):
    name = "weissi"

    def __init__(self, strength: float = 0.0, direction_l1: float = 0.0, eps: float = 1e-6):
        super().__init__(strength)
        if direction_l1 < 0:
            raise ValueError(f"WEISSI direction_l1 must be >= 0, got {direction_l1}")
        self.direction_l1 = float(direction_l1)
        self.eps = eps

    def penalty(self, model):
        log_norms = _zero(model)
        direction = _zero(model)
        for w in regularized_weights(model):
            norm = w.float().norm().clamp_min(self.eps)
            log_norms = log_norms + norm.log()
            if self.direction_l1:
                direction = direction + (w.float() / norm).abs().sum()
        return self.strength * log_norms + self.direction_l1 * direction


REGULARIZERS = {"none": Regularizer, "l2": L2, "decoupled_wd": DecoupledWeightDecay, "weissi": Weissi}


def build_regularizer(name: str, strength: float = 0.0, **kwargs) -> Regularizer:
    """Build by name (one of `REGULARIZERS`); `weissi` also takes `direction_l1` (λ2) and `eps`."""
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regulariser {name!r}; choose one of {sorted(REGULARIZERS)}")
    if kwargs and name != "weissi":
        raise ValueError(f"regulariser {name!r} takes only a strength, got extra {sorted(kwargs)}")
    return REGULARIZERS[name](strength, **kwargs)
