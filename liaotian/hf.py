"""`liaotian import hf SRC --output MODEL_DIR` and `liaotian export hf MODEL_DIR --output DIR` (no Ray).

Import reads a local HF checkpoint dir (config.json, model.safetensors or pytorch_model.bin, vocab.txt)
of CDial-GPT (`OpenAIGPTLMHeadModel`) or CDial-GPT2 / GPT-2 (`GPT2LMHeadModel`) into a liaotian model
dir (models/hf_import.py); export writes a dir that `transformers` loads (models/hf_export.py).
Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import sys


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


def run_import(args) -> int:
    from liaotian.models.hf_import import ImportRefused, import_hf

    try:
        out = import_hf(args.src, args.output)
    except (ImportRefused, FileNotFoundError) as e:
        print(f"liaotian import hf: {e}", file=sys.stderr)
        return 2
    print(f"imported {args.src} -> {out} (chat: liaotian chat {out}; serve: --set serve.model_dir={out})")
    return 0


def run_export(args) -> int:
    from liaotian.models.hf_export import ExportRefused, export_hf

    try:
        out = export_hf(args.model_dir, args.output)
    except (ExportRefused, FileNotFoundError) as e:
        print(f"liaotian export hf: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.model_dir} -> {out} (transformers: AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
