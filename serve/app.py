"""Ray Serve: the chatbot and the attribution service, two applications behind one HTTP proxy.

    application   route prefix        deployment   routes (all built by serve.api.create_app)
    chat          /                   ChatBot      GET / (page), /static/*, /healthz, /v1/models,
                                                   POST /v1/chat/completions
    attribution   /v1/attributions    Attributor   POST /v1/attributions

Serve's proxy sends a path to the application with the longest matching prefix, so the page and the
chat API share `/` while attribution requests reach their own, separately scaled application.
Each deployment is its own FastAPI ingress (`__serve_build_asgi_app__`), so an overloaded deployment
answers its own JSON 503 (beyond `max_ongoing_requests + max_queued_requests` held) without a hop
through another replica. Each replica exports Prometheus metrics (`serve.metrics`).

Batching: with `serve.<app>.batching` on, concurrent requests on a replica are gathered by
`serve.request_batching.AdaptiveBatcher` (up to `max_batch_size`; a batch waits at most `batch_wait_timeout_s`
for as many requests as the recent load, so a lone request is not delayed and a closed loop of
clients is not split into groups that take turns, as `@serve.batch`'s fixed timeout did) and decoded
as one batch; off, a replica serves one request at a time (the benchmark's baseline). Streaming
requests with one choice and no reranking are batched the same way (`StreamBatcher`: each stream gets
its deltas step by step from the shared decode); the others are decoded one at a time on the replica's
`SerialDecoder` thread, like unbatched ones (no lock is held across a stream's `yield`s, so a client that
disconnects mid-stream cannot wedge the replica). `/healthz` and Serve's health check report a replica
whose running decode has stopped making progress.

`liaotian serve --config FILE` starts both; `serve run liaotian.serve.app:build_app config=FILE` (or the YAML
`serve/serve_config.yaml` through `serve run` / `serve deploy`) runs them with Ray Serve's own CLI.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

from ray import serve

from liaotian.config import ConfigError, from_dict, to_dict
from liaotian.serve.api import create_app
from liaotian.serve.request_batching import AdaptiveBatcher, SerialDecoder, StreamBatcher
from liaotian.serve.config import DeploymentSection, ServeConfig
from liaotian.serve.engine import ChatEngine, Explainer
from liaotian.serve.metrics import ServeMetrics

CHAT_APP, ATTRIBUTION_APP = "chat", "attribution"
ROUTES = {CHAT_APP: "/", ATTRIBUTION_APP: "/v1/attributions"}


def full_paths(app):
    """Serve passes an application's route prefix as the ASGI `root_path`, and Starlette then matches
    routes on the rest of the path ("" for `/v1/attributions` itself). The routes here are declared
    with their full paths, so the prefix is cleared before routing."""
    async def asgi(scope, receive, send):
        if scope["type"] in ("http", "websocket") and scope.get("root_path"):
            scope = dict(scope, root_path="")
        await app(scope, receive, send)

    return asgi


def stall_reason(cfg: ServeConfig, **workers) -> str | None:
    """The first worker (SerialDecoder / AdaptiveBatcher) whose running job has made no progress for
    longer than a request may take, as a sentence; None when all are idle or moving."""
    limit = cfg.request_timeout_s + 5.0
    for name, worker in workers.items():
        stalled = worker.stalled_for()
        if stalled > limit:
            return f"{name}: the running job has made no progress for {stalled:.0f} s (limit {limit:.0f} s)"
    return None


def replica_device(section) -> str:
    """The replica's torch device: a GPU when its deployment asks for one (Ray then sets
    CUDA_VISIBLE_DEVICES to it), else the CPU."""
    if section.num_gpus <= 0:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"num_gpus={section.num_gpus} but this replica sees no CUDA device")
    return "cuda"


@serve.deployment(name="ChatBot", health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress()
class ChatBot:
    """The chat API and the page, on a `ChatEngine` loaded from a model directory."""

    def __init__(self, cfg: dict, model_dir: str, rerank_dir: str | None = None):
        self.cfg = from_dict(ServeConfig, cfg)
        self.model_id = self.cfg.model_name
        self.replica_id = uuid.uuid4().hex[:12]
        self.section = self.cfg.chat
        self.engine = ChatEngine(model_dir, rerank_dir, device=replica_device(self.section),
                                 decode_precision=self.cfg.decode_precision)
        self.metrics = ServeMetrics("ChatBot")
        # the unbatched and n > 1 / rerank streaming paths
        self.decoder = SerialDecoder("chat-decode", on_wait=lambda s: self.metrics.queue_wait("serial", s))
        self.batcher = AdaptiveBatcher(self.engine.run_batch, self.section.max_batch_size,
                                       self.section.batch_wait_timeout_s,
                                       on_batch=lambda n, waits: self.metrics.batch("batch", n, waits))
        self.stream_batcher = StreamBatcher(self.engine.stream_many, self.section.max_batch_size,
                                            self.section.batch_wait_timeout_s, lambda d: d.finish_reason is not None,
                                            on_batch=lambda n, waits: self.metrics.batch("stream", n, waits))

    def __serve_build_asgi_app__(self):
        return create_app(self.cfg, chat=self, page=True, metrics=self.metrics)

    def health(self) -> str | None:
        """Why this replica cannot serve, or None: a decode that has made no progress for longer than
        a request may take (a wedged decode loop)."""
        return stall_reason(self.cfg, decoder=self.decoder, batcher=self.batcher,
                            stream_batcher=self.stream_batcher.batcher)

    def check_health(self):  # Serve replaces a replica whose check raises
        if self.engine is None:
            raise RuntimeError("chat engine not loaded")
        reason = self.health()
        if reason:
            raise RuntimeError(reason)

    def prepare(self, req):
        return self.engine.prepare(req, self.cfg)

    async def complete(self, prepared):
        if self.section.batching:
            return await self.batcher(prepared)
        return (await self.decoder.run(self.engine.run_batch, [prepared]))[0]

    def stream(self, prepared):
        if self.section.batching and self.engine.streams_together(prepared):
            return self.stream_batcher.stream(prepared)
        return self.decoder.iterate(lambda: self.engine.stream(prepared))


@serve.deployment(name="Attributor", health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress()
class Attributor:
    """Integrated Gradients for the classifier (`{"text"}`) and the chatbot (`{"messages", "reply"}`)."""

    def __init__(self, cfg: dict, classifier_dir: str | None = None, chat_dir: str | None = None):
        self.cfg = from_dict(ServeConfig, cfg)
        self.section = self.cfg.attribution
        self.replica_id = uuid.uuid4().hex[:12]
        self.explainer = Explainer(classifier_dir=classifier_dir, chat_dir=chat_dir, default_steps=self.cfg.ig_steps,
                                   device=replica_device(self.section))
        self.metrics = ServeMetrics("Attributor")
        self.decoder = SerialDecoder("attribute", on_wait=lambda s: self.metrics.queue_wait("serial", s))
        self.batcher = AdaptiveBatcher(self.explainer.explain, self.section.max_batch_size,
                                       self.section.batch_wait_timeout_s,
                                       on_batch=lambda n, waits: self.metrics.batch("batch", n, waits))

    def __serve_build_asgi_app__(self):
        return full_paths(create_app(self.cfg, attribution=self, page=False, metrics=self.metrics))

    def health(self) -> str | None:
        return stall_reason(self.cfg, decoder=self.decoder, batcher=self.batcher)

    def check_health(self):
        if self.explainer is None:
            raise RuntimeError("explainer not loaded")
        reason = self.health()
        if reason:
            raise RuntimeError(reason)

    def prepare(self, req):
        return self.explainer.prepare(req)

    async def attribute(self, prepared) -> dict:
        if self.section.batching:
            return await self.batcher(prepared)
        return (await self.decoder.run(self.explainer.explain, [prepared]))[0]


# ---------------------------------------------------------------------------------------------
# Building the applications from the run config
# ---------------------------------------------------------------------------------------------

RAY_MAX_ONGOING = 1000  # Ray caps an actor's concurrency at 1000


def deployment_options(section: DeploymentSection) -> dict:
    """Admission is the app's (serve.api: beyond `max_ongoing_requests + max_queued_requests` in a
    replica, a JSON 503 with Retry-After). Ray lets far more requests reach a replica, so that the
    app, not the proxy, answers an overload; the proxy's own queue (plain-text 503) is a backstop
    for floods beyond that."""
    admitted = section.max_ongoing_requests + section.max_queued_requests
    opts = {
        "ray_actor_options": {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus},
        "max_ongoing_requests": min(RAY_MAX_ONGOING, max(4 * admitted, admitted + 256)),
        "max_queued_requests": RAY_MAX_ONGOING,
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
    }
    a = section.autoscaling
    if a.min_replicas == a.max_replicas:
        opts["num_replicas"] = a.min_replicas
    else:
        opts["autoscaling_config"] = {
            "min_replicas": a.min_replicas, "initial_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests, "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s, "look_back_period_s": a.look_back_period_s,
            "metrics_interval_s": a.metrics_interval_s,
        }
    return opts


def model_dirs(cfg) -> dict[str, str | None]:
    """The model directories to serve: configured paths, else this run's exported models."""
    s, paths = cfg.serve, cfg.paths

    def first(*candidates):
        for c in candidates:
            if c is not None and (Path(c) / "config.json").is_file():
                return str(Path(c).resolve())
        return None

    chat = first(s.chat_model) if s.chat_model else first(paths.model("dialog"))
    if s.chat_model and chat is None:
        raise ConfigError(f"serve.chat_model: {s.chat_model} is not a model directory (no config.json)")
    if chat is None:
        raise ConfigError(f"no dialogue model at {paths.model('dialog')}: train one or set serve.chat_model")
    rerank = first(s.rerank_model) if s.rerank_model else first(paths.model("mlm"))
    classifier = first(s.classifier_model) if s.classifier_model else first(paths.model("sentiment"), paths.model("classifier"))
    if s.rerank_model and rerank is None:
        raise ConfigError(f"serve.rerank_model: {s.rerank_model} is not a model directory")
    if s.classifier_model and classifier is None:
        raise ConfigError(f"serve.classifier_model: {s.classifier_model} is not a model directory")
    return {"chat": chat, "rerank": rerank, "classifier": classifier}


def build_applications(cfg) -> dict:
    """{app name: bound Serve application} for the run config `cfg`."""
    dirs, s = model_dirs(cfg), cfg.serve
    plain = to_dict(s)
    return {
        CHAT_APP: ChatBot.options(**deployment_options(s.chat)).bind(plain, dirs["chat"], dirs["rerank"]),
        ATTRIBUTION_APP: Attributor.options(**deployment_options(s.attribution)).bind(plain, dirs["classifier"], dirs["chat"]),
    }


def build_app(args: dict):
    """Serve application builder: `serve run liaotian.serve.app:build_app config=FILE app=chat|attribution`.

    `args`: `config` (a run config YAML), `app` (default chat), `set` (a list of KEY=VALUE overrides,
    or one string with overrides separated by commas).
    """
    from liaotian.config import load_run_config

    args = dict(args or {})
    unknown = set(args) - {"config", "app", "set"}
    if unknown:
        raise ConfigError(f"build_app: unknown arguments {sorted(unknown)}; known: config, app, set")
    sets = args.get("set") or []
    if isinstance(sets, str):
        sets = [x for x in sets.split(",") if x.strip()]
    cfg = load_run_config(args.get("config"), list(sets))
    name = args.get("app", CHAT_APP)
    if name not in ROUTES:
        raise ConfigError(f"build_app: app must be one of {sorted(ROUTES)}, got {name!r}")
    return build_applications(cfg)[name]


def run(cfg, blocking: bool = True) -> dict[str, str]:
    """Start Serve on `cfg.serve.host:port` and deploy both applications; returns {app: url}."""
    s = cfg.serve
    apps = build_applications(cfg)
    serve.start(http_options={"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s})
    for name, app in apps.items():
        serve.run(app, name=name, route_prefix=ROUTES[name], blocking=False)
    base = f"http://{s.host}:{s.port}"
    urls = {name: base + ROUTES[name] for name in apps}
    if blocking:
        print(f"liaotian serve: page and chat API at {base}/, attributions at {base}/v1/attributions "
              "(Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            serve.shutdown()
    return urls


def add_cli(parser) -> None:
    from liaotian.cli import add_common_arguments

    parser.add_argument("--host", help="alias of serve.host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="alias of serve.port")
    parser.add_argument("--blocking", dest="blocking", action="store_true", default=True,
                        help="serve until Ctrl-C (default)")
    parser.add_argument("--no-block", dest="blocking", action="store_false",
                        help="deploy and return; the applications keep running on the Ray cluster")
    add_common_arguments(parser)
    parser.set_defaults(run=cli_main)


def cli_main(args) -> int:
    from liaotian.cli import load_config_from_args
    from liaotian.cluster import connect

    cfg = load_config_from_args(args, extra={"serve.host": args.host, "serve.port": args.port})
    if cfg.serve.host not in ("127.0.0.1", "localhost", "::1") and not (cfg.serve.api_key or os.environ.get("LIAOTIAN_API_KEY")):
        print(f"liaotian serve: warning: listening on {cfg.serve.host} without an API key", file=sys.stderr)
    connect(cfg.ray)
    urls = run(cfg, blocking=args.blocking)
    if not args.blocking:
        for name, url in urls.items():
            print(f"{name}: {url}")
    return 0
