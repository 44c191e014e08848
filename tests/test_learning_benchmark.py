"""benchmarks/learning.py: DialogLM vs GPT2LMHeadModel on dialogue files, as a user runs the script.

The smoke run preprocesses a small hand-made LCCC file with `liaotian data dialog` (its own local Ray, as
the script does), trains both models a few steps and checks the JSON last line and that both learn.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "learning.py"
SHARED_LCCC = ROOT.parent / "shared" / "data" / "lccc_base" / "LCCC-base_valid.json"

PAIRS = [("你 好", "你 好 呀 ， 很 高 兴 认 识 你"), ("今 天 天 气 怎 么 样", "今 天 天 气 很 好 ， 出 去 走 走 吧"),
         ("你 吃 饭 了 吗", "吃 过 了 ， 你 呢"), ("晚 安", "晚 安 ， 做 个 好 梦"), ("我 好 累", "早 点 休 息 吧"),
         ("周 末 去 哪 里 玩", "去 公 园 看 看 花"), ("生 日 快 乐", "谢 谢 你 ！")]


def lccc_file(path: Path, n: int, seed: int) -> Path:
    """n dialogues of two or three turns drawn from PAIRS: LCCC JSON, characters space-separated."""
    rng = random.Random(seed)
    dialogues = []
    for _ in range(n):
        post, reply = rng.choice(PAIRS)
        dialogues.append([post, reply] + ([rng.choice(PAIRS)[1]] if rng.random() < 0.3 else []))
    path.write_text(json.dumps(dialogues, ensure_ascii=False), encoding="utf-8")
    return path


def run_script(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
def test_smoke_run_learns_on_both_sides_and_ends_with_the_json_rows(tmp_path):
    pytest.importorskip("transformers")
    train, valid = lccc_file(tmp_path / "train.json", 240, 0), lccc_file(tmp_path / "valid.json", 40, 1)
    out = run_script(["--train", str(train), "--valid", str(valid), "--steps", "30", "--eval-every", "10", "--batch-size", "8",
                      "--warmup", "3", "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["benchmark"] == "learning"
    rows = {r["name"]: r for r in last["results"]}
    assert {"val_loss_parity", "time_to_quality", "train_tokens_per_s"} <= set(rows)
    for row in rows.values():
        assert {"value", "unit", "anchor", "anchor_value", "ratio"} <= set(row)
    stored = json.loads((tmp_path / "results" / "curves.json").read_text(encoding="utf-8"))
    curves = stored["curves"]
    assert stored["meta"]["init_max_logit_gap"] < 1e-3  # HF started from our weights
    assert set(stored["meta"]["gradient_error_vs_fp32"]) == {"ours", "hf"}
    assert set(curves) == {"liaotian DialogLM", "HF GPT2LMHeadModel"}
    for name, curve in curves.items():
        assert [p["step"] for p in curve][:4] == [0, 10, 20, 30], name
        assert curve[3]["val_loss"] < curve[0]["val_loss"] - 1.0, (name, curve)  # both learn the pairs
    assert rows["val_loss_parity"]["ratio"] == pytest.approx(curves["HF GPT2LMHeadModel"][3]["val_loss"] / curves["liaotian DialogLM"][3]["val_loss"])
    assert (tmp_path / "results" / "curves.png").stat().st_size > 0
    assert (tmp_path / "results" / "curves.csv").read_text(encoding="utf-8").startswith("model,step,")
    # every dialogue of each file lands on its side (split fractions 0), accounted in the manifests
    for side, n in (("train", 240), ("valid", 40)):
        manifest = json.loads((tmp_path / "work" / "data" / side / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["dialogues_in"] == n == manifest["dialogues_out"] + sum(manifest["rejected"].values())
        assert manifest["splits"]["valid"] == manifest["splits"]["test"] == 0


def test_train_and_valid_go_together():
    out = run_script(["--train", "a.json"], timeout=60)
    assert out.returncode == 2 and "--train and --valid go together" in out.stderr


@pytest.mark.ray
@pytest.mark.skipif(not SHARED_LCCC.exists(), reason="../shared/data (LCCC-base valid split) is absent: a fresh clone has none")
def test_default_inputs_split_the_shared_lccc_file_95_5(tmp_path):
    """Without --train/--valid the shared LCCC-base valid split is cut 95/5 by dialogue: complete, nothing twice."""
    out = run_script(["--prepare-only", "--work-dir", str(tmp_path)], timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    original = json.loads(SHARED_LCCC.read_text(encoding="utf-8"))
    train = json.loads((tmp_path / "split" / "LCCC-base_valid.train.json").read_text(encoding="utf-8"))
    valid = json.loads((tmp_path / "split" / "LCCC-base_valid.valid.json").read_text(encoding="utf-8"))
    assert len(valid) == round(len(original) * 0.05)
    assert sorted(map(json.dumps, train + valid)) == sorted(map(json.dumps, original))
    manifest = json.loads((tmp_path / "data" / "valid" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["dialogues_in"] == len(valid)
