"""Model dirs: `model.safetensors` + `config.json` (+ tokenizer files). Never unpickles. No Ray here.

config.json = {"model_type": ..., <config fields>, "extra": {...}, "tied_weights": {alias: source}}.
"""
from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

MODEL_TYPES = {  # model_type -> (module, model class, config class); imported lazily
    "dialog_lm": ("liaotian.models.dialog_lm", "DialogLM", "DialogLMConfig"),
    "fast_mlm": ("liaotian.models.fast_mlm", "FastMLM", "FastMLMConfig"),
    "masked_lm": ("liaotian.models.masked_lm", "MaskedLM", "MaskedLMConfig"),
    "classifier": ("liaotian.models.classifier", "Classifier", "ClassifierConfig"),
}
WEIGHTS, CONFIG, TOKENIZER_FILES = "model.safetensors", "config.json", ("tokenizer.json", "vocab.txt")
RESERVED = ("model_type", "extra", "tied_weights")


def _classes(model_type: str):
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; known: {sorted(MODEL_TYPES)}")
    module, model_name, config_name = MODEL_TYPES[model_type]
    mod = importlib.import_module(module)
    return getattr(mod, model_name), getattr(mod, config_name)


def save_pretrained(model, directory, tokenizer_dir=None, extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state, tied, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:  # safetensors refuses shared storage: store once, record the alias
            tied[name] = seen[key]
            continue
        seen[key] = name
        state[name] = t.detach().contiguous().cpu()
    cfg = model.config
    payload = {"model_type": cfg.model_type, **asdict(cfg), "extra": extra or {}, "tied_weights": tied}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt", "model_type": cfg.model_type})
    (directory / CONFIG).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    if tokenizer_dir is not None:
        found = [Path(tokenizer_dir) / f for f in TOKENIZER_FILES if (Path(tokenizer_dir) / f).exists()]
        if not found:
            raise FileNotFoundError(f"no {' or '.join(TOKENIZER_FILES)} in tokenizer_dir {tokenizer_dir}")
        for f in found:
            if f.resolve() != (directory / f.name).resolve():
                shutil.copyfile(f, directory / f.name)
    return directory


def read_config(directory) -> dict:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a model dir")
    payload = json.loads(path.read_text())
    if "model_type" not in payload:
        raise ValueError(f"{path}: no 'model_type'")
    return payload


def load_pretrained(directory, device="cpu"):
    """Rebuild the model named by config.json and load its weights, validating every name and shape."""
    directory = Path(directory)
    payload = read_config(directory)
    model_cls, config_cls = _classes(payload["model_type"])
    fields_ = {k: v for k, v in payload.items() if k not in RESERVED}
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise ValueError(f"{directory / CONFIG}: unknown {config_cls.__name__} fields {unknown}")
    model = model_cls(config_cls(**fields_))  # the config validates itself
    expected = model.state_dict()
    weights = directory / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found")
    state = {}
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        for k in f.keys():
            state[k] = f.get_tensor(k)
    for alias, source in payload.get("tied_weights", {}).items():
        if source not in state:
            raise ValueError(f"{directory / CONFIG}: tied weight {alias!r} points at missing {source!r}")
        state[alias] = state[source]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
           for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{weights} does not match {directory / CONFIG}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatches {bad[:5]}")
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:  # keep the saved precision (bit-exact round trip of bf16 weights)
        model.to(dtypes.pop())
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
