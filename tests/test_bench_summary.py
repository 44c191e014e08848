"""`benchmarks/run_all.py --from-stored`: summary.md from the last JSON line of each stored output, and
nothing from outputs that do not end with one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_summary_is_built_from_the_stored_outputs_last_json_lines(tmp_path):
    payload = {"benchmark": "decode", "results": [{"name": "decode_vs_ct2_fp32", "value": 200.6, "unit": "tokens/s",
                                                  "anchor": "CTranslate2 fp32", "anchor_value": 272.0, "ratio": 200.6 / 272.0}]}
    (tmp_path / "models_decode.txt").write_text("a table\n" + json.dumps(payload) + "\n\n", encoding="utf-8")
    (tmp_path / "equality.txt").write_text("equal in content\n", encoding="utf-8")  # no JSON line: not a benchmark
    (tmp_path / "broken.txt").write_text('{"benchmark": "cut mid-wri\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--from-stored", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    row = next(line for line in summary.splitlines() if "decode_vs_ct2_fp32" in line)
    assert "[models_decode.txt](models_decode.txt)" in row and "| 200.6 |" in row and "| 272 |" in row and "| 0.74 |" in row
    assert "equality" not in summary.split("Built by")[0] and "broken" not in summary.split("Built by")[0]
