"""Decoding an imported CDial-GPT-size model (12 x 768, 13,088 tokens; random weights) through liaotian's
served path against transformers' `generate` on the same weights, fp32, greedy, fixed length.

Both architectures `liaotian import hf` reads: OpenAIGPTLMHeadModel (CDial-GPT; transformers keeps no
KV cache for it, so each of its steps re-reads the whole sequence) and GPT2LMHeadModel (CDial-GPT2;
transformers caches keys and values). Ours: `models.generate` (what the chat engine calls) with the
engine's decoding rules, on the imported model dir. Each side decodes the same CDial-GPT-formatted
context to the same fixed length (the end tokens are banned until then) and the replies are checked
token-equal. CPU time (time.process_time) at 1 thread, one run per side after a warm-up, both in this
one process. The imported layouts take DialogLM's plain one-token step (the scripted step is
written for liaotian's own layout); the count is printed.

    python benchmarks/hf_import.py [--new-tokens 64] [--layers 12]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from common import emit, print_table, result

SHARED_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdial_gpt" / "vocab.txt"
CDIAL_CONFIG = dict(vocab_size=13088, n_positions=513, n_embd=768, n_layer=12, n_head=12, layer_norm_epsilon=1e-5)
HISTORY = ["你好，今天天气不错，我们出去走走吧", "好啊，去哪里？", "去公园看看花，顺便吃个饭"]


def vocab_file(directory: Path) -> Path:
    """CDial-GPT's vocabulary when ../shared has it, else one of the same size and special tokens."""
    out = directory / "vocab.txt"
    if SHARED_VOCAB.is_file():
        shutil.copyfile(SHARED_VOCAB, out)
    else:
        chars = [chr(c) for c in range(0x4E00, 0x4E00 + CDIAL_CONFIG["vocab_size"] - 6)]
        out.write_text("\n".join(["[CLS]", "[PAD]", "[SEP]", "[UNK]"] + chars + ["[speaker1]", "[speaker2]"]) + "\n",
                       encoding="utf-8")
    return out


def hf_model(arch: str, layers: int):
    import transformers

    cfg = dict(CDIAL_CONFIG, n_layer=layers)
    if arch == "openai-gpt":
        return transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(afn="gelu", **cfg)).eval()
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()


def cpu_seconds(fn):
    fn()  # warm-up
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars in the stored output

    from liaotian.models.checkpoint import load_pretrained
    from liaotian.models.fast_decode import FastDecoder
    from liaotian.models.generate import DecodingConfig, Prompt, generate
    from liaotian.hf import import_hf
    from liaotian.pipelines.dialogue import build_context, reply_token_rules
    from liaotian.pipelines.tokenizer import CharTokenizer

    N = args.new_tokens
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for arch in ("openai-gpt", "gpt2"):
            torch.manual_seed(0)
            hf = hf_model(arch, args.layers)
            src = tmp / arch
            hf.save_pretrained(src)
            shutil.copyfile(vocab_file(tmp), src / "vocab.txt")
            model = load_pretrained(import_hf(src, tmp / f"{arch}-imported"))
            tok = CharTokenizer.from_dir(tmp / f"{arch}-imported")
            ids, seg, reply_segment = build_context(HISTORY, tok, model.config.max_len, reserve=N, input_format="cdial_gpt")
            rules = reply_token_rules(tok, model)
            cfg = DecodingConfig(strategy="greedy", max_new_tokens=N, min_new_tokens=N, **rules)
            decoder = FastDecoder(model, "fp32")  # the served path (models/fast_decode.py), at HF's precision
            ours_s, ours = cpu_seconds(lambda: generate(decoder, [Prompt(ids, seg, reply_segment)], cfg, tok.sep_id)[0][0])
            plain_steps = sum(decoder.fallbacks.values())

            types = torch.tensor([[model.config.segment_tokens[s] for s in seg]])
            x = torch.tensor([ids])
            ends = [tok.sep_id] + list(rules["end_ids"])

            def hf_generate():
                with torch.no_grad():
                    return hf.generate(x, token_type_ids=types, attention_mask=torch.ones_like(x), do_sample=False,
                                       max_new_tokens=N, min_new_tokens=N, eos_token_id=ends, pad_token_id=tok.pad_id,
                                       bad_words_ids=[[i] for i in rules["banned_ids"]])[0, len(ids):].tolist()

            hf_s, theirs = cpu_seconds(hf_generate)
            same = theirs == ours.token_ids
            rows.append(result(f"{arch} ours: tokens/s", N / ours_s, "tokens/s", f"transformers generate ({arch})", N / hf_s,
                               same_tokens=same, plain_steps=plain_steps))
            notes.append(f"{arch}: context {len(ids)} tokens, {N} new; replies token-equal: {same}; "
                         f"one-token steps on DialogLM's plain path (warm-up run included): {plain_steps}")
    notes.append(f"transformers {transformers.__version__}, torch {torch.__version__}, 1 thread, CPU time, fp32, "
                 f"{args.layers} layers x 768, vocab 13,088 ({'CDial-GPT' if SHARED_VOCAB.is_file() else 'synthetic'})")
    notes.append(f"load average {os.getloadavg()} (other work shares this machine)")
    print_table("Imported CDial-GPT architectures: greedy decoding, liaotian served path vs transformers", rows, notes)
    emit("hf_import", rows)


if __name__ == "__main__":
    main()
