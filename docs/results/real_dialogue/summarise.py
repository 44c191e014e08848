"""Collect reproduce.sh's outputs into docs/results/real_dialogue/summary.md (the README section's tables).

Reads lccc_tiny/ and demo_chatterbot/ (report.json from `liaotian eval dialog`, chat.txt from
`liaotian chat`), prompts.txt, and the share of [UNK] among each model's held-out response tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from liaotian.pipelines.tokenizer import load_tokenizer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MODELS = {"lccc_tiny": ("tiny, LCCC-base valid split", "runs/real-dialogue"),
          "demo_chatterbot": ("demo model, chatterbot", "runs/real-dialogue-demo")}
SHOWN = ("greedy", "consistent_nucleus")  # of the five settings `eval dialog` compares; the reports hold all


def unk_share(report: dict, model_dir: Path) -> float:
    """Share of [UNK] among the response tokens of the evaluated test shards (the model's vocabulary)."""
    unk = load_tokenizer(model_dir).unk_id
    total = hits = 0
    for f in sorted(Path(report["data_dir"]).glob("*.parquet")):
        t = pq.read_table(f, columns=["input_ids", "loss_mask"]).to_pydict()
        for ids, mask in zip(t["input_ids"], t["loss_mask"]):
            scored = [i for i, m in zip(ids, mask) if m]
            total += len(scored)
            hits += sum(i == unk for i in scored)
    return hits / max(1, total)


def replies(chat_txt: Path) -> list[str]:
    """The bot's lines of a `liaotian chat` transcript (prompts came from stdin, one per fresh session)."""
    bot = "机器人> "
    return [line.split(bot, 1)[1].strip() for line in chat_txt.read_text(encoding="utf-8").splitlines() if bot in line]


def main() -> None:
    prompts = [p for p in (HERE / "prompts.txt").read_text(encoding="utf-8").splitlines() if p.strip()]
    lines = ["| model | setting | perplexity | [UNK] share | r_L | mean length | distinct-1 | distinct-2 | BLEU-2 | BLEU-4 | repetition |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    answers = {}
    present = {k: v for k, v in MODELS.items() if (HERE / k / "report.json").exists() and (HERE / k / "chat.txt").exists()}
    for key, (label, run) in present.items():
        report = json.loads((HERE / key / "report.json").read_text(encoding="utf-8"))
        ppl, unk = report["perplexity"]["perplexity"], unk_share(report, ROOT / run / "models" / "dialog")
        for s in report["settings"]:
            if s["name"] not in SHOWN:
                continue
            m = s["metrics"]
            lines.append(f"| {label} | {s['name']} | {ppl:.1f} | {unk:.3f} | {m['r_L']:.3f} | {m['mean_length']:.1f} | "
                         f"{m['distinct_1']:.3f} | {m['distinct_2']:.3f} | {100 * m['bleu_2']:.2f} | {100 * m['bleu_4']:.2f} | "
                         f"{m['repetition']:.3f} |")
        samples = report["samples"]
        answers[key] = replies(HERE / key / "chat.txt")
        if len(answers[key]) != len(prompts):
            raise SystemExit(f"{key}/chat.txt has {len(answers[key])} replies for {len(prompts)} prompts")
    missing = [MODELS[k][0] for k in MODELS if k not in present]
    out = [f"{samples} held-out LCCC test dialogues (L = 32)" + (f"; not run yet: {', '.join(missing)}" if missing else "") + ".",
           "", *lines, "", "| prompt | " + " | ".join(MODELS[k][0] for k in present) + " |", "|---" * (len(present) + 1) + "|"]
    out += [f"| {p} | " + " | ".join(answers[k][i] for k in present) + " |" for i, p in enumerate(prompts)]
    (HERE / "summary.md").write_text("\n".join(out) + "\n", encoding="utf-8")
    print("\n".join(out))


if __name__ == "__main__":
    main()
