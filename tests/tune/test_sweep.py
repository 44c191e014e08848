"""A tiny real sweep (real Tune, real Train, real classifier) on a small imbalanced fixture.

The fixture is a sentiment data dir per contract 2, written here: one character set marks positive
reviews, another negative ones, so a tiny classifier learns it in a few dozen steps. Train is 1:8
imbalanced (negative = minority), valid and test are balanced.
"""
from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from liaotian.config import load_run_config

POS, NEG, NOISE = "好棒赞喜爱美妙佳", "差坏烂糟恶劣臭", "的了是我他这那个很也都"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SPK1]", "[SPK2]"]


def _text(rng: random.Random, label: int) -> str:
    marks = NEG if label == 0 else POS
    chars = [rng.choice(NOISE) for _ in range(rng.randint(4, 10))] + [rng.choice(marks) for _ in range(2)]
    rng.shuffle(chars)
    return "".join(chars)


def write_sentiment_dir(root: Path, counts: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    from liaotian.pipelines.tokenizer import CharTokenizer

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(SPECIALS + sorted(set(POS + NEG + NOISE))) + "\n", encoding="utf-8")
    tok = CharTokenizer.from_vocab_file(root / "vocab.txt")
    tok.save(root)
    rng = random.Random(seed)
    for split, (n_neg, n_pos) in counts.items():
        labels = [0] * n_neg + [1] * n_pos
        rng.shuffle(labels)
        ids = [[tok.cls_id, *tok.encode(_text(rng, y)), tok.sep_id] for y in labels]
        (root / split).mkdir(exist_ok=True)
        table = pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())), "label": pa.array(labels, pa.int32())})
        pq.write_table(table, root / split / "part-00000.parquet")
    (root / "rejected").mkdir(exist_ok=True)
    manifest = {"kind": "sentiment", "num_classes": 2, "label_names": ["negative", "positive"],
                "class_counts": {s: list(c) for s, c in counts.items()}, "imbalance": counts["train"][1] / counts["train"][0]}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune_run")
    write_sentiment_dir(root / "data" / "sentiment", {"train": (24, 192), "valid": (48, 48), "test": (48, 48)})
    return root


def _cfg(run_dir: Path, *sets: str):
    base = [f"run_dir={run_dir}", "train.classifier.batch_size=16", "train.classifier.eval_batches=6",
            "train.classifier.optim.warmup_steps=2", "train.classifier.scaling.cpus_per_worker=0.5",
            "tune.regularizers=[{name: none}]", "tune.lrs=[3.0e-3]", "tune.seeds=[0]",
            "tune.max_steps=16", "tune.eval_every=8", "tune.grace_period=1", "tune.cpus_per_trial=0.5",
            "tune.overrides={max_failures: 0}", "tune.max_concurrent_trials=2"]
    return load_run_config(None, base + list(sets))


def test_tiny_sweep_writes_report_exports_best_and_reports_the_failed_trial(ray_session, run_dir, capsys):
    from liaotian.tune import sweep

    # focal with gamma < 0 raises inside the Train worker: that trial fails, the others finish
    cfg = _cfg(run_dir, "tune.losses=[{name: ce}, {name: logit_adjusted, tau: 1.0}, {name: focal, gamma: -1.0}]",
               "tune.trial_workers=1", "tune.asha=true")
    res = sweep.run(cfg, name="tiny")
    by_loss = {r["loss"]: r for r in res.records}
    assert set(by_loss) == {"ce", "logit_adjusted(τ=1)", "focal(γ=-1)"}
    failed = by_loss["focal(γ=-1)"]
    assert failed["status"] == "failed" and "gamma" in failed["error"]
    assert not res.interrupted
    for loss in ("ce", "logit_adjusted(τ=1)"):
        r = by_loss[loss]
        # ASHA may stop one of two trials at its first rung; a completed one has test numbers
        assert r["status"] in ("completed", "stopped"), r
        assert r["history"] and r["history"][0]["step"] == 8  # Train's reports reached Tune
        if r["status"] == "completed":
            assert r["steps"] == 16 and 0.0 <= r["test_balanced_accuracy"] <= 1.0
            assert r["test_minority_recall"] is not None and r["test_macro_f1"] is not None
            # the trial's model lives in the experiment's storage and is its best evaluation by the
            # selection metric (the one whose test numbers are reported)
            assert Path(r["model_dir"]).parent == cfg.paths.tune.resolve() / "tiny" / r["trial_id"]
            final = json.loads((Path(r["trial_dir"]) / "final.json").read_text(encoding="utf-8"))
            assert final["val_balanced_accuracy"] == pytest.approx(r["val_balanced_accuracy"])
    assert res.counts["completed"] >= 1
    # the table, the plot, the records
    md = res.report_paths["markdown"].read_text(encoding="utf-8")
    assert "logit_adjusted(τ=1)" in md and "## Failed trials" in md
    assert res.report_paths["markdown"].parent == cfg.paths.tune / "tiny" / "report"
    assert res.report_paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads(res.report_paths["json"].read_text(encoding="utf-8"))) == 3
    # the best completed configuration (by validation) is the service's sentiment model
    assert res.best is not None and res.best["status"] == "completed"
    assert res.model_dir == cfg.paths.model("sentiment")
    assert (res.model_dir / "config.json").is_file() and (res.model_dir / "vocab.txt").is_file()
    assert json.loads((res.model_dir / "sweep.json").read_text(encoding="utf-8"))["trial_id"] == res.best["trial_id"]
    from liaotian.models.checkpoint import load_pretrained
    model = load_pretrained(res.model_dir)
    assert type(model).__name__ == "Classifier"
    # said while it ran; after it, no trial keeps Train checkpoints (nothing reads them), every model stays
    out = capsys.readouterr().out
    assert "[tune " in out and "(3/3 trials finished)" in out and "FAILED" in out
    assert not [p for p in res.experiment_dir.glob("*/train/*/checkpoint_*") if p.is_dir()]
    assert all((Path(r["model_dir"]) / "config.json").is_file() for r in res.records if r["model_dir"])


def _interrupt_after_first_completion(marker: Path):
    """A Tune callback that sends the driver the signal Tune treats like Ctrl+C, once.

    Once per marker file, not per object: a restored experiment unpickles its callbacks afresh.
    """
    from ray.tune import Callback

    class InterruptOnce(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            if not marker.exists():
                marker.write_text(trial.trial_id)
                os.kill(os.getpid(), signal.SIGUSR1)

    return InterruptOnce()


def test_resume_after_interruption_does_not_rerun_finished_trials(ray_session, run_dir):
    from liaotian.tune import sweep

    # one trial at a time, so that the interruption lands between trials
    cfg = _cfg(run_dir, "tune.losses=[{name: weighted_ce}, {name: posthoc_la, tau: 1.0}]",
               "tune.trial_workers=1", "tune.asha=false", "tune.max_concurrent_trials=1")
    first = sweep.run(cfg, name="resumable", callbacks=[_interrupt_after_first_completion(run_dir / "interrupted")])
    assert first.interrupted and first.model_dir is None
    finished = {r["trial_id"] for r in first.records if r["status"] == "completed"}
    assert len(finished) == 1 and len(first.records) == 2
    assert {r["status"] for r in first.records} <= {"completed", "unfinished"}
    second = sweep.run(cfg, name="resumable", resume=True)
    assert not second.interrupted
    assert [r["status"] for r in second.records] == ["completed"] * 2
    for r in second.records:
        if r["trial_id"] in finished:
            assert r["attempts"] == 1, f"{r['trial_id']} was re-run after the resume"
    assert second.model_dir is not None and (second.model_dir / "config.json").is_file()
