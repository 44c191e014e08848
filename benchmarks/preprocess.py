"""`liaotian data dialog` end to end as a user waits for it, against the script a user would write.

For each size N (synthetic LCCC-format dialogues: 2-15 utterances, mean ~3.7, ~8 characters each,
a space between characters) it times, from process start to shards written, in one run:
  - `liaotian data dialog FILE` (the CLI in a fresh process: imports, Ray start-up, the job);
  - `benchmarks/preprocess_datasets.py`: HF `datasets` + `BertTokenizerFast` (Rust), `map(batched=True,
    num_proc=2)`, `to_parquet`, the same cleaning, tokenising and turn concatenation (no duplicate
    removal, no windows: less work than ours);
  - at the largest N, the CDial-GPT way (`transformers.BertTokenizer`, one process) on a subsample,
    its rate extrapolated linearly (a second anchor row);
  - with `--before BIN`, another `liaotian` executable (an older checkout) on the same file.
Peak memory and CPU seconds are sampled from each process tree (Ray's workers and object store included).
The CPU is shared: the load average is printed with every timing, and the CPU seconds of each
process tree are reported beside the wall time. Each timing prints a `MEASURE {json}` line as soon
as it is taken; `--combine` builds the table from several runs' outputs (runs kept short).
    .venv/bin/python benchmarks/preprocess.py --sizes 10,200000,1000000 [--sides ours,datasets,before,bert_reference --before BIN]
    .venv/bin/python benchmarks/preprocess.py --combine run1.txt run2.txt
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common  # noqa: F401
from common import emit, print_table, result

HERE = Path(__file__).resolve().parent


def synth(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)] + list("，。？！")
    with open(path, "w", encoding="utf-8") as f:  # streamed: never the whole corpus in memory
        f.write("[\n")
        for i in range(n):
            k = min(15, 2 + int(rng.expovariate(1 / 1.7)))  # 2..15, mean ~3.7
            d = [" ".join(rng.choices(chars, k=max(1, int(rng.gauss(8, 3))))) for _ in range(k)]
            f.write(("," if i else "") + json.dumps(d, ensure_ascii=False) + "\n")
        f.write("]\n")


def _tree_stats(root: int) -> dict[int, tuple[int, float]]:
    """{pid: (RSS bytes, CPU seconds so far)} of `root` and all its descendants, from /proc (no psutil)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(d.name))
            stats[int(d.name)] = (int(fields[21]) * PAGE, (int(fields[11]) + int(fields[12])) / TICKS)
        except (OSError, ValueError, IndexError):
            pass
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            tree[pid] = stats[pid]
        todo += children.get(pid, [])
    return tree


PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


class TreeMonitor:
    """Samples process `pid` and its descendants every 0.2 s: peak RSS of the tree, and its CPU seconds
    (the last value seen per process, summed: a process's final 0.2 s may be missed). CPU seconds say
    how much work was done whatever else the machine runs; wall seconds are what a user waits."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.cpu, self.stop = pid, 0, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.2):
            tree = _tree_stats(self.pid)
            self.peak = max(self.peak, sum(rss for rss, _ in tree.values()))
            for pid, (_, cpu) in tree.items():
                self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def timed(cmd: list[str], cwd=None) -> tuple[float, int, float, str]:
    """(wall seconds, peak RSS bytes of the process tree, its CPU seconds, output tail) of one command."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    with TreeMonitor(proc.pid) as mon:
        out, err = proc.communicate()
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, mon.peak, mon.cpu_seconds, (out + err)[-2000:]


def reference_rate(path: Path, vocab: Path, n: int) -> float:
    """Dialogues/s of the CDial-GPT way: BertTokenizer per utterance, then [CLS] u1 [SEP] ... ids."""
    from transformers import BertTokenizer

    tok = BertTokenizer(str(vocab), do_lower_case=True)
    dialogues = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip().lstrip(",")
            if line.startswith("[\""):
                dialogues.append(json.loads(line))
                if len(dialogues) >= n:
                    break
    t = time.perf_counter()
    for d in dialogues:
        ids, seg = [tok.cls_token_id], [0]
        for i, u in enumerate(d):
            u_ids = tok.convert_tokens_to_ids(tok.tokenize(u.replace(" ", "")))
            ids += u_ids + [tok.sep_token_id]
            seg += [i % 2] * (len(u_ids) + 1)
    return len(dialogues) / (time.perf_counter() - t)


def liaotian_cmd(binary: str, path: Path, out: Path, run_dir: Path) -> list[str]:
    return [binary, "data", "dialog", str(path), "--output", str(out), "--overwrite", "--set", f"run_dir={run_dir}",
            "--set", "ray.include_dashboard=false"]


LABELS = {10: "10", 200_000: "200k", 1_000_000: "1m", 5_000_000: "5m"}


def measure(side: str, n: int, path: Path, work: Path, args) -> dict:
    """One timing: `liaotian data dialog` (ours / before), the datasets script, or the BertTokenizer reference."""
    load = os.getloadavg()[0]
    out = work / f"out_{n}"
    if side == "ours":
        wall, rss, cpu, tail = timed(liaotian_cmd(str(Path(sys.executable).parent / "liaotian"), path, out, work / "run"), cwd=HERE.parent)
        return {"side": side, "n": n, "wall": wall, "cpu": cpu, "rss": rss, "load": load, "report": tail.strip().splitlines()[-1][:200]}
    if side == "before":
        # run from the other checkout: Ray's workers put the driver's working directory first on sys.path
        root = Path(args.before).resolve().parents[2]
        wall, rss, cpu, _ = timed(liaotian_cmd(args.before, path, work / f"out_before_{n}", work / "run"),
                                  cwd=root if (root / "liaotian").is_dir() else work)
        shutil.rmtree(work / f"out_before_{n}", ignore_errors=True)
        return {"side": side, "n": n, "wall": wall, "cpu": cpu, "rss": rss, "load": load}
    if not (out / "vocab.txt").exists():
        raise SystemExit(f"{out}/vocab.txt: measure 'ours' at n={n} first (the other sides use its vocabulary)")
    if side == "datasets":
        wall, rss, cpu, _ = timed([sys.executable, str(HERE / "preprocess_datasets.py"), str(path), str(work / f"out_ds_{n}"),
                                   "--vocab", str(out / "vocab.txt"), "--num-proc", "2"])
        shutil.rmtree(work / f"out_ds_{n}", ignore_errors=True)
        return {"side": side, "n": n, "wall": wall, "cpu": cpu, "rss": rss, "load": load}
    if side == "bert_reference":
        k = min(args.reference_n, n)
        rate = reference_rate(path, out / "vocab.txt", k)
        return {"side": side, "n": n, "wall": n / rate, "cpu": n / rate, "rss": 0, "load": load, "timed_on": k}
    raise SystemExit(f"unknown side {side!r}")


def rows_from(measures: list[dict], before_label: str = "the --before executable") -> tuple[list[dict], list[str]]:
    by = {(m["n"], m["side"]): m for m in measures}
    rows, notes = [], []
    for n in sorted({m["n"] for m in measures}):
        label, ours = LABELS.get(n, str(n)), by.get((n, "ours"))
        for m in (by.get((n, s)) for s in ("ours", "datasets", "before", "bert_reference")):
            if m:
                notes.append(f"n={n} {m['side']}: {m['wall']:.1f}s wall, {m['cpu']:.1f} CPU-s, peak RSS {m['rss'] / 2**20:.0f} MiB, "
                             f"load average {m['load']:.1f}" + (f"; {m['report']}" if m.get("report") else "")
                             + (f" (timed on {m['timed_on']} dialogues, extrapolated)" if m.get("timed_on") else ""))
        if not ours:
            continue
        if (d := by.get((n, "datasets"))):
            rows.append(result(f"preprocess_vs_datasets_{label}", ours["wall"], "s", "datasets + BertTokenizerFast, 2 procs", d["wall"],
                               lower_is_better=True, n=n))
            rows.append(result(f"preprocess_vs_datasets_{label}_cpu", ours["cpu"], "CPU-s", "datasets script CPU-s", d["cpu"],
                               lower_is_better=True, n=n))
            rows.append(result(f"peak_rss_{label}", ours["rss"] / 2**20, "MiB", "datasets script peak RSS", d["rss"] / 2**20,
                               lower_is_better=True, n=n))
        if (b := by.get((n, "before"))):
            rows.append(result(f"preprocess_after_vs_before_{label}", ours["wall"], "s", before_label, b["wall"],
                               lower_is_better=True, n=n))
            rows.append(result(f"preprocess_after_vs_before_{label}_cpu", ours["cpu"], "CPU-s", before_label, b["cpu"],
                               lower_is_better=True, n=n))
        if (r := by.get((n, "bert_reference"))):
            rows.append(result(f"preprocess_vs_bert_reference_{label}", n / ours["wall"], "dlg/s", "BertTokenizer, one process",
                               n / r["wall"], n=n))
    return rows, notes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,200000,1000000", help="dialogue counts, comma-separated")
    ap.add_argument("--sides", default="ours,datasets,bert_reference", help="what to time: ours, datasets, before, bert_reference")
    ap.add_argument("--reference-n", type=int, default=5_000, help="dialogues the BertTokenizer reference is timed on")
    ap.add_argument("--before", help="another liaotian executable (an older checkout's .venv/bin/liaotian), side 'before'")
    ap.add_argument("--before-label", default="the --before executable", help="the anchor's name in the table (e.g. its commit)")
    ap.add_argument("--workdir", help="where the synthetic files go (kept between runs: reused when present)")
    ap.add_argument("--combine", nargs="+", metavar="OUTPUT", help="merge the MEASURE lines of earlier runs (each run under ~6 "
                    "minutes on a shared machine) into one table and one JSON line")
    args = ap.parse_args(argv)
    measures = []
    if args.combine:
        for p in args.combine:
            measures += [json.loads(line[len("MEASURE "):]) for line in Path(p).read_text(encoding="utf-8").splitlines()
                         if line.startswith("MEASURE ")]
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="liaotian-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        for n in [int(x) for x in args.sizes.split(",")]:
            path = work / f"lccc_{n}.json"
            if not path.exists():
                synth(path, n)
            for side in args.sides.split(","):
                m = measure(side, n, path, work, args)
                print("MEASURE " + json.dumps(m, ensure_ascii=False), flush=True)  # kept even if a later side runs out of time
                measures.append(m)
    rows, notes = rows_from(measures, args.before_label)
    notes.append("wall: seconds from process start to shards written (imports and Ray start-up included); CPU-s: CPU seconds "
                 "of the whole process tree (Ray workers included), sampled every 0.2 s; the machine is shared: CPU-s ratios "
                 "are the load-robust ones")
    notes.append(f"load average at the end {os.getloadavg()}")
    print_table("benchmarks/preprocess.py: liaotian data dialog end to end", rows, notes)
    emit("preprocess", rows, measures=measures)


if __name__ == "__main__":
    main()
