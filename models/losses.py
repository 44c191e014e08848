"""Classification losses for imbalanced data, selectable by name (Contract 5).

`build_loss(name, class_counts=None, gamma=2.0, alpha=None, tau=1.0) -> Loss`; a `Loss` is called as
`loss(logits (B,C), targets (B,)) -> scalar` (batch mean) and `loss.predict_logits(logits)` gives the
scores whose argmax is the prediction (identity except for `posthoc_la`).

Sources (Su's post 7708 "class imbalance", 2020-08-31):
- `ce`:            ℓ = −log p_y,  p = softmax(f).
- `weighted_ce`:   ℓ = −w_y log p_y,  w_c = N / (C·n_c) (inverse frequency, normalised so that the
                   training-set mean of w_y is 1, i.e. Σ_c n_c w_c = N; sklearn's "balanced").
- `focal`:         ℓ = −α_y (1 − p_y)^γ log p_y  (Lin et al. 2017; γ = 2 usual; α_y = 1 when alpha
                   is None, α for class 1 / 1 − α for class 0 when alpha is a float (binary), or a
                   per-class sequence).
- `logit_adjusted`: ℓ = −log softmax(f + τ log π)_y = log[1 + Σ_{i≠y} (π_i/π_y)^τ e^{f_i − f_y}]
                   (Menon et al., arXiv 2007.07314; their code's log(π^τ + 1e-12)); predict argmax f.
- `posthoc_la`:    train with CE; predict argmax_y f_y − τ log π_y (Menon et al. §4 post-hoc).
- `smooth_acc`:    ℓ = 1 − p_y, the "smooth accuracy" whose gradient −p(1−p)∇z vanishes on badly
                   wrong samples (CE = smooth accuracy re-weighted by 1/p).
- `smooth_f1`:     macro soft F1 (Dice): per class c, TP_c = Σ_{y_i=c} p_ic,
                   F1_c = 2 TP_c / (Σ_i p_ic + |P_c|); ℓ = −mean_c log F1_c over the classes present
                   in the batch. Its gradient is CE with stop-gradient, batch-dependent weights
                   (derivation in that post): −∇log F1 = Σ_pos (1/TP − 1/S) p_i ∇(−log p_i)
                   + Σ_neg (1 − p_i)/S ∇(−log(1 − p_i)), S = Σ p_i + |P|. Needs large batches.
Priors π come from *training* class counts (priors from the evaluation split would leak it).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _check_inputs(logits: Tensor, targets: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be (B,) = ({logits.shape[0]},), got shape {tuple(targets.shape)}")


def _counts_tensor(class_counts, name: str) -> Tensor:
    if class_counts is None:
        raise ValueError(f"loss {name!r} needs class_counts (training-set count per class)")
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() < 2:
        raise ValueError(f"class_counts must list at least 2 classes, got {list(class_counts)}")
    if (counts <= 0).any():
        raise ValueError(f"class_counts must all be positive for loss {name!r}, got {list(class_counts)}")
    return counts


def class_priors(class_counts) -> Tensor:
    """π_c = n_c / N as float32."""
    counts = _counts_tensor(class_counts, "priors")
    return (counts / counts.sum()).float()


def inverse_frequency_weights(class_counts) -> Tensor:
    """w_c = N / (C · n_c): Σ_c n_c w_c = N, so the mean weight over the training set is 1."""
    counts = _counts_tensor(class_counts, "weighted_ce")
    return (counts.sum() / (counts.numel() * counts)).float()


class Loss:
    """Base: `loss(logits, targets)` -> scalar batch mean; `predict_logits` -> decision scores."""

    name = "loss"

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        _check_inputs(logits, targets)
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(f"loss {self.name!r} was built for {self.num_classes} classes, logits have {logits.shape[1]}")
        return self.forward(logits.float(), targets.long())

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def predict_logits(self, logits: Tensor) -> Tensor:
        return logits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CrossEntropy(Loss):
    name = "ce"

    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets)


class WeightedCE(Loss):
    """(1/B) Σ_i w_{y_i} (−log p_{y_i}); a plain batch mean, not PyTorch's Σ w ℓ / Σ w."""

    name = "weighted_ce"

    def __init__(self, class_counts):
        self.weights = inverse_frequency_weights(class_counts)
        super().__init__(self.weights.numel())

    def forward(self, logits, targets):
        nll = F.cross_entropy(logits, targets, reduction="none")
        return (self.weights.to(logits.device)[targets] * nll).mean()


class Focal(Loss):
    name = "focal"

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None):
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        if alpha is None:
            self.alpha = None
            super().__init__(None)
        elif isinstance(alpha, (int, float)):
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"scalar focal alpha must be in [0, 1] (weight of class 1), got {alpha}")
            self.alpha = torch.tensor([1.0 - alpha, float(alpha)])
            super().__init__(2)
        else:
            self.alpha = torch.as_tensor(list(alpha), dtype=torch.float32)
            super().__init__(self.alpha.numel())

    def forward(self, logits, targets):
        logp = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
        loss = -((1.0 - logp.exp()).clamp_min(0.0) ** self.gamma) * logp
        if self.alpha is not None:
            loss = self.alpha.to(logits.device)[targets] * loss
        return loss.mean()


class LogitAdjusted(Loss):
    """CE on f + τ log π (Menon et al.); the prediction stays argmax f."""

    name = "logit_adjusted"

    def __init__(self, class_counts, tau: float = 1.0):
        self.tau = float(tau)
        self.log_prior = torch.log(class_priors(class_counts) ** self.tau + 1e-12)  # Menon's code
        super().__init__(self.log_prior.numel())

    def forward(self, logits, targets):
        return F.cross_entropy(logits + self.log_prior.to(logits.device), targets)


class PosthocLA(LogitAdjusted):
    """Train with plain CE; predict argmax f − τ log π."""

    name = "posthoc_la"

    def forward(self, logits, targets):
        return F.cross_entropy(logits, targets)

    def predict_logits(self, logits):
        return logits - self.log_prior.to(logits.device, logits.dtype)


class SmoothAccuracy(Loss):
    """1 − mean p_y: the negated smooth accuracy."""

    name = "smooth_acc"

    def forward(self, logits, targets):
        p_y = F.softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
        return 1.0 - p_y.mean()


class SmoothF1(Loss):
    """−mean_c log F1_c, F1_c = 2 Σ_{y=c} p_c / (Σ p_c + |P_c|), over classes present in the batch."""

    name = "smooth_f1"

    def __init__(self, eps: float = 1e-7):
        self.eps = eps
        super().__init__(None)

    def forward(self, logits, targets):
        probs = F.softmax(logits, dim=-1)
        onehot = F.one_hot(targets, logits.shape[1]).to(probs.dtype)
        tp = (probs * onehot).sum(0)
        support = onehot.sum(0)
        f1 = 2.0 * tp / (probs.sum(0) + support)
        present = support > 0
        return -torch.log(f1[present] + self.eps).mean()


LOSSES: dict[str, Callable[..., Loss]] = {
    "ce": lambda **kw: CrossEntropy(),
    "weighted_ce": lambda class_counts=None, **kw: WeightedCE(class_counts),
    "focal": lambda gamma=2.0, alpha=None, **kw: Focal(gamma, alpha),
    "logit_adjusted": lambda class_counts=None, tau=1.0, **kw: LogitAdjusted(class_counts, tau),
    "posthoc_la": lambda class_counts=None, tau=1.0, **kw: PosthocLA(class_counts, tau),
    "smooth_f1": lambda **kw: SmoothF1(),
    "smooth_acc": lambda **kw: SmoothAccuracy(),
}


def build_loss(name: str, class_counts=None, gamma: float = 2.0, alpha=None, tau: float = 1.0) -> Loss:
    """Build a loss by name (one of `LOSSES`); `class_counts` are the training counts per class."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](class_counts=class_counts, gamma=gamma, alpha=alpha, tau=tau)
