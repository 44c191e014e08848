"""models/fast_decode.py against the plain model: the one-token step is the model's own step in fp32
(scores and greedy replies), follows it within rounding in bf16 and int8, and what it does not
cover goes through the model's step, counted."""
import dataclasses
import pickle

import pytest
import torch

from liaotian.models import fast_decode
from liaotian.models.attention import KVCache
from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.fast_decode import FastDecoder, resolve_decode_precision
from liaotian.models.generate import DecodingConfig, Prompt, generate


def make(seed=0, vocab=300, **kw):
    torch.manual_seed(seed)
    cfg = DialogLMConfig(vocab_size=vocab, max_len=96, n_layer=2, n_head=4, d_model=64, dropout=0.0, **kw)
    m = DialogLM(cfg).eval()
    with torch.no_grad():  # sharper than N(0, 0.02), so the greedy choice is not a near-tie
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m


def scores_along(decoder, ctx, mask, tokens):
    """Feed a left-padded context, then the given tokens one at a time; (B, steps, V) scores."""
    state = decoder.init_state(ctx.shape[0])
    decoder.step(ctx, torch.zeros_like(ctx), state, token_mask=mask)
    outs = []
    for t in range(tokens.shape[1]):
        scores, state = decoder.step(tokens[:, t : t + 1], torch.ones_like(tokens[:, :1]), state)
        outs.append(scores)
    return torch.cat(outs, 1)


def inputs(seed=3, B=3, T=10, steps=8):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(7, 300, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, :4] = False  # left padding: the one-token step gets a key mask
    return ctx, mask, torch.randint(7, 300, (B, steps), generator=g)


@pytest.mark.parametrize("n_segments", [0, 2])
@pytest.mark.parametrize("st", [False, True])
def test_fp32_one_token_step_equals_the_model_step(n_segments, st):
    m = make(n_segments=n_segments, self_terminating=st)
    ctx, mask, tokens = inputs()
    want = scores_along(m, ctx, mask, tokens)
    fast = FastDecoder(m, "fp32")
    got = scores_along(fast, ctx, mask, tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not fast.fallbacks


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("st", [False, True])
@pytest.mark.parametrize("last_only", [False, True])
def test_fp32_context_step_equals_the_model_step(st, last_only, padded):
    """The context (several tokens, left-padded or not) runs the fast step too; then a second chunk
    of several tokens on top of the cache (the causal mask aligned bottom-right)."""
    m = make(n_segments=2, self_terminating=st)
    ctx, mask, tokens = inputs()
    if not padded:
        mask[:] = True
    fast = FastDecoder(m, "fp32")
    got, want = [], []
    for decoder, out in ((m, want), (fast, got)):
        state = decoder.init_state(ctx.shape[0])
        out.append(decoder.step(ctx, torch.ones_like(ctx), state, token_mask=mask, last_only=last_only)[0])
        out.append(decoder.step(tokens[:, :3], torch.zeros_like(tokens[:, :3]), state, last_only=last_only)[0])
        out.append(decoder.step(tokens[:, 3:4], torch.zeros_like(tokens[:, :1]), state)[0])
        out.append(state.positions)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    assert not fast.fallbacks


def greedy(model, ctx_rows, new=24):
    prompts = [Prompt(row, [0] * len(row), 1) for row in ctx_rows]
    cfg = DecodingConfig(strategy="greedy", max_new_tokens=new, min_new_tokens=new)
    return [g[0].token_ids for g in generate(model, prompts, cfg, eos_id=3)]


CTX = [[2, *range(20, 36), 3], [2, *range(50, 58), 3], [2, 9, 3]]


def test_fp32_greedy_replies_equal_the_model_and_int8_bf16_follow_them():
    m = make()
    plain = greedy(m, CTX)
    assert greedy(FastDecoder(m, "fp32"), CTX) == plain
    for precision, share in (("bf16", 0.9), ("int8", 0.8)):
        replies = greedy(FastDecoder(m, precision), CTX)
        same = sum(a == b for r, p in zip(replies, plain) for a, b in zip(r, p)) / sum(map(len, plain))
        assert same >= share, (precision, same)


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.05), ("int8", 0.15)])
def test_low_precision_scores_stay_near_fp32_on_the_same_prefix(precision, tolerance):
    m = make()
    ctx, mask, tokens = inputs()
    want = scores_along(FastDecoder(m, "fp32"), ctx, mask, tokens)
    got = scores_along(FastDecoder(m, precision), ctx, mask, tokens)
    assert not torch.equal(got, want)  # the low-precision weights really were used
    assert (got - want).abs().max() < tolerance * want.std(), float((got - want).abs().max() / want.std())


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_products_follow_parameter_updates_and_the_model_still_pickles(precision):
    m = make()
    fast = FastDecoder(m, precision)
    products, before = fast.products(), greedy(fast, CTX[:1], 6)
    with torch.no_grad():
        m.blocks[0].mlp.fc.weight.mul_(-1.0)
    after = greedy(fast, CTX[:1], 6)
    assert fast.products() is not products and after != before
    assert after == greedy(FastDecoder(m, precision), CTX[:1], 6) == greedy(FastDecoder(pickle.loads(pickle.dumps(m)), precision), CTX[:1], 6)


def test_a_model_built_under_inference_mode_decodes():
    ctx, mask, tokens = inputs()
    with torch.inference_mode():  # its parameters are inference tensors, without version counters
        m = make()
        got = scores_along(FastDecoder(m, "fp32"), ctx, mask, tokens)
    torch.testing.assert_close(got, scores_along(make(), ctx, mask, tokens), atol=1e-5, rtol=1e-5)


def test_linear_attention_and_unknown_layout_options_fall_back_counted():
    m = make(attention="linear")
    fast = FastDecoder(m, "fp32")
    ctx, mask, tokens = inputs()
    torch.testing.assert_close(scores_along(fast, ctx, mask, tokens), scores_along(m, ctx, mask, tokens))
    assert fast.fallbacks == {"attention='linear'": 1 + tokens.shape[1]}  # the context's step and each token's

    @dataclasses.dataclass
    class WithOption(DialogLMConfig):  # as an imported model's layout option would appear
        post_layer_norm: bool = False

    assert fast_decode.unsupported_reason(WithOption(vocab_size=300, d_model=64, n_head=4)) is None
    assert fast_decode.unsupported_reason(WithOption(vocab_size=300, d_model=64, n_head=4, post_layer_norm=True)) == \
        "post_layer_norm=True"


def test_decode_precision_names(monkeypatch):
    m = make()
    assert resolve_decode_precision("int8", m) == "int8" and resolve_decode_precision("fp32", m) == "fp32"
    assert resolve_decode_precision("auto", m) in ("fp32", "bf16")  # int8 only when asked
    monkeypatch.setattr(fast_decode, "resolve_precision", lambda name, device: None)  # a CPU without native bf16
    assert resolve_decode_precision("auto", m) == "fp32"
    with pytest.raises(ValueError, match="decode precision"):
        FastDecoder(m, "fp16")


def test_kv_cache_reserve_grows_geometrically_and_keeps_what_was_written():
    cache = KVCache(capacity=4)
    k, v = torch.randn(2, 3, 3, 5), torch.randn(2, 3, 3, 5)
    keys, values = cache.append(k, v)
    assert cache.k.shape[2] == 4 and keys.shape[2] == 3
    written_k, written_v = [k], [v]
    for _ in range(3):  # one slot at a time, as the one-token step writes them; the 5th slot grows the cache
        start = cache.reserve(1)
        nk, nv = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
        cache.k[:, :, start : start + 1], cache.v[:, :, start : start + 1] = nk, nv
        written_k.append(nk)
        written_v.append(nv)
    assert cache.length == 6 and cache.k.shape[2] == 8  # doubled, not grown by one
    torch.testing.assert_close(cache.k[:, :, :6], torch.cat(written_k, 2), rtol=0, atol=0)
    torch.testing.assert_close(cache.v[:, :, :6], torch.cat(written_v, 2), rtol=0, atol=0)
    assert KVCache().reserve(2, like=k) == 0  # an empty cache is allocated like `like`


def test_auto_times_the_batch_sizes_the_decoder_will_run(monkeypatch):
    """bf16 that loses at one row and wins at eight: `auto` picks fp32 for one row (`liaotian chat`), bf16 for
    a spread of sizes, by the timings of the rows it is given."""
    m = make()
    monkeypatch.setattr(fast_decode, "resolve_precision", lambda name, device: torch.bfloat16)  # native bf16 here
    cost = {("fp32", 1): 1.0, ("bf16", 1): 1.5, ("fp32", 8): 4.0, ("bf16", 8): 2.0}
    timed = []

    def fake_time(products, d_model, rows, passes=3):
        timed.append(rows)
        return cost[(products.precision, rows)]

    monkeypatch.setattr(fast_decode, "_time_products", fake_time)
    assert resolve_decode_precision("auto", m, rows=(1,)) == "fp32" and set(timed) == {1}
    assert resolve_decode_precision("auto", m) == "bf16" and set(timed) == {1, 8}
    assert FastDecoder(m, "auto", rows=(1,)).precision == "fp32"
