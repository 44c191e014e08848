"""Prometheus metrics of the chat and attribution services, through Ray's metrics export
(`ray.util.metrics`: each Ray node's metrics agent serves them on its `metrics_export_port`, with the
prefix `ray_`). Outside a Ray worker (the in-process app in tests) the same calls are recorded in
`ServeMetrics.local` only.

Besides what every serving stack reports (requests by route and status, tokens, time to first token,
inter-token latency, batch sizes, queue wait), the replies themselves are watched per decoding
setting (`greedy`, `sample`, `+rerank`): the share that hit `max_tokens` without eos (a model that does
not terminate), the repetition rate (seq-rep-2 of Welleck et al. 2020: 1 - distinct bigrams / bigrams
of a reply, over its characters) and the mean reply length, each over the last `WINDOW` replies of
the replica; and the attribution service's completeness delta |sum of scores - (F(x) - F(baseline))|
and quadrature nodes per explanation.
"""
from __future__ import annotations

from collections import defaultdict, deque

WINDOW = 200  # replies per decoding setting behind the live rates
SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
BATCH = [1, 2, 4, 8, 16, 32, 64]
NODES = [2, 4, 8, 16, 32, 64, 128, 256, 512]
DELTAS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def repetition_rate(text: str) -> float:
    """seq-rep-2: the share of a reply's character bigrams that repeat an earlier one (0 when < 2 bigrams)."""
    bigrams = [text[i:i + 2] for i in range(len(text) - 1)]
    return 0.0 if len(bigrams) < 2 else 1.0 - len(set(bigrams)) / len(bigrams)


class _Local:
    """What a metric would export, kept in this process (tests; the app without Ray)."""

    def __init__(self, store: dict, name: str, kind: str):
        self.store, self.name, self.kind = store, name, kind

    def _key(self, tags):
        return self.name, tuple(sorted((tags or {}).items()))

    def inc(self, value=1.0, tags=None):
        self.store[self._key(tags)] = self.store.get(self._key(tags), 0.0) + value

    def set(self, value, tags=None):
        self.store[self._key(tags)] = value

    def observe(self, value, tags=None):
        self.store.setdefault(self._key(tags), []).append(value)


class ServeMetrics:
    def __init__(self, deployment: str = "local", local_only: bool = False):
        self.deployment = deployment
        self.local: dict = {}
        self._recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=WINDOW))
        use_ray = False
        if not local_only:
            import ray

            use_ray = ray.is_initialized()
        make = self._ray_metric if use_ray else self._local_metric
        self.m = {
            "requests": make("counter", "liaotian_requests", "HTTP requests by route and status", ("route", "status")),
            "in_flight": make("gauge", "liaotian_requests_in_flight", "requests a replica holds", ("route",)),
            "prompt_tokens": make("counter", "liaotian_prompt_tokens", "prompt tokens of answered chat requests", ()),
            "completion_tokens": make("counter", "liaotian_completion_tokens", "completion tokens sent", ()),
            "ttft": make("histogram", "liaotian_time_to_first_token_seconds", "request start to first streamed text",
                         (), SECONDS),
            "itl": make("histogram", "liaotian_inter_token_latency_seconds", "between streamed text deltas", (), SECONDS),
            "batch": make("histogram", "liaotian_batch_size", "requests per decoded batch", ("path",), BATCH),
            "queue_wait": make("histogram", "liaotian_queue_wait_seconds", "request queued until its decode starts",
                               ("path",), SECONDS),
            "replies": make("counter", "liaotian_replies", "replies by decoding setting and finish reason",
                            ("setting", "finish_reason")),
            "non_termination": make("gauge", "liaotian_non_termination_rate",
                                    f"share of the last {WINDOW} replies that hit max_tokens without eos", ("setting",)),
            "repetition": make("gauge", "liaotian_repetition_rate",
                               f"mean seq-rep-2 of the last {WINDOW} replies", ("setting",)),
            "reply_length": make("gauge", "liaotian_mean_reply_tokens",
                                 f"mean completion tokens of the last {WINDOW} replies", ("setting",)),
            "ig_delta": make("histogram", "liaotian_ig_completeness_delta",
                             "|sum of scores - (F(x) - F(baseline))| per explanation", ("method",), DELTAS),
            "ig_nodes": make("histogram", "liaotian_ig_quadrature_nodes", "integration nodes per explanation",
                             ("method",), NODES),
        }

    def _tags(self, **tags) -> dict:
        return {"deployment": self.deployment, **{k: str(v) for k, v in tags.items()}}

    def _ray_metric(self, kind, name, description, keys, boundaries=None):
        from ray.util import metrics

        keys = ("deployment", *keys)
        if kind == "counter":
            return metrics.Counter(name, description, tag_keys=keys)
        if kind == "gauge":
            return metrics.Gauge(name, description, tag_keys=keys)
        return metrics.Histogram(name, description, boundaries=boundaries, tag_keys=keys)

    def _local_metric(self, kind, name, description, keys, boundaries=None):
        return _Local(self.local, name, kind)

    # -- what the app records ---------------------------------------------------------------------
    def request(self, route: str, status: int) -> None:
        self.m["requests"].inc(1.0, self._tags(route=route, status=status))

    def in_flight(self, route: str, n: int) -> None:
        self.m["in_flight"].set(n, self._tags(route=route))

    def tokens(self, prompt: int, completion: int) -> None:
        if prompt:
            self.m["prompt_tokens"].inc(prompt, self._tags())
        if completion:
            self.m["completion_tokens"].inc(completion, self._tags())

    def token_timing(self, first: float | None, between: float | None) -> None:
        if first is not None:
            self.m["ttft"].observe(first, self._tags())
        if between is not None:
            self.m["itl"].observe(between, self._tags())

    def batch(self, path: str, size: int, waits: list[float]) -> None:
        self.m["batch"].observe(size, self._tags(path=path))
        for w in waits:
            self.m["queue_wait"].observe(w, self._tags(path=path))

    def queue_wait(self, path: str, seconds: float) -> None:
        self.m["queue_wait"].observe(seconds, self._tags(path=path))

    def reply(self, setting: str, finish_reason: str, text: str, tokens: int) -> None:
        recent = self._recent[setting]
        recent.append((finish_reason == "length", repetition_rate(text), tokens))
        tags = self._tags(setting=setting)
        self.m["replies"].inc(1.0, self._tags(setting=setting, finish_reason=finish_reason))
        n = len(recent)
        self.m["non_termination"].set(sum(r[0] for r in recent) / n, tags)
        self.m["repetition"].set(sum(r[1] for r in recent) / n, tags)
        self.m["reply_length"].set(sum(r[2] for r in recent) / n, tags)

    def attribution(self, method: str, delta: float, nodes: int) -> None:
        tags = self._tags(method=method or "unknown")
        self.m["ig_delta"].observe(abs(delta), tags)
        self.m["ig_nodes"].observe(nodes, tags)
