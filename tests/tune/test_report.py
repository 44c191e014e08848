"""tune.report on hand-made trial records: no Ray, no training."""
import json
import math

import pandas as pd
import pytest

from liaotian.tune import report


def _rec(i, loss, reg, seed, bacc, status="completed", lr=1e-3, history=True):
    done = status == "completed"
    return {
        "trial_id": f"t{i}", "loss": loss, "regularizer": reg, "lr": lr, "seed": seed, "status": status,
        "error": "ValueError: bad gamma" if status == "failed" else None,
        "steps": 40 if done else 10, "wall_s": 3.0,
        "val_balanced_accuracy": None if status == "failed" else bacc - 0.01,
        "test_balanced_accuracy": bacc if done else None,
        "test_macro_f1": bacc - 0.05 if done else None,
        "test_minority_recall": bacc - 0.2 if done else None,
        "test_accuracy": bacc + 0.05 if done else None,
        "history": [{"step": 10, "val_balanced_accuracy": 0.5}, {"step": 20, "val_balanced_accuracy": bacc - 0.01}]
        if history and status != "failed" else [],
    }


@pytest.fixture
def records():
    return [
        _rec(0, "ce", "none", 0, 0.60), _rec(1, "ce", "none", 1, 0.64),
        _rec(2, "logit_adjusted(τ=1)", "none", 0, 0.80), _rec(3, "logit_adjusted(τ=1)", "none", 1, 0.70),
        _rec(4, "focal(γ=2)", "weissi(1e-04)", 0, 0.75), _rec(5, "focal(γ=2)", "weissi(1e-04)", 1, 0.0, status="stopped"),
        _rec(6, "focal(γ=-1)", "none", 0, 0.0, status="failed"),
    ]


def test_summary_mean_and_sample_std_over_seeds(records):
    s = report.summary_frame(records).set_index(["loss", "regularizer"])
    la = s.loc[("logit_adjusted(τ=1)", "none")]
    assert la["n"] == 2
    assert la["balanced_accuracy_mean"] == pytest.approx(0.75)
    assert la["balanced_accuracy_std"] == pytest.approx(math.sqrt(((0.05) ** 2 * 2) / 1))  # ddof=1
    assert la["minority_recall_mean"] == pytest.approx(0.55)
    ce = s.loc[("ce", "none")]
    assert ce["balanced_accuracy_mean"] == pytest.approx(0.62)
    # the ASHA-stopped seed carries no test metrics: the mean is the completed seed's, the count says so
    focal = s.loc[("focal(γ=2)", "weissi(1e-04)")]
    assert (focal["n"], focal["n_stopped"], focal["balanced_accuracy_mean"]) == (1, 1, pytest.approx(0.75))
    assert math.isnan(focal["balanced_accuracy_std"])
    failed = s.loc[("focal(γ=-1)", "none")]
    assert (failed["n"], failed["n_failed"]) == (0, 1) and math.isnan(failed["balanced_accuracy_mean"])
    # best configuration first
    assert report.summary_frame(records).iloc[0]["loss"] == "logit_adjusted(τ=1)"


def test_trials_frame_orders_completed_by_test_then_failed_last(records):
    df = report.trials_frame(records)
    assert list(df["trial_id"][:5]) == ["t2", "t4", "t3", "t1", "t0"]
    assert df.iloc[-1]["status"] == "failed"
    assert len(df) == len(records)


def test_markdown_tables(records):
    md = report.summary_markdown(records)
    lines = md.splitlines()
    assert lines[0].startswith("| loss | regularizer | lr | n | balanced acc")
    assert len(lines) == 2 + 4  # header, rule, four configurations
    assert "0.750 ± 0.071" in md  # logit adjustment: mean ± sample std
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    tm = report.trials_markdown(records)
    assert len(tm.splitlines()) == 2 + len(records)
    assert "failed" in tm and "1e-03" in tm


def test_write_report_files_and_rebuild(tmp_path, records):
    paths = report.write_report(records, tmp_path, title="t", notes=["imbalance 1:10"])
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == len(records) and "test_minority_recall" in csv.columns
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "imbalance 1:10" in md and "## Failed trials" in md and "ValueError: bad gamma" in md
    assert "results.png" in md
    # python -m tune.report rebuilds everything from trials.json alone
    paths["plot"].unlink()
    paths["markdown"].unlink()
    assert report.main([str(tmp_path)]) == 0
    assert paths["plot"].is_file()
    assert paths["markdown"].read_text(encoding="utf-8") == md  # title and notes kept
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == json.loads(json.dumps(records))


def test_plot_handles_only_failed_trials(tmp_path):
    p = report.plot([_rec(0, "ce", "none", 0, 0.0, status="failed")], tmp_path / "p.png")
    assert p.is_file()
