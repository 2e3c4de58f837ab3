"""The two sides of a comparison as the benchmark job records them and the verdict job reads them.

The benchmark job scores the fine-tune and the candidate where it runs (one process: one device,
one dtype, one queue) and records, per fine-tune, each side's result key in the store and how it
was scored. The verdict job reads both results back by key: it never resolves, downloads or
loads a model, and a Hub outage cannot fail it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from benchmarks.deploy import Deployability
from benchmarks.judge.records import PairwiseJudgement


class ScoredSide(BaseModel):
    """One side's result, by reference: where it is stored and how it was obtained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="The result's key in the result store.")
    kind: Literal["self-hosted", "api"]
    model: str = Field(description="The model as shown: the Hub id (+ adapter), or the API model.")
    model_revision: str | None = None
    adapter_revision: str | None = None
    device: str | None = Field(None, description="Where it was scored (cuda:0, cpu); None: API.")
    dtype: str | None = Field(None, description="The weights' dtype when scored; None: API.")
    hardware: str | None = Field(
        None, description="The queue (hardware class) it was scored on; `local` from the CLI."
    )
    endpoint: str | None = Field(None, description="The API endpoint (API candidates).")
    cached: bool = Field(False, description="Answered from the store rather than run.")
    score: float
    stderr: float

    @property
    def scored_on(self) -> str:
        """``gpu-24g: cuda:0, bfloat16``, or ``API`` (for messages and the verdict JSON)."""
        if self.kind == "api":
            return f"API ({self.endpoint})" if self.endpoint else "API"
        where = f"{self.device}, {self.dtype}"
        return f"{self.hardware}: {where}" if self.hardware else where


class RetuneRecord(BaseModel):
    """The re-tune contender of a pair: the deployed adapter's recipe trained on the candidate
    (:mod:`benchmarks.retune`), or why it was not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["trained", "cached", "not_run", "skipped", "refused", "failed"]
    #: Why it was not trained (``not_run``, ``skipped``, ``refused``, ``failed``).
    reason: str | None = None
    #: The adapter's cache key and folder (trained or cached).
    key: str | None = None
    adapter_dir: str | None = None
    steps: int = 0
    #: Seconds training took when it ran (a cached adapter keeps the figure of its training).
    wall_s: float = 0.0
    tokens: int = 0
    estimate_gpu_hours: float | None = None
    #: Training loss, at most 50 points evenly spread over the steps.
    losses: tuple[float, ...] = ()
    #: What one hour of the hardware it trained on costs (the training cost is wall_s x this).
    usd_per_hour: float = 0.0

    @property
    def training_cost_usd(self) -> float:
        return self.wall_s / 3600 * self.usd_per_hour


class PairScores(BaseModel):
    """A fine-tune and the candidate, scored on the fine-tune's task in one benchmark job; or,
    when the candidate's deploy checks blocked it, neither side (``candidate`` None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    metric: str
    n: int
    finetune: ScoredSide | None
    candidate: ScoredSide | None
    #: The candidate as named in the release (shown when it was not scored).
    candidate_name: str | None = None
    #: The deploy checks made before the benchmark (None: recorded by an earlier version).
    deploy: Deployability | None = None
    #: The re-tuned contender, scored like the fine-tune (None: not trained), and its record
    #: (None: no re-tune job ran for this pair).
    retuned: ScoredSide | None = None
    retune: RetuneRecord | None = None
    #: A judged task's pairwise judgement of the two sides' answers (None: not judged).
    judge: PairwiseJudgement | None = None


class BenchmarkScores(BaseModel):
    """The result of a benchmark job: one pair per fine-tune, by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: dict[str, PairScores]
