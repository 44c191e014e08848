"""The data path against an older checkout of it, in one run: did a change to cleaning or windowing
cost speed? (Written for the change that wrote the cleaning rules once, as data, and made one
fitting rule serve training windows and chat/serve prompts.)

Both sides take turns (the first one alternating), and each figure is the best of its repeats:
  - in a process of each checkout, CPU time at one thread: `clean_dialogue_lists` over the file's
    dialogues (the column path of `liaotian data dialog`), `clean_texts` over its utterances in
    batches of 4096 (the path of `data sentiment` and `data text`), `clean_text` and
    `CharTokenizer.encode` per utterance, raw and cleaned (the chat/serve path: history is encoded
    one string at a time);
  - `liaotian data dialog FILE` from each checkout, end to end (wall, and CPU seconds of the process
    tree, Ray's workers included).
The machine is shared: the load average is printed; the CPU-time rows are the load-robust ones.

    .venv/bin/python benchmarks/data_path_before_after.py --before OLD_CHECKOUT \
        [--label "commit REV"] [--file ../shared/data/lccc_base/LCCC-base_valid.json] [--repeats 3] [--no-end-to-end]
OLD_CHECKOUT is a checkout with its own .venv (e.g. `git archive REV | tar -x -C DIR` and
`/work/wt/mkvenv.sh DIR`-style editable install).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
from common import best_of, emit, print_table, result

HERE = Path(__file__).resolve().parent
PER_STRING = 20_000  # utterances timed one by one


def worker(path: str) -> dict:
    """Runs inside one checkout's interpreter: its own cleaning and tokenizer, timed at one thread."""
    from collections import Counter

    import pyarrow as pa

    from liaotian.pipelines.cleaning import clean_dialogue_lists, clean_text, clean_texts
    from liaotian.pipelines.tokenizer import build_vocab, count_chars

    pa.set_cpu_count(1)
    dialogues = json.loads(Path(path).read_text(encoding="utf-8"))
    lists = pa.array(dialogues, pa.list_(pa.string()))
    every = [u for d in dialogues for u in d]
    raw = every[:PER_STRING]
    cleaned = [clean_text(u) for u in raw]
    tok = build_vocab(count_chars(cleaned))

    def cpu(fn, n):
        return best_of(fn, n, clock=time.process_time)

    return {
        "clean_dialogue_lists_s": cpu(lambda: clean_dialogue_lists(lists, 200, Counter()), 5),
        "clean_texts_s": cpu(lambda: [clean_texts(every[i:i + 4096], Counter()) for i in range(0, len(every), 4096)], 3),
        "clean_text_raw_us": cpu(lambda: [clean_text(u) for u in raw], 3) / len(raw) * 1e6,
        "clean_text_cleaned_us": cpu(lambda: [clean_text(u) for u in cleaned], 3) / len(raw) * 1e6,
        "encode_raw_us": cpu(lambda: [tok.encode(u) for u in raw], 3) / len(raw) * 1e6,
        "encode_cleaned_us": cpu(lambda: [tok.encode(u) for u in cleaned], 3) / len(raw) * 1e6,
    }


def in_process(root: Path, path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([str(root / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--worker", str(path)],
                         cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def end_to_end(root: Path, path: Path, work: Path) -> dict:
    from preprocess import liaotian_cmd, timed

    wall, _, cpu_s, _ = timed(liaotian_cmd(str(root / ".venv" / "bin" / "liaotian"), path, work / "out", work / "run"), cwd=root)
    return {"data_dialog_wall_s": wall, "data_dialog_cpu_s": cpu_s}


ROWS = (  # key, row name, unit
    ("clean_dialogue_lists_s", "clean_dialogue_lists", "CPU-s"),
    ("clean_texts_s", "clean_texts_4096_batches", "CPU-s"),
    ("clean_text_raw_us", "clean_text_raw_utterance", "CPU-us"),
    ("clean_text_cleaned_us", "clean_text_cleaned_utterance", "CPU-us"),
    ("encode_raw_us", "encode_raw_utterance", "CPU-us"),
    ("encode_cleaned_us", "encode_cleaned_utterance", "CPU-us"),
    ("data_dialog_wall_s", "data_dialog_wall", "s"),
    ("data_dialog_cpu_s", "data_dialog_cpu", "CPU-s"),
)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", help="the older checkout (with its own .venv)")
    ap.add_argument("--label", help="what the older checkout is, for the anchor column (default: its folder name)")
    ap.add_argument("--file", default=str(HERE.parent.parent / "shared" / "data" / "lccc_base" / "LCCC-base_valid.json"),
                    help="an LCCC JSON file (a bare list of dialogues)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-end-to-end", action="store_true", help="the in-process rows only (no Ray)")
    ap.add_argument("--no-in-process", action="store_true", help="the end-to-end rows only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    if not args.before:
        ap.error("--before OLD_CHECKOUT is required")
    path = Path(args.file).resolve()
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (pass --file)")
    sides = {"before": Path(args.before).resolve(), "after": HERE.parent}
    seen: dict[tuple[str, str], list[float]] = {}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for side in (("before", "after") if rep % 2 == 0 else ("after", "before")):  # neither always first
                root = sides[side]
                got = {} if args.no_in_process else in_process(root, path)
                if not args.no_end_to_end:
                    got.update(end_to_end(root, path, Path(tmp) / side))
                for k, v in got.items():
                    seen.setdefault((side, k), []).append(v)
                loads.append(os.getloadavg()[0])
    rows = []
    for key, name, unit in ROWS:
        if ("after", key) in seen:
            after, before = sorted(seen[("after", key)]), sorted(seen[("before", key)])
            rows.append(result(name, after[0], unit, args.label or sides["before"].name, before[0], lower_is_better=True,
                               median=after[len(after) // 2], anchor_median=before[len(before) // 2],
                               median_ratio=before[len(before) // 2] / after[len(after) // 2]))
    print_table(f"benchmarks/data_path_before_after.py: {path.name}, best of {args.repeats} per side", rows, [
        f"load average (1 min) after each side's timings: {', '.join(f'{x:.1f}' for x in loads)}",
        "in-process rows: CPU time at one thread; ratio = before / after (above 1: after is faster)",
        f"per-string rows: mean over {PER_STRING} utterances of the file, raw and cleaned",
        "ratio of the medians (load adds time, so the best is the steadier figure): " + ", ".join(
            f"{r['name']} {r['median_ratio']:.2f}" for r in rows),
    ])
    emit("data_path_before_after", rows, file=str(path), repeats=args.repeats)


if __name__ == "__main__":
    main()
