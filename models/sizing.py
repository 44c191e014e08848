"""Model-size rules of thumb. No Ray here.

Su Jianlin, "最小熵原理（六）：词向量的维度应该怎么选择？" (kexue.fm 7695, 2020): for a vocabulary of N
tokens the embedding width should exceed 8.33·ln N (= 2/0.24 · ln N, from H ≈ 2 ln N − 0.24 n < 0).
"""
from __future__ import annotations

import math
import warnings

ENTROPY_COEFFICIENT = 2 / 0.24  # ≈ 8.33


def min_embedding_dim(vocab_size: int) -> float:
    """8.33 · ln N (natural log); N = 13,088 → 79.0, N = 10⁵ → 95.9."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return ENTROPY_COEFFICIENT * math.log(vocab_size)


def check_embedding_dim(d_model: int, vocab_size: int) -> bool:
    """Warn (not fail: tiny test models are deliberately narrow) when d_model < 8.33 ln N."""
    need = min_embedding_dim(vocab_size)
    if d_model < need:
        warnings.warn(
            f"d_model={d_model} is below 8.33·ln({vocab_size}) = {need:.1f}; embeddings this narrow "
            "cannot separate the vocabulary (Su 2020, kexue.fm 7695)",
            stacklevel=3,
        )
        return False
    return True
