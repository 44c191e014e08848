"""The training step, schedule, evaluation and checkpoint state, shared by every model kind. No Ray here.

`pipelines/train_job.py` runs these inside Ray Train workers; the tests run them in-process. Checkpoint
state is safetensors (model and optimiser tensors) plus JSON (step, data position, RNG, schedule):
nothing is pickled, so a checkpoint from an untrusted place cannot run code when loaded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from liaotian.pipelines.collate import Batch, IGNORE_INDEX

# oneDNN (torch's CPU bf16 products) builds a kernel per matrix shape and keeps 1,024 of them. A
# training run's batches vary in length, so its shapes outnumber that cache and kernels were rebuilt
# all along: a tiny-preset bf16 step on LCCC batches took 256 ms here with the default and 226 ms
# with 8,192 (HF's GPT-2 in the same process 378 → 354 ms), peak memory unchanged. oneDNN reads the
# variable when it builds its first kernel, so this must run before any training step; a value the
# user set wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")

KINDS = ("dialog", "mlm", "classifier")
MLM_TYPES = ("fast_mlm", "masked_lm")


# ------------------------------------------------------------------ tokenizer facts the model needs

@dataclass(frozen=True)
class Vocab:
    """What a model needs from the tokenizer of the data dir (never from YAML)."""

    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    special_ids: tuple[int, ...]

    @classmethod
    def from_dir(cls, data_dir: str | Path) -> "Vocab":
        from liaotian.pipelines.tokenizer import CharTokenizer

        tok = CharTokenizer.from_dir(data_dir)
        return cls(tok.vocab_size, tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tuple(sorted(tok.special_ids)))


# ------------------------------------------------------------------ models

def _preset_config(config_cls, model_cfg: dict, **from_tokenizer):
    """`{"preset": name, **overrides}` -> config; tokenizer-derived fields always win over YAML."""
    overrides = {k: v for k, v in model_cfg.items() if k not in ("preset", "type")}
    clash = sorted(set(overrides) & set(from_tokenizer))
    if clash:
        raise ValueError(f"model keys {clash} come from the tokenizer of the data dir; remove them from the config")
    return config_cls.preset(model_cfg.get("preset", "tiny"), **overrides, **from_tokenizer)


def build_model(kind: str, model_cfg: dict, vocab: Vocab, init_from: str | Path | None = None,
                num_classes: int | None = None) -> nn.Module:
    """A fresh (or `init_from`-initialised) model of `kind` sized by `model_cfg` and the tokenizer."""
    if kind == "dialog":
        from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
        from liaotian.models.fast_train import accelerate_training  # equal, faster loss and bf16 attention
        if init_from:
            return accelerate_training(_checked(load_pretrained(init_from), DialogLM, vocab))
        return accelerate_training(DialogLM(_preset_config(DialogLMConfig, model_cfg, vocab_size=vocab.vocab_size,
                                                           pad_id=vocab.pad_id, eos_id=vocab.sep_id)))
    if kind == "mlm":
        mlm_type = model_cfg.get("type", "fast_mlm")
        if mlm_type == "fast_mlm":
            from liaotian.models.fast_mlm import FastMLM as model_cls, FastMLMConfig as config_cls
        elif mlm_type == "masked_lm":
            from liaotian.models.masked_lm import MaskedLM as model_cls, MaskedLMConfig as config_cls
        else:
            raise ValueError(f"train.mlm.model.type: expected one of {MLM_TYPES}, got {mlm_type!r}")
        if init_from:
            return _checked(load_pretrained(init_from), model_cls, vocab)
        return model_cls(_preset_config(config_cls, model_cfg, **_encoder_ids(vocab)))
    if kind == "classifier":
        from liaotian.models.classifier import Classifier, ClassifierConfig
        if not num_classes:
            raise ValueError("the classifier needs num_classes (from the sentiment manifest)")
        head = {k: model_cfg[k] for k in CLASSIFIER_KEYS if k in model_cfg}
        if init_from:  # an mlm model dir: its encoder, a fresh head
            head.pop("encoder", None)
            return _checked(Classifier.from_encoder(init_from, num_classes, **head), Classifier, vocab)
        encoder = head.get("encoder", "fast_mlm")
        encoder_cls = _encoder_config_cls(encoder)
        enc = _preset_config(encoder_cls, {k: v for k, v in model_cfg.items() if k not in CLASSIFIER_KEYS}, **_encoder_ids(vocab))
        return Classifier(ClassifierConfig(**head, encoder_config=dataclasses.asdict(enc), num_classes=num_classes))
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


CLASSIFIER_KEYS = ("encoder", "pooling")  # classifier fields; the other model keys size its encoder


def _encoder_config_cls(name: str):
    if name == "fast_mlm":
        from liaotian.models.fast_mlm import FastMLMConfig
        return FastMLMConfig
    if name == "masked_lm":
        from liaotian.models.masked_lm import MaskedLMConfig
        return MaskedLMConfig
    raise ValueError(f"model.encoder: expected one of {MLM_TYPES}, got {name!r}")


def _encoder_ids(vocab: Vocab) -> dict:
    return dict(vocab_size=vocab.vocab_size, pad_id=vocab.pad_id, cls_id=vocab.cls_id, sep_id=vocab.sep_id, mask_id=vocab.mask_id)


def load_pretrained(model_dir):
    from liaotian.models.checkpoint import load_pretrained as load
    return load(model_dir)


def _checked(model: nn.Module, cls: type, vocab: Vocab) -> nn.Module:
    if not isinstance(model, cls):
        raise ValueError(f"init_from holds a {type(model).__name__}, expected a {cls.__name__}")
    rows = model.token_embedding.num_embeddings
    appended = set(range(rows, vocab.vocab_size)) <= set(vocab.special_ids)  # specials a tokenizer appended to a model's vocab.txt
    if rows > vocab.vocab_size or not appended:
        raise ValueError(f"init_from has a vocabulary of {model.token_embedding.num_embeddings}, the data dir's tokenizer "
                         f"has {vocab.vocab_size}: build the data with that model's vocab.txt")
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


# ------------------------------------------------------------------ optimiser and schedule

def build_optimizer(model: nn.Module, optim, regularizer) -> torch.optim.AdamW:
    """AdamW over the regulariser's groups; weight matrices decay by the regulariser's (+ optim's) decay."""
    groups = regularizer.param_groups(model)
    from liaotian.models.regularizers import regularized_weights
    decay_ids = {id(w) for w in regularized_weights(model)}
    for g in groups:
        if any(id(p) in decay_ids for p in g["params"]):
            g["weight_decay"] = regularizer.weight_decay + optim.weight_decay
    # torch's fused AdamW (one kernel over all tensors) where it runs: for the tiny preset's 53 tensors
    # a step took 4.8 ms here against 21.9 ms for the default per-tensor loop (28.8 ms with foreach).
    params = [p for g in groups for p in g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), fused=fused or None)


def lr_at(step: int, optim, max_steps: int) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up, then cosine/linear/constant
    decay to `min_lr_ratio * lr` at `max_steps`. A pure function of the step, so resuming from a
    checkpoint continues the schedule exactly."""
    peak, floor = optim.lr, optim.lr * optim.min_lr_ratio
    if step < optim.warmup_steps:
        return peak * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return peak
    span = max(1, max_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    if optim.schedule == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------ precision

@dataclass
class Precision:
    """Autocast dtype (None = fp32) and the grad scaler fp16 needs."""

    dtype: torch.dtype | None
    device: torch.device
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def resolve(cls, name: str, device: torch.device) -> "Precision":
        from liaotian.models.precision import resolve_precision

        dtype = resolve_precision(name, device)
        if name == "auto" and dtype is None and device.type == "cuda":
            dtype = torch.float16  # a GPU without bf16: fp16 autocast with loss scaling beats fp32
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(dtype, device, scaler)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


# ------------------------------------------------------------------ step and evaluation

def forward_loss(model: nn.Module, kind: str, batch: Batch, loss_fn=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean loss of the batch, logits for the classifier)."""
    if kind == "dialog":
        out = model(batch["input_ids"], segment_ids=batch["segment_ids"], loss_mask=batch["loss_mask"],
                    attention_mask=batch["attention_mask"])
        return out.loss, None
    if kind == "mlm":
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        return out.loss, None
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"])
    return loss_fn(out.logits.float(), batch["labels"]), out.logits.float()


def loss_positions(kind: str, batch: Batch) -> int:
    """How many targets the batch's mean loss averages over (to weight batches in evaluation)."""
    if kind == "dialog":  # next-token targets: position t+1 with loss_mask 1
        return int(batch["loss_mask"][:, 1:].sum())
    if kind == "mlm":
        return int((batch["labels"] != IGNORE_INDEX).sum())
    return int(batch["labels"].numel())


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_step(model: nn.Module, kind: str, micro_batches: list[Batch], optimizer: torch.optim.Optimizer, *,
               lr: float, precision: Precision, grad_clip: float = 0.0, loss_fn=None, regularizer=None) -> dict:
    """One optimiser step over `micro_batches` (gradient accumulation); returns loss and token counts.

    Under DDP the gradient all-reduce runs only on the last micro-batch (`no_sync` before), which is
    what makes accumulation cheaper than a larger batch.
    """
    for g in optimizer.param_groups:
        g["lr"] = lr
    model.train()
    n = len(micro_batches)
    total, tokens = 0.0, 0
    for i, batch in enumerate(micro_batches):
        batch = to_device(batch, precision.device)
        sync = i == n - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():  # backward too: it all-reduces
            with precision.autocast():
                loss, _ = forward_loss(model, kind, batch, loss_fn)
                if regularizer is not None and regularizer.name != "none":
                    loss = loss + regularizer.penalty(unwrap(model))
            scaled = loss / n
            (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
        total += float(loss.detach()) / n
        tokens += int(batch["attention_mask"].sum())
    if precision.scaler:
        precision.scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    if precision.scaler:
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": total, "tokens": tokens, "grad_norm": float(grad_norm)}


@torch.no_grad()
def evaluate_sums(model: nn.Module, kind: str, batches: Iterable[Batch], precision: Precision,
                  loss_fn=None, num_classes: int = 0) -> torch.Tensor:
    """Additive statistics (so ranks can all-reduce them): [loss·n, n, confusion matrix flattened]."""
    model.eval()
    sums = torch.zeros(2 + num_classes * num_classes, dtype=torch.float64)
    for batch in batches:
        batch = to_device(batch, precision.device)
        with precision.autocast():
            loss, logits = forward_loss(model, kind, batch, loss_fn)
        n = loss_positions(kind, batch)
        sums[0] += float(loss) * n
        sums[1] += n
        if kind == "classifier":
            pred = loss_fn.predict_logits(logits).argmax(-1).cpu()
            flat = batch["labels"].cpu() * num_classes + pred
            sums[2:] += torch.bincount(flat, minlength=num_classes * num_classes).double()
    model.train()
    return sums


def metrics_from_sums(kind: str, sums: torch.Tensor, num_classes: int = 0, minority: int | None = None) -> dict:
    """val_loss and val_ppl (dialog, mlm); val_loss, accuracy, balanced accuracy, macro F1 and
    minority recall (classifier; `minority` = the class with the fewest training examples)."""
    loss = float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")
    if kind != "classifier":
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}
    cm = sums[2:].view(num_classes, num_classes).numpy()  # rows: true class, columns: predicted
    support, predicted, correct = cm.sum(1), cm.sum(0), np.diag(cm)
    present = support > 0
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(correct), where=(precision + recall) > 0)
    minority = int(np.argmin(np.where(present, support, np.inf))) if minority is None else minority
    return {
        "val_loss": loss,
        "val_accuracy": float(correct.sum() / max(1.0, cm.sum())),
        "val_balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "val_macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "val_minority_recall": float(recall[minority]),
    }


def evaluate(model: nn.Module, kind: str, batches: Iterable[Batch], precision: Precision | None = None,
             loss_fn=None, num_classes: int = 0, minority: int | None = None) -> dict:
    """Validation metrics of `model` on `batches` in this process (see `metrics_from_sums`)."""
    precision = precision or Precision(None, torch.device("cpu"))
    return metrics_from_sums(kind, evaluate_sums(model, kind, batches, precision, loss_fn, num_classes), num_classes, minority)


# ------------------------------------------------------------------ checkpoint state

MODEL_FILE, OPTIM_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "state.json"


def save_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
               scaler: torch.amp.GradScaler | None = None) -> None:
    """Write model + optimiser tensors (safetensors) and `state` (JSON: step, data position, RNG ...)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(unwrap(model), str(directory / MODEL_FILE))  # handles tied weights
    opt = optimizer.state_dict()
    tensors = {f"{idx}.{name}": v.detach().contiguous().cpu() for idx, s in opt["state"].items()
               for name, v in s.items() if torch.is_tensor(v)}
    save_file(tensors, str(directory / OPTIM_FILE))
    meta = {**state, "param_groups": opt["param_groups"], "scaler": scaler.state_dict() if scaler else None}
    (directory / STATE_FILE).write_text(json.dumps(meta, indent=1, default=_jsonable), encoding="utf-8")


def _jsonable(value: Any):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON-serialisable in checkpoint state: {type(value).__name__}")


def load_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
               scaler: torch.amp.GradScaler | None = None) -> dict:
    """Restore what `save_state` wrote into `model` (and `optimizer`, RNG); returns the JSON state."""
    directory = Path(directory)
    load_model(unwrap(model), str(directory / MODEL_FILE), device=str(next(model.parameters()).device))
    meta = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    if optimizer is not None:
        tensors = load_file(str(directory / OPTIM_FILE))
        per_param: dict[int, dict] = {}
        for key, value in tensors.items():
            idx, name = key.split(".", 1)
            per_param.setdefault(int(idx), {})[name] = value
        groups = meta["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return meta


class EarlyStopping:
    """Patience on a validation metric: `update` after each evaluation, stop when `should_stop`.

    A pure function of the evaluations it has seen; `state()` goes into each checkpoint so that a
    resumed run keeps counting where it was. Every rank sees the same (all-reduced) metric, so every
    rank stops at the same step (Ray Train's report is a barrier)."""

    def __init__(self, patience: int, mode: str = "min", min_delta: float = 0.0, state: dict | None = None):
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        state = state or {}
        self.best, self.best_step, self.bad_evals = state.get("best"), state.get("best_step", 0), state.get("bad_evals", 0)

    @property
    def enabled(self) -> bool:
        return self.patience > 0

    def update(self, value: float | None, step: int) -> bool:
        """Record one evaluation; True when it is the best so far."""
        if value is None or value != value:  # a metric this job does not compute, or NaN: never an improvement
            self.bad_evals += 1
            return False
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta)
        if better:
            self.best, self.best_step, self.bad_evals = float(value), step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.bad_evals >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}


class LocalCheckpoints:
    """Checkpoints of a local-mode run (`num_workers: 0`, where Ray Train keeps none): the same
    `<run>/checkpoint_<step>` layout, the best `keep_checkpoints` by the configured metric plus the latest."""

    def __init__(self, run_path: str | Path, job):
        self.run_path, self.job = Path(run_path), job

    def _all(self) -> list[tuple[Path, dict]]:
        out = []
        for d in sorted(self.run_path.glob("checkpoint_*")):
            if (d / STATE_FILE).exists():
                out.append((d, json.loads((d / STATE_FILE).read_text(encoding="utf-8")).get("metrics", {})))
        return out

    def _score(self, metrics: dict) -> tuple:
        value = metrics.get(self.job.checkpoint_metric, float("nan"))
        value = -math.inf if value != value else (value if self.job.checkpoint_mode == "max" else -value)
        return value, metrics.get("step", 0)

    def add(self, directory: str | Path, metrics: dict) -> Path:
        target = self.run_path / f"checkpoint_{metrics['step']:07d}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(directory, tmp)
        tmp.rename(target)  # a crash never leaves a half-written checkpoint under the real name
        ranked = sorted(self._all(), key=lambda cm: self._score(cm[1]), reverse=True)
        latest = max(ranked, key=lambda cm: cm[1].get("step", 0))[0]
        for d, _ in ranked[self.job.keep_checkpoints:]:
            if d != latest:
                shutil.rmtree(d)
        return target

    def latest(self) -> Path | None:
        found = self._all()
        return max(found, key=lambda cm: cm[1].get("step", 0))[0] if found else None

    def best(self) -> tuple[Path, dict]:
        found = self._all()
        if not found:
            raise RuntimeError(f"training finished without a checkpoint under {self.run_path}")
        return max(found, key=lambda cm: self._score(cm[1]))
