"""Decoding over `model.init_state` / `model.step` / `state.reorder` (contract 3): greedy, sampling,
beam search, streaming. No Ray here; the engine knows token ids only (stop strings need `decode_fn`).

Contexts of different lengths share one batch with LEFT padding: the first `step` gets `token_mask`,
so the last column is every row's latest real token. Each reply token gets segment `reply_segment`.
Randomness comes from one `torch.Generator` per candidate, seeded `cfg.seed + j` for candidate j and
drawing one uniform per step, so a reply depends on neither the rest of its batch nor `n`: candidate j
of a request equals the single reply of the same request with seed `cfg.seed + j`.
Self-terminating models return log-probabilities; the same rules apply to them unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from liaotian.models import logits as L

STRATEGIES = ("greedy", "sample", "beam")
Rule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (scores (R,V), reply so far (R,t)) -> scores


@dataclass
class DecodingConfig:
    """One decoding setting; the default is consistent nucleus sampling (p = 0.9).

    temperature / top_k / top_p / consistent shape sampling only (greedy and beam ignore them);
    num_beams / length_penalty shape beam search only (rank = sum log p / length ** length_penalty).
    `n` candidates per context (beam: the n best hypotheses, n <= num_beams). `seed=None` draws one.
    """

    strategy: str = "sample"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    consistent: bool = True
    num_beams: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0  # OpenAI's: score -= presence * [token in reply] + frequency * count
    frequency_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 32
    min_new_tokens: int = 0
    stop_strings: Sequence[str] = field(default_factory=tuple)
    n: int = 1
    seed: int | None = None
    banned_ids: Sequence[int] = field(default_factory=tuple)  # tokens a reply never contains (specials but eos)
    end_ids: Sequence[int] = field(default_factory=tuple)  # other tokens that end a reply as eos does (L.fold_end_tokens)
    top_logprobs: int | None = None  # None: off; k >= 0: each reply token's log p and the k likeliest tokens

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        checks = [
            (self.temperature > 0, "temperature must be > 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.num_beams >= 1, "num_beams must be >= 1"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size must be >= 0"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]"),
            (self.n >= 1, "n must be >= 1"),
            (self.top_logprobs is None or self.top_logprobs >= 0, "top_logprobs must be None or >= 0"),
            (self.strategy != "beam" or self.n <= self.num_beams, "beam search returns at most num_beams candidates: n <= num_beams"),
            (self.strategy != "beam" or not self.stop_strings, "stop_strings are not supported with beam search"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"DecodingConfig: {message}")
        if isinstance(self.stop_strings, str):
            raise ValueError("DecodingConfig: stop_strings must be a list of strings, not one string")
        self.stop_strings = tuple(self.stop_strings)


@dataclass
class Prompt:
    """A formatted context (`pipelines.dialogue.build_context`) and the segment its reply gets."""

    input_ids: list[int]
    segment_ids: list[int]
    reply_segment: int

    def __post_init__(self):
        if not self.input_ids:
            raise ValueError("Prompt: empty input_ids")
        if len(self.segment_ids) != len(self.input_ids):
            raise ValueError(f"Prompt: {len(self.segment_ids)} segment_ids for {len(self.input_ids)} input_ids")


@dataclass
class Generation:
    """A reply without its closing eos; `logprob` is the model's log p of the tokens (eos included
    when it stopped on eos), before any decoding rule."""

    token_ids: list[int]
    finish_reason: str  # "stop" (eos or a stop string) | "length" (max_new_tokens without eos)
    logprob: float
    # with cfg.top_logprobs: per reply token (log p, [(token id, log p) of the k likeliest]), the model's
    # distribution before any decoding rule
    token_logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None


def build_rules(cfg: DecodingConfig, eos_id: int) -> list[Rule]:
    """The rules `cfg` asks for, in the order they apply: penalties, min length, then sampling warpers."""
    keep = eos_id if cfg.consistent else None
    rules: list[Rule] = []
    if any(i != eos_id for i in cfg.end_ids):  # first: the other rules see one end token, eos
        rules.append(lambda s, g: L.fold_end_tokens(s, eos_id, cfg.end_ids, cfg.strategy == "greedy"))
    banned = tuple(i for i in cfg.banned_ids if i != eos_id)  # eos must stay reachable
    if banned:
        rules.append(lambda s, g: L.ban_tokens(s, banned))
    if cfg.repetition_penalty != 1.0:
        rules.append(lambda s, g: L.repetition_penalty(s, g, cfg.repetition_penalty))
    if cfg.presence_penalty or cfg.frequency_penalty:
        rules.append(lambda s, g: L.presence_frequency_penalty(s, g, cfg.presence_penalty, cfg.frequency_penalty))
    if cfg.no_repeat_ngram_size:
        rules.append(lambda s, g: L.no_repeat_ngram(s, g, cfg.no_repeat_ngram_size))
    if cfg.min_new_tokens:
        rules.append(lambda s, g: L.min_new_tokens(s, g.shape[-1], cfg.min_new_tokens, eos_id))
    if cfg.strategy == "sample":
        if cfg.temperature != 1.0:
            rules.append(lambda s, g: L.temperature(s, cfg.temperature))
        if cfg.top_k:
            rules.append(lambda s, g: L.top_k(s, cfg.top_k, always_keep=keep))
        if cfg.top_p < 1.0:
            rules.append(lambda s, g: L.top_p(s, cfg.top_p, always_keep=keep))
    return rules


def apply_rules(rules: Sequence[Rule], scores: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    for rule in rules:
        scores = rule(scores, generated)
    return scores


def sample_from(scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from softmax(scores) (R,V) with one uniform in [0,1) per row; -inf is never drawn."""
    probs = torch.softmax(scores.float(), dim=-1)
    if not torch.isfinite(probs).all():
        raise RuntimeError("decoding rules left a row without any candidate token")
    cdf = probs.cumsum(dim=-1)
    target = (uniforms.to(cdf) * cdf[:, -1]).unsqueeze(-1)  # (R,1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(scores.shape[-1] - 1)


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _reorder(state, index: torch.Tensor):
    """`state.reorder` may work in place (returns None) or return the reordered state."""
    out = state.reorder(index)
    return state if out is None else out


def _check_lengths(model, prompts: Sequence[Prompt], cfg: DecodingConfig) -> None:
    limit = getattr(getattr(model, "config", None), "max_len", None)
    longest = max(len(p.input_ids) for p in prompts)
    if limit is not None and longest + cfg.max_new_tokens > limit:
        raise ValueError(f"a context of {longest} tokens + max_new_tokens={cfg.max_new_tokens} exceeds the model's "
                         f"max_len={limit}; build the context with reserve=max_new_tokens")


@torch.no_grad()
def _prefill(model, prompts: Sequence[Prompt], copies: int):
    """Run the left-padded contexts once; return next-token scores (B*copies, V), state, reply segments."""
    device = _device(model)
    width = max(len(p.input_ids) for p in prompts)
    pad_id = getattr(getattr(model, "config", None), "pad_id", 0)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    segments = torch.zeros_like(ids)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p.input_ids):] = torch.tensor(p.input_ids)
        segments[i, width - len(p.input_ids):] = torch.tensor(p.segment_ids)
        mask[i, width - len(p.input_ids):] = True
    state = model.init_state(len(prompts))
    scores, state = model.step(ids.to(device), segments.to(device), state, token_mask=mask.to(device), last_only=True)
    reply_segments = torch.tensor([p.reply_segment for p in prompts], device=device)
    if copies == 1:  # one row per prompt already: no state copy
        return scores[:, -1].float(), state, reply_segments
    index = torch.arange(len(prompts), device=device).repeat_interleave(copies)
    return scores[:, -1].float()[index], _reorder(state, index), reply_segments[index]


@torch.no_grad()
def _advance(model, tokens: torch.Tensor, segments: torch.Tensor, state):
    scores, state = model.step(tokens[:, None], segments[:, None], state)
    return scores[:, -1].float(), state


def _seeds(cfg: DecodingConfig, prompts: int) -> list[int]:
    """One seed per row (prompt i, candidate j): base_i + j, base_i = cfg.seed or a fresh draw."""
    bases = [cfg.seed] * prompts if cfg.seed is not None else [int(torch.randint(0, 2**62, (1,))) for _ in range(prompts)]
    return [base + j for base in bases for j in range(cfg.n)]


def _hits_stop(tokens: list[int], stop_strings: Sequence[str], decode_fn) -> bool:
    text = decode_fn(tokens)
    return any(s in text for s in stop_strings)


def _decode_steps(model, prompts: Sequence[Prompt], cfg: DecodingConfig, eos_id: int, decode_fn=None,
                  logprobs_out: list | None = None):
    """Greedy or sampling. Yields, per step, each row's new reply token (None for finished rows);
    returns one `Generation` per row (row = prompt i's candidate j at i * n + j). With
    `cfg.top_logprobs`, `logprobs_out` (a list, if given) receives each row's list of token log-probs,
    filled as the tokens are yielded.

    Finished rows leave the batch (the state keeps only the running rows) once they make up a
    quarter of it, so a long reply does not keep paying for the short ones beside it; every row's
    tokens, rules and random draws are its own, so dropping rows changes no reply."""
    if cfg.stop_strings and decode_fn is None:
        raise ValueError("stop_strings need a decode_fn (token ids -> text)")
    _check_lengths(model, prompts, cfg)
    rules = build_rules(cfg, eos_id)
    scores, state, segments = _prefill(model, prompts, cfg.n)
    rows, device = scores.shape[0], scores.device
    generators = [torch.Generator().manual_seed(s) for s in _seeds(cfg, len(prompts))]
    generated = torch.zeros(rows, 0, dtype=torch.long, device=device)
    alive = list(range(rows))  # batch position -> row, for the rows still in the batch
    idle = 0  # rows in the batch that have finished (they idle on eos until dropped)
    done = torch.zeros(rows, dtype=torch.bool, device=device)  # per batch position
    reasons: list[str | None] = [None] * rows
    replies: list[list[int]] = [[] for _ in range(rows)]
    logprob = [0.0] * rows
    token_lps: list[list] | None = [[] for _ in range(rows)] if cfg.top_logprobs is not None else None
    if token_lps is not None and logprobs_out is not None:
        logprobs_out.extend(token_lps)
    for t in range(cfg.max_new_tokens):
        processed = apply_rules(rules, scores, generated)
        if cfg.strategy == "greedy":
            tokens = processed.argmax(dim=-1)
        else:
            uniforms = torch.cat([torch.rand(1, generator=generators[r]) for r in alive])
            tokens = sample_from(processed, uniforms.to(device))
        if idle:
            tokens = torch.where(done, torch.full_like(tokens, eos_id), tokens)  # finished rows idle on eos
        log_probs = torch.log_softmax(scores, dim=-1)
        step_lp = log_probs.gather(-1, tokens[:, None]).squeeze(-1)
        if token_lps is not None and cfg.top_logprobs:
            top = log_probs.topk(min(cfg.top_logprobs, log_probs.shape[-1]), dim=-1)
            top_values, top_ids = top.values.double().tolist(), top.indices.tolist()
        new: list[int | None] = [None] * rows
        finished = []
        for i, (r, token, lp) in enumerate(zip(alive, tokens.tolist(), step_lp.double().tolist())):
            if reasons[r] is not None:
                continue
            logprob[r] += lp
            if token == eos_id:
                reasons[r] = "stop"
                finished.append(i)
                continue
            replies[r].append(token)
            new[r] = token
            if token_lps is not None:
                alternatives = list(zip(top_ids[i], top_values[i])) if cfg.top_logprobs else []
                token_lps[r].append((lp, alternatives))
            if cfg.stop_strings and _hits_stop(replies[r], cfg.stop_strings, decode_fn):
                reasons[r] = "stop"
                finished.append(i)
        yield new
        idle += len(finished)
        if idle == len(alive) or t + 1 == cfg.max_new_tokens:
            break
        generated = torch.cat([generated, tokens[:, None]], dim=1)
        if finished:
            done[finished] = True
        if idle and 4 * idle >= len(alive):  # drop the finished rows from the batch
            keep = [i for i in range(len(alive)) if not done[i]]
            index = torch.tensor(keep, device=device)
            alive = [alive[i] for i in keep]
            tokens, segments, generated = tokens[index], segments[index], generated[index]
            state = _reorder(state, index)
            done = torch.zeros(len(alive), dtype=torch.bool, device=device)
            idle = 0
        scores, state = _advance(model, tokens, segments, state)
    return [Generation(replies[r], reasons[r] or "length", logprob[r], None if token_lps is None else token_lps[r])
            for r in range(rows)]


def _beam_search(model, prompts: Sequence[Prompt], cfg: DecodingConfig, eos_id: int) -> list[list[Generation]]:
    """Beam search with length penalty: hypotheses rank by sum log p / length ** length_penalty
    (length counts the eos); a prompt is done once it holds num_beams finished hypotheses and its
    best running beam cannot beat the worst of them at the current length (HF's heuristic)."""
    _check_lengths(model, prompts, cfg)
    B, K, rules = len(prompts), cfg.num_beams, build_rules(cfg, eos_id)
    scores, state, segments = _prefill(model, prompts, K)
    device, V = scores.device, scores.shape[-1]
    beam_sum = torch.zeros(B, K, dtype=torch.float64)
    beam_sum[:, 1:] = -math.inf  # all beams start equal: expand only the first
    beam_lp = torch.zeros(B * K, dtype=torch.float64)
    generated = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    hyps: list[list[tuple[float, list[int], float, str]]] = [[] for _ in range(B)]
    done = [False] * B
    rank = lambda total, length: total / length ** cfg.length_penalty  # noqa: E731
    for t in range(cfg.max_new_tokens):
        logp = torch.log_softmax(apply_rules(rules, scores, generated), dim=-1).double().cpu()
        raw = torch.log_softmax(scores, dim=-1).double().cpu()
        top_sum, top_idx = (beam_sum.view(-1, 1) + logp).view(B, K * V).topk(2 * K, dim=-1)
        source, token, new_sum, new_lp = [], [], [], []
        for b in range(B):
            picked = []
            for j, (s, idx) in enumerate(zip(top_sum[b].tolist(), top_idx[b].tolist())):
                if done[b] or s == -math.inf or len(picked) == K:
                    break
                src, tok = b * K + idx // V, idx % V
                if tok == eos_id:
                    if j < K:
                        hyps[b].append((rank(s, t + 1), generated[src].tolist(), float(beam_lp[src] + raw[src, tok]), "stop"))
                else:
                    picked.append((src, tok, s, float(beam_lp[src] + raw[src, tok])))
            hyps[b] = sorted(hyps[b], key=lambda h: -h[0])[:K]
            picked += [(b * K, eos_id, -math.inf, 0.0)] * (K - len(picked))  # dead filler beams
            best_running = picked[0][2]
            if len(hyps[b]) >= K and (best_running == -math.inf or rank(best_running, t + 1) <= hyps[b][-1][0]):
                done[b] = True
            for src, tok, s, lp in picked:
                source.append(src), token.append(tok), new_sum.append(s), new_lp.append(lp)
        beam_sum = torch.tensor(new_sum, dtype=torch.float64).view(B, K)
        beam_lp = torch.tensor(new_lp, dtype=torch.float64)
        index, tokens = torch.tensor(source, device=device), torch.tensor(token, device=device)
        generated = torch.cat([generated[index], tokens[:, None]], dim=1)
        if all(done) or t + 1 == cfg.max_new_tokens:
            break
        state = _reorder(state, index)
        scores, state = _advance(model, tokens, segments, state)
    for b in range(B):
        if not done[b]:  # running beams end at the length limit
            for k in range(K):
                if beam_sum[b, k] > -math.inf:
                    hyps[b].append((rank(float(beam_sum[b, k]), generated.shape[1]), generated[b * K + k].tolist(),
                                    float(beam_lp[b * K + k]), "length"))
        hyps[b] = sorted(hyps[b], key=lambda h: -h[0])
    return [[Generation(ids, reason, lp) for _, ids, lp, reason in hyps[b][:cfg.n]] for b in range(B)]


def _drain(steps) -> list[Generation]:
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value


def generate(model, prompts: Sequence[Prompt], cfg: DecodingConfig, eos_id: int, decode_fn=None) -> list[list[Generation]]:
    """`cfg.n` replies for each prompt, batched over all prompts (contexts may differ in length)."""
    if not prompts:
        return []
    if cfg.strategy == "beam":
        return _beam_search(model, prompts, cfg, eos_id)
    flat = _drain(_decode_steps(model, prompts, cfg, eos_id, decode_fn))
    return [flat[i * cfg.n:(i + 1) * cfg.n] for i in range(len(prompts))]


def stream(model, prompt: Prompt, cfg: DecodingConfig, eos_id: int, decode_fn=None,
           logprobs_out: list | None = None) -> Iterator[int]:
    """Yield the reply's token ids as they are decoded (eos not yielded); the same tokens as
    `generate(model, [prompt], cfg, eos_id)[0][0]` with the same seed. Beam search can only
    know its best hypothesis at the end, so it yields that all at once. With `cfg.top_logprobs`,
    `logprobs_out[0]` holds the yielded tokens' log-probs (see `Generation.token_logprobs`)."""
    if cfg.n != 1:
        raise ValueError("stream decodes one candidate: set n=1")
    if cfg.strategy == "beam":
        best = generate(model, [prompt], cfg, eos_id)[0][0]
        if logprobs_out is not None and best.token_logprobs is not None:
            logprobs_out.append(best.token_logprobs)
        yield from best.token_ids
        return
    for new in _decode_steps(model, [prompt], cfg, eos_id, decode_fn, logprobs_out):
        if new[0] is not None:
            yield new[0]


def stream_batch(model, prompts: Sequence[Prompt], cfg: DecodingConfig, eos_id: int, decode_fn=None,
                 logprobs_out: list | None = None) -> Iterator[list]:
    """Greedy or sampling for several prompts (n=1) as one batch, step by step: yields per step one
    entry per prompt, its new token id or None (finished: eos, a stop string, or an earlier end).
    Prompt i's tokens equal `stream(model, prompts[i], cfg, eos_id)` with the same seed; with
    `cfg.top_logprobs`, `logprobs_out[i]` holds prompt i's token log-probs so far."""
    if cfg.n != 1 or cfg.strategy == "beam":
        raise ValueError("stream_batch decodes one candidate per prompt without beam search")
    if prompts:
        yield from _decode_steps(model, prompts, cfg, eos_id, decode_fn, logprobs_out)
