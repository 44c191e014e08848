"""Config section of `liaotian serve` (and of `serve run liaotian.serve.app:build_app`). Plain dataclasses; no Ray here."""
from __future__ import annotations

from dataclasses import dataclass, field

from liaotian.typed_config import ConfigError

DECODE_PRECISIONS = ("auto", "fp32", "bf16", "int8")  # models/fast_decode.py (kept torch-free here for start-up)


def _positive(where: str, **values) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"{where}.{name} must be > 0, got {value!r}")


@dataclass
class AutoscalingSection:
    min_replicas: int = 1
    max_replicas: int = 2  # equal to min_replicas: a fixed number of replicas, no autoscaling
    target_ongoing_requests: float = 8
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 30.0
    look_back_period_s: float = 10.0
    metrics_interval_s: float = 2.0

    def __post_init__(self):
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ConfigError("autoscaling: need 1 <= min_replicas <= max_replicas")
        _positive("autoscaling", target_ongoing_requests=self.target_ongoing_requests,
                  look_back_period_s=self.look_back_period_s, metrics_interval_s=self.metrics_interval_s)
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ConfigError("autoscaling: delays must be >= 0")


@dataclass
class DeploymentSection:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_ongoing_requests: int = 32  # per replica; >= max_batch_size so that batches can fill
    # a replica holds at most max_ongoing_requests + max_queued_requests requests; beyond: a JSON 503
    # with Retry-After at once (serve/api.py), instead of an unbounded queue
    max_queued_requests: int = 64
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01
    batching: bool = True  # off: one request at a time per replica (the benchmark's baseline)
    autoscaling: AutoscalingSection = field(default_factory=AutoscalingSection)

    def __post_init__(self):
        _positive("deployment", max_ongoing_requests=self.max_ongoing_requests,
                  max_queued_requests=self.max_queued_requests, max_batch_size=self.max_batch_size)
        if self.num_cpus < 0 or self.num_gpus < 0 or self.batch_wait_timeout_s < 0:
            raise ConfigError("deployment: num_cpus, num_gpus and batch_wait_timeout_s must be >= 0")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless configured otherwise
    port: int = 8000
    api_key: str | None = None  # or LIAOTIAN_API_KEY in the environment; guards /v1/*
    model_name: str = "liaotian"  # the id /v1/models lists and requests may name
    request_timeout_s: float = 60.0  # in the app (504) and Serve's proxy (408)
    max_body_bytes: int = 64 * 1024  # 413 beyond it (Serve itself sets no limit)
    max_text_chars: int = 2000  # per message / text / reply
    max_messages: int = 64
    max_new_tokens: int = 128  # the cap and default of max_tokens
    max_n: int = 8
    decode_precision: str = "auto"  # weights of one-token decoding steps: auto = bf16 where the device computes it natively and it measures faster, else fp32; int8 when asked
    ig_steps: int | str = "auto"  # IG steps when a request names none; "auto" = adaptive, token scores within 1 %
    chat_model: str | None = None  # default: this run's models/dialog
    rerank_model: str | None = None  # default: this run's models/mlm (reranking off when absent)
    classifier_model: str | None = None  # default: this run's models/sentiment, else models/classifier
    chat: DeploymentSection = field(default_factory=DeploymentSection)
    attribution: DeploymentSection = field(default_factory=lambda: DeploymentSection(max_batch_size=8))

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError("serve.port must be in 1..65535")
        _positive("serve", request_timeout_s=self.request_timeout_s, max_body_bytes=self.max_body_bytes,
                  max_text_chars=self.max_text_chars, max_messages=self.max_messages,
                  max_new_tokens=self.max_new_tokens, max_n=self.max_n)
        if self.decode_precision not in DECODE_PRECISIONS:
            raise ConfigError(f"serve.decode_precision must be one of {DECODE_PRECISIONS}, got {self.decode_precision!r}")
        if self.ig_steps != "auto" and not (isinstance(self.ig_steps, int) and 2 <= self.ig_steps <= 256):
            raise ConfigError("serve.ig_steps must be 'auto' or an integer in 2..256")
        if not self.model_name or len(self.model_name) > 128:
            raise ConfigError("serve.model_name must be 1..128 characters")
