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
The CPU is shared: the load average is printed with every timing.
    .venv/bin/python benchmarks/preprocess.py --sizes 10,200000,1000000
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,200000,1000000", help="dialogue counts, comma-separated")
    ap.add_argument("--reference-n", type=int, default=5_000, help="dialogues the BertTokenizer reference is timed on")
    ap.add_argument("--before", help="another liaotian executable (e.g. an older checkout's .venv/bin/liaotian) timed on the same files")
    ap.add_argument("--no-datasets", action="store_true", help="skip the datasets script")
    ap.add_argument("--workdir", help="where the synthetic files go (kept between runs: reused when present)")
    ap.add_argument("--combine", nargs="+", metavar="OUTPUT", help="merge the outputs of earlier runs (each run under ~6 minutes) "
                    "into one table and one JSON line")
    args = ap.parse_args(argv)
    if args.combine:
        return combine(args.combine)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="liaotian-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    binary = str(Path(sys.executable).parent / "liaotian")
    rows, notes = [], []
    sizes = [int(x) for x in args.sizes.split(",")]
    for n in sizes:
        path = work / f"lccc_{n}.json"
        if not path.exists():
            synth(path, n)
        out, out_ds = work / f"out_{n}", work / f"out_ds_{n}"
        load = os.getloadavg()
        ours, ours_mem, ours_cpu, tail = timed(liaotian_cmd(binary, path, out, work / "run"), cwd=HERE.parent)
        notes.append(f"n={n}: liaotian {ours:.1f}s wall, {ours_cpu:.1f} CPU-s (load average before {load[0]:.1f}); "
                     f"{tail.strip().splitlines()[-1][:160]}")
        label = {10: "10", 200_000: "200k", 1_000_000: "1m", 5_000_000: "5m"}.get(n, str(n))
        if not args.no_datasets:
            load = os.getloadavg()
            theirs, theirs_mem, theirs_cpu, _ = timed([sys.executable, str(HERE / "preprocess_datasets.py"), str(path), str(out_ds),
                                           "--vocab", str(out / "vocab.txt"), "--num-proc", "2"])
            shutil.rmtree(out_ds, ignore_errors=True)
            notes.append(f"n={n}: datasets script {theirs:.1f}s wall, {theirs_cpu:.1f} CPU-s (load average before {load[0]:.1f})")
            rows.append(result(f"preprocess_vs_datasets_{label}", ours, "s", "datasets + BertTokenizerFast, 2 procs", theirs,
                               lower_is_better=True, n=n))
            rows.append(result(f"preprocess_vs_datasets_{label}_cpu", ours_cpu, "CPU-s", "datasets script CPU-s", theirs_cpu,
                               lower_is_better=True, n=n))
            rows.append(result(f"peak_rss_{label}", ours_mem / 2**20, "MiB", "datasets script peak RSS", theirs_mem / 2**20,
                               lower_is_better=True, n=n))
        if args.before:
            load = os.getloadavg()
            # run from the other checkout: Ray's workers put the driver's working directory first on sys.path
            checkout = Path(args.before).resolve().parents[2] if (Path(args.before).resolve().parents[2] / "liaotian").is_dir() else work
            before, before_mem, before_cpu, _ = timed(liaotian_cmd(args.before, path, work / f"out_before_{n}", work / "run"), cwd=checkout)
            notes.append(f"n={n}: before {before:.1f}s wall, {before_cpu:.1f} CPU-s (load average before {load[0]:.1f})")
            rows.append(result(f"preprocess_after_vs_before_{label}", ours, "s", "the --before executable", before, lower_is_better=True, n=n))
            rows.append(result(f"preprocess_after_vs_before_{label}_cpu", ours_cpu, "CPU-s", "the --before executable", before_cpu,
                               lower_is_better=True, n=n))
        if n == max(sizes) and n >= 10_000:
            ref = reference_rate(path, out / "vocab.txt", min(args.reference_n, n))
            rows.append(result(f"preprocess_vs_bert_reference_{label}", n / ours, "dlg/s", "BertTokenizer, one process (extrapolated)", ref,
                               n=n))
        shutil.rmtree(out, ignore_errors=True)
    notes.append("times are wall seconds from process start to shards written (imports and Ray start-up included); "
                 "peak RSS of each process tree, sampled every 0.2 s")
    notes.append(f"the CPU is shared with other jobs: load average now {os.getloadavg()}")
    print_table("benchmarks/preprocess.py: liaotian data dialog end to end", rows, notes)
    emit("preprocess", rows, sizes=sizes)


def combine(paths: list[str]) -> None:
    rows, sizes = [], []
    for p in paths:
        text = Path(p).read_text(encoding="utf-8")
        print(f"===== {p}\n{text.rstrip()}\n")
        last = json.loads(text.strip().splitlines()[-1])
        rows += last["results"]
        sizes += last.get("sizes", [])
    print_table("benchmarks/preprocess.py: all runs above", rows, [f"runs: {', '.join(paths)}"])
    emit("preprocess", rows, sizes=sorted(set(sizes)))


if __name__ == "__main__":
    main()
