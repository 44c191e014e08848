"""The preprocessing script a user would write instead of `liaotian data dialog`: HF `datasets` +
`BertTokenizerFast` (Rust), `map(batched=True, num_proc=N)`, `to_parquet`. Same work per dialogue:
clean (control characters, full-width ASCII, whitespace, LCCC's spaces, empty turns), tokenise, and
concatenate turns as `[CLS] u1 [SEP] u2 [SEP] ...` with segment ids and a loss mask, cut at max_len.

    python benchmarks/preprocess_datasets.py LCCC.json OUT_DIR --vocab vocab.txt [--num-proc 2]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}
WHITESPACE = re.compile(r"\s+")
LCCC_SPACE = re.compile(r"(?<=[^\x00-\x7f]) +| +(?=[^\x00-\x7f])")


def clean(u: str) -> str:
    return LCCC_SPACE.sub("", WHITESPACE.sub(" ", CONTROL.sub("", u).translate(FULLWIDTH))).strip()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=256)
    args = ap.parse_args(argv)

    from datasets import Dataset, disable_progress_bars
    from transformers import BertTokenizerFast

    disable_progress_bars()
    tok = BertTokenizerFast(args.vocab, do_lower_case=True)
    cls, sep, max_len = tok.cls_token_id, tok.sep_token_id, args.max_len

    def encode(batch):
        out = {"input_ids": [], "segment_ids": [], "loss_mask": []}
        dialogues = [[c for c in map(clean, d) if c] for d in batch["dialog"]]
        flat = [u for d in dialogues for u in d]
        ids = tok(flat, add_special_tokens=False)["input_ids"] if flat else []
        i = 0
        for d in dialogues:
            x, s, m = [cls], [0], [0]
            for turn in range(len(d)):
                x += ids[i] + [sep]
                s += [turn % 2] * (len(ids[i]) + 1)
                m += [int(turn > 0)] * (len(ids[i]) + 1)
                i += 1
            out["input_ids"].append(x[:max_len])
            out["segment_ids"].append(s[:max_len])
            out["loss_mask"].append(m[:max_len])
        return out

    with open(args.input, encoding="utf-8") as f:
        ds = Dataset.from_dict({"dialog": json.load(f)})
    ds = ds.map(encode, batched=True, num_proc=args.num_proc, remove_columns=["dialog"])
    ds = ds.filter(lambda b: [len(x) > 2 for x in b["input_ids"]], batched=True, num_proc=args.num_proc)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(Path(args.output) / "train.parquet"))
    print(json.dumps({"rows": len(ds)}), file=sys.stderr)


if __name__ == "__main__":
    main()
