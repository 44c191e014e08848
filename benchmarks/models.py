"""Model benchmarks (issue 4): every figure a ratio against an anchor measured in the same run.

1. training tokens/s on the same kernels (`train_same_kernels`): DialogLM as pipelines/train_loop.py builds
   it (models/fast_train.py) vs transformers' GPT2LMHeadModel (6 layers, 384 wide, 6 heads, vocab 13,088,
   batch 8 × 256, dropout 0 in both, the same fused AdamW step included), both on torch's default
   kernels, fp32 and bf16 autocast where the CPU has native bf16 (avx512_bf16 / amx_bf16); target ≥ 1.5×.
   The loss covers the last LOSS_SHARE of each row (the pipeline's dialogue shards score 69–73 % of their
   tokens); HF gets labels −100 on the context part. The kernel choice is its own row
   (`train_kernel_choice_onednn`: ours with oneDNN fp32 linear layers vs ours on the default). Each
   training row carries its matrix-product FLOPs and rates, and a ceiling row
   (`ceiling_train_products_attention`): ours if all but its products and attention cost nothing.
2. greedy decoding through the served path (`models.generate.generate` over `FastDecoder`, what
   `liaotian chat` and the chat deployment run; min_new_tokens = max_new_tokens, 64-token context, 256
   new tokens) against HF `generate` and CTranslate2 (converted from a GPT-2 checkpoint of the same
   weights) at each precision both offer, batch 1 and 16: `decode_vs_ct2_fp32`, `decode_vs_ct2_int8`,
   `decode_vs_hf_same_precision` (at the served precision, `serve.decode_precision`), target ≥ 1.0×
   CTranslate2. The bare one-token step loop is a labelled ceiling row, and so is `ceiling_products_only_*`:
   the step's matrix products alone at that precision against CTranslate2's whole decoding (what is left
   for everything else a step does before it loses). Greedy-token agreement of each
   engine and precision with our fp32 replies on a DialogLM trained (seeded) on the LCCC-base valid split.
3. linear vs softmax attention (2 layers, 384 wide): training-step seconds at T = 256 … 8192 and
   per-token decode cost after a context of T; linear decode must stay flat (≤ 1.2× from the
   shortest to the longest T); the training crossover length is reported.
4. pseudo-log-likelihood of 64-token sentences: FastMLM (one pass) vs MaskedLM (one masked copy
   per token, 64 copies a batch, logits only at the masked position); target ≥ 30×. Two rows: the
   issue's shape (6 × 384, 6 heads) and T-TA's own (3 × 512, 8 heads), both at vocab 13,088.
   The FLOP ceiling of the ratio is printed with it: both project every scored position onto the
   vocabulary, so a wide vocabulary against a shallow body caps it (≈ 26× at 3 × 256, 36× at
   3 × 512, 42× at 6 × 384).
Measurements of a pair alternate (ours, anchor, ours, …) and keep the best of n, so that load from
other processes hits both alike and distorts the figures least. By default torch runs one intra-op
thread (`--threads`), and each figure is timed twice: by the process's CPU time (the ratio in the
table: on a shared machine it counts the work done, not the time spent waiting for a core) and by
wall-clock time (`wall_ratio` in the JSON row).

Run: `.venv/bin/python benchmarks/models.py [--quick] [--threads N]`.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

try:
    from benchmarks.common import best_of, emit, print_table, result
except ImportError:  # run as a script: common puts the repo root on sys.path
    from common import best_of, emit, print_table, result

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no per-load progress bars in the stored output
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from liaotian.models.dialog_lm import DialogLM, DialogLMConfig  # noqa: E402
from liaotian.models.fast_train import accelerate_training  # noqa: E402
from liaotian.models.fast_mlm import FastMLM, FastMLMConfig  # noqa: E402
from liaotian.models.masked_lm import MaskedLM, MaskedLMConfig  # noqa: E402

from liaotian.models.precision import autocast, cpu_has_native_bf16  # noqa: E402

VOCAB, D, H, L = 13088, 384, 6, 6


LOSS_SHARE = 0.7  # share of tokens under loss_mask in the pipeline's dialogue shards (0.69–0.73 measured)


class Timing(tuple):
    """(cpu seconds, wall seconds), each the best of n."""

    cpu = property(lambda self: self[0])
    wall = property(lambda self: self[1])


def alternate(fns: list, reps: int, warmup: int = 1) -> list[Timing]:
    """Best-of-`reps` CPU and wall seconds of each fn, calls interleaved round-robin (on a shared
    machine the minimum is the least load-distorted estimate, and interleaving exposes both to the
    same load). CPU time is the process's: with one torch thread it is the work of this call."""
    for _ in range(warmup):
        for f in fns:
            f()
    cpu, wall = [[] for _ in fns], [[] for _ in fns]
    for _ in range(reps):
        for i, f in enumerate(fns):
            c, t = time.process_time(), time.perf_counter()
            f()
            wall[i].append(time.perf_counter() - t)
            cpu[i].append(time.process_time() - c)
    return [Timing((min(c), min(w))) for c, w in zip(cpu, wall)]


def paired(name, work, t_ours: Timing, unit, anchor, t_anchor: Timing, **extra) -> dict:
    """A rate row (work / seconds) by CPU time, with the wall-clock rates and ratio beside it."""
    return result(name, work / t_ours.cpu, unit, anchor, work / t_anchor.cpu, wall_value=work / t_ours.wall,
                  wall_anchor_value=work / t_anchor.wall, wall_ratio=t_anchor.wall / t_ours.wall, **extra)


def adamw(params):
    """The optimiser both training loops use: fused AdamW where this torch has it for CPU."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=1e-4, fused=True), "fused"
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=1e-4, foreach=True), "foreach"


def ours_lm(max_len=256, attention="softmax", n_layer=L) -> DialogLM:
    torch.manual_seed(0)
    cfg = DialogLMConfig(vocab_size=VOCAB, max_len=max_len, n_layer=n_layer, n_head=H, d_model=D, dropout=0.0, attention=attention)
    return DialogLM(cfg)


def hf_lm(max_len=256):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=max_len, n_embd=D, n_layer=L, n_head=H,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    return GPT2LMHeadModel(cfg)


# ---------------------------------------------------------------------------------------- training
class _OneDNNLinear(torch.autograd.Function):
    """F.linear through oneDNN's fp32 kernel, forward and backward: the kernel swap the training rows
    measure (the former models/kernels.py, kept here as a measurement, not a model path)."""

    @staticmethod
    def forward(ctx, x, w, b):
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, w)
        ctx.has_bias = b is not None
        return torch.ops.mkldnn._linear_pointwise(x2, w, b, "none", [], "").view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2, w = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        mm = lambda a, m: torch.ops.mkldnn._linear_pointwise(a, m, None, "none", [], "")  # noqa: E731  a · mᵀ
        dx = mm(g2, w.t()).view(*grad.shape[:-1], w.shape[1])
        dw = mm(g2.t(), x2.t())
        return dx, dw, (g2.sum(0) if ctx.has_bias else None)


def with_onednn_linears(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose linear layers (not the tied output product) compute through oneDNN."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.forward = lambda x, m=m: _OneDNNLinear.apply(x, m.weight, m.bias)
    return model


def train_step_flops(B: int, T: int, vocab_rows: int) -> float:
    """Matrix-product FLOPs of one training step of this file's GPT-2 shape: the forward's multiply-adds × 2,
    and the backward twice the forward (input and weight gradients); attention counted in full (QKᵀ and
    PV over T × T per head, as both sides' kernels are asked for), the output layer over `vocab_rows`."""
    linear = 2 * 12 * D * D * L * B * T
    attention = 2 * 2 * B * T * T * D * L
    return 3 * (linear + attention + 2 * D * VOCAB * vocab_rows)


def matmul_rate(rows: int, dtype=None) -> float:
    """GFLOP/s of torch's product (rows, D) × (D, 4D) on this core, best of 5: the largest product of a
    training step, the rate the step's FLOPs can be set against."""
    a, b = torch.randn(rows, D), torch.randn(D, 4 * D)
    with autocast("cpu", dtype):
        a @ b
        t = best_of(lambda: a @ b, 5, clock=time.process_time)
    return 2 * rows * D * 4 * D / t / 1e9


def step_split(step) -> dict:
    """Shares of one `step()`'s self CPU time (torch's profiler) in matrix products, the attention kernel
    and everything else (element-wise kernels, norms, the loss, the optimiser, dispatch)."""
    from torch.profiler import profile

    with profile() as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"))
    attention = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    return dict(products=products / total, attention=attention / total, rest=1 - (products + attention) / total,
                products_and_attention=(products + attention) / total)


def bench_training(quick: bool) -> tuple[list[dict], list[str]]:
    """Training tokens/s on the same kernels: DialogLM through the training path
    (`accelerate_training`, as pipelines/train_loop.py builds it) vs HF GPT2LMHeadModel, both on torch's
    default kernels; the kernel choice (oneDNN for the fp32 linear layers) as a separate row."""
    B, T = 8, 256
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, VOCAB, (B, T), generator=g)
    seg = torch.zeros_like(ids)
    loss_mask = torch.ones_like(ids)
    loss_mask[:, : round(T * (1 - LOSS_SHARE))] = 0  # context, then the scored responses
    labels = ids.masked_fill(loss_mask == 0, -100)
    share = loss_mask[:, 1:].float().mean().item()  # the positions whose logits we compute
    ours, hf = accelerate_training(ours_lm()), hf_lm()
    onednn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    ours_onednn = with_onednn_linears(ours) if onednn else None
    opt_o, kind = adamw(ours.parameters())
    opt_h, _ = adamw(hf.parameters())
    opt_k = adamw(ours_onednn.parameters())[0] if onednn else None
    rows, notes = [], []
    precisions = [("fp32", None)]
    if cpu_has_native_bf16():
        precisions.append(("bf16", torch.bfloat16))
    else:
        notes.append("bf16 training row skipped: this CPU reports neither amx_bf16 nor avx512_bf16")

    def train_step(model, opt, dtype, **batch):
        with autocast("cpu", dtype):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    ours_batch = dict(input_ids=ids, segment_ids=seg, loss_mask=loss_mask)
    for name, dtype in precisions:
        fns = [lambda: train_step(ours, opt_o, dtype, **ours_batch), lambda: train_step(hf, opt_h, dtype, input_ids=ids, labels=labels)]
        if onednn and dtype is None:
            fns.append(lambda: train_step(ours_onednn, opt_k, dtype, **ours_batch))
        t_o, t_h, *t_k = alternate(fns, reps=2 if quick else 4)
        suffix = "" if name == "fp32" else f"_{name}"
        flops_o, flops_h = train_step_flops(B, T, int(loss_mask[:, 1:].sum())), train_step_flops(B, T, B * T)
        rate = matmul_rate(B * T, dtype)
        rows.append(paired(f"train_same_kernels{suffix}", B * T, t_o, "tokens/s", f"HF GPT2LMHeadModel {name}", t_h, target=1.5,
                           kernels="torch default (both)", loss_share=round(share, 3), optimizer=f"AdamW {kind} (both)",
                           flops_ratio=flops_h / flops_o, ours_gflops=flops_o / t_o.cpu / 1e9, hf_gflops=flops_h / t_h.cpu / 1e9,
                           matmul_gflops=rate))
        notes.append(f"train_same_kernels{suffix}: matrix-product FLOPs a step ours {flops_o / 1e9:.1f} G, HF {flops_h / 1e9:.1f} G "
                     f"(HF projects every position onto the vocabulary: {flops_h / flops_o:.2f}x ours); achieved "
                     f"{flops_o / t_o.cpu / 1e9:.0f} vs {flops_h / t_h.cpu / 1e9:.0f} GFLOP/s (CPU time), against "
                     f"{rate:.0f} GFLOP/s for torch's ({B * T}, {D}) x ({D}, {4 * D}) product alone on this core")
        split = step_split(fns[0])
        rows.append(result(f"ceiling_train_products_attention{suffix}", B * T / (t_o.cpu * split["products_and_attention"]),
                           "tokens/s", f"HF GPT2LMHeadModel {name}", B * T / t_h.cpu, **split,
                           label="ceiling, not a headline: ours if everything in its step but the matrix products and "
                                 "the attention kernel cost nothing (shares from one profiled step)"))
        notes.append(f"train_same_kernels{suffix}: one profiled step of ours: matrix products {split['products']:.0%}, attention "
                     f"{split['attention']:.0%}, everything else {split['rest']:.0%}")
        if t_k:
            rows.append(paired("train_kernel_choice_onednn", B * T, t_k[0], "tokens/s", "ours, torch default kernels", t_o,
                               label="kernel row, not a headline: ours with oneDNN fp32 linear layers vs ours on torch's "
                                     "default; ours trains on the default everywhere"))
    notes.append(f"training: batch {B}×{T}, loss on {share:.0%} of positions (HF computes all logits, loss on the same), "
                 f"dropout 0 in both, AdamW {kind} for both, eager in both, torch's default kernels in both headline rows")
    return rows, notes


# ---------------------------------------------------------------------------------------- decoding
def hf_from_dialog_lm(model: DialogLM):
    """GPT2LMHeadModel computing the same function as `model` (a DialogLM without segment embeddings).

    The mapping mirrors `liaotian export hf`: GPT-2's Conv1D stores (in, out), so every linear
    weight is transposed; the fused qkv, tanh-GELU ("gelu_new"), LayerNorm eps 1e-5 and the tied
    output layer match as they are."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if c.n_segments:
        raise ValueError("GPT-2 has no separate segment embedding: build the DialogLM with n_segments=0")
    cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.max_len, n_embd=c.d_model, n_layer=c.n_layer, n_head=c.n_head,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=2, eos_token_id=c.eos_id, pad_token_id=c.pad_id, tie_word_embeddings=True)
    ours = model.state_dict()
    state = {"transformer.wte.weight": ours["embed.token.weight"], "transformer.wpe.weight": ours["embed.position.weight"],
             "transformer.ln_f.weight": ours["ln_f.weight"], "transformer.ln_f.bias": ours["ln_f.bias"],
             "lm_head.weight": ours["embed.token.weight"]}
    for i in range(c.n_layer):
        o, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ours_name, hf_name in (("ln1", "ln_1"), ("ln2", "ln_2")):
            state[h + hf_name + ".weight"], state[h + hf_name + ".bias"] = ours[o + ours_name + ".weight"], ours[o + ours_name + ".bias"]
        for ours_name, hf_name in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"),
                                   ("mlp.proj", "mlp.c_proj")):
            state[h + hf_name + ".weight"] = ours[o + ours_name + ".weight"].t().contiguous()
            state[h + hf_name + ".bias"] = ours[o + ours_name + ".bias"]
    hf = GPT2LMHeadModel(cfg)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("attn.bias") and not k.endswith("masked_bias") for k in missing):
        raise ValueError(f"GPT-2 mapping incomplete: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def ct2_generators(hf, tokens: list[str], workdir: Path) -> dict:
    """CTranslate2 generators converted from the GPT-2 checkpoint: {"fp32": …, "int8": …} (what this
    CPU offers of those; CTranslate2 has no bf16 on CPU)."""
    import ctranslate2
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    src = workdir / "gpt2"
    hf.save_pretrained(src)
    word_level = Tokenizer(WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]",
                            pad_token="[PAD]").save_pretrained(src)
    out = {}
    offered = ctranslate2.get_supported_compute_types("cpu")
    for precision, (quantization, compute) in {"fp32": (None, "float32"), "int8": ("int8", "int8")}.items():
        if compute not in offered:
            continue
        dst = workdir / f"ct2_{precision}"
        ctranslate2.converters.TransformersConverter(str(src)).convert(str(dst), quantization=quantization, force=True)
        out[precision] = ctranslate2.Generator(str(dst), device="cpu", compute_type=compute, intra_threads=torch.get_num_threads(),
                                               inter_threads=1)
    return out


def decoders(model: DialogLM, tokens: list[str], workdir: Path, new: int) -> dict:
    """{(engine, precision): fn(contexts: list[list[int]]) -> replies (list[list[int]])}, greedy, exactly `new`
    tokens a reply: ours through the served path, HF `generate`, CTranslate2 `generate_batch`."""
    from liaotian.models.fast_decode import FastDecoder
    from liaotian.models.generate import DecodingConfig, Prompt, generate

    precisions = ["fp32", "int8"] + (["bf16"] if cpu_has_native_bf16() else [])
    decoding = DecodingConfig(strategy="greedy", max_new_tokens=new, min_new_tokens=new)
    eos = model.config.eos_id

    def ours(precision):
        decoder = FastDecoder(model, precision)

        def run(contexts):
            replies = generate(decoder, [Prompt(c, [0] * len(c), 1) for c in contexts], decoding, eos)
            assert not decoder.fallbacks, decoder.fallbacks
            return [r[0].token_ids for r in replies]
        return run

    def hf_run(hf_model):
        @torch.inference_mode()
        def run(contexts):
            ids = torch.tensor(contexts)
            out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                    do_sample=False, num_beams=1, pad_token_id=model.config.pad_id)
            return out[:, ids.shape[1]:].tolist()
        return run

    def ct2_run(generator):
        def run(contexts):
            results = generator.generate_batch([[tokens[i] for i in c] for c in contexts], max_length=new, min_length=new,
                                               sampling_topk=1, beam_size=1, include_prompt_in_result=False)
            return [r.sequences_ids[0] for r in results]
        return run

    hf = hf_from_dialog_lm(model)
    runs = {("ours", p): ours(p) for p in precisions}
    runs["hf", "fp32"] = hf_run(hf)
    if "bf16" in precisions:
        runs["hf", "bf16"] = hf_run(copy.deepcopy(hf).to(torch.bfloat16))
    runs.update({("ct2", p): ct2_run(g) for p, g in ct2_generators(hf, tokens, workdir).items()})
    return runs


def lccc_dialogues(limit: int):
    """(context utterances, reply) pairs from the LCCC-base valid split, or None where it is absent."""
    path = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lccc_base" / "LCCC-base_valid.json"
    if not path.is_file():
        return None
    import json

    return [d for d in json.loads(path.read_text(encoding="utf-8")) if len(d) >= 2][:limit]


def trained_dialog_lm(tok, dialogues, steps: int, seq: int = 64, batch: int = 16) -> tuple[DialogLM, float]:
    """The `tiny` DialogLM (no segment embeddings, so GPT-2 computes the same function) trained for
    `steps` seeded AdamW steps on LCCC dialogues; returns (model, last loss)."""
    torch.manual_seed(0)
    cfg = DialogLMConfig.preset("tiny", vocab_size=tok.vocab_size, max_len=256, dropout=0.0, n_segments=0,
                                pad_id=tok.pad_id, eos_id=tok.sep_id)
    model = accelerate_training(DialogLM(cfg))
    rows = []
    for d in dialogues:
        ids = [tok.cls_id]
        for u in d:
            ids += tok.encode(u.replace(" ", "")) + [tok.sep_id]
        ids = ids[:seq]
        mask = [0] * (len(tok.encode(d[0].replace(" ", ""))) + 2) + [1] * seq
        rows.append((ids + [tok.pad_id] * (seq - len(ids)), [m if i < len(ids) else 0 for i, m in enumerate(mask[:seq])]))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    loss = float("nan")
    for step in range(steps):
        pick = torch.randint(0, len(rows), (batch,), generator=g).tolist()
        ids = torch.tensor([rows[i][0] for i in pick])
        lm = torch.tensor([rows[i][1] for i in pick])
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 20)
        out = model(ids, loss_mask=lm)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
    return model.eval(), loss


def agreement(replies: dict, reference) -> dict:
    """Per engine/precision: the share of reply tokens equal to our fp32 replies at the same position,
    and the share of replies equal to them as a whole."""
    out = {}
    for key, got in replies.items():
        same = sum(a == b for r, w in zip(got, reference) for a, b in zip(r, w))
        out[key] = (round(same / sum(map(len, reference)), 3), sum(r == w for r, w in zip(got, reference)))
    return out


def products_only(model: DialogLM, precision: str, batch: int, tokens: int):
    """A run of `tokens` decoding steps' linear layers and output layer alone, as `FastDecoder` calls them
    at one new token a row (its `_Products` in `precision`): what torch's kernels at that precision cost
    before anything else a step does."""
    from liaotian.models.fast_decode import _Products

    with torch.inference_mode():
        products = _Products(model, precision)
    d = model.config.d_model
    x, wide = torch.randn(batch, d), torch.randn(batch, 4 * d)

    @torch.inference_mode()
    def run():
        for _ in range(tokens):
            products.call_each(x, wide)
    return run


def bench_decode(quick: bool) -> tuple[list[dict], list[str]]:
    """Greedy decoding through the served path (models.generate over FastDecoder, what `liaotian chat`
    and the chat deployment run) against HF `generate` and CTranslate2, same weights, same precision."""
    import tempfile

    from liaotian.models.fast_decode import FastDecoder, resolve_decode_precision
    from liaotian.pipelines.tokenizer import CharTokenizer
    from liaotian.serve.config import ServeConfig

    ctx_len, new = 64, (64 if quick else 256)
    vocab_file = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cdial_gpt" / "vocab.txt"
    tok = CharTokenizer.from_vocab_file(vocab_file) if vocab_file.is_file() else None
    tokens = tok.tokens if tok else [f"t{i}" for i in range(VOCAB)]
    torch.manual_seed(0)
    timed = DialogLM(DialogLMConfig(vocab_size=len(tokens), max_len=512, n_layer=L, n_head=H, d_model=D, dropout=0.0,
                                    n_segments=0)).eval()
    served = resolve_decode_precision(ServeConfig().decode_precision, timed)
    rows, notes = [], []
    g = torch.Generator().manual_seed(1)
    with tempfile.TemporaryDirectory() as tmp:
        runs = decoders(timed, tokens, Path(tmp), new)
        for batch in (1, 16):
            contexts = torch.randint(7, len(tokens), (batch, ctx_len), generator=g).tolist()
            keys = list(runs)
            # best of 4 interleaved runs: in the stored runs our batch-1 fp32 token took 4.98, 6.25 and 7.55 ms
            # and CTranslate2's batch-16 int8 step 16.70, 10.69 and 12.31 ms (the last two on an idle machine)
            times = dict(zip(keys, alternate([lambda f=runs[k]: f(contexts) for k in keys], reps=1 if quick else 4)))
            for k in keys:  # every engine decoded exactly `new` tokens a row
                assert all(len(r) == new for r in runs[k](contexts[:1])), k
            work, suffix = batch * new, "" if batch == 1 else f"_batch{batch}"
            common = dict(batch=batch, context=ctx_len, new_tokens=new)
            for p in ("fp32", "int8"):
                if ("ct2", p) in times:
                    rows.append(paired(f"decode_vs_ct2_{p}{suffix}", work, times["ours", p], "tokens/s", f"CTranslate2 {p}",
                                       times["ct2", p], target=1.0, **common))
            rows.append(paired(f"decode_vs_hf_same_precision{suffix}", work, times["ours", served], "tokens/s",
                               f"HF generate {served}", times["hf", served], served_precision=served, **common))
            other = "bf16" if served == "fp32" else "fp32"
            if ("hf", other) in times:
                rows.append(paired(f"decode_vs_hf_{other}{suffix}", work, times["ours", other], "tokens/s", f"HF generate {other}",
                                   times["hf", other], **common))
            if ("ours", "bf16") in times:
                rows.append(paired(f"decode_bf16_vs_ct2_fp32{suffix}", work, times["ours", "bf16"], "tokens/s",
                                   "CTranslate2 fp32 (it has no bf16 on CPU)", times["ct2", "fp32"], **common))
            # The ceiling: our one-token steps alone, argmax only (no rules, no host syncs): never a headline
            decoder = FastDecoder(timed, "int8")

            @torch.inference_mode()
            def bare_loop(ctx=torch.tensor(contexts)):
                state = decoder.init_state(batch)
                scores, state = decoder.step(ctx, torch.zeros_like(ctx), state, last_only=True)
                for _ in range(new):
                    nxt = scores[:, -1].argmax(-1, keepdim=True)
                    scores, state = decoder.step(nxt, torch.zeros_like(nxt), state)

            t_bare, t_served = alternate([bare_loop, lambda: runs["ours", "int8"](contexts)], reps=1 if quick else 2)
            rows.append(paired(f"ceiling_bare_step_loop_int8{suffix}", work, t_bare, "tokens/s", "ours int8 served path",
                               t_served, label="ceiling: the bare one-token step loop, not a headline", **common))
            for p in ("fp32", "int8"):
                if ("ct2", p) in times:
                    # best of 5: a batch-1 token reads ~62 MB (fp32) of weights, and this machine's memory
                    # bandwidth swings with its neighbours (CTranslate2's fp32 token: 3.6–7.4 ms in one hour)
                    t_products, t_ct2 = alternate([products_only(timed, p, batch, new), lambda p=p: runs["ct2", p](contexts)],
                                                  reps=2 if quick else 5)
                    rows.append(paired(f"ceiling_products_only_{p}{suffix}", work, t_products, "tokens/s",
                                       f"CTranslate2 {p}, whole decoding", t_ct2, **common,
                                       label=f"ceiling, not a headline: only the {p} matrix products our step calls "
                                             "(no attention, norms, sampling or Python), against CTranslate2's whole decoding"))
            notes.append(f"decoding batch {batch}: ms per step (CPU) " + ", ".join(
                f"{e} {p} {times[e, p].cpu / new * 1e3:.2f}" for e, p in keys))
    notes.append(f"decoding: {L} layers × {D}, vocab {len(tokens)}, no segment embedding (GPT-2 has none), random weights "
                 f"(seeded) for timing; {ctx_len}-token context, {new} new tokens, greedy, min_new_tokens = max_new_tokens; "
                 f"served precision: serve.decode_precision {ServeConfig().decode_precision!r} -> {served} here; HF has no "
                 "int8 row (GPT-2's Conv1D layers are not nn.Linear, which torch's dynamic quantisation converts)")
    rows_a, notes_a = decode_agreement(tok, quick)
    return rows + rows_a, notes + notes_a


def decode_agreement(tok, quick: bool) -> tuple[list[dict], list[str]]:
    """Greedy replies of each engine and precision against our fp32 replies, on a DialogLM trained on real dialogue."""
    import tempfile

    dialogues = lccc_dialogues(2000)
    if dialogues is None or tok is None:
        return [], ["greedy-token agreement skipped: ../shared/data (LCCC-base valid split, CDial-GPT vocab) is absent"]
    steps, new = (60 if quick else 300), 32
    train, held_out = dialogues[:-32], dialogues[-32:]
    model, loss = trained_dialog_lm(tok, train, steps)
    contexts = []
    for d in held_out:
        ids = [tok.cls_id] + tok.encode(d[0].replace(" ", ""))[:30] + [tok.sep_id]
        contexts.append(ids)
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(contexts):
        by_length.setdefault(len(c), []).append(i)
    with tempfile.TemporaryDirectory() as tmp:
        runs = decoders(model, tok.tokens, Path(tmp), new)
        replies = {k: [None] * len(contexts) for k in runs}
        for idx in by_length.values():  # equal-length contexts per call: HF and CTranslate2 need no padding then
            for k, f in runs.items():
                for i, r in zip(idx, f([contexts[i] for i in idx])):
                    replies[k][i] = r
    agree = agreement(replies, replies["ours", "fp32"])
    rows = [result(f"agreement_{e}_{p}", share, "share of tokens", "our fp32 replies", 1.0, replies_equal=f"{whole}/{len(contexts)}",
                   label="greedy-token agreement, not a speed")
            for (e, p), (share, whole) in agree.items() if (e, p) != ("ours", "fp32")]
    notes = [f"agreement: tiny DialogLM (4 × 256, vocab {tok.vocab_size}) trained {steps} seeded steps on LCCC-base valid "
             f"(last batch loss {loss:.2f}); {len(contexts)} held-out first utterances as contexts, {new} greedy tokens each"]
    return rows, notes


def bench_linear_vs_softmax(quick: bool) -> tuple[list[dict], list[str]]:
    lengths = [256, 1024, 2048] if quick else [256, 512, 1024, 2048, 4096, 8192]
    top = lengths[-1]
    models = {a: ours_lm(max_len=top + 128, attention=a, n_layer=2) for a in ("softmax", "linear")}
    train, states = {}, {}
    for T in lengths:
        ids = torch.randint(7, VOCAB, (1, T), generator=torch.Generator().manual_seed(T))
        seg = torch.zeros_like(ids)
        lm = torch.zeros_like(ids)
        lm[:, -64:] = 1  # a short response: the step time is the body's, not the vocabulary head's
        fns = [lambda m=m: m(ids, seg, loss_mask=lm).loss.backward() for m in models.values()]
        t_s, t_l = alternate(fns, reps=1 if quick or T >= 4096 else 3, warmup=0 if T >= 4096 else 1)
        train[T] = (t_s.cpu, t_l.cpu)
        with torch.inference_mode():
            for a, m in models.items():
                states[a, T] = m.step(ids, seg, m.init_state(1))[1]  # prefill a context of T tokens
    # Per-token decode cost: rounds of n single-token steps, interleaved over every (length, model)
    # so that load drifting during the run hits all lengths alike; best round per cell.
    nxt, seg1, n, rounds = torch.full((1, 1), 7), torch.zeros(1, 1, dtype=torch.long), 8, (3 if quick else 8)
    cells = {key: (lambda m=models[key[0]], st=st: m.step(nxt, seg1, st)) for key, st in states.items()}
    best = {key: float("inf") for key in cells}
    with torch.inference_mode():
        for _ in range(rounds + 1):  # the first round warms up
            for key, f in cells.items():
                c = time.process_time()
                for _ in range(n):
                    f()
                best[key] = min(best[key], (time.process_time() - c) / n)
    decode = {T: (best["softmax", T], best["linear", T]) for T in lengths}
    lo, hi = lengths[0], top
    cross = next((T for T in lengths if train[T][1] < train[T][0]), None)
    rows = [
        result(f"linear_decode_flatness_{lo}_to_{hi}", decode[hi][1] * 1e3, "ms/token", f"linear decode at T={lo}",
               decode[lo][1] * 1e3, lower_is_better=True, target="≥ 1/1.2 = 0.83"),
        result(f"softmax_decode_growth_{lo}_to_{hi}", decode[hi][0] * 1e3, "ms/token", f"softmax decode at T={lo}",
               decode[lo][0] * 1e3, lower_is_better=True),
        result(f"decode_linear_vs_softmax_T{hi}", decode[hi][1] * 1e3, "ms/token", f"softmax decode at T={hi}",
               decode[hi][0] * 1e3, lower_is_better=True),
        result(f"train_step_linear_vs_softmax_T{hi}", train[hi][1], "s/step", f"softmax step at T={hi}", train[hi][0],
               lower_is_better=True, crossover_length=cross),
        result(f"train_step_linear_vs_softmax_T{lo}", train[lo][1], "s/step", f"softmax step at T={lo}", train[lo][0],
               lower_is_better=True),
    ]
    notes = ["linear vs softmax (2 layers, 384 wide, batch 1, CPU time) — T: train s/step softmax|linear, "
             "decode ms/token softmax|linear"]
    notes += [f"  T={T}: {train[T][0]:.3f}|{train[T][1]:.3f} s, {decode[T][0]*1e3:.2f}|{decode[T][1]*1e3:.2f} ms" for T in lengths]
    notes.append(f"training-step crossover length: {cross if cross else f'none up to {hi}'}")
    return rows, notes


def pll_flop_ceiling(n_layer: int, d_model: int, T: int) -> float:
    """FLOP ratio MLM/T-TA for PLL: the MLM runs the body on T−2 copies, T-TA once; both project the
    T−2 scored positions onto the vocabulary. Body ≈ 12·L·D² + 2·L·T·D MAC/token (weights and
    attention scores), head ≈ (V + D)·D MAC/position."""
    body = 12 * n_layer * d_model**2 + 2 * n_layer * T * d_model
    head = (VOCAB + d_model) * d_model
    n = T - 2
    return (n * (T * body + head)) / (T * body + n * head)


def bench_pll(quick: bool) -> list[dict]:
    B, T = (2 if quick else 4), 64
    ids = torch.randint(7, VOCAB, (B, T), generator=torch.Generator().manual_seed(2))
    ids[:, 0], ids[:, -1] = 2, 3
    rows = []
    shapes = [("issue", L, H, D), ("tta", 3, 8, 512)]  # the 6 × 384, and T-TA's own 3 × 512
    for tag, n_layer, n_head, d_model in shapes:
        shape = dict(vocab_size=VOCAB, max_len=128, n_layer=n_layer, n_head=n_head, d_model=d_model, dropout=0.0)
        torch.manual_seed(0)
        fast, mlm = FastMLM(FastMLMConfig(**shape)).eval(), MaskedLM(MaskedLMConfig(**shape)).eval()
        with torch.inference_mode():
            fast.pseudo_log_likelihood(ids)  # warm-up; the MLM's first batch of copies warms it up itself
            t_f, t_m = alternate([lambda: fast.pseudo_log_likelihood(ids), lambda: mlm.pseudo_log_likelihood(ids, batch_size=64)],
                                 reps=1 if quick else 2, warmup=0)
        ceiling = pll_flop_ceiling(n_layer, d_model, T)
        rows.append(paired(f"pll_sentences_per_s_{tag}", B, t_f, "sentences/s", f"MaskedLM PLL ({T - 2} masked copies)", t_m,
                           target=30.0, flop_ratio_ceiling=round(ceiling, 1),
                           shape=f"{n_layer} layers, {d_model} wide, {n_head} heads, vocab 13,088, {B} sentences × {T}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter lengths")
    parser.add_argument("--only", nargs="*", default=None, help="subset of: train decode linear pll (Integrated Gradients: benchmarks/attribution.py)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for ours and the anchors alike (default 1: on a shared machine "
                             "contention then hits both equally)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.only or ["train", "decode", "linear", "pll"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, notes = [], [f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average at start {load:.1f}",
                       "ratio = by process CPU time (best of n, interleaved); wall-clock figures are in the JSON rows"]
    if "train" in parts:
        r, n = bench_training(args.quick)
        rows += r
        notes += n
    if "decode" in parts:
        r, n = bench_decode(args.quick)
        rows += r
        notes += n
    if "linear" in parts:
        r, n = bench_linear_vs_softmax(args.quick)
        rows += r
        notes += n
    if "pll" in parts:
        rows += bench_pll(args.quick)
    notes += [f"{r['name']}: wall-clock ratio {r['wall_ratio']:.2f} ({r['wall_value']:.4g} vs {r['wall_anchor_value']:.4g})"
              for r in rows if "wall_ratio" in r]
    notes.append(f"load average at end {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    print_table("models: ours vs anchors", rows, notes)
    emit("models", rows, quick=args.quick, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
