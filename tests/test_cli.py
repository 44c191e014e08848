"""The front door: every command has a --help a user can follow, and config errors are clear."""
import subprocess
import sys
from pathlib import Path

import pytest

from liaotian.cli import STAGES, main

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("data", "train", "tune", "serve", "chat", "explain", "eval", "demo"):
        assert name in out


@pytest.mark.parametrize("command", sorted(STAGES))
def test_each_stage_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: liaotian" in capsys.readouterr().out


def test_unknown_config_key_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data:\n  dialog:\n    max_lenn: 12\n")
    rc = main(["demo", "--config", str(cfg), "--no-serve"])
    assert rc == 2
    assert "data.dialog.max_lenn: unknown key; did you mean 'max_len'" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "liaotian.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "liaotian" in out.stdout


def test_top_level_help_imports_no_stage():
    """`liaotian --help` must stay instant: no stage module, hence neither torch nor Ray, is imported."""
    code = ("import sys; from liaotian.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'ray', 'pyarrow', 'liaotian.pipelines', 'liaotian.models', 'liaotian.serve', 'liaotian.tune') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in out.stderr, out.stderr
    assert "demo" in out.stdout
