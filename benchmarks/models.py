"""Model benchmarks (issue 4): every figure a ratio against an anchor measured in the same run.

1. training tokens/s, DialogLM vs transformers' GPT2LMHeadModel (6 layers, 384 wide, 6 heads,
   vocab 13,088, batch 8 × 256, AdamW step included), fp32 and bf16 autocast where the CPU has
   native bf16 (avx512_bf16 / amx_bf16); target ≥ 1.5×. Loss on the second half of each row (the
   first half is context, as the shards' loss_mask leaves u1 out); HF gets labels −100 there.
2. greedy decoding tokens/s, 64-token context + 256 new tokens, batch 1: our `step` loop vs HF
   `generate` (cache on, no early stop); target ≥ 3×.
3. linear vs softmax attention (2 layers, 384 wide): training-step seconds at T = 256 … 8192 and
   per-token decode cost after a context of T; linear decode must stay flat (≤ 1.2× from the
   shortest to the longest T); the training crossover length is reported.
4. pseudo-log-likelihood of 64-token sentences: FastMLM (one pass) vs MaskedLM (one masked copy
   per token, batched, logits only at the masked position), T-TA's shape (3 × 512); target ≥ 30×.
   The FLOP ceiling of this ratio is printed with it: both project every scored position onto the
   vocabulary, so a wide vocabulary against a shallow body caps it (≈ 26× at 3 × 256, 36× at 3 × 512).
5. Integrated Gradients rows from benchmarks/attribution.py (`run_ig_benchmarks`) when present.
Measurements of a pair alternate (ours, anchor, ours, …) and keep the best of n, so that load from
other processes hits both alike and distorts the figures least.

Run: `.venv/bin/python benchmarks/models.py [--quick]`.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

try:
    from benchmarks.common import emit, print_table, result
except ImportError:  # run as a script: common puts the repo root on sys.path
    from common import emit, print_table, result

import torch  # noqa: E402

from models.dialog_lm import DialogLM, DialogLMConfig  # noqa: E402
from models.fast_mlm import FastMLM, FastMLMConfig  # noqa: E402
from models.masked_lm import MaskedLM, MaskedLMConfig  # noqa: E402
from models.precision import autocast, cpu_has_native_bf16  # noqa: E402

VOCAB, D, H, L = 13088, 384, 6, 6


def alternate(fns: list, reps: int, warmup: int = 1) -> list[float]:
    """Best-of-`reps` seconds of each fn, calls interleaved round-robin (on a shared machine the
    minimum is the least load-distorted estimate, and interleaving exposes both to the same load)."""
    for _ in range(warmup):
        for f in fns:
            f()
    times = [[] for _ in fns]
    for _ in range(reps):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t)
    return [min(t) for t in times]


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


def bench_training(quick: bool) -> tuple[list[dict], list[str]]:
    B, T = 8, 256
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, VOCAB, (B, T), generator=g)
    seg = torch.zeros_like(ids)
    loss_mask = torch.ones_like(ids)
    loss_mask[:, : T // 2] = 0  # context half, response half
    labels = ids.masked_fill(loss_mask == 0, -100)
    ours, hf = ours_lm(), hf_lm()
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_h = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    rows, notes = [], []
    precisions = [("fp32", None)]
    if cpu_has_native_bf16():
        precisions.append(("bf16", torch.bfloat16))
    else:
        notes.append("bf16 training row skipped: this CPU reports neither amx_bf16 nor avx512_bf16")

    for name, dtype in precisions:
        def step_ours():
            with autocast("cpu", dtype):
                loss = ours(ids, seg, loss_mask=loss_mask).loss
            loss.backward()
            opt_o.step()
            opt_o.zero_grad(set_to_none=True)

        def step_hf():
            with autocast("cpu", dtype):
                loss = hf(input_ids=ids, labels=labels).loss
            loss.backward()
            opt_h.step()
            opt_h.zero_grad(set_to_none=True)

        t_o, t_h = alternate([step_ours, step_hf], reps=2 if quick else 5)
        rows.append(result(f"train_tokens_per_s_{name}", B * T / t_o, "tokens/s", f"HF GPT2LMHeadModel {name}", B * T / t_h,
                           target=1.5, loss_share=0.5))
    return rows, notes


def bench_decode(quick: bool) -> list[dict]:
    ctx_len, new = 64, (64 if quick else 256)
    ours, hf = ours_lm(max_len=512).eval(), hf_lm(max_len=512).eval()
    ctx = torch.randint(7, VOCAB, (1, ctx_len), generator=torch.Generator().manual_seed(1))
    seg = torch.zeros_like(ctx)
    seg1 = torch.ones(1, 1, dtype=torch.long)

    @torch.inference_mode()
    def greedy_ours():
        state = ours.init_state(1)
        scores, state = ours.step(ctx, seg, state)
        out = []
        for _ in range(new):
            nxt = scores[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            out.append(nxt)
            scores, state = ours.step(nxt, seg1, state)
        return torch.cat(out, 1)

    @torch.inference_mode()
    def greedy_hf():
        return hf.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, num_beams=1, pad_token_id=0)[:, ctx_len:]

    t_o, t_h = alternate([greedy_ours, greedy_hf], reps=1 if quick else 3)
    same = "same" if torch.equal(greedy_ours(), greedy_hf()) else "n/a (different random weights)"
    return [result("greedy_decode_tokens_per_s", new / t_o, "tokens/s", "HF generate greedy", new / t_h,
                   target=3.0, new_tokens=new, context=ctx_len, tokens_match=same)]


def bench_linear_vs_softmax(quick: bool) -> tuple[list[dict], list[str]]:
    lengths = [256, 1024, 2048] if quick else [256, 512, 1024, 2048, 4096, 8192]
    top = lengths[-1]
    models = {a: ours_lm(max_len=top + 128, attention=a, n_layer=2) for a in ("softmax", "linear")}
    train, decode = {}, {}
    for T in lengths:
        ids = torch.randint(7, VOCAB, (1, T), generator=torch.Generator().manual_seed(T))
        seg = torch.zeros_like(ids)
        lm = torch.zeros_like(ids)
        lm[:, -64:] = 1  # a short response: the step time is the body's, not the vocabulary head's
        fns = [lambda m=m: m(ids, seg, loss_mask=lm).loss.backward() for m in models.values()]
        t_s, t_l = alternate(fns, reps=1 if quick or T >= 4096 else 3, warmup=0 if T >= 4096 else 1)
        train[T] = (t_s, t_l)
        per_tok = []
        for m in models.values():
            with torch.inference_mode():
                state = m.init_state(1)
                _, state = m.step(ids, seg, state)  # prefill a context of T tokens
                nxt, n, rounds = ids[:, :1], 8, (3 if quick else 6)
                m.step(nxt, seg[:, :1], state)
                best = float("inf")
                for _ in range(rounds):  # best round of n tokens (the cache grows by n·rounds ≪ T)
                    t = time.perf_counter()
                    for _ in range(n):
                        m.step(nxt, seg[:, :1], state)
                    best = min(best, (time.perf_counter() - t) / n)
                per_tok.append(best)
        decode[T] = tuple(per_tok)
    lo, hi = lengths[0], top
    cross = next((T for T in lengths if train[T][1] < train[T][0]), None)
    rows = [
        result(f"linear_decode_flatness_{lo}_to_{hi}", decode[hi][1] * 1e3, "ms/token", f"linear decode at T={lo}",
               decode[lo][1] * 1e3, lower_is_better=True, target="≥ 1/1.2 = 0.83"),
        result(f"decode_linear_vs_softmax_T{hi}", decode[hi][1] * 1e3, "ms/token", f"softmax decode at T={hi}",
               decode[hi][0] * 1e3, lower_is_better=True),
        result(f"train_step_linear_vs_softmax_T{hi}", train[hi][1], "s/step", f"softmax step at T={hi}", train[hi][0],
               lower_is_better=True, crossover_length=cross),
        result(f"train_step_linear_vs_softmax_T{lo}", train[lo][1], "s/step", f"softmax step at T={lo}", train[lo][0],
               lower_is_better=True),
    ]
    notes = ["linear vs softmax (2 layers, 384 wide, batch 1) — T: train s/step softmax|linear, decode ms/token softmax|linear"]
    notes += [f"  T={T}: {train[T][0]:.3f}|{train[T][1]:.3f} s, {decode[T][0]*1e3:.2f}|{decode[T][1]*1e3:.2f} ms" for T in lengths]
    notes.append(f"training-step crossover length: {cross if cross else f'none up to {hi}'}")
    return rows, notes


def bench_pll(quick: bool) -> list[dict]:
    B, T = (2 if quick else 8), 64
    # T-TA's own shape (Shin et al. 2020: 3 layers, 512 wide, 8 heads) with our vocabulary
    shape = dict(vocab_size=VOCAB, max_len=128, n_layer=3, n_head=8, d_model=512, dropout=0.0)
    torch.manual_seed(0)
    fast, mlm = FastMLM(FastMLMConfig(**shape)).eval(), MaskedLM(MaskedLMConfig(**shape)).eval()
    ids = torch.randint(7, VOCAB, (B, T), generator=torch.Generator().manual_seed(2))
    ids[:, 0], ids[:, -1] = 2, 3
    with torch.inference_mode():
        t_f, t_m = alternate([lambda: fast.pseudo_log_likelihood(ids), lambda: mlm.pseudo_log_likelihood(ids)],
                             reps=1 if quick else 2)
    # FLOP ceiling of the ratio: the MLM runs the body on T−2 copies, T-TA once; both project T−2
    # positions onto the vocabulary. body ≈ 12·n_layer·D² MAC/token, head ≈ (V + D)·D MAC/position.
    body, head = 12 * shape["n_layer"] * shape["d_model"] ** 2, (VOCAB + shape["d_model"]) * shape["d_model"]
    n = T - 2
    ceiling = (n * (T * body + head)) / (T * body + n * head)
    return [result("pll_sentences_per_s", B / t_f, "sentences/s", f"MaskedLM PLL ({n} masked passes)", B / t_m,
                   target=30.0, flop_ratio_ceiling=round(ceiling, 1), shape="3 layers, 512 wide, 8 heads, vocab 13,088")]


def ig_rows(quick: bool) -> tuple[list[dict], list[str]]:
    if importlib.util.find_spec("benchmarks.attribution") is None and not (Path(__file__).parent / "attribution.py").exists():
        return [], ["Integrated Gradients rows: benchmarks/attribution.py not present"]
    try:
        from benchmarks.attribution import run_ig_benchmarks
    except ImportError:
        from attribution import run_ig_benchmarks
    rows = run_ig_benchmarks(quick)
    return rows, [n for r in rows for n in r.get("notes", [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter lengths")
    parser.add_argument("--only", nargs="*", default=None, help="subset of: train decode linear pll ig")
    args = parser.parse_args()
    parts = args.only or ["train", "decode", "linear", "pll", "ig"]
    rows, notes = [], [f"torch {torch.__version__}, {torch.get_num_threads()} threads"]
    if "train" in parts:
        r, n = bench_training(args.quick)
        rows += r
        notes += n
    if "decode" in parts:
        rows += bench_decode(args.quick)
    if "linear" in parts:
        r, n = bench_linear_vs_softmax(args.quick)
        rows += r
        notes += n
    if "pll" in parts:
        rows += bench_pll(args.quick)
    if "ig" in parts:
        r, n = ig_rows(args.quick)
        rows += r
        notes += n
    print_table("models: ours vs anchors", rows, notes)
    emit("models", rows, quick=args.quick, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
