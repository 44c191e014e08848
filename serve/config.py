"""Config section of `liaotian serve`. Plain dataclasses; no Ray here."""
from __future__ import annotations

from dataclasses import dataclass, field

from liaotian.config import ConfigError


@dataclass
class AutoscalingSection:
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 8
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 30.0


@dataclass
class DeploymentSection:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_ongoing_requests: int = 32
    max_queued_requests: int = 64  # beyond it: 503 at once, instead of an unbounded queue
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01
    batching: bool = True
    autoscaling: AutoscalingSection = field(default_factory=AutoscalingSection)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # or LIAOTIAN_API_KEY in the environment
    request_timeout_s: float = 60.0
    max_body_bytes: int = 64 * 1024
    max_text_chars: int = 2000
    max_messages: int = 64
    max_new_tokens: int = 128
    max_n: int = 8
    chat_model: str | None = None  # default: this run's models/dialog
    rerank_model: str | None = None  # default: this run's models/mlm
    classifier_model: str | None = None  # default: this run's models/sentiment, else models/classifier
    chat: DeploymentSection = field(default_factory=DeploymentSection)
    attribution: DeploymentSection = field(default_factory=lambda: DeploymentSection(max_batch_size=8))

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError("serve.port must be in 1..65535")
