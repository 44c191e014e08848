"""`liaotian import hf SRC --output MODEL_DIR` and `liaotian export hf MODEL_DIR --output DIR` (no Ray).

Import reads a local HF checkpoint dir (config.json, model.safetensors or pytorch_model.bin, vocab.txt)
of CDial-GPT (`OpenAIGPTLMHeadModel`) or CDial-GPT2 / GPT-2 (`GPT2LMHeadModel`) into a liaotian model
dir (models/hf_import.py); export writes a dir that `transformers` loads (models/hf_export.py).
Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def add_cli(parser: argparse.ArgumentParser) -> None:
    from liaotian.cli import add_common_arguments

    direction = parser.prog.rsplit(" ", 1)[-1]  # this module serves both `import` and `export`
    sub = parser.add_subparsers(dest="format", metavar="FORMAT")
    if direction == "import":
        p = sub.add_parser("hf", help="a local HF checkpoint dir (CDial-GPT, CDial-GPT2, GPT-2) -> a liaotian model dir")
        p.add_argument("src", metavar="SRC_DIR", help="config.json + model.safetensors or pytorch_model.bin + vocab.txt")
        p.add_argument("--output", required=True, metavar="MODEL_DIR", help="the liaotian model dir to write")
        p.set_defaults(run=run_import)
    else:
        p = sub.add_parser("hf", help="a liaotian DialogLM model dir -> a dir transformers' from_pretrained loads")
        p.add_argument("model_dir", metavar="MODEL_DIR")
        p.add_argument("--output", required=True, metavar="DIR", help="the HF checkpoint dir to write")
        p.set_defaults(run=run_export)
    add_common_arguments(p)


def import_hf(src, output, input_format: str = "cdial_gpt") -> Path:
    """Read a local HF checkpoint dir, write a liaotian model dir (vocab.txt copied unchanged)."""
    from liaotian.models.hf_import import convert, read_state_dict
    from liaotian.pipelines.tokenizer import CharTokenizer

    src, output = Path(src), Path(output)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (point at a local checkpoint directory)")
    if not (src / "vocab.txt").is_file():
        raise FileNotFoundError(f"{src}: no vocab.txt")
    hf = json.loads((src / "config.json").read_text())
    tok = CharTokenizer.from_vocab_file(src / "vocab.txt")
    model = convert(read_state_dict(src), hf, tok, input_format)
    output.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "vocab.txt", output / "vocab.txt")  # the imported ids, unchanged
    tok.to_hf(model.config.vocab_size).save(str(output / "tokenizer.json"))
    model.save_pretrained(output, extra={"imported_from": {"path": str(src.resolve()), "hf_config": hf}})
    return output


def export_hf(model_dir, output) -> Path:
    """Write a DialogLM model dir as an HF checkpoint dir (weights, config.json, tokenizer files)."""
    from safetensors.torch import save_file

    from liaotian.models.checkpoint import load_pretrained
    from liaotian.models.hf_export import ExportRefused, hf_architecture, hf_config, hf_state_dict, segment_token_ids
    from liaotian.pipelines.tokenizer import load_tokenizer

    model_dir, output = Path(model_dir), Path(output)
    model = load_pretrained(model_dir)
    arch = hf_architecture(model)
    tok = load_tokenizer(model_dir)
    V = model.config.vocab_size
    if tok.vocab_size < V:
        raise ExportRefused(f"{model_dir}: the tokenizer has {tok.vocab_size} tokens, the model {V}")
    carriers, untie = segment_token_ids(model, tok)
    output.mkdir(parents=True, exist_ok=True)
    save_file(hf_state_dict(model, arch, carriers, untie), str(output / "model.safetensors"), metadata={"format": "pt"})
    (output / "config.json").write_text(json.dumps(hf_config(model, arch, tok, carriers, untie), indent=2, ensure_ascii=False) + "\n")
    # vocab.txt: the model's ids only (a tokenizer may append specials the model has no row for)
    (output / "vocab.txt").write_text("".join(t + "\n" for t in tok.tokens[:V]), encoding="utf-8")
    tok.to_hf(V).save(str(output / "tokenizer.json"))  # AutoTokenizer: liaotian's own ids, not BERT wordpieces
    specials = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}
    specials = {k: v for k, v in specials.items() if tok.token_to_id[v] < V}
    (output / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.config.max_len, **specials},
        indent=2, ensure_ascii=False) + "\n")
    return output


def run_import(args) -> int:
    from liaotian.models.hf_import import ImportRefused

    try:
        out = import_hf(args.src, args.output)
    except (ImportRefused, FileNotFoundError) as e:
        print(f"liaotian import hf: {e}", file=sys.stderr)
        return 2
    print(f"imported {args.src} -> {out} (chat: liaotian chat {out}; serve: --set serve.model_dir={out})")
    return 0


def run_export(args) -> int:
    from liaotian.models.hf_export import ExportRefused

    try:
        out = export_hf(args.model_dir, args.output)
    except (ExportRefused, FileNotFoundError) as e:
        print(f"liaotian export hf: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.model_dir} -> {out} (transformers: AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
