"""The re-tune job: between a release's benchmark job and one fine-tune's verdict job.

It runs on the benchmark's GPU queue. It reads the pair the benchmark recorded for its fine-tune,
judges it as the verdict job would (store only), and applies ``retune.when``
(:func:`benchmarks.contender.retune_reason_not_to`). When the re-tune is due it trains the
fine-tune's adapter recipe on the release (or reuses the adapter trained before with the same
inputs) and scores it on the same hardware as the two other sides. Its result is the pair again,
with the re-tuned side and the record of the re-tune, in the benchmark job's format: the verdict
job reads it as it reads a benchmark job's.

A re-tune that cannot be built (no training data, leakage, over budget, an architecture without
the recipe's modules, a failed run) is recorded with its reason and the verdict stays two-way; a
temporary failure is retried like a benchmark's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from benchmarks.compare import MissingResult, judge_stored
from benchmarks.limits import Limits, confined
from benchmarks.sides import BenchmarkScores, RetuneRecord
from config.settings import finetune, retune_for
from core.errors import FatalError, ModelRefused, RetryableError

if TYPE_CHECKING:
    from workers.pipeline import Pipeline, Step

log = logging.getLogger(__name__)


def run_retune(pipeline: Pipeline, key: str, owner: str) -> Step:
    """Run re-tune job ``key`` (see the module docstring)."""
    from benchmarks.contender import retune_reason_not_to, score_retuned
    from workers.pipeline import Step, _unreadable, api_candidate, candidate_ref, recorded_pair

    job, step = pipeline._claim(key, owner)
    if step is not None:
        return step
    assert job is not None and job.finetune is not None and job.parent is not None
    try:
        event = job.release()
    except ValueError as exc:
        return pipeline._failed_try(key, owner, ModelRefused(_unreadable(exc)))
    settings = pipeline.settings
    try:
        pair = recorded_pair(pipeline.jobs.get(job.parent), job.finetune)
        ft = finetune(settings, job.finetune)
        api = api_candidate(settings, event)
        plain = judge_stored(settings, ft, pair, pipeline.results, api=api)
        wanted = retune_for(settings, ft)
        if job.payload.get("always") and wanted.when != "never":
            wanted = wanted.model_copy(update={"when": "always"})
        why = (
            "an API candidate has no weights to train"
            if api is not None
            else retune_reason_not_to(ft, wanted, plain)
        )
        if why is not None:
            side, record = None, RetuneRecord(status="not_run", reason=why)
        else:
            limits = Limits(settings.workers.soft_time_limit, settings.workers.benchmark_memory)
            with pipeline._leased(key, owner), confined(limits):
                retuned, record = score_retuned(
                    settings, ft, candidate_ref(event), hardware=job.queue, store=pipeline.results
                )
            side = retuned.side if retuned is not None else None
    except MissingResult as exc:
        return pipeline._benchmark_again(job, owner, str(exc))
    except (FatalError, RetryableError) as exc:
        return pipeline._failed_try(key, owner, exc)
    except Exception as exc:
        return pipeline.crashed(key, owner, exc, "re-tune")
    log.info("%s re-tune on %s: %s%s", ft.name, event.name, record.status,
             f" ({record.reason})" if record.reason else "")  # fmt: skip
    scores = BenchmarkScores(
        pairs={ft.name: pair.model_copy(update={"retuned": side, "retune": record})}
    )
    if not pipeline.jobs.finish(key, owner, scores):
        return Step("finished", reason="lease lost: another worker recorded it")
    pipeline.release_children(key)
    return Step("done")
