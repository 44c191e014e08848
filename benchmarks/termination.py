"""Welleck et al. (EMNLP 2020) on a dialogue LM: how often does a reply fail to end within L tokens?

Trains two deliberately under-trained `tiny` DialogLMs the same way (same data, seed, steps): a plain
one and a self-terminating one; then decodes replies for the held contexts (every turn before the last
response of each sample) with greedy, top-k, nucleus, their consistent variants (eos always in the
candidate set), ancestral sampling, and the self-terminating model (its output layer's ε stated).
Prints, at L = 32, 64, 128, how many of the N held-out contexts got a reply without eos within L
tokens (k of N, and r_L = k/N), and each model's perplexity on those contexts' reference replies. Each setting is decoded once at L = max: with one seeded
generator per reply drawing one number per step, the run with a smaller L is exactly the prefix, so
r_L = share of replies with at least L tokens. Data: the chatterbot-corpus Chinese dialogues, in
process (readers + `pipelines.dialogue.dialogue_samples`, the code the shards are built with).

    .venv/bin/python benchmarks/termination.py [--steps 150] [--contexts 200] [--held 0.3] [--d-model 64 --n-layer 2]

Last line: JSON (`benchmarks/common.py`); value = termination rate 1 - r_L, anchored on the
inconsistent variant of the same decoder, so higher is better.
"""
from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from common import emit, print_table, result  # noqa: I001  (benchmarks/ is the script's directory)

import torch

from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.generate import DecodingConfig
from liaotian.pipelines.collate import collate_dialog
from liaotian.pipelines.dialogue import dialogue_samples
from liaotian.pipelines.evaluate import generate_replies, response_perplexity, split_sample
from liaotian.pipelines.readers import RawDialogue, chatterbot_files, read_chatterbot
from liaotian.pipelines.tokenizer import build_vocab

LENGTHS = (32, 64, 128)
# name -> (model, decoding); Welleck et al. decode with top-k 2/4 and nucleus 0.2/0.4; here the
# smaller of each pair (main() can change them: --top-k, --top-p)
SETTINGS = {
    "greedy": ("plain", dict(strategy="greedy")),
    "top_k": ("plain", dict(top_k=2, top_p=1.0, consistent=False)),
    "nucleus": ("plain", dict(top_p=0.2, consistent=False)),
    "consistent_top_k": ("plain", dict(top_k=2, top_p=1.0, consistent=True)),
    "consistent_nucleus": ("plain", dict(top_p=0.2, consistent=True)),
    "ancestral": ("plain", dict(top_p=1.0, consistent=False)),
    "self_terminating_greedy": ("st", dict(strategy="greedy")),
    "self_terminating_top_k": ("st", dict(top_k=2, top_p=1.0, consistent=False)),
    "self_terminating_nucleus": ("st", dict(top_p=0.2, consistent=False)),
}
ANCHOR = {"consistent_top_k": "top_k", "consistent_nucleus": "nucleus", "self_terminating_greedy": "greedy",
          "self_terminating_top_k": "top_k", "self_terminating_nucleus": "nucleus", "ancestral": "nucleus"}


def corpus(seed: int, max_len: int, held_share: float):
    """Training samples from chains of the training dialogues (consecutive chatterbot conversations
    joined into one long conversation, so learned positions up to `max_len` are trained: a reply at
    L = 128 after a context must not run into position embeddings no sample ever reached), and the
    context samples of the held-out dialogues (`held_share` of them, never trained on)."""
    dialogues = [d.utterances for f in chatterbot_files() for d in read_chatterbot(f) if isinstance(d, RawDialogue)]
    random.Random(seed).shuffle(dialogues)
    tok = build_vocab(Counter("".join(u for d in dialogues for u in d)))
    encoded = [[tok.encode(u) for u in d] for d in dialogues]
    n_held = round(held_share * len(encoded))
    held, encoded = encoded[:n_held], encoded[n_held:]
    chains, chain = [], []
    for d in encoded:
        chain += d
        if sum(len(u) + 1 for u in chain) >= max_len:
            chains.append(chain)
            chain = []
    samples = [{"input_ids": ids, "segment_ids": seg, "loss_mask": mask}
               for c in chains for ids, seg, mask, _ in dialogue_samples(c, tok, max_len)]
    contexts = []
    for d in held:
        for ids, seg, mask, _ in dialogue_samples(d, tok, max_len):
            if sum(mask) and ids.count(tok.sep_id) >= 2:
                contexts.append({"input_ids": ids, "segment_ids": seg, "loss_mask": mask})
    return tok, samples, contexts


def train(tok, samples, self_terminating: bool, steps: int, batch_size: int, seed: int, st_epsilon: float, **sizes):
    torch.manual_seed(seed)
    cfg = DialogLMConfig.preset("tiny", vocab_size=tok.vocab_size, max_len=256, pad_id=tok.pad_id, eos_id=tok.sep_id,
                                self_terminating=self_terminating, st_epsilon=st_epsilon, **sizes)
    model = DialogLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng, loss = random.Random(seed), float("nan")
    model.train()
    for _ in range(steps):
        rows = rng.sample(samples, batch_size)
        batch = collate_dialog({k: [r[k] for r in rows] for k in ("input_ids", "segment_ids", "loss_mask")}, tok.pad_id)
        out = model(batch["input_ids"], segment_ids=batch["segment_ids"], loss_mask=batch["loss_mask"],
                    attention_mask=batch["attention_mask"])
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss = float(out.loss.detach())
    return model.eval(), loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150, help="optimiser steps (deliberately few)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--contexts", type=int, default=200)
    ap.add_argument("--st-epsilon", type=float, default=0.01, help="ε of the self-terminating output layer")
    ap.add_argument("--held", type=float, default=0.3, help="share of dialogues held out for contexts and perplexity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--top-p", type=float, default=0.2)
    ap.add_argument("--n-layer", type=int, default=None, help="override the tiny preset (busy CPUs)")
    ap.add_argument("--d-model", type=int, default=None, help="override the tiny preset (busy CPUs)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = {k: v for k, v in (("n_layer", args.n_layer), ("d_model", args.d_model)) if v is not None}
    tok, samples, contexts = corpus(args.seed, 256, args.held)
    t0 = time.perf_counter()
    models, ppl = {}, {}
    held = contexts[:args.contexts]
    for name, st in (("plain", False), ("st", True)):
        models[name], loss = train(tok, samples, st, args.steps, args.batch_size, args.seed, args.st_epsilon, **sizes)
        ppl[name] = response_perplexity(models[name], held, tok.pad_id, 16)["perplexity"]
        print(f"trained {name} (tiny{sizes or ''}{f', self-terminating ε = {args.st_epsilon:g}' if st else ''}): "
              f"{args.steps} steps x {args.batch_size}, last train loss {loss:.3f}, held-out reply perplexity "
              f"{ppl[name]:.1f}, {time.perf_counter() - t0:.0f}s", flush=True)
    L = max(LENGTHS)
    prompts = [split_sample(s["input_ids"], s["segment_ids"], tok.sep_id, tok.cls_id, 256 - L)[0]
               for s in held]
    r, counts = {}, {}
    for name, (which, kw) in SETTINGS.items():
        kw = {**kw, **({"top_k": args.top_k} if "top_k" in kw and kw["top_k"] else {}),
              **({"top_p": args.top_p} if kw.get("top_p", 1.0) < 1.0 else {})}
        gens = generate_replies(models[which], prompts, DecodingConfig(max_new_tokens=L, seed=args.seed, **kw), tok.sep_id, 50)
        counts[name] = {ell: sum(len(g.token_ids) >= ell for g in gens) for ell in LENGTHS}
        r[name] = {ell: counts[name][ell] / len(gens) for ell in LENGTHS}
        example = tok.decode(max(gens, key=lambda g: len(g.token_ids)).token_ids)[:40]
        print(f"{name:<26} " + "  ".join(f"r_{ell}={r[name][ell]:.3f}" for ell in LENGTHS) + f"   longest: {example}", flush=True)
    n = len(prompts)
    print(f"\nreplies without eos within L tokens, k of {n} held-out contexts (plain model: perplexity "
          f"{ppl['plain']:.1f}; self-terminating model: ε = {args.st_epsilon:g}, perplexity {ppl['st']:.1f})")
    print(f"| decoder | model | " + " | ".join(f"L = {ell}" for ell in LENGTHS) + " |")
    print("|---|---|" + "---|" * len(LENGTHS))
    for name, (which, _) in SETTINGS.items():
        model = f"self-terminating (ε = {args.st_epsilon:g})" if which == "st" else "plain"
        print(f"| {name} | {model} | " + " | ".join(f"{counts[name][ell]}/{n}" for ell in LENGTHS) + " |")
    rows = []
    for name in SETTINGS:
        for ell in LENGTHS:
            anchor = ANCHOR.get(name, name)
            rows.append(result(f"r_L@{ell} {name}", 1 - r[name][ell], "1-r_L", f"r_L@{ell} {anchor}", 1 - r[anchor][ell],
                               r_L=r[name][ell], not_ended=counts[name][ell], contexts=n))
    print_table(f"non-termination on chatterbot contexts ({len(prompts)} contexts, {args.steps} steps, tiny)", rows,
                notes=[f"value = 1 - r_L (termination rate); ratio vs the inconsistent decoder; {time.perf_counter() - t0:.0f}s",
                       f"self-terminating layer ε = {args.st_epsilon:g}; held-out reply perplexity: plain {ppl['plain']:.1f}, "
                       f"self-terminating {ppl['st']:.1f}"])
    emit("termination", rows, top_k=args.top_k, top_p=args.top_p, steps=args.steps, contexts=n, st_epsilon=args.st_epsilon,
         perplexity_plain=ppl["plain"], perplexity_self_terminating=ppl["st"], preset="tiny", overrides=sizes)


if __name__ == "__main__":
    main()
