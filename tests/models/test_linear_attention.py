"""Linear attention against the O(T²) masked form written out independently here."""
import torch
import torch.nn.functional as F

from liaotian.models.linear_attention import LinearAttention, LinearState, causal_linear_attention, linear_attention


def reference(q, k, v, causal, key_mask=None):
    """Att_i = Σ_j sim_ij v_j / Σ_j sim_ij with sim_ij = φ(q_i)·φ(k_j), j ≤ i if causal."""
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    sim = fq @ fk.transpose(-1, -2)  # (B, H, T, T)
    T = q.shape[2]
    if causal:
        sim = sim * torch.ones(T, T).tril()
    if key_mask is not None:
        sim = sim * key_mask[:, None, None, :]
    return (sim @ v) / (sim.sum(-1, keepdim=True) + 1e-6)


def qkv(B=2, H=3, T=13, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float64).float() for _ in range(3)]


def test_causal_linear_attention_equals_quadratic_masked_form():
    q, k, v = qkv()
    out, _ = causal_linear_attention(q, k, v, chunk_size=4)
    torch.testing.assert_close(out, reference(q, k, v, causal=True), atol=1e-5, rtol=1e-5)


def test_chunked_equals_unchunked_for_every_chunk_size():
    q, k, v = qkv(T=17)
    whole, (S1, z1) = causal_linear_attention(q, k, v, chunk_size=17)
    for c in (1, 2, 5, 16, 64):
        out, (S, z) = causal_linear_attention(q, k, v, chunk_size=c)
        torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(S, S1, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(z, z1, atol=1e-5, rtol=1e-5)


def test_recurrent_step_reproduces_parallel_forward_token_by_token():
    q, k, v = qkv(T=9)
    full, _ = causal_linear_attention(q, k, v, chunk_size=4)
    state, outs = None, []
    for t in range(9):
        o, state = causal_linear_attention(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state=state)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 2), full, atol=1e-5, rtol=1e-5)


def test_bidirectional_form_and_padded_keys_are_ignored():
    q, k, v = qkv(T=7)
    km = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = linear_attention(q, k, v, km)
    torch.testing.assert_close(out, reference(q, k, v, causal=False, key_mask=km.float()), atol=1e-5, rtol=1e-5)
    # row 0 must equal attending over its first 5 tokens only
    short = linear_attention(q[:1, :, :5], k[:1, :, :5], v[:1, :, :5])
    torch.testing.assert_close(out[:1, :, :5], short, atol=1e-5, rtol=1e-5)


def test_module_cache_matches_full_causal_forward():
    torch.manual_seed(0)
    att = LinearAttention(12, 3, 0.0, chunk_size=4).eval()
    x = torch.randn(2, 10, 12)
    full, _ = att(x, is_causal=True)
    cache = LinearState()
    a, _ = att(x[:, :6], cache=cache)
    b, _ = att(x[:, 6:7], cache=cache)
    c, _ = att(x[:, 7:], cache=cache)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, atol=1e-5, rtol=1e-5)
    assert cache.S.shape == (2, 3, 4, 4) and cache.length == 10
