"""`liaotian eval dialog MODEL_DIR`: perplexity on the test responses and decoding metrics, with
several decoding settings side by side.

Generation runs in-process, batched by `models.generate` (left padding, contexts sorted by length):
an evaluation draws at most `eval.max_dialogues` samples, and at that size a Ray Data pipeline would
spend more on starting actors and shipping the model than it could win on the few cores of the
machines this runs on; the per-sample work here (`test_prompts`, `generate_replies`) is the pure
batch function such a `map_batches` actor would hold, so scaling out later is a wrapper, not a rewrite.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch

from liaotian.cli import add_common_arguments, load_config_from_args
from liaotian.models.generate import DecodingConfig, Generation, Prompt, generate
from liaotian.pipelines import metrics as M
from liaotian.pipelines.config import DecodingSection
from liaotian.pipelines.dialogue import context_in_format, input_format_of, reply_token_rules, to_input_format

# the paper's decoders (Welleck et al. 2020) at dialogue settings: k = 5 (Su's), p = 0.9 (CDial-GPT)
DEFAULT_COMPARE = ["greedy=greedy", "top_k=sample:top_k=5,consistent=false", "nucleus=sample:top_p=0.9,consistent=false",
                   "consistent_top_k=sample:top_k=5,consistent=true", "consistent_nucleus=sample:top_p=0.9,consistent=true"]


def parse_setting(text: str, max_new_tokens: int) -> DecodingSection:
    """`name=strategy[:key=value,...]` (keys: DecodingSection fields) -> DecodingSection.

    max_new_tokens defaults to the evaluation's L unless the setting names its own."""
    import yaml

    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--compare {text!r}: expected name=strategy[:key=value,...]")
    strategy, _, rest = spec.partition(":")
    values = {"name": name, "strategy": strategy, "top_p": 1.0, "max_new_tokens": max_new_tokens}
    known = {f.name for f in fields(DecodingSection)}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in known:
            raise ValueError(f"--compare {text!r}: unknown or malformed setting {item!r}; keys: {sorted(known)}")
        values[key] = yaml.safe_load(value)
    return DecodingSection(**values)


def decoding_config(section: DecodingSection, seed: int | None, banned_ids=(), end_ids=()) -> DecodingConfig:
    values = {k: v for k, v in asdict(section).items() if k != "name"}
    return DecodingConfig(**values, seed=seed, banned_ids=tuple(banned_ids), end_ids=tuple(end_ids))


# ------------------------------------------------------------------ test samples

def load_samples(data_dir: str | Path, limit: int, seed: int) -> list[dict]:
    """Up to `limit` test samples with at least two utterances, a seeded random subset."""
    import pyarrow.parquet as pq

    files = sorted(Path(data_dir).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no *.parquet test shards in {data_dir}")
    rows = []
    for f in files:
        table = pq.read_table(f, columns=["input_ids", "segment_ids", "loss_mask"]).to_pylist()
        rows += [r for r in table if sum(r["loss_mask"]) > 0]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def split_sample(input_ids: list[int], segment_ids: list[int], sep_id: int, cls_id: int, max_len: int) -> tuple[Prompt, list[int]]:
    """Sample `[CLS] u1 [SEP] … un [SEP]` -> (prompt = every turn before un, reference = un).

    The prompt keeps the sample's own segments (the parity the model was trained with); when it and
    the reply budget exceed `max_len`, the oldest utterances go first, as `build_context` does."""
    seps = [i for i, t in enumerate(input_ids) if t == sep_id]
    if len(seps) < 2 or input_ids[0] != cls_id:
        raise ValueError("a test sample needs [CLS] and at least two utterances")
    cut = seps[-2] + 1
    reference = input_ids[cut:seps[-1]]
    reply_segment = segment_ids[seps[-1]]
    starts = [1] + [s + 1 for s in seps[:-2]]  # first token of each context utterance
    start = next((s for s in starts if 1 + cut - s <= max_len), starts[-1])
    body = input_ids[start:cut][-(max_len - 1):]
    body_segments = segment_ids[start:cut][-(max_len - 1):]
    prompt = Prompt([cls_id] + body, [body_segments[0]] + body_segments, reply_segment)
    return prompt, reference


def generate_replies(model, prompts: list[Prompt], cfg: DecodingConfig, eos_id: int, batch_size: int) -> list[Generation]:
    """The first candidate for every prompt, batched over prompts of similar length."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].input_ids))
    out: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, gens in zip(chunk, generate(model, [prompts[i] for i in chunk], cfg, eos_id)):
            out[i] = gens[0]
    return out


@torch.no_grad()
def response_perplexity(model, samples: list[dict], pad_id: int, batch_size: int) -> dict:
    """Perplexity over every loss_mask token of the samples (all responses, [SEP] included)."""
    from liaotian.pipelines.collate import collate_dialog
    from liaotian.pipelines.train_loop import forward_loss, loss_positions

    model.eval()
    nll, count = 0.0, 0
    for start in range(0, len(samples), batch_size):
        rows = samples[start:start + batch_size]
        batch = collate_dialog({k: [r[k] for r in rows] for k in ("input_ids", "segment_ids", "loss_mask")}, pad_id)
        loss, _ = forward_loss(model, "dialog", batch)
        n = loss_positions("dialog", batch)
        nll, count = nll + float(loss) * n, count + n
    return {"perplexity": M.perplexity(nll, count), "nll_sum": nll, "tokens": count}


# ------------------------------------------------------------------ the stage

def run(cfg, model_dir: str | Path, data_dir: str | Path | None = None, compare: list[DecodingSection] | None = None,
        out_dir: str | Path | None = None) -> dict:
    """Evaluate `model_dir` on the test shards; write report.json and report.md; return the report."""
    from liaotian.models.checkpoint import load_pretrained
    from liaotian.pipelines.tokenizer import load_tokenizer

    data_dir = Path(data_dir) if data_dir else cfg.paths.data("dialog")
    test_dir = data_dir / "test" if (data_dir / "test").is_dir() else data_dir
    model, tok = load_pretrained(model_dir).eval(), load_tokenizer(model_dir)
    eos_id = int(getattr(model.config, "eos_id", tok.sep_id))
    ev = cfg.eval
    settings = compare or ev.compare or [parse_setting(s, ev.max_new_tokens) for s in DEFAULT_COMPARE]
    samples = load_samples(test_dir, ev.max_dialogues, cfg.seed)
    if not samples:
        raise ValueError(f"{test_dir}: no test sample has a response to evaluate")
    split = [split_sample(s["input_ids"], s["segment_ids"], tok.sep_id, tok.cls_id, model.config.max_len - max(
        d.max_new_tokens for d in settings)) for s in samples]
    prompts, references = [p for p, _ in split], [r for _, r in split]
    fmt = input_format_of(model)
    if fmt != "liaotian":  # shards are in liaotian's layout: the model reads its own
        budget = model.config.max_len - max(d.max_new_tokens for d in settings)
        prompts = [Prompt(*context_in_format(p.input_ids, tok, fmt, budget)) for p in prompts]
        samples = [dict(s, **dict(zip(("input_ids", "segment_ids", "loss_mask"), to_input_format(
            s["input_ids"], s["segment_ids"], s["loss_mask"], tok, fmt)))) for s in samples]
    report = {"model_dir": str(model_dir), "data_dir": str(test_dir), "samples": len(samples),
              "perplexity": response_perplexity(model, samples, tok.pad_id, ev.batch_size), "settings": []}
    for section in settings:
        gens = generate_replies(model, prompts, decoding_config(section, cfg.seed, **reply_token_rules(tok, model)), eos_id, ev.batch_size)
        replies = [g.token_ids for g in gens]
        report["settings"].append({
            "name": section.name, "decoding": asdict(section), "L": section.max_new_tokens,
            "metrics": M.reply_metrics(replies, references, [g.finish_reason for g in gens]),
            "examples": [{"context": tok.decode(p.input_ids), "reference": tok.decode(r), "reply": tok.decode(g.token_ids),
                          "reply_tokens": len(g.token_ids), "finish_reason": g.finish_reason}
                         for p, r, g in list(zip(prompts, references, gens))[:5]],
        })
    write_report(report, Path(out_dir) if out_dir else cfg.paths.eval)
    return report


def markdown_table(report: dict) -> str:
    ppl = report["perplexity"]
    lines = [f"Model `{report['model_dir']}` on {report['samples']} test samples; response perplexity "
             f"{ppl['perplexity']:.2f} over {ppl['tokens']} tokens.", "",
             "| setting | L | r_L | mean length | distinct-1 | distinct-2 | BLEU-2 | BLEU-4 | repetition |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in report["settings"]:
        m = s["metrics"]
        lines.append(f"| {s['name']} | {s['L']} | {m['r_L']:.3f} | {m['mean_length']:.1f} | {m['distinct_1']:.3f} | "
                     f"{m['distinct_2']:.3f} | {100 * m['bleu_2']:.2f} | {100 * m['bleu_4']:.2f} | {m['repetition']:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "report.md").write_text(markdown_table(report))


def _cli_run(args: argparse.Namespace) -> int:
    cfg = load_config_from_args(args, extra={"eval.max_dialogues": args.max_dialogues,
                                             "eval.max_new_tokens": args.max_new_tokens})
    try:
        compare = [parse_setting(s, cfg.eval.max_new_tokens) for s in args.compare] or None
    except ValueError as e:
        print(f"liaotian eval: {e}", file=sys.stderr)
        return 2
    report = run(cfg, args.model_dir, args.data, compare)
    print(markdown_table(report))
    print(f"report: {cfg.paths.eval / 'report.json'}")
    return 0


def add_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    p = sub.add_parser("dialog", help="perplexity and decoding metrics of a DialogLM on the test shards")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--data", metavar="DIR", help="a preprocessed dialogue dir (default: the run's data/dialog)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=STRATEGY[:K=V,...]",
                   help="a decoding setting, e.g. cnuc=sample:top_p=0.9,consistent=true (repeatable; "
                        "default: eval.compare, else greedy / top-k / nucleus and their consistent variants)")
    p.add_argument("--max-dialogues", type=int, default=None, help="alias of eval.max_dialogues")
    p.add_argument("--max-new-tokens", type=int, default=None, help="alias of eval.max_new_tokens (L)")
    add_common_arguments(p)
    p.set_defaults(run=_cli_run)
