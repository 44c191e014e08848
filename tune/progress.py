"""What a sweep says while it runs, and what it leaves on disk afterwards.

Tune's own reporter is off (`verbose=0`: its tables of every trial flood a log), and the trials' Train
progress stays in the trial processes, so without this a sweep prints nothing for many minutes.
`SweepProgress` prints a line when a trial starts, reports an evaluation or ends, and a heartbeat at
least every `heartbeat_s` seconds in between.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback


class SweepProgress(Callback):
    # Tune pickles its callbacks with the experiment state (for --resume): plain attributes only.
    def __init__(self, total: int, metric: str, max_steps: int, heartbeat_s: float = 50.0):
        self.total, self.metric, self.max_steps, self.heartbeat_s = total, metric, max_steps, heartbeat_s
        self.t0 = self.last = time.time()
        self.done = 0

    def _say(self, text: str) -> None:
        self.last = time.time()
        print(f"[tune {_clock(self.last - self.t0)}] {text}", flush=True)

    @staticmethod
    def _name(trial) -> str:
        spec = trial.config.get("spec", {})
        return spec.get("key", str(trial))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say(f"start {self._name(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(self.metric) is None or result.get("val_step") != result.get("step") or result.get("trial_done"):
            return  # a training-loss report (the heartbeat covers it), or the final one (on_trial_complete says it)
        self._say(f"{self._name(trial)} step {result.get('step')}/{self.max_steps} {self.metric} {result[self.metric]:.3f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        self._say(f"done {self._name(trial)} ({self.done}/{self.total} trials finished)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self._say(f"FAILED {self._name(trial)} ({self.done}/{self.total} trials finished)")

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self.last >= self.heartbeat_s:
            running = [t for t in trials if t.status == "RUNNING"]
            steps = [f"{self._name(t)} step {(t.last_result or {}).get('step', 0)}" for t in running]
            self._say(f"{self.done}/{self.total} trials finished, {len(running)} running"
                      + (f": {', '.join(steps)}" if steps else ""))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def prune_trial_checkpoints(records: list[dict[str, Any]]) -> int:
    """After a finished sweep: remove every trial's Train checkpoints (model + optimiser state, two per
    trial; only resuming an unfinished trial reads them). Each trial's exported model stays (the best
    one is also copied to models/sentiment). Returns the bytes freed."""
    freed = 0
    for r in records:
        tdir = r.get("trial_dir")
        if not tdir:
            continue
        for path in sorted(Path(tdir).glob("train/*/checkpoint_*")):
            if path.is_dir():
                freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path)
    return freed
