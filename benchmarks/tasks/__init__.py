"""Task files in lm-evaluation-harness's YAML format (the local-data subset).

A task file that runs under ``lm_eval --include_path DIR --tasks NAME`` loads here unchanged and
builds the same prompts, so it gets the same score. Two documented differences:

* a relative ``data_files`` path resolves against the task file's folder (lm-eval resolves it
  against the working directory), so a task folder can be moved or shipped as a whole;
* few-shot examples are drawn as lm-eval 0.4 draws them (``random.Random(1234)``, documents in
  order), so the same shots appear; lm-eval may change its sampler, so few-shot scores are
  outside the equal-score promise.

Four modules: ``schema`` (the keys a task file may use and their checks), ``data``
(its documents from local files), ``render`` (prompts, as lm-eval renders them) and ``task`` (the
loaded :class:`Task` and :func:`load_task`, which ties the three together).
"""

from __future__ import annotations

from benchmarks.tasks.render import FEWSHOT_SEED, Request
from benchmarks.tasks.schema import (
    DEFAULT_MAX_GEN_TOKS,
    METRICS_BY_TYPE,
    SUPPORTED_KEYS,
    UNSUPPORTED_KEYS,
    MetricSpec,
    OutputType,
)
from benchmarks.tasks.task import Task, load_task

__all__ = [
    "DEFAULT_MAX_GEN_TOKS",
    "FEWSHOT_SEED",
    "METRICS_BY_TYPE",
    "SUPPORTED_KEYS",
    "UNSUPPORTED_KEYS",
    "MetricSpec",
    "OutputType",
    "Request",
    "Task",
    "load_task",
]
