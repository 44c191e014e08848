"""Numeric precision: which autocast dtype to use where. No Ray here.

`auto` picks bf16 only where the hardware computes it natively: CUDA devices with bf16 support, and
CPUs advertising `amx_bf16` or `avx512_bf16` in /proc/cpuinfo. Elsewhere bf16 autocast is emulated and
slower than fp32, so `auto` falls back to fp32. fp32 is returned as None ("no autocast").
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

NAMES = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags=None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in CPU_BF16_FLAGS)


def resolve_precision(name: str, device="cpu", flags=None) -> torch.dtype | None:
    """'auto'|'fp32'|'bf16'|'fp16' -> the autocast dtype, or None for plain fp32.

    `flags` (a set of CPU flag names) overrides /proc/cpuinfo, for tests.
    """
    if name not in NAMES:
        raise ValueError(f"precision must be one of {NAMES}, got {name!r}")
    kind = torch.device(device).type
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        return torch.float16
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    if kind == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16(flags) else None
    return None


def autocast(device="cpu", dtype: torch.dtype | None = None):
    """`torch.autocast` for `dtype`, or a no-op context when dtype is None (fp32)."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
