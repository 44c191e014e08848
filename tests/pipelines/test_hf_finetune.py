"""`train dialog --init-from` an imported HF checkpoint: liaotian-layout shards are fed in the model's
own input format (CDial-GPT's), the vocabulary is the imported one, validation loss falls."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")


def test_finetune_an_imported_gpt2(ray_session, train_data, tmp_path):
    from liaotian.config import load_run_config
    from liaotian.models.checkpoint import load_pretrained
    from liaotian.hf import import_hf
    from liaotian.pipelines.train_job import run

    vocab = (train_data["dialog"] / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=40,
                                                              n_layer=1, n_head=2))
    hf.save_pretrained(tmp_path / "hf")
    shutil.copyfile(train_data["dialog"] / "vocab.txt", tmp_path / "hf" / "vocab.txt")
    imported = import_hf(tmp_path / "hf", tmp_path / "imported")
    cfg = load_run_config(None, {"run_dir": str(tmp_path / "run"), "precision": "fp32", "train.dialog": {
        "max_steps": 12, "batch_size": 16, "eval_every": 4, "checkpoint_every": 12, "log_every": 4, "eval_batches": 2,
        "optim": {"lr": 1e-2, "warmup_steps": 2}, "scaling": {"num_workers": 0}}})
    res = run("dialog", cfg, data_dir=train_data["dialog"], init_from=imported)
    evals = [json.loads(line) for line in (Path(res.run_path) / "metrics.jsonl").read_text().splitlines()]
    losses = [m["val_loss"] for m in evals if m.get("val_step") == m["step"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    model = load_pretrained(res.model_dir)
    assert model.config.input_format == "cdial_gpt" and model.config.segment_tokens == load_pretrained(imported).config.segment_tokens
