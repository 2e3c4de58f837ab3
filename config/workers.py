"""Settings of the job pipeline: the broker, the GPU queues, time limits and retry policy."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.urls import SecretUrl
from config.watch import Duration


class GpuQueue(BaseModel):
    """The GPUs behind one queue: their memory and what an hour of one costs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_gb: float = Field(gt=0, description="GiB of GPU memory of the workers consuming it.")
    usd_per_hour: float | None = Field(
        None,
        ge=0,
        description="Price of one GPU hour on this queue; None = serving.gpu_hour_usd. The "
        "serving cost of a model benchmarked here is its GPU-seconds per request at this price.",
    )


class WorkersSettings(BaseModel):
    """Celery on Redis (or, with no broker configured, an embedded queue in a local database)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker_url: SecretUrl | None = Field(
        None,
        description="e.g. redis://:PASSWORD@127.0.0.1:6379/0. None = the embedded default: one "
        "process, a durable local queue (SQLite) beside the store. A password is shown as ***.",
    )
    result_backend: SecretUrl | None = Field(
        None, description="Celery result backend; None = the broker's Redis (or none embedded)."
    )
    gpu_queues: dict[str, GpuQueue] = Field(
        {"gpu-24g": GpuQueue(memory_gb=24.0), "gpu-80g": GpuQueue(memory_gb=80.0)},
        description="GPU queue name -> {memory_gb, usd_per_hour} of the workers consuming it "
        "(a bare number is read as memory_gb, the earlier form).",
    )
    memory_overhead: float = Field(
        1.2, ge=1.0, description="Weights x this = the memory a benchmark needs (activations)."
    )
    soft_time_limit: Duration = Field(
        3600.0,
        gt=0,
        description="One model's run in a benchmark (loading and scoring it, in a child process) "
        "is killed after this long, in every pool (the embedded one too); its job fails.",
    )
    time_limit: Duration = Field(4200.0, gt=0, description="A benchmark is killed.")
    benchmark_memory: float = Field(
        32.0,
        gt=0,
        description="GiB of memory one model's run in a benchmark may use; past it the run is "
        "stopped and its job fails. On CPU it caps the child process's address space "
        "(RLIMIT_AS); on CUDA, where the runtime reserves far more address space than it uses, "
        "the child's anonymous resident memory is checked every half second instead.",
    )
    max_prompt_chars: int = Field(
        1_000_000,
        ge=1000,
        description="Longest prompt, in characters, a model's chat template may render (also "
        "at most 32 characters per token of the model's context); a longer one is refused.",
    )
    max_attempts: int = Field(3, ge=1, le=20, description="Tries per job before it fails.")
    lease: Duration = Field(
        60.0, ge=2, description="A running job's lease, renewed while it runs; expired = dead."
    )
    queued_timeout: Duration = Field(
        900.0, ge=1, description="A job queued this long without starting is enqueued again."
    )
    reconcile_every: Duration = Field(60.0, ge=1, description="How often stuck jobs are sought.")
    retry_backoff: Duration = Field(30.0, ge=0, description="Wait before retrying a failed try.")
    notify_retry: Duration = Field(
        60.0,
        ge=1,
        description="A finished job not yet told to people is notified again after this; after "
        "a failed notification the wait doubles each time, up to notify_retry_max.",
    )
    notify_retry_max: Duration = Field(
        3600.0, ge=1, description="The longest wait between two failed notifications."
    )

    @field_validator("gpu_queues", mode="before")
    @classmethod
    def _bare_memory(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                name: {"memory_gb": queue} if isinstance(queue, int | float | str) else queue
                for name, queue in value.items()
            }
        return value

    @model_validator(mode="after")
    def _limits(self) -> WorkersSettings:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError("soft_time_limit must be below time_limit")
        if not self.gpu_queues:
            raise ValueError("gpu_queues needs at least one queue")
        return self

    @property
    def visibility_timeout(self) -> int:
        """Seconds Redis waits before redelivering an unacknowledged message: above the hard
        limit, or a long benchmark would be delivered (and run) twice."""
        return int(self.time_limit + 600)
