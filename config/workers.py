"""Settings of the job pipeline: the broker, the GPU queues, time limits and retry policy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.watch import Duration


class WorkersSettings(BaseModel):
    """Celery on Redis (or, with no broker configured, an embedded queue in a local database)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker_url: str | None = Field(
        None,
        description="e.g. redis://127.0.0.1:6379/0. None = the embedded default: one process, a "
        "durable local queue (SQLite) beside the store.",
    )
    result_backend: str | None = Field(
        None, description="Celery result backend; None = the broker's Redis (or none embedded)."
    )
    gpu_queues: dict[str, float] = Field(
        {"gpu-24g": 24.0, "gpu-80g": 80.0},
        description="GPU queue name -> GiB of GPU memory of the workers consuming it.",
    )
    memory_overhead: float = Field(
        1.2, ge=1.0, description="Weights x this = the memory a benchmark needs (activations)."
    )
    soft_time_limit: Duration = Field(3600.0, gt=0, description="A benchmark is asked to stop.")
    time_limit: Duration = Field(4200.0, gt=0, description="A benchmark is killed.")
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
