"""Job states, leases and the attempt cap, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import temporary_database
from workers.jobs import JobStore, job_key


@pytest.fixture(params=["sqlite", "postgresql"])
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        yield JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    else:
        with temporary_database() as url:
            store = JobStore(url)
            yield store
            store.engine.dispose()


def add(jobs: JobStore, key: str = "k1", **fields: object) -> str:
    values = {"kind": "benchmark", "candidate": "acme/x@abc", "queue": "gpu-24g",
              "state": "queued", "payload": {}}  # fmt: skip
    jobs.add(key=key, **{**values, **fields})
    return key


def test_job_keys_are_deterministic() -> None:
    assert job_key("benchmark", "acme/x@1", "task") == job_key("benchmark", "acme/x@1", "task")
    assert job_key("benchmark", "acme/x@1", "task") != job_key("benchmark", "acme/x@2", "task")
    assert len(job_key("verdict", "a")) == 64


def test_a_job_is_added_once(jobs: JobStore) -> None:
    assert jobs.add(key="k", kind="benchmark", candidate="c", queue="q", state="queued",
                    payload={"a": 1})  # fmt: skip
    assert not jobs.add(key="k", kind="benchmark", candidate="other", queue="q", state="queued",
                        payload={"a": 2})  # fmt: skip
    job = jobs.get("k")
    assert job is not None and job.candidate == "c" and job.payload == {"a": 1}
    assert job.queued_at is not None and job.attempts == 0


def test_claim_runs_a_queued_job_once(jobs: JobStore) -> None:
    key = add(jobs)
    first = jobs.claim(key, "w1", lease_s=60, max_attempts=3)
    assert first.outcome == "run" and first.job is not None and first.job.attempts == 1
    second = jobs.claim(key, "w2", lease_s=60, max_attempts=3)
    assert second.outcome == "busy" and 55 < second.wait_s <= 60
    assert jobs.finish(key, "w1", {"score": 1.0})
    assert jobs.claim(key, "w2", lease_s=60, max_attempts=3).outcome == "finished"
    done = jobs.get(key)
    assert done is not None and done.state == "done" and done.result == {"score": 1.0}
    assert done.attempts == 1 and done.lease_owner is None


def test_concurrent_claims_admit_exactly_one(jobs: JobStore) -> None:
    key = add(jobs)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def claim(worker: int) -> None:
        barrier.wait()
        outcomes.append(jobs.claim(key, f"w{worker}", lease_s=60, max_attempts=3).outcome)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["busy"] * 7 + ["run"]


def test_an_expired_lease_is_taken_over_and_the_old_owner_records_nothing(
    jobs: JobStore,
) -> None:
    key = add(jobs)
    assert jobs.claim(key, "dead", lease_s=0.2, max_attempts=3).outcome == "run"
    time.sleep(0.4)
    taken = jobs.claim(key, "alive", lease_s=60, max_attempts=3)
    assert taken.outcome == "run" and taken.job is not None and taken.job.attempts == 2
    assert not jobs.heartbeat(key, "dead", 60)
    assert not jobs.finish(key, "dead", {"from": "dead"})
    assert jobs.finish(key, "alive", {"from": "alive"})
    job = jobs.get(key)
    assert job is not None and job.result == {"from": "alive"}


def test_heartbeat_keeps_the_lease(jobs: JobStore) -> None:
    key = add(jobs)
    jobs.claim(key, "w1", lease_s=0.5, max_attempts=3)
    for _ in range(3):
        time.sleep(0.25)
        assert jobs.heartbeat(key, "w1", 0.5)
    assert jobs.claim(key, "w2", lease_s=60, max_attempts=3).outcome == "busy"


def test_retry_then_the_attempt_cap(jobs: JobStore) -> None:
    key = add(jobs)
    for attempt in (1, 2):
        assert jobs.claim(key, "w", lease_s=60, max_attempts=3).outcome == "run"
        assert jobs.fail(key, "w", f"Hub 503 (try {attempt})", retry=True, max_attempts=3) == (
            "queued"
        )
    assert jobs.claim(key, "w", lease_s=60, max_attempts=3).outcome == "run"
    assert jobs.fail(key, "w", "Hub 503 (try 3)", retry=True, max_attempts=3) == "failed"
    job = jobs.get(key)
    assert job is not None and job.state == "failed" and job.attempts == 3
    assert job.reason == "Hub 503 (try 3)" and job.finished_at is not None


def test_a_job_dead_at_its_last_attempt_is_failed_with_the_reason(jobs: JobStore) -> None:
    key = add(jobs)
    jobs.claim(key, "w", lease_s=60, max_attempts=1)
    jobs.fail(key, "w", "killed", retry=True, max_attempts=2)
    jobs.claim(key, "w", lease_s=0.1, max_attempts=2)
    time.sleep(0.3)  # the worker died: its lease ran out
    claim = jobs.claim(key, "w2", lease_s=60, max_attempts=2)
    assert claim.outcome == "exhausted"
    job = jobs.get(key)
    assert job is not None and job.state == "failed"
    assert job.reason == "gave up after 2 attempts: killed"


def test_fatal_failure_does_not_retry(jobs: JobStore) -> None:
    key = add(jobs)
    jobs.claim(key, "w", lease_s=60, max_attempts=3)
    assert jobs.fail(key, "w", "pickle weights refused", retry=False, max_attempts=3) == "failed"


def test_waiting_children_are_released_or_ended(jobs: JobStore) -> None:
    parent = add(jobs, "p")
    for name in ("a", "b"):
        add(jobs, f"v-{name}", kind="verdict", state="waiting", parent=parent, finetune=name)
    assert jobs.claim("v-a", "w", lease_s=60, max_attempts=3).outcome == "finished"  # waits
    released = jobs.release_waiting(parent)
    assert sorted((j.key, j.state) for j in released) == [("v-a", "queued"), ("v-b", "queued")]
    other = add(jobs, "p2")
    add(jobs, "v-c", kind="verdict", state="waiting", parent=other, finetune="c")
    ended = jobs.end_waiting(other, "skipped", "benchmark skipped: too large")
    assert [(j.state, j.reason) for j in ended] == [("skipped", "benchmark skipped: too large")]


def test_notified_once(jobs: JobStore) -> None:
    key = add(jobs)
    jobs.claim(key, "w", lease_s=60, max_attempts=3)
    jobs.finish(key, "w", {})
    assert jobs.mark_notified(key)
    assert not jobs.mark_notified(key)
    job = jobs.get(key)
    assert job is not None and job.state == "notified"


def test_stuck_jobs_are_found(jobs: JobStore) -> None:
    add(jobs, "fresh")
    add(jobs, "lost")
    add(jobs, "dead")
    jobs.claim("dead", "w", lease_s=0.1, max_attempts=3)
    time.sleep(0.3)
    stuck = {job.key for job in jobs.stuck(queued_timeout_s=0.2)}
    assert stuck == {"fresh", "lost", "dead"}
    jobs.touch("fresh")
    assert {job.key for job in jobs.stuck(queued_timeout_s=0.2)} == {"lost", "dead"}


def test_requeue_resets_a_finished_job_for_a_manual_run(jobs: JobStore) -> None:
    key = add(jobs)
    jobs.claim(key, "w", lease_s=60, max_attempts=1)
    jobs.fail(key, "w", "boom", retry=False, max_attempts=1)
    assert jobs.requeue(key, reset_attempts=True)
    job = jobs.get(key)
    assert job is not None and (job.state, job.attempts, job.reason) == ("queued", 0, None)
    jobs.claim(key, "w", lease_s=60, max_attempts=1)
    assert not jobs.requeue(key)  # never under a running job


def test_status_rows_are_json_safe(jobs: JobStore) -> None:
    add(jobs)
    (row,) = [job.to_dict() for job in jobs.list()]
    assert row["state"] == "queued" and isinstance(row["created_at"], str)
    assert "payload" not in row


def test_a_lease_held_by_a_dead_process_on_this_host_is_taken_at_once(jobs: JobStore) -> None:
    import socket
    import subprocess
    import sys

    host = socket.gethostname()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # reaped: its PID names no process
    dead = f"{host} pid {finished.pid} task t1"
    key = add(jobs)
    assert jobs.claim(key, dead, lease_s=600, max_attempts=3).outcome == "run"
    taken = jobs.claim(key, "alive", lease_s=60, max_attempts=3)
    assert taken.outcome == "run" and taken.job is not None and taken.job.attempts == 2
    assert not jobs.finish(key, dead, {"from": "dead"})
    # A live process on this host, or any process on another host, keeps its lease.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            holders = (f"{host} pid {live.pid} task t2", f"elsewhere pid {finished.pid} task t3")
            for n, holder in enumerate(holders):
                other = add(jobs, key=f"k-{n}")
                assert jobs.claim(other, holder, lease_s=600, max_attempts=3).outcome == "run"
                assert jobs.claim(other, "alive", lease_s=60, max_attempts=3).outcome == "busy"
        finally:
            live.kill()
