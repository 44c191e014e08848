"""The one-token decoding step (models/token_step.py): scripted and plain runs are the same
computation, and the step agrees with the full forward in every precision and layout it serves."""
import pytest
import torch

from liaotian.models import token_step
from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.kernels import set_onednn_linear


def make(seed=0, vocab=300, n_segments=2):
    torch.manual_seed(seed)
    cfg = DialogLMConfig(vocab_size=vocab, max_len=64, n_layer=2, n_head=4, d_model=64, dropout=0.0, n_segments=n_segments)
    m = DialogLM(cfg).eval()
    with torch.no_grad():  # sharper than N(0, 0.02), so scores differ clearly between tokens
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m


def decode(m, ctx, mask, steps, scripted: bool):
    """Feed a left-padded context, then `steps` fixed tokens one at a time; per-step scores and h."""
    previous = token_step.set_scripted_decode(scripted)
    try:
        B = ctx.shape[0]
        state = m.init_state(B)
        m.step(ctx, torch.zeros_like(ctx), state, token_mask=mask)
        g = torch.Generator().manual_seed(9)
        outs = []
        for _ in range(steps):
            nxt = torch.randint(7, m.config.vocab_size, (B, 1), generator=g)
            scores, state = m.step(nxt, torch.ones_like(nxt), state)
            outs.append(scores)
        return torch.cat(outs, 1), state
    finally:
        token_step.set_scripted_decode(previous)


def test_this_torch_scripts_the_step():
    # The fast path the benchmark measures; a torch without TorchScript would fall back (and fail here, on purpose).
    assert token_step.scripted_token_step() is not None
    assert token_step.token_step_function(torch.device("cpu")) is token_step.scripted_token_step()
    assert token_step.token_step_function(torch.device("meta")) is token_step.token_step


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("onednn", [True, False])
def test_scripted_step_is_bit_identical_to_the_plain_step(precision, onednn):
    previous = set_onednn_linear(onednn)
    try:
        m = make().set_decode_precision(precision)
        g = torch.Generator().manual_seed(3)
        ctx = torch.randint(7, 300, (3, 10), generator=g)
        mask = torch.ones(3, 10, dtype=torch.bool)
        mask[1, :4] = False  # left padding: the step gets a key mask
        plain, s_plain = decode(m, ctx, mask, 6, scripted=False)
        scripted, s_scripted = decode(m, ctx, mask, 6, scripted=True)
        assert s_scripted.weights.onednn == onednn
        assert torch.equal(plain, scripted)
        for a, b in zip(s_plain.layers, s_scripted.layers):  # the step wrote the same cache slots
            assert a.length == b.length == 16
            assert torch.equal(a.k[:, :, :16], b.k[:, :, :16]) and torch.equal(a.v[:, :, :16], b.v[:, :, :16])
    finally:
        set_onednn_linear(previous)


@pytest.mark.parametrize("n_segments", [0, 2])
def test_scripted_step_matches_the_full_forward(n_segments):
    m = make(n_segments=n_segments).set_decode_precision("fp32")
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(7, 300, (2, 14), generator=g)
    segs = torch.zeros_like(ids)
    segs[:, 8:] = 1
    state = m.init_state(2)
    m.step(ids[:, :8], segs[:, :8], state)
    for t in range(8, 14):
        scores, state = m.step(ids[:, t : t + 1], segs[:, t : t + 1], state)
        full = m(ids[:, : t + 1], segs[:, : t + 1]).logits[:, -1]
        torch.testing.assert_close(scores[:, 0], full, atol=1e-4, rtol=1e-4)


def test_kv_cache_reserve_grows_geometrically_and_keeps_what_was_written():
    from liaotian.models.attention import KVCache

    cache = KVCache(capacity=4)
    k, v = torch.randn(2, 3, 3, 5), torch.randn(2, 3, 3, 5)
    keys, values = cache.append(k, v)
    assert cache.k.shape[2] == 4 and keys.shape[2] == 3
    written_k, written_v = [k], [v]
    for _ in range(3):  # one slot at a time, as the decoding step writes them; the 5th slot grows the cache
        start = cache.reserve(1)
        nk, nv = torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5)
        cache.k[:, :, start : start + 1], cache.v[:, :, start : start + 1] = nk, nv
        written_k.append(nk)
        written_v.append(nv)
    assert cache.length == 6 and cache.k.shape[2] == 8  # doubled, not grown by one
    torch.testing.assert_close(cache.k[:, :, :6], torch.cat(written_k, 2), rtol=0, atol=0)
    torch.testing.assert_close(cache.v[:, :, :6], torch.cat(written_v, 2), rtol=0, atol=0)
    assert KVCache().reserve(2, like=k) == 0  # an empty cache is allocated like `like`
