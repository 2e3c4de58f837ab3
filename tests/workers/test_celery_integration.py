"""The job pipeline on real Celery workers: Redis (the shared server's test database, or a
private ``redis-server`` that is restarted), worker subprocesses that are killed, and the
embedded default of ``supersede run``.

Every test asserts what the store kept: one benchmark job, its attempts, one verdict, the
verdict's text or the failure reason, and the result rows; the worker logs show how many times
the benchmark really ran.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.cache import ResultStore
from config.settings import load_settings
from core.constants import TASK_BENCHMARK, TASK_VERDICT
from supersede.demo.zoo import Zoo
from tests.support.cli import supersede
from tests.support.hub_server import HubServer
from tests.support.redis_server import RedisServer, free_port
from tests.workers.conftest import (
    CeleryWorker,
    Client,
    process_env,
    publish,
    queue_length,
    wait_for,
)
from watcher.events import ModelReleased
from workers.jobs import Job, JobStore
from workers.manual import rerun
from workers.pipeline import Pipeline

pytestmark = pytest.mark.slow

#: Upper bound of one release's whole run (benchmark, verdict, notification) on a slow CPU.
FLOW_S = 180.0

StartWorker = Callable[..., CeleryWorker]
MakeClient = Callable[[Path], Client]


def released(repo_id: str, sha: str) -> ModelReleased:
    return ModelReleased(
        source="hub", detected_at=datetime.now(UTC), repo_id=repo_id, revision=sha, params=1000
    )


def celery_call(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``celery -A workers call ARGS`` as an operator types it."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "call", *args],
        cwd=config.parent,
        env=process_env({"SUPERSEDE_CONFIG": str(config)}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def notified_verdict(jobs: JobStore, *workers: CeleryWorker) -> Callable[[], Job | None]:
    """A check for :func:`wait_for`: the only verdict job, once it is notified."""

    def check() -> Job | None:
        for worker in workers:
            if worker.process is not None and worker.process.poll() is not None:
                pytest.fail(f"worker {worker.name} died:\n{worker.tail()}")
        verdicts = [job for job in jobs.list(limit=10_000) if job.kind == "verdict"]
        if len(verdicts) == 1 and verdicts[0].state == "notified":
            return verdicts[0]
        return None

    return check


def only(jobs: list[Job], kind: str) -> Job:
    found = [job for job in jobs if job.kind == kind]
    assert len(found) == 1, f"{len(found)} {kind} jobs: {[j.to_dict() for j in found]}"
    return found[0]


# ---------------------------------------------------------------------------------- the flow


def test_a_release_flows_to_a_stored_verdict(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
) -> None:
    shas = publish(hub, zoo, **{"acme/Stronger-1B": zoo.stronger})
    config = write_config(hub, broker_url=redis_url)
    worker = start_worker(config, "default,gpu-24g")
    jobs = client(config)

    keys = jobs.pipeline.plan(released("acme/Stronger-1B", shas["acme/Stronger-1B"]))

    verdict = wait_for(notified_verdict(jobs.jobs, worker), FLOW_S, "the verdict")
    assert verdict.result is not None
    assert verdict.result["verdict"] == "SUPERSEDED", verdict.result
    assert verdict.finetune == "reviews"
    assert verdict.candidate == f"acme/Stronger-1B@{shas['acme/Stronger-1B']}"
    benchmark = only(jobs.all_jobs(), "benchmark")
    assert benchmark.key == keys[0] == verdict.parent
    assert (benchmark.state, benchmark.queue, benchmark.attempts) == ("done", "gpu-24g", 1)
    assert benchmark.result is not None
    pair = benchmark.result["pairs"]["reviews"]
    assert pair["candidate"]["score"] > pair["finetune"]["score"], pair
    assert worker.succeeded(TASK_BENCHMARK) == ["'done'"]
    assert worker.succeeded(TASK_VERDICT) == ["'done'"]


def test_the_readme_celery_call_runs_a_rebenchmark_on_the_queue_it_names(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
) -> None:
    shas = publish(hub, zoo, **{"acme/Weaker-1B": zoo.weaker, "acme/Stronger-1B": zoo.stronger})
    config = write_config(hub, broker_url=redis_url)
    small = start_worker(config, "default,gpu-24g")
    jobs = JobStore(load_settings(config).store.url)

    called = celery_call(
        config,
        "supersede.rebenchmark",
        "--kwargs",
        json.dumps({"candidate": "acme/Weaker-1B", "finetune": "reviews"}),
    )

    assert called.returncode == 0, called.stderr
    holds = wait_for(notified_verdict(jobs, small), FLOW_S, "the verdict")
    assert holds.result is not None and holds.result["verdict"] == "HOLDS", holds.result
    weaker = only(jobs.list(), "benchmark")
    assert weaker.candidate == f"acme/Weaker-1B@{shas['acme/Weaker-1B']}"
    assert (weaker.state, weaker.queue, weaker.attempts) == ("done", "gpu-24g", 1)

    called = celery_call(
        config,
        "supersede.rebenchmark",
        "--kwargs",
        json.dumps({"candidate": "acme/Stronger-1B", "finetune": "reviews"}),
        "--queue",
        "gpu-80g",
    )

    assert called.returncode == 0, called.stderr
    # No worker consumes gpu-80g yet: the request waits there and nothing is planned.
    time.sleep(2)
    assert queue_length(redis_url, "gpu-80g") == 1
    assert {job.key for job in jobs.list()} == {holds.key, weaker.key}

    large = start_worker(config, "gpu-80g")

    def stronger_verdict() -> Job | None:
        found = [j for j in jobs.list() if j.kind == "verdict" and j.key != holds.key]
        return found[0] if found and found[0].state == "notified" else None

    superseded = wait_for(stronger_verdict, FLOW_S, "the second verdict")
    assert superseded.result is not None and superseded.result["verdict"] == "SUPERSEDED"
    stronger = jobs.get(str(superseded.parent))
    assert stronger is not None
    assert stronger.candidate == f"acme/Stronger-1B@{shas['acme/Stronger-1B']}"
    assert (stronger.state, stronger.queue, stronger.attempts) == ("done", "gpu-80g", 1)
    assert len(jobs.list()) == 4  # two benchmarks, two verdicts
    # Each benchmark ran on a worker of its queue; the verdicts on the default queue.
    assert small.succeeded(TASK_BENCHMARK) == ["'done'"]
    assert large.succeeded(TASK_BENCHMARK) == ["'done'"]
    assert small.succeeded(TASK_VERDICT) == ["'done'", "'done'"]


def test_a_rerun_on_another_queue_records_that_queue(
    zoo: Zoo, hub: HubServer, write_config: Callable[..., Path]
) -> None:
    publish(hub, zoo, **{"acme/Weaker-1B": zoo.weaker})
    config = write_config(hub, broker_url=None)
    settings = load_settings(config)
    sent: list[tuple[str, str, str]] = []
    pipeline = Pipeline(settings, JobStore(settings.store.url), lambda *s: sent.append(s))
    (key,) = rerun(pipeline, "acme/Weaker-1B", finetune="reviews")
    assert sent[-1] == (TASK_BENCHMARK, key, "gpu-24g")

    assert rerun(pipeline, "acme/Weaker-1B", finetune="reviews", queue="gpu-80g") == [key]

    assert sent[-1] == (TASK_BENCHMARK, key, "gpu-80g")
    job = pipeline.jobs.get(key)
    assert job is not None and job.state == "queued"
    assert job.queue == "gpu-80g"


# ---------------------------------------------------------------------------------- duplicates


def test_the_same_release_enqueued_many_times_is_benchmarked_once(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
) -> None:
    shas = publish(hub, zoo, **{"acme/Stronger-1B": zoo.stronger})
    config = write_config(hub, broker_url=redis_url)
    # One process: the duplicates wait for the benchmark in hand, then find it finished. (Two
    # would race for the job too, but a duplicate that finds it running retries, and those
    # retries hit Celery's cap: see the retry-cap test below.)
    worker = start_worker(config, "default,gpu-24g")
    jobs = client(config)
    event = released("acme/Stronger-1B", shas["acme/Stronger-1B"])

    keys = {key for _ in range(5) for key in jobs.pipeline.plan(event)}
    (key,) = keys
    for _ in range(5):
        jobs.app.send_task(TASK_BENCHMARK, args=[key], queue="gpu-24g")
    messages = 5 + sum(1 for name, *_ in jobs.sent if name == TASK_BENCHMARK)

    wait_for(notified_verdict(jobs.jobs, worker), FLOW_S, "the verdict")

    # Every message ends in one logged outcome.
    def all_outcomes() -> list[str] | None:
        found = worker.succeeded(TASK_BENCHMARK)
        return found if len(found) >= messages else None

    outcomes = wait_for(all_outcomes, FLOW_S, f"{messages} benchmark outcomes")
    assert sorted(outcomes) == ["'done'"] + ["'finished'"] * (messages - 1), worker.tail()
    stored = jobs.all_jobs()
    benchmark = only(stored, "benchmark")
    assert (benchmark.state, benchmark.attempts) == ("done", 1)
    verdict = only(stored, "verdict")
    assert verdict.state == "notified"
    assert verdict.result is not None and verdict.result["verdict"] == "SUPERSEDED"
    assert worker.succeeded(TASK_VERDICT).count("'done'") == 1
    assert ResultStore(jobs.settings.store.url).count() == 2  # baseline + candidate


# ---------------------------------------------------------------------------------- kill -9


@pytest.mark.parametrize("victim", ["pool child", "whole worker"])
def test_a_worker_killed_mid_benchmark_leaves_one_benchmark_and_one_verdict(
    victim: str,
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
) -> None:
    shas = publish(hub, zoo, **{"acme/Stronger-1B": zoo.stronger})
    config = write_config(hub, broker_url=redis_url, workers={"lease": 4, "queued_timeout": 5})
    # The candidate's weights hang (its licence and size were read before the baseline was
    # scored): the benchmark holds its lease, the fine-tune's baseline is stored and the
    # candidate is not, when the worker is killed.
    hub.hang_next(
        "/acme/Stronger-1B/resolve/" + shas["acme/Stronger-1B"] + "/model.safetensors", 120
    )
    first = start_worker(config, "default,gpu-24g")
    jobs = client(config)
    results = ResultStore(jobs.settings.store.url)
    (key,) = jobs.pipeline.plan(released("acme/Stronger-1B", shas["acme/Stronger-1B"]))

    def mid_benchmark() -> bool:
        asked = any("/acme/Stronger-1B" in path for _, path in list(hub.requests))
        return asked and results.count() == 1 and jobs.job(key).state == "running"

    wait_for(mid_benchmark, FLOW_S, "the benchmark to hang on the candidate")
    (child,) = first.pool_children()
    owner = jobs.job(key).lease_owner
    assert owner is not None and f"pid {child.pid} " in owner
    workers: tuple[CeleryWorker, ...]
    if victim == "pool child":
        child.kill()
        # Acked late and rejected on worker loss: the same worker gets the message again.
        workers = (first,)
    else:
        first.kill()
        # The message stays unacked in Redis until the visibility timeout (over an hour):
        # the reconciler resends the job once its lease has expired.
        workers = (first, start_worker(config, "default,gpu-24g"))

    resent = 0
    deadline = time.monotonic() + FLOW_S
    while (verdict := notified_verdict(jobs.jobs, workers[-1])()) is None:
        assert time.monotonic() < deadline, "timed out waiting for the verdict"
        if victim == "whole worker":
            resent += jobs.pipeline.reconcile()["resent"]
        time.sleep(2)

    assert verdict.result is not None and verdict.result["verdict"] == "SUPERSEDED"
    stored = jobs.all_jobs()
    benchmark = only(stored, "benchmark")
    assert (benchmark.state, benchmark.attempts) == ("done", 2)
    assert benchmark.lease_owner is None
    assert only(stored, "verdict").key == verdict.key
    assert results.count() == 2  # the baseline once, the candidate once
    done = [out for worker in workers for out in worker.succeeded(TASK_BENCHMARK)]
    assert done.count("'done'") == 1, done
    verdicts = [out for worker in workers for out in worker.succeeded(TASK_VERDICT)]
    assert verdicts.count("'done'") == 1, verdicts
    if victim == "pool child":
        assert f"pid:{child.pid} exited with 'signal 9 (SIGKILL)'" in first.output()
    else:
        assert resent >= 1


# ---------------------------------------------------------------------------------- Redis


def test_a_redis_restart_that_loses_the_queue_is_recovered_by_reconcile(
    zoo: Zoo,
    hub: HubServer,
    redis_server: RedisServer,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
) -> None:
    shas = publish(hub, zoo, **{"acme/Stronger-1B": zoo.stronger})
    config = write_config(hub, broker_url=redis_server.url, workers={"queued_timeout": 2})
    jobs = client(config)
    (key,) = jobs.pipeline.plan(released("acme/Stronger-1B", shas["acme/Stronger-1B"]))
    assert queue_length(redis_server.url, "gpu-24g") == 1

    redis_server.restart()

    assert queue_length(redis_server.url, "gpu-24g") == 0
    worker = start_worker(config, "default,gpu-24g")
    time.sleep(3)
    job = jobs.job(key)
    assert (job.state, job.attempts) == ("queued", 0)
    assert "Task supersede.benchmark" not in worker.output()

    counts = jobs.pipeline.reconcile()

    assert counts["resent"] == 1
    deadline = time.monotonic() + FLOW_S
    while (verdict := notified_verdict(jobs.jobs, worker)()) is None:
        assert time.monotonic() < deadline, "timed out waiting for the verdict"
        time.sleep(2)
        jobs.pipeline.reconcile()
    assert verdict.result is not None and verdict.result["verdict"] == "SUPERSEDED"
    stored = jobs.all_jobs()
    benchmark = only(stored, "benchmark")
    assert (benchmark.state, benchmark.attempts) == ("done", 1)
    assert only(stored, "verdict").key == verdict.key
    assert worker.succeeded(TASK_BENCHMARK).count("'done'") == 1
    assert worker.succeeded(TASK_VERDICT).count("'done'") == 1


# ---------------------------------------------------------------------------------- failures


def test_a_job_that_always_fails_stops_at_the_attempt_cap_with_its_reason(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
) -> None:
    shas = publish(hub, zoo, **{"acme/Broken-1B": zoo.stronger})
    hub.fail_next("/acme/Broken-1B", 503, count=1000)
    config = write_config(
        hub, broker_url=redis_url, workers={"max_attempts": 3, "retry_backoff": 0.5}
    )
    worker = start_worker(config, "default,gpu-24g")
    jobs = client(config)

    (key,) = jobs.pipeline.plan(released("acme/Broken-1B", shas["acme/Broken-1B"]))

    verdict = wait_for(notified_verdict(jobs.jobs, worker), FLOW_S, "the failure notice")
    benchmark = jobs.job(key)
    assert (benchmark.state, benchmark.attempts) == ("failed", 3)
    assert benchmark.result is None
    assert benchmark.reason is not None
    assert "acme/Broken-1B" in benchmark.reason
    assert "Hub answered 503" in benchmark.reason
    assert verdict.result is None
    assert verdict.reason == f"benchmark failed: {benchmark.reason}"
    # Two tries retried after the backoff, the third one the last.
    retried = re.findall(
        r"supersede\.benchmark\[[0-9a-f-]+\] retry: Retry in 0\.5s", worker.output()
    )
    assert len(retried) == 2, worker.tail()
    assert worker.succeeded(TASK_BENCHMARK) == ["'failed'"]


def test_retries_past_celerys_default_cap_still_reach_the_attempt_cap(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
) -> None:
    shas = publish(hub, zoo, **{"acme/Stronger-1B": zoo.stronger})
    hub.fail_next("/acme/base", 503, count=1000)  # every try fails at once, on the fine-tune
    config = write_config(
        hub, broker_url=redis_url, workers={"max_attempts": 5, "retry_backoff": 0.2}
    )
    worker = start_worker(config, "default,gpu-24g")
    jobs = client(config)

    (key,) = jobs.pipeline.plan(released("acme/Stronger-1B", shas["acme/Stronger-1B"]))

    def settled() -> Job | None:
        job = jobs.job(key)
        gave_up = "MaxRetriesExceededError" in worker.output()
        return job if job.state in ("failed", "notified") or gave_up else None

    benchmark = wait_for(settled, FLOW_S, "the benchmark to fail or its task to give up")
    assert (benchmark.state, benchmark.attempts) == ("failed", 5)
    assert benchmark.reason is not None and "acme/base" in benchmark.reason
    assert "MaxRetriesExceededError" not in worker.output()


# ---------------------------------------------------------------------------------- supersede run


def test_supersede_run_embedded_processes_a_release_end_to_end(
    zoo: Zoo, hub: HubServer, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    shas = publish(hub, zoo, **{"acme/Stronger-1B": zoo.stronger})
    config = write_config(
        hub,
        broker_url=None,
        watch={"hub": {"authors": ["acme"]}, "jitter_s": 0},
        observability={"metrics_port": 0},
    )
    log = tmp_path / "run.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "supersede.cli", "run", "-c", str(config)],
            cwd=tmp_path,
            env=process_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            store = tmp_path / "store.db"

            def verdict() -> Job | None:
                if daemon.poll() is not None:
                    pytest.fail(
                        f"supersede run exited with {daemon.returncode}:\n{log.read_text()}"
                    )
                if not store.exists():
                    return None
                found = [
                    job for job in JobStore(f"sqlite:///{store}").list() if job.kind == "verdict"
                ]
                return found[0] if found and found[0].state == "notified" else None

            notified = wait_for(verdict, FLOW_S, "the verdict", every_s=0.5)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
    output_text = log.read_text(errors="replace")
    assert code == 0, output_text
    assert notified.result is not None and notified.result["verdict"] == "SUPERSEDED"
    stored = JobStore(f"sqlite:///{tmp_path / 'store.db'}").list()
    benchmark = only(stored, "benchmark")
    assert benchmark.candidate == f"acme/Stronger-1B@{shas['acme/Stronger-1B']}"
    assert (benchmark.state, benchmark.attempts) == ("done", 1)
    assert only(stored, "verdict").key == notified.key
    assert "Traceback" not in output_text


def test_supersede_run_exits_75_when_redis_is_down(
    hub: HubServer, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    config = write_config(hub, broker_url=url)

    started = time.monotonic()
    result = supersede("run", "-c", str(config), cwd=tmp_path, env=process_env(), timeout=120)

    assert result.returncode == 75, result.stderr
    assert time.monotonic() - started < 60  # a few quick retries, not a hang
    message = " ".join(result.stderr.split())
    assert url in message
    assert "start it" in message
    assert "Traceback" not in result.stderr + result.stdout
    assert (
        not (tmp_path / "store.db").exists()
        or JobStore(f"sqlite:///{tmp_path / 'store.db'}").list() == []
    )
