"""`liaotian tune`: Ray Tune over losses x regularisers x lr x seeds for the sentiment classifier.

One trial = one `pipelines.train_job.run("classifier", ...)` - the same training code as `liaotian train
classifier` - with the trial's overrides applied to a copy of `cfg.train.classifier`. Ray 2.60 no longer
accepts a Trainer as a Tune trainable, so the trial is a function that builds and
fits the TorchTrainer itself and forwards rank 0's reports to Tune with `TuneReportCallback`; ASHA then
stops weak trials on `val_balanced_accuracy`. After training the trial reports the test metrics once.

Outputs under `cfg.paths.tune / name`: the Tune experiment (one directory per trial holding its Train
storage, exported model, `final.json` and `attempts.log`) and `report/` (`results.md`, `results.png`,
`trials.json|csv`, `summary.csv`; `python -m tune.report DIR` rebuilds them from trials.json); the
best configuration's model is copied to `cfg.paths.model("sentiment")`, which the attribution service
loads.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liaotian.config import ConfigError, from_dict, run_config_cls, to_dict
from liaotian.tune import report as report_mod
from liaotian.tune.space import expand, job_for

METRIC, MODE = "val_balanced_accuracy", "max"
DONE_KEY = "trial_done"  # set only in the report that follows a finished training run
ATTEMPTS_FILE = "attempts.log"  # one line per start of the trial function: shows what a resume re-ran


@dataclass
class SweepResult:
    records: list[dict[str, Any]]
    best: dict[str, Any] | None  # the exported trial's record
    model_dir: Path | None  # cfg.paths.model("sentiment") when a model was exported
    report_paths: dict[str, Path]
    experiment_dir: Path
    wall_s: float
    interrupted: bool = False  # some trials never finished: run again with resume=True
    counts: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------ the trial (runs in a Tune actor)

def _test_metrics(test: dict[str, Any] | None) -> dict[str, float]:
    """Train names test metrics like validation ones (val_*), or bare, or test_*: report test_*."""
    out = {}
    for k, v in (test or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            base = k.removeprefix("val_").removeprefix("test_")
            out[f"test_{base}"] = float(v)
    return out


def _trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback  # rank 0's reports -> this trial

    from liaotian.pipelines.train_job import run as train_run

    spec = config["spec"]
    # The trial's directory in the experiment's storage, not Tune's per-session staging copy
    # (get_trial_dir() under /tmp/ray/session_*): Train checkpoints and the model must outlive the
    # session so that a resumed sweep continues a trial's Train run. Train on several nodes needs a
    # shared storage_path anyway.
    trial_dir = Path(ctx["exp_dir"]) / _dirname(spec)
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / ATTEMPTS_FILE, "a", encoding="utf-8") as f:
        f.write(f"{time.time():.3f}\n")
    data = copy.deepcopy(ctx["cfg"])
    data["seed"] = spec["seed"]
    cfg = from_dict(run_config_cls(), data)
    job = job_for(cfg.train.classifier, {**spec["overrides"], "scaling.num_workers": ctx["trial_workers"]})
    t0 = time.time()
    # A retried or resumed trial continues its own Train run (same name and storage) from its last
    # checkpoint instead of starting over.
    resume = (trial_dir / "train" / "train").is_dir()
    res = train_run("classifier", cfg, job=job, data_dir=ctx["data_dir"], init_from=ctx["init_from"],
                    storage_path=str(trial_dir / "train"), name="train", export_dir=str(trial_dir / "model"),
                    callbacks=[TuneReportCallback()], resume=resume)
    final = {k: float(v) for k, v in (res.metrics or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k.startswith(("val_", "train_"))}
    final.update(_test_metrics(res.test_metrics))
    final.update({"step": int(res.steps), DONE_KEY: 1, "train_wall_s": time.time() - t0})
    summary = {**final, "model_dir": str(res.model_dir), "checkpoint_path": str(res.checkpoint_path or "")}
    (trial_dir / "final.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    tune.report(final)


# ------------------------------------------------------------------ the driver

def _resolve_inputs(cfg) -> tuple[Path, Path | None]:
    data_dir = cfg.paths.data("sentiment").resolve()
    if not (data_dir / "manifest.json").is_file():
        raise ConfigError(f"no sentiment shards at {data_dir}: run `liaotian data sentiment --imbalance R` first")
    init = cfg.tune.init_from or cfg.train.classifier.init_from
    if init is None and (cfg.paths.model("mlm") / "config.json").is_file():
        init = cfg.paths.model("mlm")  # the fast-MLM encoder of this run, when it was trained
    if init is not None and not (Path(init) / "config.json").is_file():
        raise ConfigError(f"tune.init_from: {init} is not a model directory (no config.json)")
    return data_dir, (Path(init).resolve() if init else None)


def _build_tuner(cfg, exp_dir: Path, trainable, callbacks):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from liaotian.tune.space import param_space

    tc = cfg.tune
    max_steps = tc.max_steps or cfg.train.classifier.max_steps
    eval_every = tc.eval_every or cfg.train.classifier.eval_every
    scheduler = None
    if tc.asha:
        # max_t above the last training step: ASHA stops a trial that *reaches* max_t, which would kill it
        # before it measures the test split.
        scheduler = ASHAScheduler(time_attr="step", max_t=max_steps + eval_every,
                                  grace_period=tc.grace_period * eval_every, reduction_factor=tc.reduction_factor)
    return tune.Tuner(
        trainable,
        param_space=param_space(tc, cfg.seed),
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=1,
                                    max_concurrent_trials=tc.max_concurrent_trials,
                                    trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname),
        run_config=tune.RunConfig(name=exp_dir.name, storage_path=str(exp_dir.parent),
                                  failure_config=tune.FailureConfig(max_failures=tc.max_failures),
                                  callbacks=list(callbacks or []), verbose=0),
    )


def _dirname(spec: dict[str, Any]) -> str:
    return spec["key"]


def _trial_dirname(trial) -> str:
    return _dirname(trial.config["spec"])


def run(cfg, *, resume: bool = False, name: str = "sweep", callbacks=None) -> SweepResult:
    """Run (or, with `resume`, continue) the sweep; write the report; export the best model.

    `callbacks` are Tune callbacks for a new sweep (the tests interrupt one with a callback); a restored
    sweep runs with the experiment's saved run config, which holds none.
    """
    from ray import tune

    from liaotian.tune.progress import SweepProgress, prune_trial_checkpoints

    t0 = time.time()
    data_dir, init_from = _resolve_inputs(cfg)
    exp_dir = (cfg.paths.tune / name).resolve()
    cfg_data = to_dict(cfg)
    # Tune runs trials with the trial directory as working directory: pass absolute paths only.
    cfg_data["run_dir"] = str(Path(cfg.run_dir).resolve())
    ctx = {"cfg": cfg_data, "data_dir": str(data_dir), "init_from": str(init_from) if init_from else None,
           "exp_dir": str(exp_dir),
           "trial_workers": cfg.tune.trial_workers}
    trainable = tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {"cpu": cfg.tune.cpus_per_trial})
    progress = SweepProgress(len(expand(cfg.tune, cfg.seed)), METRIC, cfg.tune.max_steps or cfg.train.classifier.max_steps)
    if resume and tune.Tuner.can_restore(str(exp_dir)):
        # Finished trials keep their results; unfinished ones continue; errored ones stay errored.
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        if exp_dir.exists():
            print(f"liaotian tune: replacing the previous sweep at {exp_dir} (use --resume to continue it)")
            shutil.rmtree(exp_dir)
        tuner = _build_tuner(cfg, exp_dir, trainable, [progress, *(callbacks or [])])
    tuner.fit()
    records, interrupted = collect_records(exp_dir, expand(cfg.tune, cfg.seed))
    best = select_best(records)
    model_dir = None
    if best is not None and cfg.tune.export_best and not interrupted:
        model_dir = export_model(best, cfg.paths.model("sentiment"))
    notes = _notes(cfg, data_dir, init_from, best, time.time() - t0, interrupted)
    paths = report_mod.write_report(records, exp_dir / "report", title=f"Sweep `{name}`: losses × regularisers", notes=notes)
    if not interrupted and not cfg.tune.keep_trial_checkpoints:
        freed = prune_trial_checkpoints(records)
        print(f"[tune] removed {freed / 2**20:.0f} MiB of trial checkpoints (read only to resume an unfinished sweep)", flush=True)
    counts = {s: sum(r["status"] == s for r in records) for s in ("completed", "stopped", "failed", "unfinished")}
    return SweepResult(records, best, model_dir, paths, exp_dir, time.time() - t0, interrupted, counts)


def _reports(result) -> list[dict[str, Any]]:
    """A trial's reports in order, from its `Result`: the in-training ones from `metrics_dataframe`
    (Tune's progress.csv) and the final one from `metrics` (the trial's last result).

    The final report carries the test metrics, which progress.csv has no columns for (Tune's CSV
    logger fixes the columns at a trial's first report), so it is taken from `Result.metrics`."""
    rows = []
    df = result.metrics_dataframe
    if df is not None and len(df):
        # NaN marks a key a report did not have; numpy scalars become Python numbers for the JSON report
        rows = [{k: getattr(v, "item", lambda: v)() for k, v in r.items() if v == v} for r in df.to_dict("records")]
    last = dict(result.metrics or {})
    if last.get(DONE_KEY):
        rows = [r for r in rows if not r.get(DONE_KEY)] + [last]
    return rows


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def collect_records(exp_dir: Path, specs: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Trial records for tune.report, read from the experiment directory; True when unfinished trials remain.

    Tune creates trials lazily, so an interrupted sweep's state may not list the trials it never
    started: `specs` (the full sweep) lets those count as unfinished too.
    """
    from ray.tune import ExperimentAnalysis, ResultGrid

    analysis = ExperimentAnalysis(str(exp_dir))
    records, interrupted = [], False
    # ResultGrid builds one Result per trial in `analysis.trials` order; the trial gives the status
    # (a Result does not say whether ASHA stopped a trial or the sweep was interrupted).
    for trial, result in zip(analysis.trials, ResultGrid(analysis)):
        spec = trial.config["spec"]
        tdir = exp_dir / _dirname(spec)
        rows = _reports(result)
        final = next((r for r in reversed(rows) if r.get(DONE_KEY)), None)
        history = [{k: r.get(k) for k in ("step", METRIC, "val_loss", "train_loss") if r.get(k) is not None}
                   for r in rows if not r.get(DONE_KEY) and r.get(METRIC) is not None]
        vals = [v for v in (_num(r.get(METRIC)) for r in rows) if v is not None]
        if trial.status == "ERROR":
            status = "failed"
        elif final is not None:
            status = "completed"
        elif trial.status == "TERMINATED":
            status = "stopped"  # ASHA cut it: validation curve only, no test numbers
        else:
            status, interrupted = "unfinished", True
        error = None
        if status == "failed":
            error = _error_line(tdir, trial)
        attempts_path = tdir / ATTEMPTS_FILE
        rec = {
            "trial_id": spec["key"], "loss": spec["loss"], "regularizer": spec["regularizer"], "lr": spec["lr"],
            "seed": spec["seed"], "status": status, "error": error,
            "steps": int(max([r.get("step") or 0 for r in rows] or [0])),
            "wall_s": _num(rows[-1].get("time_total_s")) if rows else None,
            "val_balanced_accuracy": max(vals) if vals else None,
            "attempts": len(attempts_path.read_text().split()) if attempts_path.is_file() else 0,
            "history": history, "trial_dir": str(tdir), "model_dir": None,
        }
        for m in report_mod.TEST_METRICS:
            rec[f"test_{m}"] = _num(final.get(f"test_{m}")) if final else None
        if final is not None and (tdir / "model" / "config.json").is_file():
            rec["model_dir"] = str(tdir / "model")
        records.append(rec)
    seen = {r["trial_id"] for r in records}
    for spec in specs or []:
        if spec["key"] not in seen:
            interrupted = True
            records.append({"trial_id": spec["key"], "loss": spec["loss"], "regularizer": spec["regularizer"],
                            "lr": spec["lr"], "seed": spec["seed"], "status": "unfinished", "error": None,
                            "steps": 0, "attempts": 0, "history": [], "model_dir": None})
    return records, interrupted


def _error_line(tdir: Path, trial) -> str:
    """The exception's last line: 'ValueError: focal gamma must be >= 0, got -1.0'."""
    text = ""
    if (tdir / "error.txt").is_file():
        text = (tdir / "error.txt").read_text(encoding="utf-8", errors="replace")
    elif getattr(trial, "error_file", None) and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text(encoding="utf-8", errors="replace")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "failed (no error file)"


def select_best(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Selection uses validation only: the configuration (loss, regulariser, lr) with the best mean
    validation balanced accuracy over its completed seeds, then that configuration's best seed."""
    done = [r for r in records if r["status"] == "completed" and r.get("model_dir")
            and r.get("val_balanced_accuracy") is not None]
    if not done:
        return None
    groups: dict[tuple, list[dict]] = {}
    for r in done:
        groups.setdefault((r["loss"], r["regularizer"], r["lr"]), []).append(r)
    key = max(groups, key=lambda k: sum(r["val_balanced_accuracy"] for r in groups[k]) / len(groups[k]))
    return max(groups[key], key=lambda r: r["val_balanced_accuracy"])


def export_model(best: dict[str, Any], dest: Path) -> Path:
    """Copy the best trial's exported model to `dest` (replacing it) with a note of where it came from."""
    src = Path(best["model_dir"])
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"best trial {best['trial_id']} has no exported model at {src}")
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    (tmp / "sweep.json").write_text(json.dumps({k: v for k, v in best.items() if k != "history"},
                                               indent=1, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)  # swap in one step so a reader never sees a half-copied dir
    tmp.rename(dest)
    return dest


def _rel(p) -> str:
    """A path as the user would type it: relative to the working directory when below it."""
    p = Path(p).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _notes(cfg, data_dir: Path, init_from: Path | None, best, wall_s: float, interrupted: bool) -> list[str]:
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    counts = manifest.get("class_counts", {})
    tc = cfg.tune
    notes = [f"- data: `{_rel(data_dir)}`; class counts train {counts.get('train')}, valid {counts.get('valid')}, "
             f"test {counts.get('test')}",
             f"- classifier: {'from ' + _rel(init_from) if init_from else 'from scratch'}; "
             f"{tc.max_steps or cfg.train.classifier.max_steps} steps, eval every "
             f"{tc.eval_every or cfg.train.classifier.eval_every}; {tc.trial_workers} Train worker(s) per trial, "
             f"{tc.max_concurrent_trials} trials at a time; ASHA {'on' if tc.asha else 'off'}",
             f"- model {cfg.train.classifier.model}, batch {cfg.train.classifier.batch_size}, lr {tc.lrs}, "
             f"seeds {tc.seeds}; search {tc.search}{f', overrides {tc.overrides}' if tc.overrides else ''}",
             f"- wall time of this invocation: {wall_s:.0f} s"]
    if best:
        notes.append(f"- selected on validation balanced accuracy: **{best['loss']} + {best['regularizer']}, "
                     f"lr {best['lr']:g}** (seed {best['seed']}), exported to `{_rel(cfg.paths.model('sentiment'))}`")
    if interrupted:
        notes.append("- **interrupted**: some trials did not finish; `liaotian tune --resume` continues them")
    return notes


# ------------------------------------------------------------------ CLI

def add_cli(parser) -> None:
    from liaotian.cli import add_common_arguments

    add_common_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep (finished trials are kept)")
    parser.add_argument("--name", default="sweep", help="experiment name under RUN_DIR/tune (default: sweep)")
    parser.set_defaults(run=_cli)


def _cli(args) -> int:
    from liaotian.cli import load_config_from_args
    from liaotian.cluster import connect

    cfg = load_config_from_args(args)
    connect(cfg.ray)
    res = run(cfg, resume=args.resume, name=args.name)
    print(report_mod.summary_markdown(res.records))
    print(f"\ntrials: {res.counts}; wall {res.wall_s:.0f} s; report: {res.report_paths['markdown']}")
    if res.model_dir:
        print(f"best: {res.best['loss']} + {res.best['regularizer']} lr {res.best['lr']:g} -> {res.model_dir}")
    if res.interrupted:
        print("interrupted: run again with --resume to finish the remaining trials")
        return 128 + signal.SIGINT
    return 0 if res.best else 1
