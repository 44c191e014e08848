"""Shared by the benchmark scripts: a readable table, then one JSON line as the very last output.

Every figure is a ratio against an anchor measured in the same run on the same machine
(higher is better: for costs such as seconds or bytes, pass `lower_is_better=True`).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # so that `benchmarks.*` imports work when a script runs from benchmarks/
    sys.path.append(str(ROOT))


def result(name: str, value: float, unit: str, anchor: str, anchor_value: float, lower_is_better: bool = False, **extra) -> dict:
    """One row; `ratio` is oriented so that higher is always better."""
    if lower_is_better:
        ratio = anchor_value / value if value else float("inf")
    else:
        ratio = value / anchor_value if anchor_value else float("inf")
    row = {"name": name, "value": value, "unit": unit, "anchor": anchor, "anchor_value": anchor_value, "ratio": ratio}
    row.update(extra)
    return row


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def print_table(title: str, rows: list[dict], notes: list[str] = ()) -> None:
    print(f"\n{title}  [{machine()}]")
    header = f"{'name':<34} {'value':>14} {'unit':<12} {'anchor':<34} {'anchor_value':>14} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<34} {r['value']:>14.4g} {r['unit']:<12} {r['anchor']:<34} {r['anchor_value']:>14.4g} {r['ratio']:>8.2f}")
    for n in notes:
        print(f"  note: {n}")
    sys.stdout.flush()


def emit(benchmark: str, rows: list[dict], **extra) -> None:
    """The last line of every benchmark: one JSON object."""
    payload = {"benchmark": benchmark, "results": rows}
    payload.update(extra)
    print(json.dumps(payload, ensure_ascii=False), flush=True)


def best_of(fn, repeats: int, clock=time.perf_counter) -> float:
    """The shortest of `repeats` timings of `fn()` by `clock` (`time.process_time` for CPU seconds): the
    least disturbed run, on a machine other jobs share."""
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best
