"""HF checkpoints of CDial-GPT's family -> liaotian DialogLMs. No Ray, no transformers, no network.

The directory-level command (`liaotian import hf`, reading vocab.txt with the tokenizer) is
`liaotian.hf.import_hf`; this module turns tensors and a config into a model.

Two architectures, recognised by their weight names:
- `OpenAIGPTLMHeadModel` (CDial-GPT_LCCC-base/-large): post-LN blocks, no final LayerNorm,
  `transformer.tokens_embed` / `transformer.positions_embed`;
- `GPT2LMHeadModel` (CDial-GPT2_LCCC-base, and what `liaotian export hf` writes): pre-LN blocks, a
  final LayerNorm, `transformer.wte` / `transformer.wpe` / `transformer.ln_f`.
Both embed `token_type_ids` through the token table and tie the output layer to it. HF's `Conv1D`
stores (in, out) weights; nn.Linear wants (out, in), hence the transposes.

A `pytorch_model.bin` is a pickle, which can run code when loaded: it is read only with
`torch.load(weights_only=True)` and must hold nothing but a dict of tensors.
"""
from __future__ import annotations

from pathlib import Path

import torch

from liaotian.models.dialog_lm import DialogLM, DialogLMConfig

ARCHITECTURES = ("openai-gpt", "gpt2")
# HF keys that are buffers (causal masks), not weights
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


class ImportRefused(ValueError):
    """The checkpoint is not one liaotian can import faithfully (the message says why)."""


def read_state_dict(src: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: `model.safetensors` if present, else `pytorch_model.bin` read with
    `torch.load(weights_only=True)` and refused unless it is a dict of tensors."""
    safetensors_file, pickle_file = src / "model.safetensors", src / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    if not pickle_file.is_file():
        raise FileNotFoundError(f"{src}: neither model.safetensors nor pytorch_model.bin (sharded checkpoints are not supported)")
    try:
        state = torch.load(pickle_file, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses any object it cannot rebuild safely
        raise ImportRefused(f"{pickle_file}: refused: torch.load(weights_only=True) could not read it as plain "
                            f"tensors ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if not isinstance(state, dict) or not state:
        raise ImportRefused(f"{pickle_file}: refused: holds a {type(state).__name__}, not a dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ImportRefused(f"{pickle_file}: refused: entries that are not tensors: {bad[:5]}")
    return state


def detect_architecture(state: dict[str, torch.Tensor]) -> str:
    names = set(state)
    if any(k.endswith("tokens_embed.weight") for k in names):
        return "openai-gpt"
    if any(k.endswith("wte.weight") for k in names):
        return "gpt2"
    raise ImportRefused("not an OpenAI GPT or GPT-2 checkpoint (no tokens_embed.weight or wte.weight); "
                        "liaotian imports OpenAIGPTLMHeadModel (CDial-GPT) and GPT2LMHeadModel (CDial-GPT2)")


def _get(state, name):
    for key in (f"transformer.{name}", name):
        if key in state:
            return state.pop(key)
    raise ImportRefused(f"checkpoint lacks {name!r}")


def _check_hf_config(hf: dict, arch: str) -> None:
    """Refuse GPT-2 variants DialogLM does not compute."""
    if arch == "openai-gpt":
        if hf.get("afn", "gelu") != "gelu":
            raise ImportRefused(f"afn={hf['afn']!r}: only 'gelu' (OpenAI GPT's tanh form) is supported")
        return
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
        if hf.get(key, ok) != ok:
            raise ImportRefused(f"GPT-2 option {key}={hf[key]!r} has no DialogLM equivalent")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise ImportRefused(f"n_inner={hf['n_inner']}: DialogLM's MLP is 4 x n_embd")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu", "gelu_pytorch_tanh"):
        raise ImportRefused(f"activation_function={hf['activation_function']!r}: only gelu_new / gelu are supported")


def convert(state: dict[str, torch.Tensor], hf: dict, tok, input_format: str = "cdial_gpt") -> DialogLM:
    """A DialogLM with the checkpoint's weights. `hf`: its config.json; `tok`: the CharTokenizer of its
    vocab.txt (`liaotian.hf.import_hf` reads the directory).

    `hf["liaotian"]` (written by `liaotian export hf`) restores the exported model's own format and
    segment table; otherwise the model reads CDial-GPT's format.
    """
    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}
    arch = detect_architecture(state)
    _check_hf_config(hf, arch)
    mine = hf.get("liaotian") or {}
    input_format = mine.get("input_format", input_format)
    if arch == "openai-gpt":
        wte, wpe = _get(state, "tokens_embed.weight"), _get(state, "positions_embed.weight")
    else:
        wte, wpe = _get(state, "wte.weight"), _get(state, "wpe.weight")
    V, D = wte.shape
    n_layer, n_head = int(hf["n_layer"]), int(hf["n_head"])
    lm_head = state.pop("lm_head.weight", None)
    segment_table = None
    if lm_head is not None and not torch.equal(lm_head, wte):
        # `liaotian export hf` unties: the output layer is the token table; the input table carries
        # the segment vectors at the rows of the tokens that stand for segments.
        seg_tokens = list(mine.get("segment_tokens_in_export", ()))
        differ = (lm_head != wte).any(1).nonzero().flatten().tolist()
        if not seg_tokens or not set(differ) <= set(seg_tokens):
            raise ImportRefused("the output layer is not tied to the token embedding (rows "
                                f"{differ[:5]} differ): DialogLM ties them")
        segment_table = wte[seg_tokens].clone()
        wte = lm_head
    if input_format == "cdial_gpt" and segment_table is None:
        if tok.file_size <= max(tok.speaker_ids):
            raise ImportRefused("vocab.txt has no [speaker1]/[speaker2] tokens: CDial-GPT's input format needs them")
        segment_tokens = (*tok.speaker_ids, tok.cls_id)  # = pipelines.dialogue.cdial_segment_tokens(tok)
    else:
        segment_tokens = tuple(mine.get("segment_tokens", ()))
    eps = float(hf.get("layer_norm_epsilon", 1e-5))
    act = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}[hf.get("activation_function", "gelu_new")] \
        if arch == "gpt2" else "gelu_tanh"
    config = DialogLMConfig(
        vocab_size=V, max_len=wpe.shape[0], n_layer=n_layer, n_head=n_head, d_model=D,
        dropout=float(hf.get("resid_pdrop", 0.1)), pad_id=tok.pad_id, eos_id=tok.sep_id,
        n_segments=len(segment_tokens) if segment_tokens else (len(segment_table) if segment_table is not None else 2),
        norm_position="post" if arch == "openai-gpt" else "pre", final_norm=arch == "gpt2", activation=act,
        layer_norm_eps=eps, segment_tokens=segment_tokens, input_format=input_format)
    model = DialogLM(config)
    ours = {"embed.token.weight": wte, "embed.position.weight": wpe}
    if segment_table is not None:
        ours["embed.segment.weight"] = segment_table
    for i in range(n_layer):
        h = f"h.{i}."
        ours.update({
            f"blocks.{i}.attn.qkv.weight": _get(state, h + "attn.c_attn.weight").t(),
            f"blocks.{i}.attn.qkv.bias": _get(state, h + "attn.c_attn.bias"),
            f"blocks.{i}.attn.proj.weight": _get(state, h + "attn.c_proj.weight").t(),
            f"blocks.{i}.attn.proj.bias": _get(state, h + "attn.c_proj.bias"),
            f"blocks.{i}.mlp.fc.weight": _get(state, h + "mlp.c_fc.weight").t(),
            f"blocks.{i}.mlp.fc.bias": _get(state, h + "mlp.c_fc.bias"),
            f"blocks.{i}.mlp.proj.weight": _get(state, h + "mlp.c_proj.weight").t(),
            f"blocks.{i}.mlp.proj.bias": _get(state, h + "mlp.c_proj.bias"),
        })
        for ln, mine_ln in (("ln_1", "ln1"), ("ln_2", "ln2")):
            ours[f"blocks.{i}.{mine_ln}.weight"] = _get(state, f"{h}{ln}.weight")
            ours[f"blocks.{i}.{mine_ln}.bias"] = _get(state, f"{h}{ln}.bias")
    if arch == "gpt2":
        ours["ln_f.weight"], ours["ln_f.bias"] = _get(state, "ln_f.weight"), _get(state, "ln_f.bias")
    if state:
        raise ImportRefused(f"checkpoint holds weights liaotian does not know: {sorted(state)[:5]}")
    if int(hf.get("vocab_size", V)) != V:
        raise ImportRefused(f"config.json says vocab_size={hf['vocab_size']}, the weights have {V} rows")
    if tok.file_size != V:
        raise ImportRefused(f"vocab.txt lists {tok.file_size} tokens, the model has {V}")
    expected = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in ours.items() if v.shape != expected[k].shape]
    if bad:
        raise ImportRefused(f"shapes do not match the config: {bad[:5]}")
    model.load_state_dict({k: v.float().contiguous() for k, v in ours.items()}, strict=True)
    return model.eval()
