"""The built wheel installs one import name, `liaotian`, and works from a fresh virtual environment.

The design's folders (models/, pipelines/, serve/, tune/) sit at the top of the repository but must
install only as `liaotian.models`, `liaotian.pipelines`, ...: `models`, `serve` and `tune` are names
other distributions own. The fresh environment gets the wheel alone; its dependencies come from this
test's own environment through a .pth line (no index is needed, and the editable install's finder,
which a .pth *inside* a linked directory would not run anyway, cannot leak in).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd, cwd, timeout=600, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd}\nstdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the files git would ship: setuptools leaves build/ in the source tree, and a
    # stale build/lib there would put deleted modules back into the wheel.
    src = tmp / "src"
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    for rel in filter(None, listed.split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(src)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("liaotian-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip())
    before = {p.name for p in site.iterdir()}
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp)
    added = {p.name for p in site.iterdir()} - before
    (site / "_liaotian_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return {"tmp": tmp, "wheel": wheel, "py": py, "bin": venv / "bin", "site": site, "added": added}


def test_the_only_top_level_name_is_liaotian(fresh_env):
    names = {n.split("/", 1)[0] for n in zipfile.ZipFile(fresh_env["wheel"]).namelist()}
    assert {n for n in names if not n.endswith(".dist-info")} == {"liaotian"}
    assert {n for n in fresh_env["added"] if not n.endswith(".dist-info")} == {"liaotian"}
    wheel_files = zipfile.ZipFile(fresh_env["wheel"]).namelist()
    for must in ("liaotian/models/dialog_lm.py", "liaotian/pipelines/prepare.py", "liaotian/serve/app.py",
                 "liaotian/tune/sweep.py", "liaotian/serve/static/index.html", "liaotian/serve/serve_config.yaml"):
        assert must in wheel_files, must


def test_help_and_imports_come_from_the_installed_wheel(fresh_env):
    tmp = fresh_env["tmp"]
    out = _run([str(fresh_env["bin"] / "liaotian"), "--help"], cwd=tmp)
    assert "COMMAND" in out.stdout and "chat" in out.stdout
    code = ("import json, importlib.util, liaotian.models, liaotian.models.dialog_lm, liaotian.serve.app;"
            "print(json.dumps({'file': liaotian.models.dialog_lm.__file__,"
            " 'top': [n for n in ('models', 'pipelines', 'serve', 'tune') if importlib.util.find_spec(n)]}))")
    info = json.loads(_run([str(fresh_env["py"]), "-c", code], cwd=tmp).stdout.strip().splitlines()[-1])
    assert info["file"].startswith(str(fresh_env["site"] / "liaotian" / "models"))
    assert info["top"] == []


def test_tiny_train_then_chat_from_the_wheel(fresh_env):
    tmp, liaotian = fresh_env["tmp"], str(fresh_env["bin"] / "liaotian")
    corpus = tmp / "tiny.json"
    posts, replies = ["你 好", "今 天 天 气 怎 么 样", "吃 饭 了 吗", "晚 安", "在 干 嘛", "周 末 去 哪"], \
        ["你 好 呀", "天 气 很 好", "吃 过 了", "晚 安 好 梦", "在 看 书", "去 爬 山"]
    pairs = [[p, r] for p in posts for r in replies]  # 36 distinct dialogues: every split gets some
    corpus.write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    run = ["--set", f"run_dir={tmp / 'run'}", "--set", "ray.include_dashboard=false"]
    _run([liaotian, "data", "dialog", str(corpus), "--max-len", "32", *run], cwd=tmp)
    _run([liaotian, "train", "dialog", *run, "--set", "precision=fp32",
          "--set", "train.dialog={model: {preset: tiny, n_layer: 1, n_head: 2, d_model: 32}, max_steps: 4,"
          " batch_size: 8, eval_every: 4, checkpoint_every: 4, scaling: {num_workers: 0}}"], cwd=tmp)
    model_dir = tmp / "run" / "models" / "dialog"
    assert (model_dir / "model.safetensors").exists()
    out = _run([liaotian, "chat", str(model_dir), "--strategy", "greedy", "--max-new-tokens", "4"], cwd=tmp,
               input="你好\n/quit\n")
    assert "机器人> " in out.stdout
