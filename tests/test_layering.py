"""The dependency direction of ARCHITECTURE.md: models/ and the pure pipeline modules import no Ray."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = [
    "liaotian.models.layers", "liaotian.models.attention", "liaotian.models.linear_attention", "liaotian.models.dialog_lm", "liaotian.models.fast_mlm",
    "liaotian.models.masked_lm", "liaotian.models.classifier", "liaotian.models.checkpoint", "liaotian.models.generate", "liaotian.models.logits",
    "liaotian.models.losses", "liaotian.models.regularizers", "liaotian.models.attribution", "liaotian.models.rerank",
    "liaotian.pipelines.readers", "liaotian.pipelines.cleaning", "liaotian.pipelines.tokenizer", "liaotian.pipelines.dialogue", "liaotian.pipelines.schema",
    "liaotian.pipelines.collate", "liaotian.pipelines.train_loop", "liaotian.pipelines.metrics", "liaotian.serve.engine", "liaotian.chat",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_ray(module):
    code = (
        "import importlib, sys; importlib.import_module(%r); "
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')); "
        "print(','.join(bad[:5]))" % module
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"{module} pulls in Ray: {out.stdout.strip()}"


def test_models_package_has_no_ray_import_statement():
    for path in (ROOT / "models").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import ray" not in text and "from ray" not in text, path
