"""The chat and attribution engines, without Ray: model directory in, batched calls out.

`ChatEngine(model_dir, rerank_dir=None)`: formats the history with `pipelines.dialogue.build_context`
(oldest turns dropped to fit the window, `max_tokens` reserved), decodes with `models.generate`
(consistent nucleus sampling by default; temperature 0 = greedy), cuts replies at stop strings (the
stop string itself is not returned, as in OpenAI's API), and optionally samples candidates and
reranks them with `models.rerank` and an MLM. `run_batch(items)` decodes many requests: requests
with the same decoding settings share one `generate` call (one padded batch).

`Explainer(classifier_dir=None, chat_dir=None)`: `models.attribution.integrated_gradients` for the
classifier (a text; F = the log-odds of the predicted class unless the request names a target) and for
the dialogue model (which context tokens drove a reply), one request at a time: sharing passes across
requests measured 0.92-1.04x on a CPU and was removed.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from liaotian.models.fast_decode import FastDecoder
from liaotian.serve.api import AttributionRequest, ChatCompletionRequest, RequestError, RerankOptions
from liaotian.serve.config import ServeConfig
from liaotian.serve.request_batching import SerialDecoder


def read_model_type(model_dir) -> str:
    return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("model_type", "")


def _read_extra(model_dir) -> dict:
    extra = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("extra") or {}
    return extra if isinstance(extra, dict) else {}


def _load(model_dir, device):
    from liaotian.models.checkpoint import load_pretrained
    from liaotian.pipelines.tokenizer import load_tokenizer

    model = load_pretrained(model_dir, device=device)
    model.eval()
    return model, load_tokenizer(model_dir)


@dataclass
class PreparedChat:
    prompt: object  # models.generate.Prompt
    decoding: object  # models.generate.DecodingConfig (n = candidates to sample)
    n: int  # choices to return
    stop: list[str]
    rerank: RerankOptions | None
    prompt_tokens: int


TokenLogprob = tuple  # (token text, log p, [(alternative text, log p), ...]): the model's, before any rule


@dataclass
class Choice:
    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None  # when the request asked for them


@dataclass
class ChatResult:
    choices: list[Choice]
    prompt_tokens: int


@dataclass
class StreamDelta:
    index: int
    text: str
    finish_reason: str | None
    tokens: int  # completion tokens this delta accounts for
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None  # of the tokens whose text this delta sends


def _stop_cut(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _holdback(text: str, stops: list[str]) -> int:
    """How many trailing characters could still begin a stop string (not streamed yet)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best


class _ReplyText:
    """One streamed reply: token ids in, text deltas out; a stop string is held back, never sent.

    `push` counts each token whose delta it sends; the closing delta accounts for the rest
    (`uncounted`: the token that hit a stop string, or none)."""

    def __init__(self, decode, stop: list[str]):
        self.decode, self.stop = decode, stop
        self.ids: list[int] = []
        self.sent = self.counted = 0

    def push(self, token: int) -> tuple[str, bool]:
        """-> (text to send now, whether a stop string ended the reply)."""
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = _stop_cut(text, self.stop)
        if cut is not None:
            return text[:cut][self.sent:], True
        upto = len(text) - _holdback(text, self.stop)
        self.counted += 1
        delta = text[self.sent:upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return delta, False

    def rest(self) -> str:
        return self.decode(self.ids)[self.sent:]

    @property
    def uncounted(self) -> int:
        return len(self.ids) - self.counted


class _PendingLogprobs:
    """The log-probs of a streamed reply's tokens (`record[row]`, filled by the decoder), handed out
    with the delta that sends their text: text held back for a possible stop string waits, and so do
    its tokens' log-probs; the tokens of a stop string itself are never sent."""

    def __init__(self, engine: "ChatEngine", record: list, row: int = 0):
        self.engine, self.record, self.row = engine, record, row
        self.ids: list[int] = []
        self.sent = 0

    def take(self, text: str, token: int | None = None) -> list | None:
        if token is not None:
            self.ids.append(token)
        if not self.record or (not text and token is not None):
            return None
        ids = self.ids[self.sent:]
        entries = self.record[self.row][self.sent:self.sent + len(ids)]
        self.sent += len(ids)
        return self.engine._logprob_entries(ids, entries)


class ChatEngine:
    def __init__(self, model_dir, rerank_dir=None, device: str = "cpu", decode_precision: str = "fp32"):
        self.model, self.tok = _load(model_dir, device)
        if read_model_type(model_dir) != "dialog_lm":
            raise ValueError(f"{model_dir}: not a dialogue model (model_type {read_model_type(model_dir)!r})")
        self.decoder = FastDecoder(self.model, decode_precision)  # what generate runs: models/fast_decode.py
        self.max_len = int(self.model.config.max_len)
        eos = getattr(self.model.config, "eos_id", None)
        self.eos_id = int(self.tok.sep_id if eos is None else eos)
        self.mlm = self.mlm_tok = None
        if rerank_dir is not None:
            self.mlm, self.mlm_tok = _load(rerank_dir, device)
            same = self.mlm_tok.vocab_size == self.tok.vocab_size and self.mlm_tok.convert_ids_to_tokens(
                range(self.tok.vocab_size)) == self.tok.convert_ids_to_tokens(range(self.tok.vocab_size))
            self._source_tok = None if same else self.tok  # rerank maps ids by token string when they differ

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special=True)

    def _logprob_entries(self, ids, token_logprobs) -> list[TokenLogprob] | None:
        """`Generation.token_logprobs` with token texts, for the API."""
        if token_logprobs is None:
            return None
        text = lambda i: self.tok.decode([i], skip_special=False)  # noqa: E731
        return [(text(t), lp, [(text(a), alp) for a, alp in alts]) for t, (lp, alts) in zip(ids, token_logprobs)]

    # -- requests ---------------------------------------------------------------------------------
    def prepare(self, req: ChatCompletionRequest, cfg: ServeConfig) -> PreparedChat:
        """Tokenise and check one request (cheap; raises RequestError when it cannot be served)."""
        from liaotian.models.generate import DecodingConfig, Prompt
        from liaotian.pipelines.dialogue import build_context, input_format_of, reply_token_rules

        max_new = req.new_tokens(cfg)
        utterances = req.utterances()
        last = len(self.tok.encode(utterances[-1]))
        if last + 2 + max_new > self.max_len:
            raise RequestError(f"the last message is {last} tokens; with max_tokens={max_new} it does not fit the "
                               f"model window of {self.max_len} tokens", param="messages", code="context_length_exceeded")
        ids, segments, reply_segment = build_context(utterances, self.tok, self.max_len, reserve=max_new,
                                                     input_format=input_format_of(self.model))
        rerank = None
        if req.rerank:
            if self.mlm is None:
                raise RequestError("reranking is not available: no MLM is served", param="rerank", code="rerank_unavailable")
            rerank = req.rerank if isinstance(req.rerank, RerankOptions) else RerankOptions(candidates=max(8, req.n))
        decoding = DecodingConfig(
            strategy="greedy" if req.temperature == 0 else "sample", temperature=req.temperature or 1.0,
            top_k=req.top_k, top_p=req.top_p, consistent=True, max_new_tokens=max_new,
            presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
            stop_strings=tuple(req.stop_list()), n=rerank.candidates if rerank else req.n, seed=req.seed,
            top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            **reply_token_rules(self.tok, self.model))
        if decoding.strategy == "greedy" and decoding.n > 1 and decoding.seed is None:
            pass  # greedy candidates are identical; OpenAI does the same with temperature 0
        return PreparedChat(Prompt(list(ids), list(segments), reply_segment), decoding, req.n,
                            req.stop_list(), rerank, len(ids))

    def _finish(self, item: PreparedChat, gens) -> ChatResult:
        if item.rerank is not None:
            gens = self._rerank(item, gens)[:item.n]
        choices = []
        for g in gens[:item.n]:
            text = self.decode(g.token_ids)
            cut = _stop_cut(text, item.stop)
            choices.append(Choice(text if cut is None else text[:cut], g.finish_reason, len(g.token_ids),
                                  self._logprob_entries(g.token_ids, g.token_logprobs)))
        return ChatResult(choices, item.prompt_tokens)

    def _rerank(self, item: PreparedChat, gens):
        from liaotian.models.rerank import rerank

        candidates = [list(g.token_ids) for g in gens]
        order = rerank(self.mlm, self.mlm_tok, item.prompt.input_ids, candidates,
                       lm_scores=[g.logprob for g in gens], alpha=item.rerank.alpha, source_tok=self._source_tok)
        return [gens[i] for i, _ in order]

    @torch.no_grad()
    def run_batch(self, items: list[PreparedChat]) -> list[ChatResult]:
        """Decode many requests; those with equal decoding settings share one padded batch."""
        from liaotian.models.generate import generate

        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(repr(dataclasses.astuple(item.decoding)), []).append(i)
        results: list[ChatResult | None] = [None] * len(items)
        for members in groups.values():
            decoding = items[members[0]].decoding
            gens = generate(self.decoder, [items[i].prompt for i in members], decoding, self.eos_id,
                            decode_fn=self.decode if decoding.stop_strings else None)
            for i, g in zip(members, gens):
                results[i] = self._finish(items[i], g)
        return results

    def stream(self, item: PreparedChat) -> Iterator[StreamDelta]:
        """Choice after choice, text deltas as tokens arrive; stop strings are held back, never sent."""
        from liaotian.models.generate import stream

        if item.rerank is not None:  # reranking needs every candidate first: one delta per choice
            for j, c in enumerate(self.run_batch([item])[0].choices):
                yield StreamDelta(j, c.text, c.finish_reason, c.completion_tokens, item.prompt_tokens, c.logprobs)
            return
        for j in range(item.n):
            seed = None if item.decoding.seed is None else item.decoding.seed + j
            cfg = dataclasses.replace(item.decoding, n=1, seed=seed)
            reply, reason, record = _ReplyText(self.decode, item.stop), None, []
            logprobs = _PendingLogprobs(self, record)
            for token in stream(self.decoder, item.prompt, cfg, self.eos_id,
                                decode_fn=self.decode if item.stop else None, logprobs_out=record):
                delta, stopped = reply.push(token)
                if stopped:
                    reason = "stop"
                    yield StreamDelta(j, delta, reason, reply.uncounted, item.prompt_tokens, logprobs.take(delta))
                    break
                yield StreamDelta(j, delta, None, 1, item.prompt_tokens, logprobs.take(delta, token))
            if reason is None:  # eos, or max_tokens reached
                reason = "stop" if len(reply.ids) < cfg.max_new_tokens else "length"
                rest = reply.rest()
                yield StreamDelta(j, rest, reason, reply.uncounted, item.prompt_tokens, logprobs.take(rest))

    @staticmethod
    def streams_together(item: PreparedChat) -> bool:
        """Whether `stream_many` can decode this request in a shared batch (one choice, no reranking)."""
        return item.n == 1 and item.rerank is None and item.decoding.strategy != "beam"

    def stream_many(self, items: list[PreparedChat]) -> Iterator[tuple[int, StreamDelta]]:
        """`stream` for several one-choice requests decoded as shared batches (requests with equal
        decoding settings share one): (item index, delta) pairs, each item's deltas in order and
        equal to `stream(item)`'s with the same seed; an item's last delta comes as soon as it ends."""
        from liaotian.models.generate import stream_batch

        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            if not self.streams_together(item):
                raise ValueError("stream_many takes one-choice requests without reranking")
            groups.setdefault(repr(dataclasses.astuple(item.decoding)), []).append(i)
        for members in groups.values():
            cfg = items[members[0]].decoding
            replies = {i: _ReplyText(self.decode, items[i].stop) for i in members}
            record: list = []
            pending = {i: _PendingLogprobs(self, record, row) for row, i in enumerate(members)}
            open_ = set(members)
            for step in stream_batch(self.decoder, [items[i].prompt for i in members], cfg, self.eos_id,
                                     decode_fn=self.decode if cfg.stop_strings else None, logprobs_out=record):
                for i, token in zip(members, step):
                    if i not in open_:
                        continue
                    reply, prompt_tokens = replies[i], items[i].prompt_tokens
                    if token is None:  # ended on eos at this step
                        open_.discard(i)
                        rest = reply.rest()
                        yield i, StreamDelta(0, rest, "stop", reply.uncounted, prompt_tokens, pending[i].take(rest))
                        continue
                    delta, stopped = reply.push(token)
                    if stopped:
                        open_.discard(i)
                        yield i, StreamDelta(0, delta, "stop", reply.uncounted, prompt_tokens, pending[i].take(delta))
                    else:
                        yield i, StreamDelta(0, delta, None, 1, prompt_tokens, pending[i].take(delta, token))
            for i in sorted(open_):  # max_tokens reached
                reply = replies[i]
                reason = "stop" if len(reply.ids) < cfg.max_new_tokens else "length"
                rest = reply.rest()
                yield i, StreamDelta(0, rest, reason, reply.uncounted, items[i].prompt_tokens, pending[i].take(rest))


# ---------------------------------------------------------------------------------------------
# Attribution
# ---------------------------------------------------------------------------------------------

@dataclass
class PreparedAttribution:
    kind: str  # "classifier" | "chat"
    input_ids: list[int]
    segment_ids: list[int] | None
    reply_ids: list[int] | None
    target: int | None
    steps: int | str  # an integer, or "auto"
    baseline: str
    method: str


def _prediction_rule(extra: dict):
    """The trained loss's prediction-time rule (posthoc_la subtracts tau * log prior), identity otherwise."""
    from liaotian.models.losses import build_loss

    loss = (extra.get("train") or {}).get("loss") or {}
    if loss.get("name") != "posthoc_la" or not extra.get("class_counts"):
        return lambda logits: logits
    rule = build_loss("posthoc_la", class_counts=extra["class_counts"], tau=float(loss.get("tau", 1.0)))
    return rule.predict_logits


class Explainer:
    def __init__(self, classifier_dir=None, chat_dir=None, default_steps: int | str = "auto", device: str = "cpu"):
        if classifier_dir is None and chat_dir is None:
            raise ValueError("Explainer needs a classifier or a dialogue model directory")
        self.device = device
        self.default_steps = default_steps
        self.classifier = self.cls_tok = self.chat = self.chat_tok = None
        self.label_names: list[str] | None = None
        self.test_metrics: dict[str, float] = {}  # the classifier's, as training stored them at export
        self.predict_logits = lambda logits: logits
        if classifier_dir is not None:
            self.classifier, self.cls_tok = _load(classifier_dir, device)
            extra = _read_extra(classifier_dir)
            names = extra.get("label_names")
            self.label_names = [str(x) for x in names] if isinstance(names, list) else None
            self.predict_logits = _prediction_rule(extra)
            metrics = extra.get("test_metrics") if isinstance(extra.get("test_metrics"), dict) else {}
            self.test_metrics = {k: float(v) for k, v in metrics.items()
                                 if k in ("test_accuracy", "test_balanced_accuracy") and isinstance(v, (int, float))}
        if chat_dir is not None:
            self.chat, self.chat_tok = _load(chat_dir, device)

    def _window(self, model) -> int:
        c = model.config
        return int(getattr(c, "max_len", None) or (getattr(c, "encoder_config", None) or {}).get("max_len", 512))

    def prepare(self, req: AttributionRequest) -> PreparedAttribution:
        steps = req.steps or self.default_steps
        if req.kind == "classifier":
            if self.classifier is None:
                raise RequestError("no classifier is served: explain a chatbot reply with 'messages' and 'reply'",
                                   param="text", code="model_unavailable")
            tok = self.cls_tok
            ids = [tok.cls_id] + tok.encode(req.text) + [tok.sep_id]
            if len(ids) > self._window(self.classifier):
                raise RequestError(f"text is {len(ids)} tokens with [CLS]/[SEP]; the model window is "
                                   f"{self._window(self.classifier)}", param="text", code="context_length_exceeded")
            num_classes = int(getattr(self.classifier.config, "num_classes", 0) or 0)
            if req.target is not None and num_classes and req.target >= num_classes:
                raise RequestError(f"target must be < {num_classes}", param="target")
            return PreparedAttribution("classifier", ids, None, None, req.target, steps, req.baseline, req.method)
        if self.chat is None:
            raise RequestError("no dialogue model is served: explain a 'text'", param="messages", code="model_unavailable")
        from liaotian.pipelines.dialogue import build_context, input_format_of

        tok = self.chat_tok
        reply = tok.encode(req.reply)
        if not reply:
            raise RequestError("the reply has no tokens", param="reply")
        window = self._window(self.chat)
        if len(reply) + 3 > window:
            raise RequestError(f"reply is {len(reply)} tokens; the model window is {window}", param="reply",
                               code="context_length_exceeded")
        utterances = req.utterances()
        if not utterances:
            raise RequestError("messages hold no user or assistant turn", param="messages")
        ids, segments, reply_segment = build_context(utterances, tok, window, reserve=len(reply),
                                                     input_format=input_format_of(self.chat))
        segments = list(segments) + [reply_segment] * len(reply)  # the reply's own segment, whatever the format
        return PreparedAttribution("chat", list(ids), segments, reply, None, steps, req.baseline, req.method)

    def _tokens(self, tok, ids) -> list[str]:
        return [tok.decode([i], skip_special=False) or "␣" for i in ids]

    def _call(self, p: PreparedAttribution):
        """-> (an `integrated_gradients` call as (model, input_ids, target, kwargs), finish(attribution) -> dict)."""
        out: dict = {"kind": p.kind}
        kw = dict(baseline=p.baseline, steps=p.steps, method=p.method)
        if p.kind == "classifier":
            model, tok = self.classifier, self.cls_tok
            x = torch.tensor([p.input_ids], device=self.device)
            with torch.no_grad():
                # post-hoc logit adjustment (a constant shift per class) changes the decision, not F's gradient
                probs = torch.softmax(self.predict_logits(model(x).logits.float()), dim=-1)[0]
            target = int(probs.argmax()) if p.target is None else p.target
            out.update(label=target, probability=float(probs[target]),
                       label_name=self.label_names[target] if self.label_names and target < len(self.label_names) else None,
                       probabilities=[float(v) for v in probs], test_metrics=self.test_metrics or None)
            call = (model, x, target, dict(kw, pad_id=tok.pad_id, output="log_odds"))

            def finish(a):
                out.update(tokens=self._tokens(tok, p.input_ids), scores=a.token_scores.tolist())
                return out
        else:
            model, tok = self.chat, self.chat_tok
            call = (model, torch.tensor([p.input_ids]), p.reply_ids,
                    dict(kw, segment_ids=torch.tensor([p.segment_ids]), pad_id=tok.pad_id))
            n = len(p.input_ids)

            def finish(a):
                scores = a.token_scores.tolist()
                out.update(reply_tokens=self._tokens(tok, p.reply_ids), reply_scores=scores[n:],
                           tokens=self._tokens(tok, p.input_ids), scores=scores[:n])
                return out

        def done(a) -> dict:
            result = finish(a)
            result.update(f_x=float(a.f_x), f_baseline=float(a.f_baseline), delta=float(a.delta), steps=int(a.steps),
                          method=a.method, baseline=p.baseline, error_bound=a.error_bound,
                          objective="log_odds" if p.kind == "classifier" else "reply_log_prob")
            return result

        return call, done

    def explain_one(self, p: PreparedAttribution) -> dict:
        from liaotian.models.attribution import integrated_gradients

        (model, ids, target, kw), done = self._call(p)
        return done(integrated_gradients(model, ids, target, **kw))

    def explain(self, items: list[PreparedAttribution]) -> list[dict]:
        """One result per item, in order."""
        return [self.explain_one(p) for p in items]


# ---------------------------------------------------------------------------------------------
# The in-process backend (tests without Ray)
# ---------------------------------------------------------------------------------------------

class LocalBackend:
    """Both engines in this process, one request at a time: the plain FastAPI app (tests, no Ray)."""

    def __init__(self, cfg: ServeConfig, chat: ChatEngine | None = None, explainer: Explainer | None = None):
        self.cfg, self.engine, self.explainer = cfg, chat, explainer
        self.model_id = cfg.model_name
        self.decoder = SerialDecoder("local")  # one job at a time; nothing held across a stream's yields

    def prepare(self, req):
        if isinstance(req, ChatCompletionRequest):
            return self.engine.prepare(req, self.cfg)
        return self.explainer.prepare(req)

    async def complete(self, prepared: PreparedChat) -> ChatResult:
        return (await self.decoder.run(self.engine.run_batch, [prepared]))[0]

    def stream(self, prepared: PreparedChat):
        return self.decoder.iterate(lambda: self.engine.stream(prepared))

    async def attribute(self, prepared: PreparedAttribution) -> dict:
        return (await self.decoder.run(self.explainer.explain, [prepared]))[0]
