"""Config section of `liaotian tune`. Plain dataclasses; no Ray here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from liaotian.config import ConfigError


@dataclass
class TuneConfig:
    """A sweep of losses x regularisers x learning rates for the sentiment classifier."""

    losses: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "ce"}, {"name": "weighted_ce"}, {"name": "focal", "gamma": 2.0}, {"name": "logit_adjusted", "tau": 1.0}])
    regularizers: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "none"}, {"name": "weissi", "strength": 1e-4}])
    lrs: list[float] = field(default_factory=lambda: [1e-3])
    seeds: list[int] = field(default_factory=lambda: [0])
    search: str = "grid"  # grid | random
    num_samples: int = 1  # random search: configurations drawn
    max_concurrent_trials: int = 2
    max_steps: int = 200  # training steps per trial
    eval_every: int = 50
    asha: bool = True
    grace_period: int = 2  # evaluations before ASHA may stop a trial
    reduction_factor: int = 2
    cpus_per_trial: float = 1.0
    trial_workers: int = 0  # Ray Train workers inside a trial (0 = local mode in the trial process)
    init_from: str | None = None  # an mlm model dir; default: this run's models/mlm when it exists

    def __post_init__(self):
        if self.search not in ("grid", "random"):
            raise ConfigError("tune.search must be grid or random")
        if self.max_concurrent_trials < 1:
            raise ConfigError("tune.max_concurrent_trials must be >= 1")
