"""Are two `liaotian data` output directories equal in content? (shards row by row in shard order,
vocab.txt, tokenizer.json, rejected files, manifest without its timing and the fields one side may lack)

    .venv/bin/python benchmarks/compare_outputs.py BEFORE_DIR AFTER_DIR [--unordered]
Exit status 0 when equal; prints what differs otherwise. `--unordered`: shard rows compared as
multisets (the sentiment and text jobs do not keep their row order from one run to the next).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

# Not content: how long it took; and the fields added since (present on one side only).
IGNORED = {"seconds", "sources", "ranges_fallen_back"}


def rows(out: Path, split: str) -> list[dict]:
    return [r for f in sorted((out / split).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def compare(a: Path, b: Path, unordered: bool = False) -> list[str]:
    diffs = []
    for split in ("train", "valid", "test"):
        ra, rb = rows(a, split), rows(b, split)
        if unordered:
            ra, rb = (sorted(r, key=lambda row: json.dumps(row, sort_keys=True)) for r in (ra, rb))
        if ra != rb:
            diffs.append(f"{split}: {len(ra)} vs {len(rb)} rows, first difference at row "
                         f"{next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))}")
    for name in ("vocab.txt", "tokenizer.json"):
        if (a / name).read_bytes() != (b / name).read_bytes():
            diffs.append(f"{name} differs")
    ja = {f.name: sorted(f.read_text(encoding="utf-8").splitlines()) for f in (a / "rejected").glob("*.jsonl")}
    jb = {f.name: sorted(f.read_text(encoding="utf-8").splitlines()) for f in (b / "rejected").glob("*.jsonl")}
    if ja != jb:
        diffs.append(f"rejected differs: {sorted(ja)} vs {sorted(jb)}")
    ma, mb = (json.loads((d / "manifest.json").read_text(encoding="utf-8")) for d in (a, b))
    for k in sorted((set(ma) | set(mb)) - IGNORED):
        if ma.get(k) != mb.get(k):
            diffs.append(f"manifest {k}: {ma.get(k)!r} vs {mb.get(k)!r}")
    return diffs


def main(argv=None) -> int:
    args = list(argv or sys.argv[1:])
    unordered = "--unordered" in args
    a, b = (Path(x) for x in args if x != "--unordered")
    diffs = compare(a, b, unordered)
    print(f"{a} vs {b}: " + (f"equal in content (shards row by row{' as multisets' if unordered else ''}, vocab, tokenizer, rejected, manifest without "
                             f"{sorted(IGNORED)})" if not diffs else "DIFFERENT"))
    for d in diffs:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
