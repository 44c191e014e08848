"""Decoding engine against a tiny deterministic model that implements contract 3's decoding API."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from liaotian.models.generate import DecodingConfig, Generation, Prompt, build_rules, apply_rules, generate, stream

V, PAD, EOS = 10, 0, 3


class _State:
    def __init__(self, positions):
        self.positions = positions

    def reorder(self, index):  # in place, like models.attention.KVCache
        self.positions = self.positions[index]


class TableLM(torch.nn.Module):
    """Scores = table[last token] + segment bias + eos_slope * position (positions count real tokens),
    so a padding, segment or cache mistake changes the scores."""

    def __init__(self, eos_slope=0.35, eos_offset=-4.0, seed=0, max_len=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(V, V, generator=g) * 2, requires_grad=False)
        self.segment_bias = torch.randn(2, V, generator=g)
        self.eos_slope, self.eos_offset = eos_slope, eos_offset
        self.config = SimpleNamespace(pad_id=PAD, max_len=max_len)

    def init_state(self, batch_size):
        return _State(torch.zeros(batch_size, dtype=torch.long))

    def step(self, input_ids, segment_ids, state, token_mask=None, last_only=False):
        if token_mask is None:
            token_mask = torch.ones_like(input_ids, dtype=torch.bool)
        pos = state.positions[:, None] + token_mask.long().cumsum(1)  # (B,T)
        scores = self.table[input_ids] + self.segment_bias[segment_ids]
        scores[..., EOS] += self.eos_offset + self.eos_slope * pos
        return scores[:, -1:] if last_only else scores, _State(state.positions + token_mask.sum(1))

    def full_scores(self, ids, segs):
        """Uncached reference: next-token scores after the whole sequence."""
        scores, _ = self.step(torch.tensor([ids]), torch.tensor([segs]), self.init_state(1))
        return scores[0, -1]


def prompt(ids, first_segment=0):
    segs = [first_segment] * len(ids)
    return Prompt([2] + ids, [first_segment] + segs, reply_segment=1 - first_segment)


PROMPTS = [prompt([5, 6, 7, 3]), prompt([8, 3]), prompt([4, 9, 9, 9, 9, 3], 1), prompt([6, 3])]


def test_config_validates():
    for bad in [dict(strategy="nucleus"), dict(temperature=0), dict(top_p=0), dict(max_new_tokens=0),
                dict(min_new_tokens=5, max_new_tokens=4), dict(strategy="beam", num_beams=2, n=3),
                dict(strategy="beam", stop_strings=["x"]), dict(stop_strings="x")]:
        with pytest.raises(ValueError):
            DecodingConfig(**bad)
    with pytest.raises(ValueError):
        Prompt([2, 5], [0], 1)


def test_greedy_is_reproducible_and_matches_uncached_argmax():
    model, cfg = TableLM(), DecodingConfig(strategy="greedy", max_new_tokens=20)
    out = generate(model, PROMPTS, cfg, EOS)
    assert out == generate(model, PROMPTS, cfg, EOS)
    for p, (gen,) in zip(PROMPTS, out):
        ids, segs, lp = list(p.input_ids), list(p.segment_ids), 0.0
        expected = []
        while len(expected) < 20:
            scores = model.full_scores(ids, segs)
            tok = int(scores.argmax())
            lp += float(torch.log_softmax(scores, -1)[tok])
            if tok == EOS:
                break
            expected.append(tok)
            ids.append(tok), segs.append(p.reply_segment)
        assert gen.token_ids == expected
        assert gen.finish_reason == ("stop" if len(expected) < 20 else "length")
        assert gen.logprob == pytest.approx(lp, abs=1e-4)
    assert any(g.finish_reason == "stop" for (g,) in out)


def test_beam_of_one_equals_greedy():
    model = TableLM()
    for extra in [{}, dict(min_new_tokens=3), dict(no_repeat_ngram_size=2)]:
        greedy = generate(model, PROMPTS, DecodingConfig(strategy="greedy", max_new_tokens=15, **extra), EOS)
        beam = generate(model, PROMPTS, DecodingConfig(strategy="beam", num_beams=1, max_new_tokens=15, **extra), EOS)
        assert [[g.token_ids for g in row] for row in beam] == [[g.token_ids for g in row] for row in greedy]
        assert [[g.finish_reason for g in row] for row in beam] == [[g.finish_reason for g in row] for row in greedy]


def test_beam_search_finds_the_exact_best_with_enough_beams():
    model, p, L = TableLM(eos_offset=-1.0, seed=3), prompt([5, 6, 3]), 3
    cfg = DecodingConfig(strategy="beam", num_beams=V ** L, n=3, max_new_tokens=L, length_penalty=0.0)
    out = generate(model, [p], cfg, EOS)[0]

    def logprob(reply):  # exhaustive reference
        ids, segs, total = list(p.input_ids), list(p.segment_ids), 0.0
        for tok in reply:
            total += float(torch.log_softmax(model.full_scores(ids, segs), -1)[tok])
            ids.append(tok), segs.append(p.reply_segment)
        return total

    candidates = [list(body) + [EOS] for k in range(L) for body in itertools.product([v for v in range(V) if v != EOS], repeat=k)]
    candidates += [list(body) for body in itertools.product([v for v in range(V) if v != EOS], repeat=L)]
    best = max(candidates, key=logprob)
    assert out[0].token_ids == [t for t in best if t != EOS]
    assert out[0].logprob == pytest.approx(logprob(best), abs=1e-4)
    assert len(out) == 3 and out[0].logprob >= out[1].logprob >= out[2].logprob


def test_streaming_yields_the_same_tokens_as_generate():
    model = TableLM()
    for cfg in [DecodingConfig(strategy="greedy", max_new_tokens=12), DecodingConfig(seed=7, top_p=0.8, max_new_tokens=12),
                DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=12)]:
        for p in PROMPTS:
            assert list(stream(model, p, cfg, EOS)) == generate(model, [p], cfg, EOS)[0][0].token_ids


def test_batched_left_padded_equals_one_by_one():
    model = TableLM()
    for cfg in [DecodingConfig(strategy="greedy", max_new_tokens=16), DecodingConfig(seed=11, top_k=4, n=3, max_new_tokens=16),
                DecodingConfig(strategy="beam", num_beams=3, n=2, max_new_tokens=16)]:
        batched = generate(model, PROMPTS, cfg, EOS)
        single = [generate(model, [p], cfg, EOS)[0] for p in PROMPTS]
        assert [[g.token_ids for g in row] for row in batched] == [[g.token_ids for g in row] for row in single]
        for row_b, row_s in zip(batched, single):
            assert [g.logprob for g in row_b] == pytest.approx([g.logprob for g in row_s], abs=1e-5)


def test_seeded_sampling_is_reproducible_and_seeds_matter():
    model = TableLM(eos_slope=0.1)
    cfg = DecodingConfig(seed=123, top_p=1.0, consistent=False, n=4, max_new_tokens=10)
    first = generate(model, PROMPTS, cfg, EOS)
    assert first == generate(model, PROMPTS, cfg, EOS)
    other = generate(model, PROMPTS, DecodingConfig(seed=124, top_p=1.0, consistent=False, n=4, max_new_tokens=10), EOS)
    assert first != other
    assert len({tuple(g.token_ids) for g in first[0]}) > 1  # the n candidates differ
    for j in range(4):  # candidate j == the single reply with seed + j
        single = generate(model, PROMPTS, DecodingConfig(seed=123 + j, top_p=1.0, consistent=False, max_new_tokens=10), EOS)
        assert [row[j] for row in first] == [row[0] for row in single]


def test_min_and_max_new_tokens():
    never_stops = TableLM(eos_slope=0.0, eos_offset=-100.0)
    out = generate(never_stops, PROMPTS, DecodingConfig(strategy="greedy", max_new_tokens=5), EOS)
    assert all(g.finish_reason == "length" and len(g.token_ids) == 5 for (g,) in out)
    stops_now = TableLM(eos_slope=0.0, eos_offset=100.0)
    assert generate(stops_now, PROMPTS[:1], DecodingConfig(strategy="greedy"), EOS)[0][0].token_ids == []
    for strategy in ["greedy", "sample", "beam"]:
        cfg = DecodingConfig(strategy=strategy, min_new_tokens=4, max_new_tokens=8, seed=0, num_beams=2)
        out = generate(stops_now, PROMPTS, cfg, EOS)
        assert all(len(g.token_ids) == 4 and g.finish_reason == "stop" for row in out for g in row)


def test_stop_strings_end_the_reply_after_the_matching_token():
    model = TableLM(eos_slope=0.0, eos_offset=-100.0)
    decode = lambda ids: "".join("abcdefghij"[i] for i in ids)  # noqa: E731
    full = generate(model, PROMPTS[:1], DecodingConfig(strategy="greedy", max_new_tokens=12), EOS)[0][0].token_ids
    stop = decode(full[2:4])
    cut = generate(model, PROMPTS[:1], DecodingConfig(strategy="greedy", max_new_tokens=12, stop_strings=[stop]), EOS, decode)[0][0]
    first = decode(full).index(stop) + len(stop)
    assert cut.token_ids == full[:first] and cut.finish_reason == "stop"
    assert list(stream(model, PROMPTS[0], DecodingConfig(strategy="greedy", max_new_tokens=12, stop_strings=[stop]), EOS, decode)) == full[:first]
    with pytest.raises(ValueError):
        generate(model, PROMPTS, DecodingConfig(stop_strings=["a"]), EOS)


def test_eos_is_in_every_consistent_candidate_set():
    scores = torch.tensor([[5.0, 4.0, 3.0, -40.0, 2.0] + [0.0] * (V - 5)])  # eos (3) far below any cut
    for kw in [dict(top_k=1), dict(top_k=3), dict(top_p=0.5), dict(top_p=0.99), dict(top_k=2, top_p=0.3, temperature=0.5)]:
        consistent = apply_rules(build_rules(DecodingConfig(consistent=True, **kw), EOS), scores, torch.zeros(1, 0, dtype=torch.long))
        plain = apply_rules(build_rules(DecodingConfig(consistent=False, **kw), EOS), scores, torch.zeros(1, 0, dtype=torch.long))
        assert torch.isfinite(consistent[0, EOS]) and not torch.isfinite(plain[0, EOS])
        assert torch.isfinite(consistent).sum() == torch.isfinite(plain).sum() + 1


def test_consistent_top_k_terminates_where_top_k_never_does():
    # eos is never the most likely token, but always has some probability
    model = TableLM(eos_slope=0.0, eos_offset=0.0)
    model.table.data[:, EOS] = model.table.data.max(dim=1).values - 2.0
    cfg = dict(strategy="sample", top_k=1, top_p=1.0, max_new_tokens=64, n=4, seed=5)
    plain = generate(model, PROMPTS, DecodingConfig(consistent=False, **cfg), EOS)
    consistent = generate(model, PROMPTS, DecodingConfig(consistent=True, **cfg), EOS)
    assert all(g.finish_reason == "length" for row in plain for g in row)
    assert all(g.finish_reason == "stop" for row in consistent for g in row)


def test_context_longer_than_the_model_allows_is_an_error():
    with pytest.raises(ValueError, match="max_len"):
        generate(TableLM(max_len=8), PROMPTS, DecodingConfig(max_new_tokens=4), EOS)


def test_generation_is_plain_data():
    assert Generation([1], "stop", -0.5) == Generation([1], "stop", -0.5)


# ---------------------------------------------------------------- the real DialogLM (contract 3)

@pytest.mark.parametrize("attention,self_terminating", [("softmax", False), ("linear", False), ("softmax", True)])
def test_dialog_lm_batched_streamed_and_beam_agree(attention, self_terminating):
    from liaotian.models.dialog_lm import DialogLM, DialogLMConfig

    torch.manual_seed(0)
    cfg = DialogLMConfig(vocab_size=40, max_len=64, n_layer=2, n_head=2, d_model=32, dropout=0.0, attention=attention,
                         self_terminating=self_terminating, st_epsilon=0.05, pad_id=PAD, eos_id=EOS)
    model = DialogLM(cfg).eval()
    prompts = [Prompt([2, 11, 12, 13, 3], [0] * 5, 1), Prompt([2, 20, 3, 21, 22, 3], [0, 0, 0, 1, 1, 1], 0), Prompt([2, 30, 3], [0] * 3, 1)]
    greedy = DecodingConfig(strategy="greedy", max_new_tokens=40)
    batched = generate(model, prompts, greedy, EOS)
    single = [generate(model, [p], greedy, EOS)[0] for p in prompts]
    assert [r[0].token_ids for r in batched] == [r[0].token_ids for r in single]
    beam1 = generate(model, prompts, DecodingConfig(strategy="beam", num_beams=1, max_new_tokens=40), EOS)
    assert [r[0].token_ids for r in beam1] == [r[0].token_ids for r in batched]
    sample = DecodingConfig(seed=3, top_k=8, max_new_tokens=40)
    for p, row in zip(prompts, generate(model, prompts, sample, EOS)):
        assert list(stream(model, p, sample, EOS)) == row[0].token_ids
    if self_terminating:  # p(eos) >= 1 - (1 - eps)^t: greedy must stop once that passes 1/2 (t >= 14)
        assert all(r[0].finish_reason == "stop" and len(r[0].token_ids) < 14 for r in batched)


def test_finished_rows_leave_the_batch_and_replies_do_not_change():
    class Recording(TableLM):
        def step(self, input_ids, segment_ids, state, token_mask=None, last_only=False):
            self.rows.append(input_ids.shape[0])
            return super().step(input_ids, segment_ids, state, token_mask, last_only)

    model = Recording(eos_slope=0.6)
    model.rows = []
    cfg = DecodingConfig(seed=5, top_p=1.0, consistent=False, n=4, max_new_tokens=30)
    batched = generate(model, PROMPTS, cfg, EOS)
    lengths = sorted(len(g.token_ids) for row in batched for g in row)
    assert lengths[0] < lengths[-1]  # rows end at different steps
    assert model.rows[0] == len(PROMPTS) and model.rows[1] == 4 * len(PROMPTS) and model.rows[-1] < 4 * len(PROMPTS)
    assert all(a >= b for a, b in zip(model.rows[1:], model.rows[2:]))  # the batch only shrinks
    for j in range(4):
        single = [generate(model, [p], DecodingConfig(seed=5 + j, top_p=1.0, consistent=False, max_new_tokens=30), EOS)[0][0]
                  for p in PROMPTS]
        assert [row[j].token_ids for row in batched] == [g.token_ids for g in single]
        assert [row[j].logprob for row in batched] == pytest.approx([g.logprob for g in single], abs=1e-5)
