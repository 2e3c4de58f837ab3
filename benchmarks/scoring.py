"""A run's records and its scores: per-example metric values from the engine's outputs, and
their aggregation into a :class:`RunResult`.

Used by the local runner and by hosted (API) candidates alike, so both score the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.metrics import mean_and_stderr, text_metric
from benchmarks.tasks.render import Request
from benchmarks.tasks.task import Task


@dataclass(frozen=True)
class RunStats:
    """How a scoring run went: the scoring phase only (model loading excluded)."""

    scoring_s: float
    examples_per_s: float
    tokens_per_s: float
    p50_batch_s: float
    p95_batch_s: float
    peak_memory_mb: float
    batches: int
    tokens: int


@dataclass(frozen=True)
class RunResult:
    """A task's score plus every example's outcome (paired statistics need them)."""

    task: str
    metric: str
    score: float
    stderr: float
    n: int
    #: Per-example value of the primary metric, in document order.
    outcomes: tuple[float, ...]
    #: Per-example prediction: the chosen index (multiple_choice) or the generated text.
    predictions: tuple[Any, ...]
    #: Every metric of the task: name -> (score, stderr).
    metrics: dict[str, tuple[float, float]]
    stats: RunStats
    extra: dict[str, Any] = field(default_factory=dict)


def build_result(
    task: Task,
    per_metric: dict[str, list[float]],
    predictions: Sequence[Any],
    stats: RunStats,
    extra: dict[str, Any] | None = None,
) -> RunResult:
    """Aggregate per-example metric values into a result (the first metric is the primary)."""
    metrics = {name: mean_and_stderr(values) for name, values in per_metric.items()}
    primary = task.metric.name
    score, stderr = metrics[primary]
    return RunResult(
        task=task.name,
        metric=primary,
        score=score,
        stderr=stderr,
        n=len(predictions),
        outcomes=tuple(per_metric[primary]),
        predictions=tuple(predictions),
        metrics=metrics,
        stats=stats,
        extra=dict(extra or {}),
    )


def score_choices(
    task: Task, requests: Sequence[Request], lls: Sequence[Sequence[float]]
) -> tuple[dict[str, list[float]], list[int]]:
    """Per-metric values (acc, acc_norm) and the chosen index for every multiple-choice request."""
    per_metric: dict[str, list[float]] = {m.name: [] for m in task.metrics}
    predictions = []
    for request, scores in zip(requests, lls, strict=True):
        pred = _argmax(scores)  # first maximum wins on ties, like numpy.argmax in lm-eval
        predictions.append(pred)
        for spec in task.metrics:
            if spec.name == "acc":
                value = float(pred == request.gold)
            else:  # acc_norm: log-likelihood per character of the choice, as lm-eval does
                normed = [s / len(c) for s, c in zip(scores, request.choices, strict=True)]
                value = float(_argmax(normed) == request.gold)
            per_metric[spec.name].append(value)
    return per_metric, predictions


def score_texts(
    task: Task, requests: Sequence[Request], texts: Sequence[str]
) -> tuple[dict[str, list[float]], list[str]]:
    """Per-metric values for every generated text, against the request's reference(s)."""
    per_metric: dict[str, list[float]] = {m.name: [] for m in task.metrics}
    for request, text in zip(requests, texts, strict=True):
        refs = list(request.gold) if isinstance(request.gold, tuple) else [str(request.gold)]
        for spec in task.metrics:
            per_metric[spec.name].append(text_metric(spec.name)(text, refs, spec.options))
    return per_metric, list(texts)


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, value in enumerate(values):
        if value > values[best]:
            best = i
    return best
