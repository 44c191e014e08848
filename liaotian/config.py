"""Typed configuration: YAML -> dataclasses, strictly. No Ray here.

One YAML file describes a run; each stage reads its own section, whose dataclass lives beside the
code that consumes it (pipelines/config.py, tune/config.py, serve/config.py). The generic loader is
`liaotian.typed_config`; imports flow one way: typed_config <- section configs <- this module.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from liaotian.pipelines.config import DataConfig, EvalConfig, TrainSection
from liaotian.serve.config import ServeConfig
from liaotian.tune.config import TuneConfig
from liaotian.typed_config import (ConfigError, apply_overrides, from_dict, load, parse_override, read_yaml,  # noqa: F401 (re-exported)
                                   save, to_dict)


# ---------------------------------------------------------------------------------------------
# The run: sections composed from the stages' own (Ray-free) config modules
# ---------------------------------------------------------------------------------------------

@dataclass
class RayConfig:
    """How to reach Ray. `address` (or RAY_ADDRESS) joins a cluster; otherwise a local one starts."""

    address: str | None = None
    # Logical CPUs of the local cluster. Above the real core count on purpose: Ray hangs rather than
    # fails when a job's tasks need exactly the CPUs there are. None = max(4, 2*cores).
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_memory_mb: int | None = 512
    include_dashboard: bool = True  # Tune around Train leaks placement groups without it
    log_to_driver: bool = False

    def __post_init__(self):
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError("ray.num_cpus must be >= 1")


def _make_run_config_cls():
    def check(self):
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision: must be auto, fp32, bf16 or fp16, got {self.precision!r}")

    # Built with real (not string) annotations so that from_dict can resolve the section types.
    cls = dataclasses.make_dataclass(
        "RunConfig",
        [
            ("run_dir", str, field(default="runs/demo")),  # every artefact lands under it
            ("seed", int, field(default=0)),
            ("precision", str, field(default="auto")),  # auto = bf16 where the device runs it natively
            ("ray", RayConfig, field(default_factory=RayConfig)),
            ("data", DataConfig, field(default_factory=DataConfig)),
            ("train", TrainSection, field(default_factory=TrainSection)),
            ("tune", TuneConfig, field(default_factory=TuneConfig)),
            ("eval", EvalConfig, field(default_factory=EvalConfig)),
            ("serve", ServeConfig, field(default_factory=ServeConfig)),
        ],
        namespace={
            "__post_init__": check,
            "paths": property(lambda self: RunPaths(Path(self.run_dir))),
            "__doc__": "Everything one run needs; every artefact lands under `run_dir`.",
        },
    )
    cls.__module__ = __name__
    return cls


_RUN_CONFIG_CLS = None


def run_config_cls():
    global _RUN_CONFIG_CLS
    if _RUN_CONFIG_CLS is None:
        _RUN_CONFIG_CLS = _make_run_config_cls()
    return _RUN_CONFIG_CLS


def load_run_config(path: str | Path | None = None, overrides: list[str] | dict | None = None):
    """The whole run's config from YAML + overrides."""
    return load(run_config_cls(), path, overrides)


@dataclass(frozen=True)
class RunPaths:
    """Where each stage reads and writes inside one run directory (derived, never configured twice)."""

    root: Path

    def data(self, kind: str) -> Path:  # kind: dialog | sentiment | text
        return self.root / "data" / kind

    def train(self, kind: str) -> Path:  # Ray Train storage for kind: dialog | mlm | classifier
        return self.root / "train" / kind

    def model(self, name: str) -> Path:  # exported model dirs: dialog | mlm | classifier | sentiment
        return self.root / "models" / name

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def eval(self) -> Path:
        return self.root / "eval"
