"""`liaotian chat MODEL_DIR`: a terminal chat with a trained DialogLM, no server and no Ray.

The history is formatted by `pipelines.dialogue.build_context`, the code that built the training
samples; tokens are printed as they stream. `/reset` starts over, `/quit` (or end of input) leaves.
With `--rerank MLM_DIR`, `--n` candidates are sampled and the FastMLM picks one (printed whole).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import TextIO

from liaotian.cli import add_common_arguments, load_config_from_args

USER, BOT = "你> ", "机器人> "


class ChatSession:
    """One conversation: the utterances so far, and how to answer the next one."""

    def __init__(self, model, tok, decoding, mlm=None, mlm_tok=None, alpha: float = 0.5):
        self.model, self.tok, self.decoding = model, tok, decoding
        self.mlm, self.mlm_tok, self.alpha = mlm, mlm_tok, alpha
        eos = getattr(model.config, "eos_id", None)
        self.eos_id = int(tok.sep_id if eos is None else eos)
        self.history: list[str] = []

    def reset(self) -> None:
        self.history.clear()

    def prompt(self, utterances: list[str]):
        from liaotian.models.generate import Prompt
        from liaotian.pipelines.dialogue import build_context, input_format_of

        ids, segments, reply_segment = build_context(utterances, self.tok, int(self.model.config.max_len),
                                                     reserve=self.decoding.max_new_tokens,
                                                     input_format=input_format_of(self.model))
        return Prompt(ids, segments, reply_segment)

    def _decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special=True)

    def reply(self, text: str) -> Iterator[str]:
        """Answer `text`: yield the reply piece by piece; both utterances join the history."""
        from liaotian.models.generate import generate, stream

        prompt = self.prompt(self.history + [text])
        decode_fn = self._decode if self.decoding.stop_strings else None
        pieces: list[str] = []
        if self.mlm is None:
            for token in stream(self.model, prompt, self.decoding, self.eos_id, decode_fn):
                pieces.append(self._decode([token]))
                yield pieces[-1]
        else:
            from liaotian.models.rerank import rerank

            gens = generate(self.model, [prompt], self.decoding, self.eos_id, decode_fn)[0]
            order = rerank(self.mlm, self.mlm_tok, prompt.input_ids, [g.token_ids for g in gens],
                           lm_scores=[g.logprob for g in gens], alpha=self.alpha, source_tok=self.tok)
            pieces.append(self._decode(gens[order[0][0]].token_ids))
            yield pieces[-1]
        self.history += [text, "".join(pieces)]


def chat_loop(session: ChatSession, stdin: TextIO, stdout: TextIO) -> None:
    """Read utterances line by line until /quit or end of input; print each reply as it streams."""
    print("liaotian chat: type a message; /reset starts over, /quit leaves.", file=stdout, flush=True)
    while True:
        print(USER, end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            print(file=stdout)
            return
        text = line.strip()
        if text == "/quit":
            return
        if text == "/reset":
            session.reset()
            print("(history cleared)", file=stdout, flush=True)
            continue
        if not text:
            continue
        print(BOT, end="", file=stdout, flush=True)
        for piece in session.reply(text):
            print(piece, end="", file=stdout, flush=True)
        print(file=stdout, flush=True)


def decoding_from_args(args: argparse.Namespace, seed: int | None, banned_ids=()):
    from liaotian.models.generate import DecodingConfig

    return DecodingConfig(
        strategy=args.strategy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        consistent=not args.inconsistent, num_beams=args.num_beams, length_penalty=args.length_penalty,
        repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size,
        max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens, stop_strings=tuple(args.stop),
        n=args.n if args.rerank else 1, seed=seed, banned_ids=tuple(banned_ids))


def run(args: argparse.Namespace) -> int:
    from liaotian.models.checkpoint import load_pretrained
    from liaotian.pipelines.tokenizer import load_tokenizer

    cfg = load_config_from_args(args)  # validates --config / --set; decoding comes from the flags
    if args.rerank and args.strategy == "greedy":
        print("liaotian chat: --rerank needs different candidates: use --strategy sample or beam", file=sys.stderr)
        return 2
    try:
        decoding = decoding_from_args(args, args.seed)
    except ValueError as e:
        print(f"liaotian chat: {e}", file=sys.stderr)
        return 2
    try:
        model = load_pretrained(args.model_dir, device=args.device).eval()
        mlm = mlm_tok = None
        if args.rerank:
            mlm, mlm_tok = load_pretrained(args.rerank, device=args.device).eval(), load_tokenizer(args.rerank)
    except (FileNotFoundError, ValueError) as e:
        print(f"liaotian chat: {e}", file=sys.stderr)
        return 2
    if getattr(model.config, "model_type", None) != "dialog_lm":
        print(f"liaotian chat: {args.model_dir} is not a dialogue model", file=sys.stderr)
        return 2
    import dataclasses

    from liaotian.pipelines.dialogue import reply_token_rules

    from liaotian.models.fast_decode import FastDecoder

    # decodes as served (models/fast_decode.py); "auto" times the batch it will run: one reply, or --n candidates
    model = FastDecoder(model, cfg.serve.decode_precision, rows=(args.n if args.rerank else 1,))
    tok = load_tokenizer(args.model_dir)
    decoding = dataclasses.replace(decoding, **reply_token_rules(tok, model))
    session = ChatSession(model, tok, decoding, mlm, mlm_tok, args.alpha)
    chat_loop(session, sys.stdin, sys.stdout)
    return 0


def add_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="an exported DialogLM dir (liaotian train dialog)")
    d = parser.add_argument_group("decoding (default: consistent nucleus sampling, p = 0.9)")
    d.add_argument("--strategy", choices=["greedy", "sample", "beam"], default="sample")
    d.add_argument("--temperature", type=float, default=1.0)
    d.add_argument("--top-k", type=int, default=0, help="0 = off")
    d.add_argument("--top-p", type=float, default=0.9, help="1.0 = off")
    d.add_argument("--inconsistent", action="store_true",
                   help="let top-k/top-p drop eos (Welleck et al.'s inconsistent sampling; replies may not end)")
    d.add_argument("--num-beams", type=int, default=1)
    d.add_argument("--length-penalty", type=float, default=1.0)
    d.add_argument("--repetition-penalty", type=float, default=1.0)
    d.add_argument("--no-repeat-ngram-size", type=int, default=0)
    d.add_argument("--max-new-tokens", type=int, default=32)
    d.add_argument("--min-new-tokens", type=int, default=0)
    d.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    d.add_argument("--seed", type=int, default=None, help="same seed + same history -> same reply")
    r = parser.add_argument_group("reranking")
    r.add_argument("--rerank", metavar="MLM_DIR", help="pick among --n candidates by FastMLM pseudo-log-likelihood")
    r.add_argument("--n", type=int, default=8, help="candidates per turn when reranking")
    r.add_argument("--alpha", type=float, default=0.5, help="weight of the LM score in the rerank score")
    parser.add_argument("--device", default="cpu")
    add_common_arguments(parser)
    parser.set_defaults(run=run)
