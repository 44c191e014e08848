"""Opt-in decoding speed layer for DialogLM: what `liaotian chat` and the chat deployment decode with.

`FastDecoder(model, precision)` offers the model's decoding interface (`config`, `parameters`,
`init_state`, `step`), so `models.generate` runs on it unchanged. A context (several tokens) goes
through the model's own `step`; each one-token step after it runs `_one_token_step` below: the same
operations as the model's blocks in the same order (tested equal to `DialogLM.step` in fp32), in plain
eager PyTorch, minus what a single new token does not need (dropout modules, masks for unpadded
rows, index tensors), and with the linear layers in the decoding precision:

- "fp32": the parameters themselves (`F.linear`, torch's default kernels);
- "bf16": bf16 copies (oneDNN behind `F.linear`); the inputs of each product are cast, the residual
  stream, the layer norms, the KV cache and the attention stay fp32;
- "int8": dynamically quantised copies (`torch.ao.quantization.quantize_dynamic`: int8 weights with a
  scale per output row, activations quantised per call), the output layer included;
- "auto": bf16 where the CPU computes bf16 natively (amx_bf16 / avx512_bf16, or a CUDA device with
  bf16) AND one timed pass over this model's products at 1 and 8 rows is faster in bf16 than in fp32
  (bf16 weights are reordered by oneDNN on every call, which costs more than it saves at one row on
  some CPUs); else fp32. int8 only when asked: it changes the model's numbers more than bf16.

Why eager and not TorchScript or `torch.compile`: TorchScript is deprecated upstream, and inductor
needs a C++ compiler and tens of seconds of compilation per model and cache length at run time. The
eager step's Python overhead (~130 small operations a token) was measured against the former
TorchScript step in one run: docs/results/benchmarks/decode_step_eager_vs_torchscript.txt.

Configurations the one-token step does not cover (linear attention, options other than the
defaults of the pre-LN GPT-2 layout) decode through the model's own `step`: counted per reason in
`FastDecoder.fallbacks` and logged once per decoder, never silent.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
import warnings
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

from liaotian.models.precision import resolve_precision

log = logging.getLogger(__name__)

DECODE_PRECISIONS = ("auto", "fp32", "bf16", "int8")
# Config fields the one-token step reads or that do not change the computation; any other field away
# from its default (an imported model's layout options) sends one-token steps to the model's `step`.
STEP_FIELDS = {"vocab_size", "max_len", "n_layer", "n_head", "d_model", "dropout", "attention", "self_terminating",
               "st_epsilon", "pad_id", "eos_id", "n_segments", "linear_chunk_size"}


def unsupported_reason(config) -> str | None:
    """Why the one-token step cannot run this model (None: it can)."""
    if config.attention != "softmax":
        return f"attention={config.attention!r}"
    for f in dataclasses.fields(config):
        if f.name in STEP_FIELDS or f.default is dataclasses.MISSING:
            continue
        if getattr(config, f.name) != f.default:
            return f"{f.name}={getattr(config, f.name)!r}"
    return None


class _Products:
    """Each linear layer of the model as a callable in the decoding precision: per block (qkv, attention
    out, MLP in, MLP out), then the output layer (the tied token embedding, no bias)."""

    def __init__(self, model: nn.Module, precision: str):
        self.precision = precision
        self.signature = weights_signature(model)
        layers = [lin for b in model.blocks for lin in (b.attn.qkv, b.attn.proj, b.mlp.fc, b.mlp.proj)]
        head = nn.Linear(model.config.d_model, model.config.vocab_size, bias=False)
        head.weight = model.token_embedding.weight
        make = {"fp32": self._fp32, "bf16": self._bf16, "int8": self._int8}[precision]
        products = make(layers + [head])
        self.blocks = [products[i : i + 4] for i in range(0, len(layers), 4)]
        self.head = products[-1]

    @staticmethod
    def _fp32(layers):
        def product(lin):
            w, b = lin.weight.detach(), None if lin.bias is None else lin.bias.detach()
            return lambda x: F.linear(x, w, b)
        return [product(lin) for lin in layers]

    @staticmethod
    def _bf16(layers):
        def product(lin):
            w = lin.weight.detach().to(torch.bfloat16)
            b = None if lin.bias is None else lin.bias.detach().to(torch.bfloat16)
            return lambda x: F.linear(x.to(torch.bfloat16), w, b).float()
        return [product(lin) for lin in layers]

    @staticmethod
    def _int8(layers):
        if layers[0].weight.device.type != "cpu":
            raise ValueError("int8 decoding (dynamically quantised linear layers) runs on CPU only")
        from torch.ao.quantization import quantize_dynamic

        copies = nn.Sequential(*(copy.deepcopy(lin) for lin in layers)).float()
        with warnings.catch_warnings():  # torch marks torch.ao.quantization deprecated in favour of torchao
            warnings.simplefilter("ignore")
            quantised = quantize_dynamic(copies, {nn.Linear}, dtype=torch.qint8)
        return list(quantised)


def weights_signature(model: nn.Module) -> tuple:
    """Changes when a parameter does (optimizer steps and `load_state_dict` bump its version; `.to()`
    moves its storage); inference tensors (a model built under inference mode) keep no version."""
    return tuple((p.data_ptr(), 0 if p.is_inference() else p._version) for p in model.parameters())


def _time_products(products: _Products, d_model: int, rows: int, passes: int = 3) -> float:
    xs = {n: torch.randn(rows, n) for n in (d_model, 4 * d_model)}
    best = float("inf")
    for _ in range(passes + 1):  # the first pass warms up
        t = time.perf_counter()
        for qkv, out, fc, proj in products.blocks:
            qkv(xs[d_model]), out(xs[d_model]), fc(xs[d_model]), proj(xs[4 * d_model])
        products.head(xs[d_model])
        best = min(best, time.perf_counter() - t)
    return best


def resolve_decode_precision(name: str, model: nn.Module) -> str:
    """"auto" | "fp32" | "bf16" | "int8" -> the precision to decode `model` with (see the module docstring)."""
    if name not in DECODE_PRECISIONS:
        raise ValueError(f"decode precision must be one of {DECODE_PRECISIONS}, got {name!r}")
    if name != "auto":
        return name
    device = model.token_embedding.weight.device
    if resolve_precision("auto", device) is None:  # no native bf16 here
        return "fp32"
    if device.type != "cpu":
        return "bf16"
    with torch.inference_mode():
        fp32, bf16 = _Products(model, "fp32"), _Products(model, "bf16")
        d = model.config.d_model
        cost = {p.precision: sum(_time_products(p, d, rows) for rows in (1, 8)) for p in (fp32, bf16)}
    return "bf16" if cost["bf16"] < cost["fp32"] else "fp32"


class FastDecoder:
    """A DialogLM's decoding interface with a fast one-token step (see the module docstring)."""

    def __init__(self, model: nn.Module, precision: str = "auto"):
        self.model = model
        self.config = model.config
        self.decode_precision = precision  # the setting as given
        self.precision = resolve_decode_precision(precision, model)  # what it resolved to here
        self.unsupported = unsupported_reason(model.config)
        self.fallbacks: Counter[str] = Counter()  # one-token steps sent to the model's own `step`, per reason
        self._products: _Products | None = None

    def parameters(self):
        return self.model.parameters()

    def products(self) -> _Products:
        """The decoding-precision linear layers, rebuilt when the model's parameters have changed."""
        cached = self._products
        if cached is None or cached.signature != weights_signature(self.model):
            with torch.inference_mode():
                cached = self._products = _Products(self.model, self.precision)
        return cached

    def init_state(self, batch_size: int, device=None):
        state = self.model.init_state(batch_size, device)
        if self.unsupported is None:
            state.products = self.products()  # bound once per decoding run, not checked per token
        return state

    def step(self, input_ids, segment_ids, state, token_mask=None, last_only: bool = False):
        """`DialogLM.step`; one new token per row after a context runs `_one_token_step`."""
        one_token = input_ids.shape[1] == 1 and token_mask is None and state.length > 0
        if one_token and self.unsupported is None:
            if state.seen + 1 > self.config.max_len:
                raise ValueError(f"decoding past max_len={self.config.max_len} ({state.seen} + 1 tokens)")
            with torch.inference_mode():
                products = getattr(state, "products", None) or self.products()  # a state from model.init_state has none
                return _one_token_step(self.model, products, input_ids, segment_ids, state)
        if one_token:
            if not self.fallbacks:
                log.warning("decoding %s through the plain model step (the fast one-token step does not cover %s)",
                            type(self.model).__name__, self.unsupported)
            self.fallbacks[self.unsupported] += 1
        return self.model.step(input_ids, segment_ids, state, token_mask, last_only)


def _one_token_step(model, products: _Products, input_ids, segment_ids, state):
    """One new token per row through the embeddings, every pre-LN softmax block and the output layer.

    The same operations as `Block.forward` / `SoftmaxAttention.forward` with a KV cache, written for a
    single query: its keys and values go straight into the preallocated cache slot, and rows without
    padding need no mask (one query sees every cached key).
    """
    B, H = input_ids.shape[0], model.config.n_head
    attn_mask = None
    if state.key_mask is not None:  # padded rows: the new token is real and sees every real key
        state.key_mask = torch.cat([state.key_mask, input_ids.new_ones(B, 1, dtype=torch.bool)], 1)
        attn_mask = state.key_mask[:, None, None, :]  # (B, 1, 1, S) = causal_mask(key_mask, 1, S)
    start = [cache.reserve(1) for cache in state.layers][0]  # the same slot in every layer
    end = start + 1
    x = model.embed(input_ids, state.positions[:, None], segment_ids)[:, 0]  # (B, D)
    D = x.shape[1]
    for blk, cache, (qkv, out, fc, proj) in zip(model.blocks, state.layers, products.blocks):
        q, k, v = qkv(blk.ln1(x)).view(B, 3, H, 1, D // H).unbind(1)  # 3 × (B, H, 1, Dh)
        cache.k[:, :, start:end] = k
        cache.v[:, :, start:end] = v
        a = F.scaled_dot_product_attention(q, cache.k[:, :, :end], cache.v[:, :, :end], attn_mask=attn_mask)
        x = x + out(a.view(B, D))
        x = x + proj(F.gelu(fc(blk.ln2(x)), approximate="tanh"))
    h = model.ln_f(x)
    scores = products.head(h).float().view(B, 1, -1)
    if model.config.self_terminating:
        log_prod, state.st_log_prod = model._st_log_prod(h.view(B, 1, -1), input_ids, state.positions[:, None], None,
                                                          state.st_log_prod)
        scores = model._st_log_probs(scores, log_prod)
    return scores, state.advance(1)
