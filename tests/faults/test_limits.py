"""What a release can make a worker do: its chat template loops forever, renders hundreds of
megabytes, or its run needs more memory than allowed. Each model runs in a child process under a
wall-clock and a memory limit, in every pool (the embedded default's solo pool included); the job
fails with the reason, the lease is released, and the worker takes the next job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from config.settings import FineTune, Settings
from core.clock import now
from core.constants import DEFAULT_QUEUE
from supersede.demo.zoo import Zoo
from tests.conftest import SHIPPED_TASK, copy_model
from tests.support.settings import build_settings
from tests.workers.conftest import wait_for
from watcher.events import ModelReleased
from workers.jobs import Job, JobStore
from workers.pipeline import Pipeline

GIB = 2**30
#: Three nested loops of the sandbox's largest range: 10^15 iterations, never done.
ENDLESS = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
    "{% endfor %}{% endfor %}{% endfor %}"
)


def with_template(zoo: Zoo, folder: Path, template: str) -> Path:
    """The zoo's stronger model, its chat template replaced by ``template``."""
    return copy_model(zoo.stronger, folder, add={"chat_template.jinja": template.encode()})


def release(folder: Path) -> ModelReleased:
    return ModelReleased(source="hub", detected_at=now(), repo_id=str(folder), params=1000)


def settings_for(tmp_path: Path, zoo: Zoo, **workers: Any) -> Settings:
    finetune = FineTune(
        name="reviews", task=str(SHIPPED_TASK), base=str(zoo.base), adapter=str(zoo.adapter)
    )
    return build_settings(tmp_path, finetunes=(finetune,), workers=workers)


def run_once(settings: Settings, folder: Path) -> Job:
    """Plan a release of ``folder`` and run its benchmark job here, as a worker does."""
    pipeline = Pipeline(settings, JobStore(settings.store.url), lambda *sent: None)
    (key,) = pipeline.plan(release(folder))
    pipeline.run_benchmark(key, "test-worker")
    job = pipeline.jobs.get(key)
    assert job is not None
    return job


@pytest.fixture
def embedded(tmp_path: Path, zoo: Zoo) -> Iterator[Pipeline]:
    """The embedded default's worker (Celery's solo pool, in a thread of this process) with a
    6-second limit per model run, and the pipeline that sends to it."""
    from supersede.wiring import connect
    from workers.embedded import EmbeddedWorker

    settings = settings_for(tmp_path, zoo, soft_time_limit=6, time_limit=3600)
    app, pipeline = connect(settings)
    worker = EmbeddedWorker(app, [DEFAULT_QUEUE, *sorted(settings.workers.gpu_queues)])
    worker.start()
    try:
        yield pipeline
    finally:
        assert worker.stop(60), "the embedded worker did not stop"
        app.close()


def test_an_endless_chat_template_is_killed_and_the_worker_takes_the_next_job(
    embedded: Pipeline, zoo: Zoo, tmp_path: Path
) -> None:
    looping = with_template(zoo, tmp_path / "looping", ENDLESS)
    (first,) = embedded.plan(release(looping))

    def ended(key: str) -> Job | None:
        job = embedded.jobs.get(key)
        return job if job is not None and job.state in ("done", "failed", "skipped") else None

    job = wait_for(lambda: ended(first), 120, "the looping benchmark to end")
    assert (job.state, job.attempts) == ("failed", 1), job.to_dict()
    assert job.reason == f"{looping}: exceeded the 6-second limit (workers.soft_time_limit)"
    assert (job.lease_owner, job.lease_until) == (None, None)  # the lease is released
    (second,) = embedded.plan(release(zoo.stronger))
    assert wait_for(lambda: ended(second), 120, "the next benchmark").state == "done"


def test_a_chat_template_rendering_300_mb_is_refused(zoo: Zoo, tmp_path: Path) -> None:
    huge = with_template(zoo, tmp_path / "huge", "{{ 'A' * 300000000 }}")

    job = run_once(settings_for(tmp_path, zoo), huge)

    assert job.state == "skipped", job.to_dict()
    assert job.reason is not None
    assert (
        f"{huge}: refused: its chat template rendered a prompt of 300,000,000 characters, over "
        "the limit of"
    ) in job.reason


def test_a_run_past_the_memory_limit_fails_with_the_reason(zoo: Zoo, tmp_path: Path) -> None:
    # The address-space cap: what this process maps now (a fork of it, with torch loaded, maps
    # no more) plus room to load and score the tiny model; the template alone renders past it.
    limit_gib = round(psutil.Process().memory_info().vms / GIB + 1.5, 1)
    hog = with_template(zoo, tmp_path / "hog", f"{{{{ 'A' * {int(limit_gib * GIB)} }}}}")
    settings = settings_for(tmp_path, zoo, benchmark_memory=limit_gib)

    job = run_once(settings, hog)

    assert (job.state, job.attempts) == ("failed", 1), job.to_dict()
    assert job.reason == (
        f"{hog}: ran out of its {limit_gib:g} GiB memory limit (workers.benchmark_memory)"
    )
    assert (job.lease_owner, job.lease_until) == (None, None)
