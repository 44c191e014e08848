"""tune.space: config -> trial specs -> train.classifier overrides. No Ray."""
import pytest

from liaotian.config import ConfigError, load_run_config
from liaotian.tune import space


def _cfg(*sets):
    return load_run_config(None, list(sets))


def test_grid_is_the_full_product_times_seeds():
    cfg = _cfg("tune.search=grid", "tune.lrs=[1e-3, 3e-3]", "tune.seeds=[0, 1, 2]")
    specs = space.expand(cfg.tune)
    tc = cfg.tune
    assert len(specs) == len(tc.losses) * len(tc.regularizers) * 2 * 3
    assert len({s["key"] for s in specs}) == len(specs)
    labels = {s["loss"] for s in specs}
    assert {"ce", "weighted_ce", "focal(γ=2)", "logit_adjusted(τ=1)", "posthoc_la(τ=1)", "smooth_f1"} == labels
    assert {s["regularizer"] for s in specs} == {"none", "l2(1e-04)", "decoupled_wd(0.01)", "weissi(1e-04)"}
    # seeds are the inner loop: the three seeds of one configuration share everything else
    a, b = specs[0], specs[1]
    assert (a["seed"], b["seed"]) == (0, 1)
    assert {k: v for k, v in a["overrides"].items()} == b["overrides"]


def test_overrides_apply_like_set_and_reset_unused_fields():
    cfg = _cfg("train.classifier.regularizer.strength=0.5", "train.classifier.batch_size=8",
               "tune.losses=[{name: focal, gamma: 0.5}]", "tune.regularizers=[{name: none}, {name: weissi, strength: 1e-3}]",
               "tune.max_steps=12", "tune.eval_every=4", "tune.overrides={batch_size: 16, model.d_model: 32}")
    specs = space.expand(cfg.tune)
    none, weissi = specs
    job = space.job_for(cfg.train.classifier, none["overrides"])
    assert (job.loss.name, job.loss.gamma, job.max_steps, job.eval_every) == ("focal", 0.5, 12, 4)
    assert job.log_every == job.checkpoint_every == 4  # reports and checkpoints only at evaluations
    assert (job.checkpoint_metric, job.checkpoint_mode) == ("val_balanced_accuracy", "max")
    assert job.regularizer.name == "none" and job.regularizer.strength == 0.0  # base 0.5 does not leak
    assert job.batch_size == 16 and job.model["d_model"] == 32 and job.model["preset"] == "tiny"
    job2 = space.job_for(cfg.train.classifier, weissi["overrides"])
    assert (job2.regularizer.name, job2.regularizer.strength) == ("weissi", pytest.approx(1e-3))
    assert job2.optim.lr == pytest.approx(cfg.tune.lrs[0])
    assert cfg.train.classifier.batch_size == 8  # the base job is not modified


def test_random_search_is_seeded_and_shares_config_across_seeds():
    sets = ("tune.search=random", "tune.num_samples=5", "tune.lrs=[1e-4, 1e-2]", "tune.seeds=[0, 1]")
    a = space.expand(_cfg(*sets).tune, seed=7)
    b = space.expand(_cfg(*sets).tune, seed=7)
    c = space.expand(_cfg(*sets).tune, seed=8)
    assert a == b and a != c and len(a) == 10
    assert all(1e-4 <= s["lr"] <= 1e-2 for s in a)
    for i in range(0, 10, 2):
        assert a[i]["overrides"] == a[i + 1]["overrides"] and (a[i]["seed"], a[i + 1]["seed"]) == (0, 1)
    assert len({s["key"] for s in a}) == 10


def test_bad_entries_are_config_errors():
    with pytest.raises(ConfigError, match=r"tune.losses\[0\]: unknown key"):
        space.expand(_cfg("tune.losses=[{name: focal, gama: 2}]").tune)
    with pytest.raises(ConfigError, match="tune.regularizers"):
        _cfg("tune.regularizers=[{strength: 1}]")
    with pytest.raises(ConfigError, match="train.classifier"):
        space.job_for(_cfg().train.classifier, {"optim.lr": -1.0})
