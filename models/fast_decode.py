"""Opt-in decoding speed layer for DialogLM: what `liaotian chat` and the chat deployment decode with.

`FastDecoder(model, precision)` offers the model's decoding interface (`config`, `parameters`,
`init_state`, `step`), so `models.generate` runs on it unchanged. Every step runs here: the context
(several tokens, left padding) through `_fast_step`, each new token after it through
`_one_token_step`. Both do the same operations as the model's blocks in the same order (tested equal
to `DialogLM.step` in fp32), in plain eager PyTorch, minus what decoding does not need (dropout
modules; for one token also masks for unpadded rows and index tensors), with the layer norms and
embeddings called as functions on tensors prepared once (`_Products`), and with the linear layers in
the decoding precision:

- "fp32": the parameters themselves (`F.linear`, torch's default kernels);
- "bf16": bf16 copies (oneDNN behind `F.linear`); the inputs of each product are cast, the residual
  stream, the layer norms, the KV cache and the attention stay fp32;
- "int8": dynamically quantised copies (`torch.ao.quantization.quantize_dynamic`: int8 weights with a
  scale per output row, activations quantised per call with one scale per call, so over the whole
  context in its step), the output layer included;
- "auto": bf16 where the CPU computes bf16 natively (amx_bf16 / avx512_bf16, or a CUDA device with
  bf16) AND one timed pass over this model's products at the batch sizes the decoder will run (1 and 8 unless
  told; `liaotian chat` says 1) is faster in bf16 than in fp32
  (bf16 weights are reordered by oneDNN on every call, which costs more than it saves at one row on
  some CPUs); else fp32. int8 only when asked: it changes the model's numbers more than bf16.

The context runs in the decoding precision as well (CTranslate2 does the same): at batch 16 the
context's products in fp32 were ~12 % of an int8 run's time.

Why eager and not TorchScript or `torch.compile`: TorchScript is deprecated upstream.
benchmarks/decode_compile_probe.py compiles this step (fp32, batch 1) with inductor over a static-shape
cache: from an empty inductor cache the compilation took 37-48 CPU s (69-101 s wall) on this 2-core
machine (3.6 CPU s with a warm cache), and in three loaded runs the compiled step was 0.84-1.25x this
eager step (docs/results/benchmarks/decode_compile_probe.txt): not a clear gain for a start-up cost
per model and batch shape. The products stay MKL / fbgemm calls either way; weight-only int8 was not lowered to an
int8 kernel without freezing (the weights were dequantised to fp32 on every call). The eager step's
Python overhead was also measured against the former TorchScript step and against the previous eager
step: docs/results/benchmarks/decode_step_eager_vs_torchscript.txt.

Configurations the fast steps do not cover (linear attention, options other than the defaults of
the pre-LN GPT-2 layout) decode through the model's own `step`: counted per reason in
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

from liaotian.models.attention import causal_mask
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
    """What the fast step reads, prepared once per weights: each linear layer of the model as a
    callable in the decoding precision, per block (qkv, attention out, MLP in, MLP out), then the
    output layer (the tied token embedding, no bias); and, as detached tensors, the embedding tables
    and each layer norm's (weight, bias, eps), so that a token calls `F.layer_norm` / `F.embedding`
    directly instead of going through `nn.Module.__call__` (2x the cost of the op itself at one row)."""

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
        # (a layout the fast step does not run, e.g. no final norm, never reads these: see `unsupported_reason`)
        norm = lambda ln: (ln.normalized_shape, ln.weight.detach(), ln.bias.detach(), ln.eps) if isinstance(ln, nn.LayerNorm) else None  # noqa: E731
        self.norms = [(norm(b.ln1), norm(b.ln2)) for b in model.blocks]
        self.final_norm = norm(model.ln_f)
        embed = model.embed
        self.token_table, self.position_table = embed.token.weight.detach(), embed.position.weight.detach()
        self.segment_table = None if embed.segment is None else embed.segment.weight.detach()

    def call_each(self, x: torch.Tensor, wide: torch.Tensor) -> None:
        """Every product once on stand-in inputs (`x` (rows, D), `wide` (rows, 4D)), as one token a row
        calls them: what `resolve_decode_precision` times, without the rest of a step."""
        for qkv, out, fc, proj in self.blocks:
            qkv(x), out(x), fc(x), proj(wide)
        self.head(x)

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
        return [lin.forward for lin in quantised]  # the module's own forward, without __call__'s hook checks


def weights_signature(model: nn.Module) -> tuple:
    """Changes when a parameter does (optimizer steps and `load_state_dict` bump its version; `.to()`
    moves its storage); inference tensors (a model built under inference mode) keep no version."""
    return tuple((p.data_ptr(), 0 if p.is_inference() else p._version) for p in model.parameters())


def _time_products(products: _Products, d_model: int, rows: int, passes: int = 3) -> float:
    x, wide = torch.randn(rows, d_model), torch.randn(rows, 4 * d_model)
    best = float("inf")
    for _ in range(passes + 1):  # the first pass warms up
        t = time.perf_counter()
        products.call_each(x, wide)
        best = min(best, time.perf_counter() - t)
    return best


def resolve_decode_precision(name: str, model: nn.Module, rows: tuple[int, ...] = (1, 8)) -> str:
    """"auto" | "fp32" | "bf16" | "int8" -> the precision to decode `model` with (see the module docstring).

    `rows`: the batch sizes the decoder will mostly run, which "auto" times: bf16 can lose at one row
    and win at eight on the same CPU (here 7.32 vs 4.98 ms a step at batch 1, 18.35 vs 23.68 at batch 16),
    so `liaotian chat` (one conversation) asks for (1,) and a server for a spread of sizes
    (docs/results/benchmarks/models_decode.txt)."""
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
        cost = {p.precision: sum(_time_products(p, d, n) for n in rows) for p in (fp32, bf16)}
    return "bf16" if cost["bf16"] < cost["fp32"] else "fp32"


class FastDecoder:
    """A DialogLM's decoding interface with a fast one-token step (see the module docstring)."""

    def __init__(self, model: nn.Module, precision: str = "auto", rows: tuple[int, ...] = (1, 8)):
        self.model = model
        self.config = model.config
        self.decode_precision = precision  # the setting as given
        self.precision = resolve_decode_precision(precision, model, rows)  # what it resolved to here, for `rows`
        self.unsupported = unsupported_reason(model.config)
        self.fallbacks: Counter[str] = Counter()  # steps (a context's, a token's) sent to the model's own `step`, per reason
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
        """`DialogLM.step` through `_fast_step`: the context (several tokens, left padding) and each new token."""
        if self.unsupported is None:
            T = input_ids.shape[1]
            if state.seen + T > self.config.max_len:
                raise ValueError(f"decoding past max_len={self.config.max_len} ({state.seen} + {T} tokens)")
            with torch.inference_mode():
                products = getattr(state, "products", None) or self.products()  # a state from model.init_state has none
                if T == 1 and token_mask is None and state.length > 0:
                    return _one_token_step(self.model, products, input_ids, segment_ids, state)
                return _fast_step(self.model, products, input_ids, segment_ids, state, token_mask, last_only)
        if not self.fallbacks:
            log.warning("decoding %s through the plain model step (the fast step does not cover %s)",
                        type(self.model).__name__, self.unsupported)
        self.fallbacks[self.unsupported] += 1
        return self.model.step(input_ids, segment_ids, state, token_mask, last_only)


def _embed(p: _Products, input_ids, positions, segment_ids):
    """`Embeddings.forward` (token + position (+ segment); dropout off while decoding), tables read directly."""
    x = F.embedding(input_ids, p.token_table) + F.embedding(positions, p.position_table)
    if p.segment_table is not None and segment_ids is not None:
        x = x + F.embedding(segment_ids.long(), p.segment_table)
    return x


def _fast_step(model, p: _Products, input_ids, segment_ids, state, token_mask=None, last_only=False):
    """T new tokens per row (a context, left-padded under `token_mask`): `DialogLM.step` for the pre-LN
    softmax layout, with the linear layers in the decoding precision. Positions, key mask and causal
    mask are built as the model builds them."""
    B, T = input_ids.shape
    H = model.config.n_head
    tm = None if token_mask is None else token_mask.to(input_ids.device).bool()
    if tm is not None and bool(tm.all()):
        tm = None
    if tm is None:
        positions = state.positions[:, None] + torch.arange(T, device=input_ids.device)
    else:
        positions = state.positions[:, None] + (tm.long().cumsum(1) - 1).clamp(min=0)
    L, S = state.length, state.length + T
    attn_mask, is_causal = None, L == 0
    if tm is not None or state.key_mask is not None:
        old = state.key_mask if state.key_mask is not None else input_ids.new_ones(B, L, dtype=torch.bool)
        new = tm if tm is not None else input_ids.new_ones(B, T, dtype=torch.bool)
        state.key_mask = torch.cat([old, new], 1)
        attn_mask, is_causal = causal_mask(state.key_mask, T, S, input_ids.device), False
    elif L > 0 and T > 1:  # with a cache, the causal mask aligns bottom-right
        attn_mask, is_causal = causal_mask(None, T, S, input_ids.device), False
    elif L > 0:
        is_causal = False  # one new query sees every cached key
    x = _embed(p, input_ids, positions, segment_ids)  # (B, T, D)
    D = x.shape[-1]
    like = x.new_empty(B, H, 0, D // H)  # what an empty cache allocates
    start = [cache.reserve(T, like=like) for cache in state.layers][0]  # the same slots in every layer
    for cache, (ln1, ln2), (qkv, out, fc, proj) in zip(state.layers, p.norms, p.blocks):
        q, k, v = qkv(F.layer_norm(x, *ln1).view(B * T, D)).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        cache.k[:, :, start:S] = k
        cache.v[:, :, start:S] = v
        a = F.scaled_dot_product_attention(q, cache.k[:, :, :S], cache.v[:, :, :S], attn_mask=attn_mask, is_causal=is_causal)
        x = x + out(a.transpose(1, 2).reshape(B * T, D)).view(B, T, D)
        x = x + proj(F.gelu(fc(F.layer_norm(x, *ln2).view(B * T, D)), approximate="tanh")).view(B, T, D)
    h = F.layer_norm(x, *p.final_norm)
    scored = h[:, -1:] if last_only else h
    scores = p.head(scored.reshape(-1, D)).float().view(B, scored.shape[1], -1)  # (B, T|1, V)
    if model.config.self_terminating:  # its running product needs every position
        log_prod, state.st_log_prod = model._st_log_prod(h, input_ids, positions, tm, state.st_log_prod)
        scores = model._st_log_probs(scores, log_prod[:, -scores.shape[1]:])
    return scores, state.advance(T, None if tm is None else tm.sum(1))


def _one_token_step(model, p: _Products, input_ids, segment_ids, state):
    """One new token per row: `_fast_step` for T = 1, with what a single new token does not need left
    out (position ranges, masks for unpadded rows, the causal mask, reshapes): the per-token path.

    Its keys and values go straight into the preallocated cache slot, and rows without padding need
    no mask (one query sees every cached key).
    """
    B, H = input_ids.shape[0], model.config.n_head
    attn_mask = None
    if state.key_mask is not None:  # padded rows: the new token is real and sees every real key
        state.key_mask = torch.cat([state.key_mask, input_ids.new_ones(B, 1, dtype=torch.bool)], 1)
        attn_mask = state.key_mask[:, None, None, :]  # (B, 1, 1, S) = causal_mask(key_mask, 1, S)
    start = [cache.reserve(1) for cache in state.layers][0]  # the same slot in every layer
    end = start + 1
    positions = state.positions[:, None]
    x = _embed(p, input_ids, positions, segment_ids)[:, 0]  # (B, D)
    D = x.shape[1]
    for cache, (ln1, ln2), (qkv, out, fc, proj) in zip(state.layers, p.norms, p.blocks):
        q, k, v = qkv(F.layer_norm(x, *ln1)).view(B, 3, H, 1, D // H).unbind(1)  # 3 × (B, H, 1, Dh)
        cache.k[:, :, start:end] = k
        cache.v[:, :, start:end] = v
        a = F.scaled_dot_product_attention(q, cache.k[:, :, :end], cache.v[:, :, :end], attn_mask=attn_mask)
        x = x + out(a.view(B, D))
        x = x + proj(F.gelu(fc(F.layer_norm(x, *ln2)), approximate="tanh"))
    h = F.layer_norm(x, *p.final_norm)
    scores = p.head(h).float().view(B, 1, -1)
    if model.config.self_terminating:
        log_prod, state.st_log_prod = model._st_log_prod(h.view(B, 1, -1), input_ids, positions, None, state.st_log_prod)
        scores = model._st_log_probs(scores, log_prod)
    return scores, state.advance(1)
