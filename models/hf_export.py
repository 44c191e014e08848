"""liaotian DialogLMs -> HF checkpoints that `transformers` loads. No Ray, no transformers needed.
(The directory-level command, `liaotian export hf`, is `liaotian.hf.export_hf`.)

`AutoModelForCausalLM.from_pretrained(DIR)` gives a `GPT2LMHeadModel` (pre-LN DialogLMs: liaotian's own)
or an `OpenAIGPTLMHeadModel` (post-LN without a final LayerNorm: an imported CDial-GPT);
`AutoTokenizer.from_pretrained(DIR)` gives a fast tokenizer over liaotian's own `tokenizer.json` (one
token per character, the same normalisation; `vocab.txt` beside it), so it encodes text to the same
ids as `liaotian chat`. (A BertTokenizer over vocab.txt would differ on Latin text: wordpieces.)

Segments travel as `token_type_ids` that are token ids, as CDial-GPT does (both HF models embed token
types through the token table): a model that already embeds segments as tokens (`segment_tokens`)
exports as is; a model with its own segment table puts those vectors in the input table's rows of
the speaker tokens ([SPK1]/[SPK2]) and keeps the token table as an untied output layer, so logits are
unchanged (liaotian's own layout never feeds speaker tokens). config.json's "liaotian" entry records
which token ids stand for segments and the input format; `models/hf_import.py` reads it back.
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from liaotian.models.dialog_lm import DialogLM


class ExportRefused(ValueError):
    """The model has a part GPT-2 / OpenAI GPT cannot express (the message says which)."""


def hf_architecture(model: DialogLM) -> str:
    """"gpt2" or "openai-gpt", or ExportRefused naming what has no equivalent."""
    c = model.config
    if not isinstance(model, DialogLM):
        raise ExportRefused(f"only a DialogLM exports to transformers, not a {type(model).__name__}")
    if c.attention != "softmax":
        raise ExportRefused(f"attention={c.attention!r}: GPT-2 has softmax attention only; linear attention has no equivalent")
    if c.self_terminating:
        raise ExportRefused("self_terminating=True: GPT-2's output layer is a plain softmax; the self-terminating layer has no equivalent")
    if c.norm_position == "pre" and c.final_norm:
        return "gpt2"
    if c.norm_position == "post" and not c.final_norm:
        if c.activation != "gelu_tanh":
            raise ExportRefused(f"activation={c.activation!r}: OpenAI GPT's 'gelu' is the tanh form")
        return "openai-gpt"
    raise ExportRefused(f"norm_position={c.norm_position!r} with final_norm={c.final_norm}: neither GPT-2 nor OpenAI GPT")


def segment_token_ids(model: DialogLM, tok) -> tuple[tuple[int, ...], bool]:
    """(the token id each segment travels as in `token_type_ids`, whether the output layer must be untied)."""
    c = model.config
    if c.segment_tokens:
        return tuple(c.segment_tokens), False
    if model.embed.segment is None:
        return (), False
    carriers = tuple(tok.speaker_ids[: c.n_segments])
    if len(carriers) < c.n_segments or max(carriers) >= c.vocab_size:
        raise ExportRefused(f"{c.n_segments} segments need as many speaker tokens inside the model's vocabulary to travel as "
                            f"token_type_ids; the tokenizer has {tok.speaker_ids} for a vocabulary of {c.vocab_size}")
    return carriers, True


def hf_state_dict(model: DialogLM, arch: str, carriers: tuple[int, ...], untie: bool) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    wte = sd["embed.token.weight"]
    out = {}
    if untie:
        out["lm_head.weight"] = wte.clone()
        wte = wte.clone()
        wte[list(carriers)] = sd["embed.segment.weight"]
    names = {"gpt2": ("wte", "wpe"), "openai-gpt": ("tokens_embed", "positions_embed")}[arch]
    out[f"transformer.{names[0]}.weight"] = wte
    out[f"transformer.{names[1]}.weight"] = sd["embed.position.weight"]
    for i in range(model.config.n_layer):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        for mine, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"),
                             ("mlp.proj", "mlp.c_proj")):
            out[f"{h}{theirs}.weight"] = sd[f"{b}{mine}.weight"].t().contiguous()  # Conv1D: (in, out)
            out[f"{h}{theirs}.bias"] = sd[f"{b}{mine}.bias"]
        for mine, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[f"{h}{theirs}.weight"], out[f"{h}{theirs}.bias"] = sd[f"{b}{mine}.weight"], sd[f"{b}{mine}.bias"]
    if arch == "gpt2":
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = sd["ln_f.weight"], sd["ln_f.bias"]
    return out


def hf_config(model: DialogLM, arch: str, tok, carriers: tuple[int, ...], untie: bool) -> dict:
    c = model.config
    common = dict(vocab_size=c.vocab_size, n_positions=c.max_len, n_embd=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
                  resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, layer_norm_epsilon=c.layer_norm_eps,
                  initializer_range=0.02, bos_token_id=tok.cls_id, eos_token_id=tok.sep_id, pad_token_id=tok.pad_id,
                  tie_word_embeddings=not untie)
    if arch == "gpt2":
        head = dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", n_inner=None,
                    activation_function={"gelu_tanh": "gelu_new", "gelu": "gelu"}[c.activation])
    else:
        head = dict(architectures=["OpenAIGPTLMHeadModel"], model_type="openai-gpt", afn="gelu")
    liaotian = {
        "input_format": c.input_format,
        "segment_tokens": list(c.segment_tokens),  # the model embeds segments as these tokens (tied)
        "segment_tokens_in_export": list(carriers) if untie else [],  # input-table rows that hold a segment table
        "token_type_ids": "token_type_ids[t] = segment_token_ids[segment of token t]",
        "segment_token_ids": list(carriers),
        "dialog_lm_config": asdict(c),
    }
    return {**head, **common, "liaotian": liaotian}
