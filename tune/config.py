"""Config section of `liaotian tune`. Plain dataclasses; no Ray here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from liaotian.typed_config import ConfigError


@dataclass
class TuneConfig:
    """A sweep of losses x regularisers x learning rates (x seeds) for the sentiment classifier.

    Each loss / regulariser entry is a mapping of `train.classifier.loss.*` / `.regularizer.*` fields
    (e.g. `{name: focal, gamma: 2.0}`, `{name: weissi, strength: 1e-4}`); a trial applies them, its
    lr (`optim.lr`) and `overrides` to a copy of `train.classifier`, exactly as `--set` would.
    """

    losses: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "ce"}, {"name": "weighted_ce"}, {"name": "focal", "gamma": 2.0},
        {"name": "logit_adjusted", "tau": 1.0}, {"name": "posthoc_la", "tau": 1.0}, {"name": "smooth_f1"}])
    regularizers: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "none"}, {"name": "l2", "strength": 1e-4}, {"name": "decoupled_wd", "strength": 1e-2},
        {"name": "weissi", "strength": 1e-4}])
    lrs: list[float] = field(default_factory=lambda: [1e-3])  # grid: each; random: log-uniform in [min, max]
    seeds: list[int] = field(default_factory=lambda: [0])  # every configuration runs once per seed
    search: str = "grid"  # grid | random
    num_samples: int = 8  # random search: configurations drawn (before the seeds multiply them)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted train.classifier keys for every trial
    max_steps: int | None = 200  # training steps per trial (None = train.classifier.max_steps)
    eval_every: int | None = 50  # None = train.classifier.eval_every
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0  # the trial process (it drives the Train workers)
    # Ray Train workers inside one trial. At least 1: in Ray 2.60 a local-mode (0-worker) Train run
    # inside a Tune trial fails, because ray.train.report/get_context raise in a Tune session.
    trial_workers: int = 1
    max_failures: int = 0  # Tune retries of a failed trial
    asha: bool = True
    grace_period: int = 2  # evaluations before ASHA may stop a trial
    reduction_factor: int = 2
    init_from: str | None = None  # an mlm model dir; default: this run's models/mlm when it exists
    export_best: bool = True  # copy the best trial's model dir to paths.model("sentiment")
    keep_trial_checkpoints: bool = False  # after a finished sweep, trials' Train checkpoints are removed

    def __post_init__(self):
        if self.search not in ("grid", "random"):
            raise ConfigError("tune.search must be grid or random")
        if self.max_concurrent_trials < 1:
            raise ConfigError("tune.max_concurrent_trials must be >= 1")
        if not self.losses or not self.regularizers or not self.lrs or not self.seeds:
            raise ConfigError("tune.losses, tune.regularizers, tune.lrs and tune.seeds must be non-empty")
        for kind, entries in (("losses", self.losses), ("regularizers", self.regularizers)):
            for i, e in enumerate(entries):
                if not isinstance(e, dict) or not isinstance(e.get("name"), str):
                    raise ConfigError(f"tune.{kind}[{i}]: expected a mapping with a 'name', got {e!r}")
        if any(lr <= 0 for lr in self.lrs):
            raise ConfigError("tune.lrs must be > 0")
        if self.num_samples < 1:
            raise ConfigError("tune.num_samples must be >= 1")
        if self.trial_workers < 1 or self.cpus_per_trial <= 0:
            raise ConfigError("tune.trial_workers must be >= 1 (Ray 2.60 cannot run local-mode Train inside "
                              "a Tune trial) and tune.cpus_per_trial > 0")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ConfigError("tune.grace_period must be >= 1 and tune.reduction_factor >= 2")
