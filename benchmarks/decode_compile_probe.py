"""Would `torch.compile` speed up the one-token decoding step? A probe, not a served path.

The fast step of models/fast_decode.py, written once over a static-shape KV cache (every layer's keys
and values preallocated for max_len, the attention masked to the filled slots, so that the shapes do
not change from token to token and inductor compiles it once), runs eagerly and compiled by
`torch.compile(fullgraph=True)` (inductor, default options), fp32, batch 1, one torch thread, over the
same prepared weights (`FastDecoder(model, "fp32").products()`). Reported: the compiled step's
tokens/s against the same function run eagerly, against the served eager step, and the seconds the
compilation took (this process's CPU time, inductor's compile workers' CPU time, and wall time), from
an empty inductor cache (a fresh temporary TORCHINDUCTOR_CACHE_DIR: the cost on a machine's first start;
with a warm cache it is a few seconds).

Run: `.venv/bin/python benchmarks/decode_compile_probe.py`.
"""
from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time

try:
    from benchmarks.common import emit, print_table, result
    from benchmarks.models import D, H, L, VOCAB, alternate
except ImportError:  # run as a script
    from common import emit, print_table, result
    from models import D, H, L, VOCAB, alternate

CACHE_DIR = tempfile.mkdtemp(prefix="inductor-probe-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = CACHE_DIR  # before torch is imported: compile from scratch

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from liaotian.models.dialog_lm import DialogLM, DialogLMConfig  # noqa: E402
from liaotian.models.fast_decode import FastDecoder  # noqa: E402

CONTEXT, NEW, MAX_LEN = 64, 128, 512


def static_step(p, H: int):
    """One token per row over caches of fixed shape (B, H, MAX_LEN, Dh); `valid` (B, MAX_LEN) marks filled slots."""
    def step(ids, positions, keys, values, valid, slot: int):
        x = F.embedding(ids, p.token_table) + F.embedding(positions, p.position_table)  # (B, D)
        B, D = x.shape
        mask = valid[:, None, None, :]
        for k_cache, v_cache, (ln1, ln2), (qkv, out, fc, proj) in zip(keys, values, p.norms, p.blocks):
            q, k, v = qkv(F.layer_norm(x, *ln1)).view(B, 3, H, 1, D // H).unbind(1)
            k_cache[:, :, slot : slot + 1] = k
            v_cache[:, :, slot : slot + 1] = v
            a = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
            x = x + out(a.view(B, D))
            x = x + proj(F.gelu(fc(F.layer_norm(x, *ln2)), approximate="tanh"))
        return p.head(F.layer_norm(x, *p.final_norm))
    return step


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = DialogLM(DialogLMConfig(vocab_size=VOCAB, max_len=MAX_LEN, n_layer=L, n_head=H, d_model=D, dropout=0.0,
                                    n_segments=0)).eval()
    decoder = FastDecoder(model, "fp32")
    step = static_step(decoder.products(), H)
    keys = [torch.zeros(1, H, MAX_LEN, D // H) for _ in range(L)]
    values = [torch.zeros(1, H, MAX_LEN, D // H) for _ in range(L)]
    valid = torch.zeros(1, MAX_LEN, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    context = torch.randint(7, VOCAB, (1, CONTEXT), generator=g)

    @torch.inference_mode()
    def loop(f, new=NEW):
        """Greedy tokens after a context: the context through the served decoder, then `f` per token."""
        state = decoder.init_state(1)
        scores, state = decoder.step(context, torch.zeros_like(context), state, last_only=True)
        for layer, k, v in zip(state.layers, keys, values):  # the context's keys and values into the static caches
            k[:, :, :CONTEXT], v[:, :, :CONTEXT] = layer.k[:, :, :CONTEXT], layer.v[:, :, :CONTEXT]
        valid.zero_()
        valid[:, :CONTEXT] = True
        token, out = scores[:, -1].argmax(-1), []
        for t in range(new):
            slot = CONTEXT + t
            valid[:, slot] = True
            token = f(token, torch.full_like(token, slot), keys, values, valid, slot).argmax(-1)
            out.append(int(token))
        return out

    @torch.inference_mode()
    def served_steps(new=NEW):
        state = decoder.init_state(1)
        scores, state = decoder.step(context, torch.zeros_like(context), state, last_only=True)
        token, out = scores[:, -1].argmax(-1, keepdim=True), []
        for _ in range(new):
            scores, state = decoder.step(token, torch.zeros_like(token), state)
            token = scores[:, -1].argmax(-1, keepdim=True)
            out.append(int(token))
        return out

    load = os.getloadavg()[0]
    compiled = torch.compile(step, fullgraph=True)
    cpu, kids, wall = time.process_time(), children_cpu(), time.perf_counter()
    with torch.inference_mode():
        loop(compiled, new=3)  # the first token compiles; the second recompiles with the slot as a symbol
    compile_cpu, compile_kids, compile_wall = time.process_time() - cpu, children_cpu() - kids, time.perf_counter() - wall
    eager_tokens, compiled_tokens, served_tokens = loop(step), loop(compiled), served_steps()
    t_compiled, t_eager, t_served = alternate([lambda: loop(compiled), lambda: loop(step), served_steps], reps=3)
    rate = lambda t: NEW / t.cpu  # noqa: E731
    rows = [
        result("compiled_vs_same_step_eager_fp32", rate(t_compiled), "tokens/s", "the same static-cache step, eager",
               rate(t_eager), wall_ratio=t_eager.wall / t_compiled.wall, label="probe, not a served path"),
        result("compiled_vs_served_eager_fp32", rate(t_compiled), "tokens/s", "FastDecoder fp32 one-token steps",
               rate(t_served), wall_ratio=t_served.wall / t_compiled.wall, label="probe, not a served path"),
        result("compile_seconds", compile_cpu + compile_kids, "CPU s", f"one eager {NEW}-token reply", t_eager.cpu,
               lower_is_better=True, wall_s=compile_wall, process_cpu_s=compile_cpu, worker_cpu_s=compile_kids),
    ]
    notes = [f"torch {torch.__version__}, 1 thread, load average at start {load:.1f}; {L} layers × {D}, vocab {VOCAB}, "
             f"{CONTEXT}-token context, {NEW} greedy tokens, batch 1, fp32, static cache of {MAX_LEN} slots",
             f"compilation: {compile_cpu:.1f} CPU s in this process + {compile_kids:.1f} CPU s in compile workers, "
             f"{compile_wall:.1f} s wall (two compilations: the slot becomes a symbol on the second token)",
             f"greedy tokens equal: compiled vs eager {compiled_tokens == eager_tokens}, "
             f"static-cache step vs served step {eager_tokens == served_tokens}",
             f"load average at end {os.getloadavg()[0]:.1f}"]
    print_table("torch.compile of the one-token decoding step (probe)", rows, notes)
    emit("decode_compile_probe", rows, context=CONTEXT, new_tokens=NEW)


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
