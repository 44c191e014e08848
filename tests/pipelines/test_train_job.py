"""Ray Train runs of every model kind on tiny shards: learning, resume, fault recovery, fast config errors.

All on the shared `ray_session` (8 logical CPUs on 2 cores); models are one-layer, 40 wide, so a
2-worker run of 24 steps takes seconds and the time goes to Ray's own start-up and polling.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from liaotian.config import ConfigError, load_run_config

SMALL_MODEL = {"preset": "tiny", "n_layer": 1, "n_head": 2, "d_model": 40, "dropout": 0.0}  # 40 > 8.33 ln V


def make_cfg(tmp_path: Path, kind: str, **job):
    base = {"model": SMALL_MODEL, "max_steps": 24, "batch_size": 16, "eval_every": 8, "checkpoint_every": 8,
            "log_every": 4, "eval_batches": 2, "keep_checkpoints": 2, "bucket_window": 4,
            "optim": {"lr": 1e-2, "warmup_steps": 3, "min_lr_ratio": 0.1}, "scaling": {"num_workers": 2}}
    base.update(job)
    return load_run_config(None, {"run_dir": str(tmp_path / "run"), "precision": "fp32", f"train.{kind}": base})


def history(result) -> list[dict]:
    return [json.loads(line) for line in (Path(result.run_path) / "metrics.jsonl").read_text().splitlines()]


DATA = {"dialog": "dialog", "mlm": "text", "classifier": "sentiment"}


@pytest.mark.parametrize("kind", ["dialog", "mlm", "classifier"])
def test_two_worker_run_lowers_validation_loss_and_exports(ray_session, train_data, tmp_path, kind):
    from liaotian.models.checkpoint import load_pretrained
    from liaotian.pipelines.train_job import run

    cfg = make_cfg(tmp_path, kind)
    res = run(kind, cfg, data_dir=train_data[DATA[kind]])
    evals = [m for m in history(res) if m.get("val_step") == m["step"]]
    assert [m["step"] for m in evals] == [8, 16, 24]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert res.steps == 24 and res.metrics["val_loss"] == min(m["val_loss"] for m in evals) or kind == "classifier"
    assert all(m["tokens_per_s"] > 0 for m in history(res))
    assert list((Path(res.run_path) / "tensorboard").glob("events.out.tfevents.*"))
    model = load_pretrained(res.model_dir)  # the exported model dir loads on its own
    assert (Path(res.model_dir) / "vocab.txt").exists() and model.token_embedding.num_embeddings > 7
    if kind == "classifier":
        assert evals[-1]["val_balanced_accuracy"] > 0.6
        assert set(res.test_metrics) >= {"test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_minority_recall"}
    else:
        assert evals[-1]["val_loss"] < math.log(model.token_embedding.num_embeddings) * 0.8
        assert res.test_metrics is None


def test_early_stopping_ends_the_run_and_exports_the_best(ray_session, train_data, tmp_path):
    """min_delta above any loss: only the first evaluation counts as an improvement, so two workers stop
    together after `patience` more evaluations, and the first evaluation's checkpoint is exported."""
    from liaotian.pipelines.train_job import run

    cfg = make_cfg(tmp_path, "dialog", max_steps=40, eval_every=4, checkpoint_every=100,
                   early_stopping={"patience": 2, "min_delta": 1e6})
    res = run("dialog", cfg, data_dir=train_data["dialog"])
    assert res.stopped_early and res.steps == 12
    assert res.metrics["step"] == 4 and res.metrics["val_step"] == 4  # the exported model is the best evaluation's
    last = history(res)[-1]
    assert last["step"] == 12 and last["stopped_early"] == 1 and last["best_step"] == 4


def test_local_mode_classifier_from_an_mlm_encoder(ray_session, train_data, tmp_path):
    from liaotian.pipelines.train_job import run

    mlm = run("mlm", make_cfg(tmp_path, "mlm", scaling={"num_workers": 0}, max_steps=8, eval_every=4, checkpoint_every=4),
              data_dir=train_data["text"])
    assert mlm.steps == 8 and len(list(Path(mlm.run_path).glob("checkpoint_*"))) == 2
    cfg = make_cfg(tmp_path, "classifier", scaling={"num_workers": 0}, max_steps=8, eval_every=4, checkpoint_every=4,
                   loss={"name": "posthoc_la"})
    res = run("classifier", cfg, data_dir=train_data["sentiment"], init_from=mlm.model_dir)
    assert res.steps == 8 and "test_balanced_accuracy" in res.test_metrics
    cfg_json = json.loads((Path(res.model_dir) / "config.json").read_text())
    assert "fast_mlm" in json.dumps(cfg_json)


def test_resume_continues_the_schedule_exactly(ray_session, train_data, tmp_path, monkeypatch):
    from liaotian.pipelines.train_job import run
    from liaotian.pipelines.train_loop import lr_at

    cfg = make_cfg(tmp_path, "dialog", max_steps=16, eval_every=4, checkpoint_every=4, log_every=2, max_failures=0)
    monkeypatch.setenv("LIAOTIAN_FAULT_AT_STEP", "11")
    monkeypatch.setenv("LIAOTIAN_FAULT_MARKER", str(tmp_path / "crashed"))
    with pytest.raises(Exception):  # max_failures 0: the crash ends the run
        run("dialog", cfg, data_dir=train_data["dialog"], name="cut")
    assert (tmp_path / "crashed").exists()
    with pytest.raises(ConfigError, match="--resume"):  # a fresh run never silently continues an old one
        run("dialog", cfg, data_dir=train_data["dialog"], name="cut")
    resumed = run("dialog", cfg, data_dir=train_data["dialog"], resume=True)  # the newest dialog run: "cut"
    assert resumed.steps == 16 and Path(resumed.run_path).name == "cut"
    reports = history(resumed)
    before, after = [m for m in reports if m["start_step"] == 0], [m for m in reports if m["start_step"] > 0]
    assert before[-1]["step"] == 10 and after[0]["start_step"] in (4, 8) and after[-1]["step"] == 16
    assert [m["step"] for m in after] == list(range(after[0]["start_step"] + 2, 17, 2))
    job = cfg.train.dialog
    for m in reports:  # before and after the crash: the uninterrupted run's LR at every step, bit for bit
        assert m["lr"] == lr_at(m["step"] - 1, job.optim, job.max_steps)


def test_killed_worker_recovers_from_its_checkpoint(ray_session, train_data, tmp_path, monkeypatch):
    from liaotian.pipelines.train_job import run

    monkeypatch.setenv("LIAOTIAN_FAULT_AT_STEP", "11")
    monkeypatch.setenv("LIAOTIAN_FAULT_MARKER", str(tmp_path / "crashed"))
    cfg = make_cfg(tmp_path, "dialog", max_steps=16, eval_every=4, checkpoint_every=4, log_every=4, max_failures=1)
    res = run("dialog", cfg, data_dir=train_data["dialog"])
    assert (tmp_path / "crashed").read_text() == "11"
    assert res.steps == 16
    restarted = [m for m in history(res) if m["start_step"] > 0]
    assert restarted and restarted[0]["start_step"] in (4, 8)  # at most one checkpoint interval lost (or two, if unregistered)


def test_config_errors_fail_fast(ray_session, train_data, tmp_path):
    from liaotian.pipelines.train_job import run

    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_run_config(None, ["train.dialog.optim.lrr=1e-3"])
    t0 = time.time()
    with pytest.raises(ConfigError, match="64 workers"):
        run("dialog", make_cfg(tmp_path, "dialog", scaling={"num_workers": 64}), data_dir=train_data["dialog"])
    with pytest.raises(ConfigError, match="GPU"):
        run("dialog", make_cfg(tmp_path, "dialog", scaling={"num_workers": 1, "use_gpu": True}), data_dir=train_data["dialog"])
    with pytest.raises(ConfigError, match="liaotian data"):
        run("dialog", make_cfg(tmp_path, "dialog"), data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="tokenizer"):
        run("dialog", make_cfg(tmp_path, "dialog", model={**SMALL_MODEL, "vocab_size": 10}, scaling={"num_workers": 0}),
            data_dir=train_data["dialog"])
    assert time.time() - t0 < 20


def test_validation_subset_spans_a_split_whose_rows_are_grouped(ray_session, tmp_path):
    """The rows evaluated during training are spread over the split, not its first rows: the sentiment
    job writes each input file's rows together, so a prefix of its valid split can hold one class."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from liaotian.pipelines.train_job import _dataset

    split = tmp_path / "valid"
    split.mkdir()
    pq.write_table(pa.table({"input_ids": [[2, 5, 3]] * 100, "label": [0] * 50 + [1] * 50}), split / "part-00000.parquet")
    labels = [r["label"] for r in _dataset(split, ["input_ids", "label"], limit=10).take_all()]
    assert len(labels) == 10 and set(labels) == {0, 1}
