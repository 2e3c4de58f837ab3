"""The PostgreSQL store restarts under the watcher, the job store and the result store.

A restart is seen from the client's side: every server connection of the test database is
terminated through a separate admin connection. Between two operations, the next one must
reconnect (``pool_pre_ping``) and find everything recorded before, exactly once. An operation
whose connection dies in flight must fail with the driver's connection error, leave nothing
half-recorded, and succeed when tried again, recording once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from benchmarks.cache import ResultStore
from benchmarks.scoring import RunResult, RunStats
from core.clock import now
from tests.support.postgres import ADMIN_DSN, temporary_database
from watcher.events import ModelReleased
from watcher.state import LINKED, RELEASED, UPDATE, WatchState
from workers.jobs import JobStore

SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_A2 = "c" * 40
LEASE_S = 60.0


@pytest.fixture
def database() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture
def admin() -> Iterator[Any]:
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3) as connection:
        yield connection


def restart(admin: Any, url: str) -> int:
    """Terminate every server connection of ``url``'s database; how many there were."""
    name = make_url(url).database
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    ).fetchall()
    assert all(row[0] for row in rows)
    return len(rows)


class Saboteur:
    """Terminates the server side of the connection the next matching statement runs on,
    just before it is sent or just after it ran (inside its still open transaction)."""

    def __init__(self, engine: Engine, admin: Any) -> None:
        self.engine = engine
        self.admin = admin
        self.armed: tuple[str, str] | None = None
        self.fired = 0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def arm(self, prefix: str, phase: Literal["before", "after"]) -> None:
        self.armed = (prefix.upper(), phase)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._maybe("before", cursor, statement)

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._maybe("after", cursor, statement)

    def _maybe(self, phase: str, cursor: Any, statement: str) -> None:
        if self.armed is None or self.armed[1] != phase:
            return
        if not " ".join(statement.split()).upper().startswith(self.armed[0]):
            return
        self.armed = None
        pid = cursor.connection.info.backend_pid
        self.admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        self.fired += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def assert_connection_lost(error: pytest.ExceptionInfo[DBAPIError]) -> None:
    """The failure is the driver's "connection lost", said as such, not some other error."""
    assert error.value.connection_invalidated, error.value
    text = str(error.value).lower()
    assert any(word in text for word in ("terminat", "closed", "lost", "connection")), text


def release(repo: str, sha: str) -> ModelReleased:
    return ModelReleased(source="hub", detected_at=now(), repo_id=repo, revision=sha, params=7)


def a_result(score: float) -> RunResult:
    stats = RunStats(0.1, 10.0, 100.0, 0.01, 0.02, 0.0, 1, 10)
    return RunResult(
        task="review_sentiment",
        metric="acc",
        score=score,
        stderr=0.05,
        n=2,
        outcomes=(1.0, 0.0),
        predictions=(1, 0),
        metrics={"acc": (score, 0.05)},
        stats=stats,
    )


def add_job(jobs: JobStore, key: str = "job-1") -> bool:
    return jobs.add(
        key=key, kind="benchmark", candidate="acme/A@" + SHA_A, queue="gpu-24g", state="queued",
        payload={"event": {"repo_id": "acme/A"}},
    )  # fmt: skip


def released_repos(state: WatchState) -> list[str]:
    return sorted(
        str(event.repo_id) for _, event in state.unpublished() if isinstance(event, ModelReleased)
    )


# ---------------------------------------------------------------------------- between operations


def test_watch_state_survives_restarts_between_operations(database: str, admin: Any) -> None:
    state = WatchState(database)
    assert state.record_repo("hub", "acme/A", SHA_A, release("acme/A", SHA_A)) == RELEASED

    assert restart(admin, database) >= 1
    assert state.record_repo("hub", "acme/B", SHA_B, release("acme/B", SHA_B)) == RELEASED
    assert restart(admin, database) >= 1
    # Seen before the restart: still known, not released again.
    assert state.record_repo("hub", "acme/A", SHA_A, release("acme/A", SHA_A)) is None
    assert restart(admin, database) >= 1
    assert state.record_repo("hub", "acme/A", SHA_A2, release("acme/A", SHA_A2)) == UPDATE
    assert restart(admin, database) >= 1

    assert state.counts() == {RELEASED: 2, UPDATE: 1}
    assert released_repos(state) == ["acme/A", "acme/B"]
    state.mark_published([row_id for row_id, _ in state.unpublished()])
    assert restart(admin, database) >= 1
    assert state.unpublished() == []
    # A process started after the restart sees the same store.
    assert WatchState(database).counts() == {RELEASED: 2, UPDATE: 1}


def test_job_store_survives_restarts_between_operations(database: str, admin: Any) -> None:
    jobs = JobStore(database)
    assert add_job(jobs)

    assert restart(admin, database) >= 1
    assert not add_job(jobs)  # the same release planned again: no second job
    assert restart(admin, database) >= 1
    claim = jobs.claim("job-1", "worker-1", LEASE_S, max_attempts=3)
    assert claim.outcome == "run" and claim.job is not None and claim.job.attempts == 1
    assert restart(admin, database) >= 1
    assert jobs.heartbeat("job-1", "worker-1", LEASE_S)
    assert restart(admin, database) >= 1
    assert jobs.claim("job-1", "worker-2", LEASE_S, max_attempts=3).outcome == "busy"
    assert restart(admin, database) >= 1
    assert jobs.finish("job-1", "worker-1", {"reviews": {"candidate": 0.9}})
    assert restart(admin, database) >= 1

    assert jobs.claim("job-1", "worker-2", LEASE_S, max_attempts=3).outcome == "finished"
    (job,) = JobStore(database).list()
    assert (job.key, job.state, job.attempts) == ("job-1", "done", 1)
    assert job.result == {"reviews": {"candidate": 0.9}}


def test_result_store_survives_restarts_between_operations(database: str, admin: Any) -> None:
    results = ResultStore(database)
    results.put("result-1", {"model": "acme/A", "model_revision": SHA_A}, a_result(0.75))

    assert restart(admin, database) >= 1
    got = results.get("result-1")
    assert got is not None and got[0] == a_result(0.75)
    assert restart(admin, database) >= 1
    # Stored again under the same key (another worker): the first answer is kept, once.
    results.put("result-1", {"model": "acme/A", "model_revision": SHA_A}, a_result(0.5))
    assert restart(admin, database) >= 1
    assert results.count() == 1
    assert results.get("result-1") == got
    assert ResultStore(database).count() == 1


# ---------------------------------------------------------------------------- in flight


@pytest.mark.parametrize("phase", ["before", "after"])
def test_record_repo_cut_in_flight_records_nothing_then_once(
    database: str, admin: Any, phase: Literal["before", "after"]
) -> None:
    state = WatchState(database)
    saboteur = Saboteur(state.engine, admin)
    # The feed entry's key goes first, the release second: the cut falls between the two
    # (after the first insert ran) or on the first one.
    saboteur.arm("INSERT INTO watch_seen", phase)
    event_a = release("acme/A", SHA_A)
    with pytest.raises(DBAPIError) as error:
        state.record_repo("hub", "acme/A", SHA_A, event_a, also=("feed:acme:post-1",))
    saboteur.close()
    assert saboteur.fired == 1
    assert_connection_lost(error)
    assert state.counts() == {}  # all or nothing
    assert not state.is_seen("feed:acme:post-1")

    again = state.record_repo("hub", "acme/A", SHA_A, event_a, also=("feed:acme:post-1",))

    assert again == RELEASED
    assert state.counts() == {LINKED: 1, RELEASED: 1}
    assert released_repos(state) == ["acme/A"]


@pytest.mark.parametrize("phase", ["before", "after"])
def test_job_add_cut_in_flight_adds_nothing_then_once(
    database: str, admin: Any, phase: Literal["before", "after"]
) -> None:
    jobs = JobStore(database)
    saboteur = Saboteur(jobs.engine, admin)
    saboteur.arm("INSERT INTO jobs", phase)
    with pytest.raises(DBAPIError) as error:
        add_job(jobs)
    saboteur.close()
    assert_connection_lost(error)
    assert jobs.get("job-1") is None

    assert add_job(jobs)
    assert not add_job(jobs)
    assert [j.key for j in jobs.list()] == ["job-1"]


@pytest.mark.parametrize("phase", ["before", "after"])
def test_claim_cut_in_flight_claims_nothing_then_once(
    database: str, admin: Any, phase: Literal["before", "after"]
) -> None:
    jobs = JobStore(database)
    add_job(jobs)
    saboteur = Saboteur(jobs.engine, admin)
    saboteur.arm("UPDATE jobs", phase)
    with pytest.raises(DBAPIError) as error:
        jobs.claim("job-1", "worker-1", LEASE_S, max_attempts=3)
    saboteur.close()
    assert_connection_lost(error)
    job = jobs.get("job-1")
    assert job is not None and (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)

    claim = jobs.claim("job-1", "worker-1", LEASE_S, max_attempts=3)

    assert claim.outcome == "run"
    assert claim.job is not None and (claim.job.attempts, claim.job.lease_owner) == (1, "worker-1")
    assert jobs.claim("job-1", "worker-2", LEASE_S, max_attempts=3).outcome == "busy"


@pytest.mark.parametrize("phase", ["before", "after"])
def test_finish_cut_in_flight_keeps_the_job_running_then_records_once(
    database: str, admin: Any, phase: Literal["before", "after"]
) -> None:
    jobs = JobStore(database)
    add_job(jobs)
    assert jobs.claim("job-1", "worker-1", LEASE_S, max_attempts=3).outcome == "run"
    saboteur = Saboteur(jobs.engine, admin)
    saboteur.arm("UPDATE jobs", phase)
    with pytest.raises(DBAPIError) as error:
        jobs.finish("job-1", "worker-1", {"reviews": {"candidate": 0.9}})
    saboteur.close()
    assert_connection_lost(error)
    job = jobs.get("job-1")
    assert job is not None and (job.state, job.result, job.lease_owner) == (
        "running",
        None,
        "worker-1",
    )

    assert jobs.finish("job-1", "worker-1", {"reviews": {"candidate": 0.9}})

    assert not jobs.finish("job-1", "worker-1", {"reviews": {"candidate": 0.1}})  # no overwrite
    job = jobs.get("job-1")
    assert job is not None and (job.state, job.attempts) == ("done", 1)
    assert job.result == {"reviews": {"candidate": 0.9}}


@pytest.mark.parametrize("phase", ["before", "after"])
def test_result_put_cut_in_flight_stores_nothing_then_once(
    database: str, admin: Any, phase: Literal["before", "after"]
) -> None:
    results = ResultStore(database)
    saboteur = Saboteur(results.engine, admin)
    saboteur.arm("INSERT INTO benchmark_results", phase)
    identity = {"model": "acme/A", "model_revision": SHA_A}
    with pytest.raises(DBAPIError) as error:
        results.put("result-1", identity, a_result(0.75))
    saboteur.close()
    assert_connection_lost(error)
    assert results.count() == 0

    results.put("result-1", identity, a_result(0.75))

    assert results.count() == 1
    assert results.get("result-1") == (a_result(0.75), identity)


def test_claim_whose_read_back_is_cut_loses_no_job_and_runs_it_once(
    database: str, admin: Any
) -> None:
    """The connection dies while the claim reads the job back: the claim and its read-back are one
    transaction, so neither happened. The job is neither lost nor half-claimed, and runs once."""
    jobs = JobStore(database)
    add_job(jobs)
    saboteur = Saboteur(jobs.engine, admin)
    saboteur.arm("SELECT jobs", "before")
    with pytest.raises(DBAPIError) as error:
        jobs.claim("job-1", "worker-1", lease_s=1.0, max_attempts=3)
    saboteur.close()
    assert_connection_lost(error)
    job = jobs.get("job-1")
    assert job is not None and (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)

    assert jobs.claim("job-1", "worker-2", LEASE_S, max_attempts=3).outcome == "run"
    assert jobs.claim("job-1", "worker-3", LEASE_S, max_attempts=3).outcome == "busy"
    assert jobs.finish("job-1", "worker-2", {"ok": True})
    job = jobs.get("job-1")
    assert job is not None and (job.state, job.attempts) == ("done", 1)
    assert [j.key for j in jobs.list()] == ["job-1"]


def test_claim_retried_by_the_same_owner_after_a_cut_read_back_runs(
    database: str, admin: Any
) -> None:
    jobs = JobStore(database)
    add_job(jobs)
    saboteur = Saboteur(jobs.engine, admin)
    saboteur.arm("SELECT jobs", "before")
    with pytest.raises(DBAPIError):
        jobs.claim("job-1", "worker-1", LEASE_S, max_attempts=3)
    saboteur.close()

    claim = jobs.claim("job-1", "worker-1", LEASE_S, max_attempts=3)

    assert claim.outcome == "run"
    assert claim.job is not None and claim.job.attempts == 1
