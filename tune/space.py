"""The sweep's search space: `TuneConfig` -> trial specs -> a Tune `param_space`.

A trial spec is a plain dict:
    {"key": "focal-g2__weissi-1e-04__lr-1e-03__s0",   unique, also the trial's directory name
     "loss": "focal(γ=2)", "regularizer": "weissi(1e-04)", "lr": 1e-3, "seed": 0,   for the tables
     "overrides": {"loss.name": "focal", "loss.gamma": 2.0, "regularizer.name": "weissi",
                   "regularizer.strength": 1e-4, "optim.lr": 1e-3, "max_steps": 200, ...}}
`overrides` are dotted keys under `train.classifier`, applied exactly as `--set train.classifier.K=V`
would be (`job_for`), so a trial is reproducible from the command line.

Random search draws whole configurations with a seeded generator *before* Tune sees them, then
repeats each over the seeds: with Tune's own sampling each seed would get a different configuration
and "mean ± std over seeds" would mean nothing. Both modes hand Tune one `grid_search` over the specs,
so resuming, ASHA and the result table treat them alike.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import fields
from typing import Any

from liaotian.config import ConfigError, apply_overrides, from_dict, to_dict
from liaotian.pipelines.config import LossSection, RegularizerSection, TrainJobConfig
from liaotian.tune.config import TuneConfig

_LOSS_KEYS = {f.name for f in fields(LossSection)}
_REG_KEYS = {f.name for f in fields(RegularizerSection)}
_SYMBOL = {"gamma": "γ", "tau": "τ", "alpha": "α"}


def _num(x: float) -> str:
    """Short, stable number text: 2, 0.5, 1e-04."""
    x = float(x)
    if x == int(x) and abs(x) < 1e4:
        return str(int(x))
    if abs(x) >= 1e-2:
        return f"{x:g}"
    return f"{x:.0e}"


def loss_label(loss: dict[str, Any]) -> str:
    """'focal(γ=2)', 'logit_adjusted(τ=1)', 'ce' - hyperparameters shown only where the loss uses them."""
    used = {"focal": ("gamma", "alpha"), "logit_adjusted": ("tau",), "posthoc_la": ("tau",)}.get(loss["name"], ())
    params = [f"{_SYMBOL[k]}={_num(loss[k])}" for k in used if loss.get(k) is not None]
    return f"{loss['name']}({', '.join(params)})" if params else loss["name"]


def regularizer_label(reg: dict[str, Any]) -> str:
    if reg["name"] == "none":
        return "none"
    return f"{reg['name']}({_num(reg.get('strength', 0.0))})"


def _slug(text: str) -> str:
    out = text.replace("γ=", "g").replace("τ=", "t").replace("α=", "a").replace("(", "-").replace(")", "")
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in out)


def _check(entry: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _spec(loss: dict, reg: dict, lr: float, seed: int, tc: TuneConfig) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(tc.overrides)
    # Each trial states every loss/regulariser field: a default left over from the base config
    # (e.g. regularizer.strength) must not leak into a trial whose entry leaves it out.
    overrides.update({f"loss.{k}": v for k, v in {**to_dict(LossSection()), **loss}.items()})
    overrides.update({f"regularizer.{k}": v for k, v in {**to_dict(RegularizerSection()), **reg}.items()})
    overrides["optim.lr"] = float(lr)
    # Each trial exports the checkpoint that is best by the sweep's own selection metric (a
    # train.classifier section written in YAML otherwise falls back to TrainJobConfig's val_loss).
    overrides.update(checkpoint_metric="val_balanced_accuracy", checkpoint_mode="max")
    if tc.max_steps is not None:
        overrides["max_steps"] = tc.max_steps
    if tc.eval_every is not None:
        # Report and checkpoint exactly at evaluations: ASHA and the learning curves then see fresh
        # validation numbers only, and the exported best checkpoint is one that was scored.
        overrides.update(eval_every=tc.eval_every, log_every=tc.eval_every, checkpoint_every=tc.eval_every)
    ll, rl = loss_label(loss), regularizer_label(reg)
    return {"key": f"{_slug(ll)}__{_slug(rl)}__lr-{_num(lr)}__s{seed}", "loss": ll, "regularizer": rl,
            "lr": float(lr), "seed": int(seed), "overrides": overrides}


def expand(tc: TuneConfig, seed: int = 0) -> list[dict[str, Any]]:
    """Every trial of the sweep, in a stable order (configurations outer, seeds inner)."""
    for i, e in enumerate(tc.losses):
        _check(e, _LOSS_KEYS, f"tune.losses[{i}]")
    for i, e in enumerate(tc.regularizers):
        _check(e, _REG_KEYS, f"tune.regularizers[{i}]")
    if tc.search == "grid":
        configs = [(l, r, lr) for l in tc.losses for r in tc.regularizers for lr in tc.lrs]
    else:
        rng = random.Random(seed)  # the run's seed: the same config file draws the same sweep
        lo, hi = math.log(min(tc.lrs)), math.log(max(tc.lrs))
        configs = [(rng.choice(tc.losses), rng.choice(tc.regularizers), math.exp(rng.uniform(lo, hi)))
                   for _ in range(tc.num_samples)]
    specs = [_spec(copy.deepcopy(l), copy.deepcopy(r), lr, s, tc) for (l, r, lr) in configs for s in tc.seeds]
    seen: dict[str, int] = {}
    for sp in specs:  # random search can draw a configuration twice: keep keys unique
        n = seen.get(sp["key"], 0)
        seen[sp["key"]] = n + 1
        if n:
            sp["key"] = f"{sp['key']}__dup{n}"
    return specs


def param_space(tc: TuneConfig, seed: int = 0) -> dict[str, Any]:
    """The Tune param_space: one grid axis over the trial specs."""
    from ray import tune

    return {"spec": tune.grid_search(expand(tc, seed))}


def job_for(base: TrainJobConfig, overrides: dict[str, Any]) -> TrainJobConfig:
    """A validated copy of `base` (cfg.train.classifier) with dotted `overrides` applied."""
    data = apply_overrides(to_dict(base), copy.deepcopy(overrides))
    return from_dict(TrainJobConfig, data, "train.classifier")
