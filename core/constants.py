"""Constants that are not settings: names, versions and file patterns shared by all layers."""

from __future__ import annotations

from enum import StrEnum

#: Bumped whenever a change to the engine can change a score; part of every result-cache key.
ENGINE_VERSION = "1"

#: Environment variable naming the YAML config file when ``--config`` is not given.
CONFIG_ENV = "SUPERSEDE_CONFIG"
#: Prefix of environment overrides, e.g. ``SUPERSEDE_RUNTIME__BATCH_SIZE=16``.
ENV_PREFIX = "SUPERSEDE_"
ENV_NESTED_DELIMITER = "__"

#: Weight files that are safe to load: tensors only, no code.
SAFE_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
#: Pickle-based weight files: loading one can run arbitrary code, so they are never downloaded.
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".msgpack", ".h5")
#: Non-weight files a model or adapter needs (config, tokenizer, generation settings).
MODEL_FILE_PATTERNS = (
    "*.json",
    "*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
)
#: Extra patterns downloaded only for repos allow-listed for remote code.
REMOTE_CODE_PATTERNS = ("*.py",)

#: Celery task names: stable, documented API (``celery -A workers call supersede.rebenchmark``).
TASK_RELEASE = "supersede.release"
TASK_BENCHMARK = "supersede.benchmark"
TASK_VERDICT = "supersede.verdict"
TASK_RETUNE_JOB = "supersede.retune_job"
TASK_RETUNE = "supersede.retune"
TASK_NOTIFY = "supersede.notify"
TASK_REBENCHMARK = "supersede.rebenchmark"
TASK_RECONCILE = "supersede.reconcile"
#: The queue of everything that is not a GPU benchmark (verdicts, notifications, fan-out).
DEFAULT_QUEUE = "default"


class JobState(StrEnum):
    """Where a job is in its life (``workers/jobs.py`` draws the transitions).

    The values are what the store and ``supersede status --json`` hold; a member compares equal
    to its value, so rows written before these were an enum read back unchanged.
    """

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOTIFIED = "notified"


class JobKind(StrEnum):
    """What a job does: score a release, train and score the re-tune contender of one fine-tune,
    judge one fine-tune against the release, or tell of a post."""

    BENCHMARK = "benchmark"
    RETUNE = "retune"
    VERDICT = "verdict"
    ANNOUNCEMENT = "announcement"
