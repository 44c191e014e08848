"""What replacing the TorchScript decoding step by the eager one (models/fast_decode.py) cost or gained,
and what the latest changes to the eager step gained (`step_vs_previous_eager_*`).

One run, one machine: the former DialogLM (models/dialog_lm.py, token_step.py and kernels.py as of
commit 54bef9b, loaded from git history into a throw-away package) and `FastDecoder` over today's
plain DialogLM, with the same weights, decode greedily through `liaotian.models.generate.generate`
(the served path; 64-token context, NEW tokens, min_new_tokens = max_new_tokens) at batch 1 and 16,
one torch thread, timed by process CPU time (best of REPS, interleaved). The former step runs
TorchScript over oneDNN-packed weights (its own fp32 and bf16); the eager step runs torch's public
kernels. The previous eager step (models/fast_decode.py as of commit c2db105: the context through the
model's own fp32 step, layer norms and embeddings called as modules) runs over the same model at fp32,
int8 and bf16. Needs the repository's git history.

Run: `.venv/bin/python benchmarks/decode_step_vs_torchscript.py`.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from benchmarks.common import emit, print_table, result
    from benchmarks.models import D, H, L, VOCAB, alternate
except ImportError:  # run as a script
    from common import emit, print_table, result
    from models import D, H, L, VOCAB, alternate

import torch  # noqa: E402

from liaotian.models.dialog_lm import DialogLM, DialogLMConfig  # noqa: E402
from liaotian.models.fast_decode import FastDecoder  # noqa: E402
from liaotian.models.generate import DecodingConfig, Prompt, generate  # noqa: E402

FORMER = "54bef9b"  # the last commit with the TorchScript step
FORMER_FILES = ("dialog_lm", "token_step", "kernels", "layers", "attention")
PREVIOUS_EAGER = "c2db105"  # models/fast_decode.py before the context ran in the decoding precision
CONTEXT, NEW, REPS = 64, 128, 3


def former_dialog_lm(root: Path):
    """The former models/dialog_lm.py and the files it relied on, as package `former_models`."""
    repo = Path(__file__).resolve().parent.parent
    pkg = root / "former_models"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in FORMER_FILES:
        text = subprocess.run(["git", "show", f"{FORMER}:models/{name}.py"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout
        for other in FORMER_FILES:
            text = text.replace(f"liaotian.models.{other} ", f"former_models.{other} ")
        (pkg / f"{name}.py").write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module("former_models.dialog_lm")


def previous_fast_decode(root: Path):
    """models/fast_decode.py as of PREVIOUS_EAGER, as module `previous_fast_decode` (it runs over today's DialogLM)."""
    repo = Path(__file__).resolve().parent.parent
    text = subprocess.run(["git", "show", f"{PREVIOUS_EAGER}:models/fast_decode.py"], cwd=repo, check=True,
                          capture_output=True, text=True).stdout
    (root / "previous_fast_decode.py").write_text(text)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("previous_fast_decode")


def main() -> None:
    torch.set_num_threads(1)
    cfg = dict(vocab_size=VOCAB, max_len=512, n_layer=L, n_head=H, d_model=D, dropout=0.0)
    torch.manual_seed(0)
    model = DialogLM(DialogLMConfig(**cfg)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        former = former_dialog_lm(Path(tmp))
        old = former.DialogLM(former.DialogLMConfig(**cfg)).eval()
        old.load_state_dict(model.state_dict())
        previous = previous_fast_decode(Path(tmp))
        decoding = DecodingConfig(strategy="greedy", max_new_tokens=NEW, min_new_tokens=NEW)
        g = torch.Generator().manual_seed(1)
        rows, notes = [], [f"torch {torch.__version__}, 1 thread, load average at start {os.getloadavg()[0]:.1f}; "
                           f"{L} layers × {D}, vocab {VOCAB}, {CONTEXT}-token context, {NEW} new tokens, greedy, "
                           "through models.generate.generate"]
        for batch in (1, 16):
            prompts = [Prompt(torch.randint(7, VOCAB, (CONTEXT,), generator=g).tolist(), [0] * CONTEXT, 1)
                       for _ in range(batch)]

            def run(decoder, precision=None):
                def f():
                    if precision is not None:
                        decoder.set_decode_precision(precision)
                    return generate(decoder, prompts, decoding, eos_id=3)
                return f

            for precision in ("fp32", "bf16"):
                fns = [run(FastDecoder(model, precision)), run(old, precision)]
                t_new, t_old = alternate(fns, reps=REPS)
                same = [a[0].token_ids == b[0].token_ids for a, b in zip(fns[0](), fns[1]())]
                rows.append(result(f"eager_vs_torchscript_{precision}_batch{batch}", batch * NEW / t_new.cpu, "tokens/s",
                                   f"former TorchScript step {precision}, oneDNN-packed", batch * NEW / t_old.cpu,
                                   wall_ratio=t_old.wall / t_new.wall, replies_equal=f"{sum(same)}/{len(same)}"))
            for precision in ("fp32", "int8", "bf16"):
                fns = [run(FastDecoder(model, precision)), run(previous.FastDecoder(model, precision))]
                t_new, t_old = alternate(fns, reps=REPS)
                same = [a[0].token_ids == b[0].token_ids for a, b in zip(fns[0](), fns[1]())]
                rows.append(result(f"step_vs_previous_eager_{precision}_batch{batch}", batch * NEW / t_new.cpu, "tokens/s",
                                   f"eager step of {PREVIOUS_EAGER} {precision}", batch * NEW / t_old.cpu,
                                   wall_ratio=t_old.wall / t_new.wall, replies_equal=f"{sum(same)}/{len(same)}"))
        notes.append(f"load average at end {os.getloadavg()[0]:.1f}")
        notes.append("replies_equal (JSON rows): int8 replies of random weights differ once the context is quantised "
                     "(near-ties everywhere); greedy agreement on a trained model is in benchmarks/models.py")
        print_table("decoding step: eager (models/fast_decode.py) vs the former TorchScript step and the previous eager step",
                    rows, notes)
        emit("decode_step_vs_torchscript", rows, context=CONTEXT, new_tokens=NEW, former_commit=FORMER,
             previous_eager_commit=PREVIOUS_EAGER)


if __name__ == "__main__":
    main()
