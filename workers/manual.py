"""Manual re-runs (``supersede rerun``, ``celery -A workers call supersede.rebenchmark``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.verdict import VerdictReport
from config.settings import Settings
from config.settings import finetune as configured_finetune
from core.clock import now
from core.errors import ConfigError
from watcher.events import ApiRelease, ModelReleased
from workers.pipeline import Pipeline

MANUAL = "manual"


def candidate_event(pipeline: Pipeline, candidate: str) -> ModelReleased:
    """The release a hand-named candidate stands for: an ``api_candidates`` name (the release
    names that entry; the worker reads its endpoint from its own configuration), a local model
    folder, or a Hub id[@revision] pinned to its commit now."""
    settings = pipeline.settings
    for api in settings.api_candidates:
        if api.name == candidate:
            release = ApiRelease(model=api.model, rule=api.name)
            return ModelReleased(source=MANUAL, detected_at=now(), api=release)
    if Path(candidate).expanduser().is_dir():
        return ModelReleased(source=MANUAL, detected_at=now(), repo_id=candidate)
    from watcher.discovery import release_of
    from watcher.sources.hub import HubClient

    repo_id, _, revision = candidate.partition("@")
    facts = HubClient(settings).facts(repo_id, revision or None)
    return release_of(facts, MANUAL, link=f"{settings.hub.endpoint.rstrip('/')}/{facts.repo_id}")


def rerun(
    pipeline: Pipeline,
    candidate: str,
    *,
    finetune: str | None = None,
    queue: str | None = None,
    retune: bool = False,
    requested_by: str | None = None,
    unless_busy: bool = False,
) -> list[str]:
    """Reset (or create) the jobs of ``candidate`` against ``finetune`` (default: all) and send
    them; with ``retune``, the re-tune contender is trained whatever the plain verdict. Returns
    the benchmark job keys (none with ``unless_busy`` when that run is still going; see
    :meth:`Pipeline.plan`)."""
    settings = pipeline.settings
    if finetune is not None:
        configured_finetune(settings, finetune)  # a ConfigError naming the known ones
    known = {*settings.workers.gpu_queues, "default"}
    if queue is not None and queue not in known:
        raise ConfigError(f"unknown queue {queue!r}; configured: {', '.join(sorted(known))}")
    event = candidate_event(pipeline, candidate)
    chosen = (finetune,) if finetune else None
    return pipeline.plan(event, finetunes=chosen, queue=queue, rerun=True, retune=retune,
                         requested_by=requested_by, unless_busy=unless_busy)  # fmt: skip


def stored_verdict(settings: Settings, finetune: str, candidate: str) -> VerdictReport:
    """The verdict on ``candidate`` (a Hub id[@revision], folder or API model name) against
    ``finetune`` from the results the newest finished benchmark job recorded, judged with the
    current verdict settings: no Hub request, no model (``supersede compare --stored``)."""
    from benchmarks.cache import ResultStore
    from benchmarks.compare import MissingResult, api_candidate, judge_stored
    from workers.jobs import JobStore
    from workers.pipeline import api_candidate as event_api
    from workers.pipeline import recorded_pair

    ft = configured_finetune(settings, finetune)
    for job in JobStore(settings.store.url).benchmarks(candidate):
        try:
            pair = recorded_pair(job, finetune)
            event = job.release()
        except (MissingResult, ValueError):  # not finished, or an event this version refuses
            continue
        api = api_candidate(settings, candidate) or event_api(settings, event)
        return judge_stored(settings, ft, pair, ResultStore(settings.store.url), api=api)
    raise ConfigError(
        f"no finished benchmark of {candidate} against {finetune} in the store; run "
        f"`supersede rerun {candidate} --finetune {finetune}`, or compare without --stored"
    )
