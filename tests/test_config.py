import pytest

from liaotian.config import ConfigError, apply_overrides, load_run_config, parse_override


def test_defaults_validate():
    cfg = load_run_config()
    assert cfg.data.dialog.max_len == 256
    assert cfg.paths.model("dialog").as_posix().endswith("models/dialog")


def test_unknown_key_names_full_path_and_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  dialog:\n    optim:\n      lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.dialog\.optim\.lrr: unknown key; did you mean 'lr'"):
        load_run_config(p)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="data.dialog.max_len: expected an integer"):
        load_run_config(None, ["data.dialog.max_len=abc"])


def test_set_overrides_parse_yaml_values():
    cfg = load_run_config(None, ["train.dialog.optim.lr=1e-3", "data.dialog.inputs=[a.json, b.json]", "ray.num_cpus=6"])
    assert cfg.train.dialog.optim.lr == pytest.approx(1e-3)
    assert cfg.data.dialog.inputs == ["a.json", "b.json"]
    assert cfg.ray.num_cpus == 6


def test_range_checks_in_post_init():
    with pytest.raises(ConfigError, match="optim.lr must be > 0"):
        load_run_config(None, ["train.mlm.optim.lr=0"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError):
        parse_override("novalue")
    with pytest.raises(ConfigError):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_classifier_keeps_best_by_balanced_accuracy_even_with_its_own_section(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  classifier:\n    max_steps: 10\n")
    cfg = load_run_config(p)
    assert (cfg.train.classifier.checkpoint_metric, cfg.train.classifier.checkpoint_mode) == ("val_balanced_accuracy", "max")
    assert cfg.train.dialog.checkpoint_metric == "val_loss"
