"""The same model, training-step and attribution code on a GPU (skipped where there is none).

CI has no GPU, so these run on a lent GPU machine by hand (see README, "GPU check"). Each test
compares the device against the CPU or against an exact property, never against a stored number.
`LIAOTIAN_TEST_DEVICE=cpu` runs them on the CPU, to check the tests themselves without a GPU.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from liaotian.models.attribution import integrated_gradients
from liaotian.models.checkpoint import load_pretrained, save_pretrained
from liaotian.models.classifier import Classifier, ClassifierConfig
from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.fast_mlm import FastMLM, FastMLMConfig
from liaotian.models.generate import DecodingConfig, Prompt, generate
from liaotian.models.linear_attention import LinearAttention, LinearState
from liaotian.models.precision import resolve_precision

DEVICE = os.environ.get("LIAOTIAN_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
V = 64


@pytest.fixture(autouse=True)
def exact_matmuls():
    """TF32 would make GPU-vs-CPU comparisons loose; the tests compare fp32 with fp32."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def dialog_lm(attention="softmax", st=False, seed=0):
    torch.manual_seed(seed)
    cfg = DialogLMConfig(vocab_size=V, max_len=64, n_layer=2, n_head=2, d_model=40, dropout=0.0,
                         attention=attention, self_terminating=st, linear_chunk_size=4)
    return DialogLM(cfg).eval()


def dialogue(B=3, T=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, V, (B, T), generator=g)
    ids[:, 0], ids[:, 7], ids[:, 13] = 2, 3, 3
    seg = torch.zeros_like(ids)
    seg[:, 8:14] = 1
    return ids, seg


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_forward_on_device_matches_cpu(attention):
    model = dialog_lm(attention)
    ids, seg = dialogue()
    want = model(ids, seg).logits
    got = model.to(DEVICE)(ids.to(DEVICE), seg.to(DEVICE)).logits.cpu()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attention,st", [("softmax", False), ("linear", False), ("softmax", True)])
def test_cached_decoding_on_device_equals_full_forward(attention, st):
    model = dialog_lm(attention, st).to(DEVICE)
    ids, seg = (t.to(DEVICE) for t in dialogue())
    full = model(ids, seg).logits.log_softmax(-1)
    state = model.init_state(ids.shape[0])
    first, state = model.step(ids[:, :9], seg[:, :9], state)
    steps = [first]
    for t in range(9, ids.shape[1]):
        out, state = model.step(ids[:, t:t + 1], seg[:, t:t + 1], state)
        steps.append(out)
    cached = torch.cat(steps, 1).log_softmax(-1)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)


def test_greedy_generation_on_device_gives_the_cpu_tokens():
    model = dialog_lm()
    with torch.no_grad():  # sharper scores than the initialisation: no near-ties for argmax to flip
        for p in model.parameters():
            p.mul_(4.0)
    prompts = [Prompt([2, 10, 11, 12, 3], [0] * 5, 1), Prompt([2, 20, 3, 21, 22, 3], [0, 0, 0, 1, 1, 1], 0)]
    cfg = DecodingConfig(strategy="greedy", max_new_tokens=16)
    want = [[g.token_ids for g in gs] for gs in generate(model, prompts, cfg, eos_id=3)]
    got = [[g.token_ids for g in gs] for gs in generate(model.to(DEVICE), prompts, cfg, eos_id=3)]
    assert got == want


def test_linear_attention_recurrent_steps_equal_parallel_form_on_device():
    torch.manual_seed(0)
    att = LinearAttention(24, 3, 0.0, chunk_size=4).eval().to(DEVICE)
    x = torch.randn(2, 17, 24, device=DEVICE)
    full, _ = att(x, is_causal=True)
    cache = LinearState()
    steps = [att(x[:, t:t + 1], cache=cache)[0] for t in range(17)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_fast_mlm_prediction_at_i_ignores_token_i_on_device():
    torch.manual_seed(0)
    model = FastMLM(FastMLMConfig(vocab_size=V, max_len=32, n_layer=2, n_head=2, d_model=40, dropout=0.0)).eval().to(DEVICE)
    ids = dialogue(B=2)[0].to(DEVICE)
    base = model(ids).logits
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 9) % V
    out = model(changed).logits
    torch.testing.assert_close(out[:, 5], base[:, 5], atol=1e-5, rtol=1e-5)
    assert (out[:, 4] - base[:, 4]).abs().max() > 1e-4


def test_auto_precision_trains_in_bf16_and_lowers_the_loss():
    from liaotian.pipelines import train_loop as T
    from liaotian.pipelines.collate import collate_dialog

    device = torch.device(DEVICE)
    precision = T.Precision.resolve("auto", device)
    assert precision.dtype == resolve_precision("auto", device)
    if device.type == "cuda":
        assert precision.dtype in (torch.bfloat16, torch.float16)
    vocab = T.Vocab(vocab_size=V, pad_id=0, cls_id=2, sep_id=3, mask_id=4, special_ids=(0, 1, 2, 3, 4, 5, 6))
    rng = np.random.default_rng(0)
    rows = {"input_ids": [], "segment_ids": [], "loss_mask": []}
    for _ in range(16):
        a, b = rng.integers(7, V, rng.integers(3, 9)), rng.integers(7, V, rng.integers(3, 9))
        rows["input_ids"].append(np.r_[2, a, 3, b, 3])
        rows["segment_ids"].append(np.r_[[0] * (len(a) + 2), [1] * (len(b) + 1)])
        rows["loss_mask"].append(np.r_[[0] * (len(a) + 2), [1] * (len(b) + 1)])
    batch = collate_dialog(rows, vocab.pad_id)
    torch.manual_seed(0)
    model = T.build_model("dialog", {"preset": "tiny", "n_layer": 2, "n_head": 2, "d_model": 64, "dropout": 0.0}, vocab).to(device)
    opt = torch.optim.AdamW(model.parameters())
    first = T.train_step(model, "dialog", [batch], opt, lr=3e-3, precision=precision, grad_clip=1.0)
    for _ in range(40):
        last = T.train_step(model, "dialog", [batch], opt, lr=3e-3, precision=precision, grad_clip=1.0)
    assert np.isfinite(last["loss"]) and last["loss"] < first["loss"] * 0.7
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, fp32 master weights


@pytest.mark.parametrize("steps", [50, "auto"])
def test_integrated_gradients_completeness_on_device(steps):
    torch.manual_seed(0)
    enc = dict(vocab_size=120, max_len=32, n_layer=2, n_head=2, d_model=48)
    model = Classifier(ClassifierConfig(encoder="masked_lm", encoder_config=enc, num_classes=3, dropout=0.1))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = model.eval().to(DEVICE)
    g = torch.Generator().manual_seed(1)
    ids = torch.cat([torch.tensor([2]), torch.randint(7, 120, (18,), generator=g), torch.tensor([3])]).to(DEVICE)
    a = integrated_gradients(model, ids, 1, steps=steps, output="logit")
    if steps == "auto":  # stops on the per-token error bound, not on the completeness delta
        assert a.error_bound <= 0.01 * float(torch.as_tensor(a.token_scores).abs().max())
    else:
        assert a.delta < 0.01 * abs(a.f_x - a.f_baseline)
    if steps == 50:  # the same rule on the CPU gives the same attributions
        cpu = integrated_gradients(model.cpu(), ids.cpu(), 1, steps=50, output="logit")
        torch.testing.assert_close(torch.as_tensor(a.token_scores).cpu(), torch.as_tensor(cpu.token_scores), atol=1e-4, rtol=1e-3)


def test_checkpoint_saved_from_device_loads_bit_exactly_on_cpu(tmp_path):
    model = dialog_lm("linear", st=True).to(DEVICE)
    save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m", device="cpu")
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p.cpu(), q), name
