"""The model benchmarks on a GPU: the same code as on the CPU, each figure against an anchor timed in
the same run on the same card. CI has no GPU; this runs on a lent GPU machine by hand.

1. training tokens/s, DialogLM vs transformers' GPT2LMHeadModel (6 × 384, 6 heads, vocab 13,088,
   batch 32 × 256, loss on 70 % of positions, fused AdamW in both), in bf16 autocast (what
   `precision: auto` picks on this card) and in fp32;
2. greedy decoding tokens/s, 64-token context + 256 new tokens, batch 1 and batch 32: our `step`
   loop vs HF `generate` (cache on, no early stop);
3. linear vs softmax attention: per-token decode cost after a context of 256 and 8192 tokens.

Run: `python -m benchmarks.gpu [--quick]` (needs CUDA; as a module, so `models` is the package).
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import emit, print_table, result  # run as a module: python -m benchmarks.gpu

import torch  # noqa: E402

from benchmarks import models as cpu_bench  # noqa: E402  the CPU benchmark's shapes and model builders
from liaotian.models.precision import resolve_precision  # noqa: E402

VOCAB, LOSS_SHARE = cpu_bench.VOCAB, cpu_bench.LOSS_SHARE


def timed(fn, reps: int, warmup: int = 2) -> float:
    """Best of `reps` wall-clock seconds, the GPU synchronised around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def ours_lm(max_len=512, attention="softmax", n_layer=cpu_bench.L):
    return cpu_bench.ours_lm(max_len, attention, n_layer).cuda()


def hf_lm(max_len=512):
    return cpu_bench.hf_lm(max_len).cuda()


def bench_training(reps: int) -> list[dict]:
    B, T = 32, 256
    ids = torch.randint(7, VOCAB, (B, T), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    seg = torch.zeros_like(ids)
    loss_mask = torch.ones_like(ids)
    loss_mask[:, : round(T * (1 - LOSS_SHARE))] = 0
    labels = ids.masked_fill(loss_mask == 0, -100)
    ours, hf = ours_lm(T), hf_lm(T)
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    opt_h = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)
    rows = []
    for name, dtype in (("bf16", resolve_precision("auto", "cuda")), ("fp32", None)):
        def step(model, opt, fn):
            def run():
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    loss = fn(model)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return run

        t_o = timed(step(ours, opt_o, lambda m: m(ids, seg, loss_mask=loss_mask).loss), reps)
        t_h = timed(step(hf, opt_h, lambda m: m(input_ids=ids, labels=labels).loss), reps)
        rows.append(result(f"gpu_train_tokens_per_s_{name}", B * T / t_o, "tokens/s", f"HF GPT2LMHeadModel {name}", B * T / t_h))
    return rows


def bench_decode(reps: int, new: int) -> list[dict]:
    ctx_len = 64
    ours, hf = ours_lm().eval(), hf_lm().eval()
    rows = []
    for batch in (1, 32):
        ctx = torch.randint(7, VOCAB, (batch, ctx_len), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        seg = torch.zeros_like(ctx)
        seg1 = torch.ones(batch, 1, dtype=torch.long, device="cuda")

        @torch.inference_mode()
        def greedy_ours():
            state = ours.init_state(batch)
            scores, state = ours.step(ctx, seg, state, last_only=True)  # as models.generate does after a context
            out = torch.empty(batch, new, dtype=torch.long, device="cuda")
            for i in range(new):
                nxt = out[:, i:i + 1]
                torch.argmax(scores[:, -1], -1, keepdim=True, out=nxt)
                scores, state = ours.step(nxt, seg1, state)
            return out

        @torch.inference_mode()
        def greedy_hf():
            return hf.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, num_beams=1, pad_token_id=0)

        t_o, t_h = timed(greedy_ours, reps, 1), timed(greedy_hf, reps, 1)
        rows.append(result(f"gpu_greedy_decode_tokens_per_s_batch{batch}", batch * new / t_o, "tokens/s",
                           "HF generate greedy", batch * new / t_h))
    return rows


@torch.inference_mode()
def bench_linear_decode(reps: int) -> list[dict]:
    costs = {}
    for attention in ("softmax", "linear"):
        model = ours_lm(max_len=8192 + 512, attention=attention, n_layer=2).eval()  # room for the timed steps
        for T in (256, 8192):
            ctx = torch.randint(7, VOCAB, (1, T), device="cuda")
            state = model.init_state(1)
            _, state = model.step(ctx, torch.zeros_like(ctx), state)
            tok, seg = ctx[:, :1], torch.zeros(1, 1, dtype=torch.long, device="cuda")
            steps = 32

            def decode():  # 32 steps on a copy-free state: the cost of the next tokens after T
                for _ in range(steps):
                    model.step(tok, seg, state)

            costs[attention, T] = timed(decode, reps) / steps * 1e3
    return [result("gpu_linear_decode_flatness_256_to_8192", costs["linear", 8192], "ms/token", "linear decode at T=256",
                   costs["linear", 256], lower_is_better=True),
            result("gpu_decode_linear_vs_softmax_T8192", costs["linear", 8192], "ms/token", "softmax decode at T=8192",
                   costs["softmax", 8192], lower_is_better=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and 64 new tokens")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device")
    reps = 2 if args.quick else 5
    rows = bench_training(reps) + bench_decode(reps, 64 if args.quick else 256) + bench_linear_decode(reps)
    notes = [f"{torch.cuda.get_device_name()}, torch {torch.__version__}, precision auto -> {resolve_precision('auto', 'cuda')}",
             "training batch 32×256, loss on 70 % of positions; decode 64-token context, batch 1 and 32"]
    print_table("models on the GPU: ours vs anchors", rows, notes)
    emit("gpu", rows, device=torch.cuda.get_device_name(), torch=torch.__version__)


if __name__ == "__main__":
    main()
