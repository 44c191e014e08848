"""`liaotian train dialog|mlm|classifier`: pretrain on the Parquet shards with Ray Train (TorchTrainer, Train V2).

The driver reads the shards with Ray Data, checks the resource request against the cluster, fits, then
exports the best checkpoint as a model dir. Workers run `worker_loop`; everything they compute lives in
the Ray-free `pipelines.train_loop`. Only `cfg.train.<kind>.scaling` differs between a laptop and a GPU
cluster. Progress travels from rank 0 to the driver through a Ray queue, so it is printed (and written
to TensorBoard) by the driver even when worker logs are not forwarded, e.g. under `ray job submit`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from liaotian.config import ConfigError, from_dict, to_dict
from liaotian.pipelines import train_loop as T
from liaotian.pipelines.collate import MLMMasker, bucketed, make_collate
from liaotian.pipelines.config import TrainJobConfig

DATA_KIND = {"dialog": "dialog", "mlm": "text", "classifier": "sentiment"}
COLUMNS = {"dialog": ["input_ids", "segment_ids", "loss_mask"], "mlm": ["input_ids"], "classifier": ["input_ids", "label"]}
FAULT_ENV = ("LIAOTIAN_FAULT_AT_STEP", "LIAOTIAN_FAULT_MARKER")  # tests: crash one worker once at this step


@dataclass
class TrainResult:
    model_dir: str  # the exported best model (save_pretrained)
    metrics: dict  # validation metrics of that model (the best checkpoint's report)
    test_metrics: dict | None  # classifier only: the exported model on the test split
    steps: int  # optimiser steps completed
    checkpoint_path: str | None  # the best checkpoint
    run_path: str | None = None  # <storage>/<name>: checkpoints, metrics.jsonl, tensorboard/
    stopped_early: bool = False  # early stopping ended the run at `steps` (< max_steps)


# ------------------------------------------------------------------ worker side

def worker_loop(config: dict) -> dict:
    """One Ray Train worker: build, maybe restore, step, evaluate, report, checkpoint."""
    import ray.train
    from ray.train.torch import get_device, prepare_model

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    kind, job, vocab = config["kind"], from_dict(TrainJobConfig, config["job"]), T.Vocab(**config["vocab"])
    device = get_device()
    torch.manual_seed(config["seed"])  # identical init on every rank (DDP broadcasts rank 0's anyway)
    model = T.build_model(kind, job.model, vocab, config["init_from"], config.get("num_classes"))
    # The classifier leaves its encoder's MLM head unused: DDP must be told, or backward fails.
    model = prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": kind == "classifier"}) if world > 1 else model.to(device)
    regularizer = _regularizer(job)
    optimizer = T.build_optimizer(T.unwrap(model), job.optim, regularizer)
    precision = T.Precision.resolve(config["precision"], device)
    loss_fn = _loss(job, config) if kind == "classifier" else None
    store = T.LocalCheckpoints(config["local_store"], job) if config["local_store"] else None

    meta = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    checkpoint = store.latest() if store else ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() if hasattr(checkpoint, "as_directory") else contextlib.nullcontext(checkpoint) as d:
            meta = T.load_state(d, model, optimizer, precision.scaler)
    start = meta["step"]
    torch.manual_seed(config["seed"] * 1_000_003 + rank * 10_007 + start)  # dropout: distinct per rank, replayable

    masker = _masker(kind, job, vocab, config["seed"] * 7919 + rank + start)
    collate = _in_model_format(make_collate(kind, vocab.pad_id, masker), kind, model, vocab)
    eval_batches = _eval_batches(ray.train.get_dataset_shard("valid"), kind, job, vocab, rank, max(1, world), model)
    data = _train_batches(ray.train.get_dataset_shard("train"), collate, job, config["seed"], rank, meta)

    nodes = _node_count()
    progress = config["progress"]
    fault_step, fault_marker = config["fault"]
    window = {"loss": 0.0, "n": 0, "tokens": 0, "wait": 0.0, "eval": 0.0, "t0": time.perf_counter()}
    val: dict = {}
    stopper = T.EarlyStopping(job.early_stopping.patience, job.checkpoint_mode, job.early_stopping.min_delta, meta.get("early_stopping"))
    done = start
    for step in range(start + 1, job.max_steps + 1):
        if fault_step == step and rank == max(1, world) - 1 and not os.path.exists(fault_marker):
            Path(fault_marker).write_text(str(step))
            os._exit(1)  # a dying worker process, not an exception: what FailureConfig recovers from
        t = time.perf_counter()
        micro = [next(data) for _ in range(job.optim.grad_accum)]
        window["wait"] += time.perf_counter() - t
        lr = T.lr_at(step - 1, job.optim, job.max_steps)
        out = T.train_step(model, kind, [b for _, _, b in micro], optimizer, lr=lr, precision=precision,
                           grad_clip=job.optim.grad_clip, loss_fn=loss_fn, regularizer=regularizer)
        window["loss"] += out["loss"]; window["n"] += 1; window["tokens"] += out["tokens"]
        epoch, batch_in_epoch = micro[-1][0], micro[-1][1]
        last = step == job.max_steps
        ckpt = step % job.checkpoint_every == 0 or last
        if step % job.eval_every == 0 or ckpt:  # a checkpoint is scored by its own validation
            t = time.perf_counter()
            sums = _all_reduce(T.evaluate_sums(model, kind, eval_batches, precision, loss_fn, config.get("num_classes") or 0), device)
            val = {**T.metrics_from_sums(kind, sums, config.get("num_classes") or 0, config.get("minority")), "val_step": step}
            window["eval"] += time.perf_counter() - t  # kept out of tokens/s: it measures training
            if stopper.update(val.get(job.checkpoint_metric), step) and stopper.enabled:
                ckpt = True  # the run may stop before the next checkpoint: the best evaluation keeps its own
        stop = stopper.should_stop  # only ever set on an evaluation step, which reports below
        if not (ckpt or step % job.eval_every == 0 or step % job.log_every == 0):
            continue
        stats = _all_reduce(torch.tensor([window["loss"], window["n"], window["tokens"], window["wait"]], dtype=torch.float64), device)
        elapsed = time.perf_counter() - window["t0"] - window["eval"]
        metrics = {"step": step, "train_loss": float(stats[0] / stats[1]), "lr": lr, "epoch": epoch,
                   "tokens_per_s": float(stats[2]) / elapsed, "data_wait_share": float(stats[3]) / max(1, world) / elapsed,
                   "start_step": start, "nodes": nodes, **val}
        if stopper.enabled:
            metrics.update(best_step=stopper.best_step, stopped_early=int(stop))
        state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "lr": lr, "early_stopping": stopper.state(),
                 "schedule": {"name": job.optim.schedule, "max_steps": job.max_steps, "warmup_steps": job.optim.warmup_steps},
                 "metrics": metrics}
        _report(metrics, model, optimizer, precision, state, ckpt and rank == 0, store, progress, rank)
        window.update(loss=0.0, n=0, tokens=0, wait=0.0, eval=0.0, t0=time.perf_counter())
        done = step
        if stop:
            break
    return {"steps": done, "metrics": val, "stopped_early": stopper.should_stop, "best_step": stopper.best_step}


def _regularizer(job):
    from liaotian.models.regularizers import build_regularizer
    return build_regularizer(job.regularizer.name, job.regularizer.strength)


def _loss(job, config):
    from liaotian.models.losses import build_loss
    return build_loss(job.loss.name, class_counts=config.get("class_counts"), gamma=job.loss.gamma, alpha=job.loss.alpha, tau=job.loss.tau)


def _masker(kind, job, vocab, seed):
    if kind == "mlm" and job.model.get("type", "fast_mlm") == "masked_lm":
        return MLMMasker(vocab.mask_id, vocab.vocab_size, vocab.special_ids, seed=seed, prob=job.model.get("mask_prob", 0.15))
    return None


def _train_batches(shard, collate, job, seed, rank, meta):
    """Endless (epoch, batch_in_epoch, batch): shuffled per epoch, bucketed, skipping what a resumed run did."""
    epoch, skip = meta["epoch"], meta["batch_in_epoch"]
    window_rows = job.batch_size * job.bucket_window
    while True:
        rng = np.random.default_rng([seed, epoch, rank])
        windows = shard.iter_batches(batch_size=window_rows, batch_format="numpy", prefetch_batches=1,
                                     local_shuffle_buffer_size=window_rows, local_shuffle_seed=seed * 1000 + epoch)
        for i, rows in enumerate(bucketed(windows, job.batch_size, rng, job.bucket_by_length), 1):
            if i > skip:
                yield epoch, i, collate(rows)
        epoch, skip = epoch + 1, 0


def _in_model_format(collate, kind, model, vocab):
    """Shards hold liaotian's layout; a dialogue model that reads another one (an imported CDial-GPT:
    `DialogLMConfig.input_format`) is fed rows converted by `pipelines.dialogue.to_input_format`."""
    config = T.unwrap(model).config
    if kind != "dialog" or config.input_format == "liaotian":
        return collate
    from types import SimpleNamespace

    from liaotian.pipelines.dialogue import to_input_format

    # the speaker and [CLS] ids are the model's segment tokens (pipelines.dialogue.cdial_segment_tokens)
    tok = SimpleNamespace(cls_id=vocab.cls_id, sep_id=vocab.sep_id, speaker_ids=tuple(config.segment_tokens[:2]))
    columns = ("input_ids", "segment_ids", "loss_mask")

    def converted(rows):
        out = [to_input_format(*(list(rows[c][i]) for c in columns), tok, config.input_format) for i in range(len(rows["input_ids"]))]
        return collate({c: [r[j] for r in out] for j, c in enumerate(columns)})

    return converted


def _eval_batches(shard, kind, job, vocab, rank, world, model):
    """This rank's share of the fixed validation batches (masked once, so val_loss is comparable)."""
    collate = _in_model_format(make_collate(kind, vocab.pad_id, _masker(kind, job, vocab, seed=12345)), kind, model, vocab)
    out = []
    for i, rows in enumerate(shard.iter_batches(batch_size=job.batch_size, batch_format="numpy")):
        if i >= job.eval_batches * world:
            break
        if i % world == rank:
            out.append(collate(rows))
    return out


def _node_count() -> int:
    """How many distinct Ray nodes this run's workers occupy (shown so placement is visible)."""
    import ray
    import torch.distributed as dist
    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return len(set(nodes))


def _all_reduce(t: torch.Tensor, device) -> torch.Tensor:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        moved = t.to(device)
        dist.all_reduce(moved)
        return moved.cpu()
    return t


def _report(metrics, model, optimizer, precision, state, write, store, progress, rank):
    """Every rank reports (it is a barrier); rank 0 alone writes the checkpoint."""
    import ray.train
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if write:
            T.save_state(d, model, optimizer, state, precision.scaler)
            if store is not None:  # local mode: Ray keeps no checkpoints, this store does
                store.add(d, metrics)
            else:
                checkpoint = ray.train.Checkpoint.from_directory(d)
        if rank == 0 and progress is not None:
            progress.put_nowait(metrics)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{state['step']:07d}" if checkpoint else None)


# ------------------------------------------------------------------ driver side

def run(kind: str, cfg, job: TrainJobConfig | None = None, *, data_dir=None, init_from=None, storage_path=None,
        name: str | None = None, export_dir=None, callbacks=(), resume: bool = False) -> TrainResult:
    """Train `kind` on the shards of `data_dir` (default: the run's data dir) and export the best model."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    if kind not in DATA_KIND:
        raise ConfigError(f"unknown model kind {kind!r}; expected one of {sorted(DATA_KIND)}")
    job = job or getattr(cfg.train, kind)
    data_dir = _check_data_dir(Path(data_dir or cfg.paths.data(DATA_KIND[kind])).resolve(), kind)
    init_from = init_from or job.init_from
    storage = Path(storage_path or cfg.paths.train(kind)).resolve()
    name = _run_name(kind, storage, name, resume)
    scaling = _scaling_config(job.scaling, ScalingConfig)
    local = job.scaling.num_workers == 0
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8")) if (data_dir / "manifest.json").exists() else {}
    progress = Queue(actor_options={"num_cpus": 0})
    config = {
        "kind": kind, "job": to_dict(job), "seed": cfg.seed, "precision": cfg.precision,
        "vocab": to_dict(T.Vocab.from_dir(data_dir)), "init_from": str(init_from) if init_from else None,
        "local_store": str(storage / name) if local else None, "progress": progress,
        "fault": (int(os.environ.get(FAULT_ENV[0], "0")), os.environ.get(FAULT_ENV[1], "")),
        **_class_info(kind, manifest),
    }
    valid_rows = job.eval_batches * job.batch_size * max(1, job.scaling.num_workers)
    trainer = TorchTrainer(
        worker_loop, train_loop_config=config, scaling_config=scaling,
        datasets={"train": _dataset(data_dir / "train", COLUMNS[kind]), "valid": _dataset(data_dir / "valid", COLUMNS[kind], valid_rows)},
        dataset_config=DataConfig(datasets_to_split=["train"]),  # every rank sees the same validation rows
        run_config=RunConfig(
            name=name, storage_path=str(storage), callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(num_to_keep=job.keep_checkpoints, checkpoint_score_attribute=job.checkpoint_metric,
                                               checkpoint_score_order=job.checkpoint_mode),
            failure_config=FailureConfig(max_failures=job.max_failures)))
    printer = _Progress(progress, kind, job.max_steps, storage / name, job.checkpoint_metric, job.early_stopping.patience)
    try:
        result = trainer.fit()
    finally:
        printer.close()
        ray.kill(progress.actor)
    checkpoint, metrics = _best(result, job, storage / name if local else None)
    model_dir = _export(kind, config, checkpoint, data_dir, Path(export_dir or cfg.paths.model(kind)), job, manifest)
    test = _test_metrics(kind, model_dir, data_dir, job, config) if kind == "classifier" else None
    if test:  # stored beside the weights, so that whoever shows the model's explanations can state them
        _add_to_extra(model_dir, test_metrics=test)
    returned = getattr(result, "return_value", None) or {}
    steps = int(returned.get("steps") or (result.metrics or {}).get("step", metrics.get("step", 0)))
    return TrainResult(str(model_dir), metrics, test, steps, str(checkpoint), str(storage / name), bool(returned.get("stopped_early")))


def _dataset(split_dir: Path, columns: list[str], limit: int | None = None):
    """A split as a Ray Dataset. Small splits are read here into the object store once (every epoch
    then iterates memory; a streaming read costs Ray tasks and seconds per epoch); large ones stream
    from Parquet in a new block order each epoch."""
    import pyarrow.parquet as pq
    import ray
    size = sum(f.stat().st_size for f in split_dir.glob("*.parquet"))
    if size * 8 < ray.available_resources().get("object_store_memory", 0) * 0.25:  # Arrow in memory ~ a few x Parquet
        table = pq.read_table(split_dir, columns=columns)
        if limit and limit < table.num_rows:
            # evenly spaced rows, not the first `limit`: a split's rows can come grouped (the sentiment job
            # writes each input file's rows together, and a prefix of its valid split held one class only)
            table = table.take(np.linspace(0, table.num_rows - 1, limit).round().astype(np.int64))
        return ray.data.from_arrow(table)
    ds = ray.data.read_parquet(str(split_dir), columns=columns)
    return ds.randomize_block_order(seed=0).limit(limit) if limit else ds.randomize_block_order()


def _check_data_dir(data_dir: Path, kind: str) -> Path:
    for part in ("train", "valid", "vocab.txt"):
        if not (data_dir / part).exists():
            raise ConfigError(f"{data_dir}: no {part} — run `liaotian data {DATA_KIND[kind]}` first or pass --data DIR")
    return data_dir


def _run_name(kind: str, storage: Path, name: str | None, resume: bool) -> str:
    """Fresh runs get a new name (Ray Train resumes silently from a same-named run); --resume the newest."""
    if resume:
        if name:
            if not (storage / name).is_dir():
                raise ConfigError(f"--resume: no run {storage / name} to resume")
            return name
        runs = sorted((p for p in storage.glob("*") if any(p.glob("checkpoint_*"))), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise ConfigError(f"--resume: no {kind} run with a checkpoint under {storage}")
        return runs[-1].name
    if name:
        if (storage / name).exists():
            raise ConfigError(f"{storage / name} exists: pass --resume to continue it, or choose another name")
        return name
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _scaling_config(s, ScalingConfig):
    """ScalingConfig from config, failing fast when the cluster cannot ever place the workers."""
    import ray
    per_worker = {"CPU": s.cpus_per_worker, **({"GPU": s.gpus_per_worker} if s.use_gpu else {}), **s.resources_per_worker}
    if s.num_workers > 0:
        total = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        for res, amount in per_worker.items():
            need = amount * s.num_workers + (1 if res == "CPU" else 0)  # Ray Data needs a spare CPU
            if total.get(res, 0) < need:
                raise ConfigError(f"scaling: {s.num_workers} workers x {amount} {res} (+1 CPU for Ray Data) need {need:g} {res}, "
                                  f"the cluster has {total.get(res, 0):g}; lower num_workers/cpus_per_worker or add nodes")
            if not any(n.get(res, 0) >= amount for n in nodes):
                raise ConfigError(f"scaling: no node has {amount:g} {res} for one worker")
    return ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, placement_strategy=s.placement_strategy,
                         resources_per_worker=per_worker if s.num_workers > 0 else None)


def _class_info(kind: str, manifest: dict) -> dict:
    if kind != "classifier":
        return {}
    if "num_classes" not in manifest:
        raise ConfigError("the sentiment data dir's manifest.json has no num_classes: rebuild it with `liaotian data sentiment`")
    counts = manifest.get("class_counts", {}).get("train")
    return {"num_classes": int(manifest["num_classes"]), "class_counts": counts,
            "minority": int(np.argmin(counts)) if counts else None, "label_names": manifest.get("label_names")}


def _best(result, job, local_run: Path | None):
    """(checkpoint dir, its metrics): the best retained checkpoint by the configured metric."""
    if local_run is not None:
        return T.LocalCheckpoints(local_run, job).best()
    candidates = result.best_checkpoints or ([(result.checkpoint, result.metrics or {})] if result.checkpoint else [])
    if not candidates:
        raise RuntimeError(f"training finished without a checkpoint under {result.path}")
    sign = 1 if job.checkpoint_mode == "max" else -1
    checkpoint, metrics = max(candidates, key=lambda cm: (sign * float(cm[1].get(job.checkpoint_metric, float("nan"))), cm[1].get("step", 0)))
    return checkpoint.path, metrics


def _export(kind, config, checkpoint_dir, data_dir: Path, export_dir: Path, job, manifest) -> Path:
    from liaotian.models.checkpoint import save_pretrained
    model = T.build_model(kind, job.model, T.Vocab(**config["vocab"]), config["init_from"], config.get("num_classes"))
    T.load_state(checkpoint_dir, model)
    extra = {"train": {"kind": kind, "loss": to_dict(job.loss), "regularizer": to_dict(job.regularizer)}}
    if kind == "classifier":
        extra.update(label_names=config.get("label_names"), class_counts=config.get("class_counts"))
    if export_dir.exists():
        shutil.rmtree(export_dir)  # a model dir is replaced whole, never mixed with an older export
    save_pretrained(model, export_dir, tokenizer_dir=data_dir, extra=extra)
    return export_dir


def _add_to_extra(model_dir: Path, **fields) -> None:
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.setdefault("extra", {}).update(fields)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _test_metrics(kind, model_dir: Path, data_dir: Path, job, config) -> dict | None:
    """The exported classifier on the test split, in the driver (test sets are small)."""
    from liaotian.models.checkpoint import load_pretrained
    if not (data_dir / "test").exists():
        return None
    model, collate = load_pretrained(model_dir), make_collate(kind, config["vocab"]["pad_id"])
    batches = (collate(rows) for rows in _dataset(data_dir / "test", COLUMNS[kind])
               .iter_batches(batch_size=job.batch_size, batch_format="numpy"))
    val = T.evaluate(model, kind, batches, None, _loss(job, config), config["num_classes"], config.get("minority"))
    return {k.replace("val_", "test_"): v for k, v in val.items()}


class _Progress:
    """Driver thread: rank 0's metrics -> a progress line, metrics.jsonl and TensorBoard."""

    def __init__(self, queue, kind: str, max_steps: int, run_path: Path, metric: str = "val_loss", patience: int = 0):
        self.queue, self.kind, self.max_steps, self.run_path = queue, kind, max_steps, run_path
        self.metric, self.patience = metric, patience
        self.stop, self.t0, self.first = threading.Event(), time.time(), None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        from torch.utils.tensorboard import SummaryWriter
        self.run_path.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(self.run_path / "tensorboard"))
        with open(self.run_path / "metrics.jsonl", "a", encoding="utf-8") as log:
            while not (self.stop.is_set() and self.queue.empty()):
                try:
                    m = self.queue.get(timeout=0.5)
                except Exception:  # queue.Empty, or the queue actor already gone
                    continue
                log.write(json.dumps(m) + "\n"); log.flush()
                fresh = m.get("val_step") == m["step"]  # reports carry the last validation (Tune needs it in each)
                for k, v in m.items():
                    if k not in ("step", "val_step") and isinstance(v, (int, float)) and (fresh or not k.startswith("val_")):
                        writer.add_scalar(f"{self.kind}/{k}", v, m["step"])
                print(self._line(m), flush=True)
                if m.get("stopped_early"):
                    print(f"[train {self.kind}] early stop at step {m['step']}: no better {self.metric} for {self.patience} "
                          f"evaluations; the best, step {m['best_step']}, is exported", flush=True)
        writer.close()

    def _line(self, m: dict) -> str:
        # The rate counts from the first report, not from the start: worker start-up is not a step.
        now = time.time()
        if self.first is None:
            self.first = (m["step"], now)
        done, seconds = m["step"] - self.first[0], now - self.first[1]
        eta = ""
        if done > 0 and seconds > 0:
            left = (self.max_steps - m["step"]) * seconds / done
            # with early stopping, max_steps is a bound: the run may end sooner
            eta = f" {'at most ' if self.patience else ''}{left:.0f}s left"
        val = "".join(f" {k} {m[k]:.4g}" for k in ("val_loss", "val_balanced_accuracy") if k in m and m.get("val_step") == m["step"])
        return (f"[train {self.kind}] step {m['step']}/{self.max_steps} loss {m['train_loss']:.4f}{val} lr {m['lr']:.2e} "
                f"tok/s {m['tokens_per_s']:.0f} data-wait {100 * m['data_wait_share']:.0f}%{eta}")

    def close(self):
        self.stop.set()
        self.thread.join(timeout=10)


# ------------------------------------------------------------------ CLI

def add_cli(parser: argparse.ArgumentParser) -> None:
    from liaotian.cli import add_common_arguments
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    for kind, help_text in (("dialog", "the dialogue LM"), ("mlm", "the fast MLM (or BERT MLM: model.type=masked_lm)"),
                            ("classifier", "the sentiment classifier (optionally from an mlm model dir)")):
        p = sub.add_parser(kind, help=f"train {help_text}")
        add_common_arguments(p)
        p.add_argument("--resume", action="store_true", help="continue the newest run of this kind from its last checkpoint")
        p.add_argument("--data", metavar="DIR", help="preprocessed data dir (default: <run_dir>/data/<kind's data>)")
        p.add_argument("--init-from", metavar="MODEL_DIR", help="start from this model dir (classifier: an mlm model dir)")
        p.add_argument("--name", help="run name under <run_dir>/train/<kind> (default: <kind>-<timestamp>)")
        p.set_defaults(run=cli_main)


def cli_main(args: argparse.Namespace) -> int:
    from liaotian.cli import load_config_from_args
    from liaotian.cluster import connect
    cfg = load_config_from_args(args)
    connect(cfg.ray)
    res = run(args.kind, cfg, data_dir=args.data, init_from=args.init_from, name=args.name, resume=args.resume)
    stop = f" (stopped early; max_steps {getattr(cfg.train, args.kind).max_steps})" if res.stopped_early else ""
    print(f"[train {args.kind}] {res.steps} steps{stop}; best at step {res.metrics.get('step')}: {json.dumps({k: round(v, 4) for k, v in res.metrics.items() if k.startswith('val_')})}")
    if res.test_metrics:
        print(f"[train {args.kind}] test {json.dumps({k: round(v, 4) for k, v in res.test_metrics.items()})}")
    print(f"[train {args.kind}] model dir: {res.model_dir}  (run: {res.run_path})")
    return 0
