"""The store's schema migrations: stores made by earlier versions upgrade in place, and the
newest revision matches the models.

The earlier stores are fixtures made by those versions' own code (``fixtures/make_store.py``):
SQLite files, and plain SQL dumps of the same stores made on PostgreSQL. Every test runs on
SQLite and PostgreSQL (the latter skipped when no server answers).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Connection

import core.db
from benchmarks.cache import ResultStore
from benchmarks.judge.cache import JudgeCache
from benchmarks.judge.judges import JudgeReply
from core.db import Base, open_store
from core.errors import ConfigError
from core.migrations import config, head
from tests.core.fixtures import make_store as old
from tests.support.postgres import temporary_database
from watcher.events import ModelReleased
from watcher.state import BASELINE, LINKED, RELEASED, WatchState
from workers.jobs import JobStore
from workers.notify.actions import ActionLog, Actor
from workers.notify.mutes import MuteStore
from workers.notify.outbox import Outbox

FIXTURES = Path(__file__).parent / "fixtures"
VERSIONS = ["v0.1", "v0.2"]  # v0.1: before stored results (6245b37); v0.2: e0f0263

Store = Callable[[str | None], str]  # a fixture's version (None: empty) -> a new store's URL


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Makes new stores on one dialect: empty, or a copy of an earlier version's fixture."""
    made: list[str] = []

    def new_store(version: str | None) -> str:
        name = f"store-{version or 'empty'}-{len(made)}"
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / name}.sqlite"
            if version is not None:
                shutil.copy(FIXTURES / f"store-{version}.sqlite", tmp_path / f"{name}.sqlite")
        else:
            url = databases.enter_context(temporary_database())
            if version is not None:
                load_dump(url, FIXTURES / f"store-{version}.postgresql.sql")
        made.append(url)
        return url

    with ExitStack() as databases:
        yield new_store
        for url in made:  # this process's engines on them go before the databases do
            engine = core.db._engines.pop(url, None)
            if engine is not None:
                engine.dispose()
            core.db._upgraded.discard(url)


def load_dump(url: str, path: Path) -> None:
    """Run a plain SQL dump (``make_store.py --dump``) on the PostgreSQL database ``url``."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(path.read_text())  # type: ignore[call-overload]


def revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def drift(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the store match the models (this
    module imports every store, so every table is declared on ``Base``)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


def schema(bind: str | Connection) -> dict[str, Any]:
    """Tables, columns (name, type, nullable), keys, unique constraints and indexes, reflected
    from a store's URL or an open connection."""
    engine = create_engine(bind) if isinstance(bind, str) else None
    try:
        inspector = inspect(engine if engine is not None else bind)
        return {
            table: {
                "columns": sorted(
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
                ),
                "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)
                ),
            }
            for table in sorted(inspector.get_table_names())
            if table != "alembic_version"
        }
    finally:
        if engine is not None:
            engine.dispose()


# ---------------------------------------------------------------------------- earlier versions


@pytest.mark.parametrize("version", VERSIONS)
def test_a_store_from_an_earlier_version_upgrades_in_place(make_store: Store, version: str) -> None:
    url = make_store(version)
    results, state, jobs, outbox = ResultStore(url), WatchState(url), JobStore(url), Outbox(url)
    assert revision(url) == head()
    assert drift(url) == []  # as if made by this version

    # Benchmark results.
    for key, score in old.SCORES.items():
        stored = results.get(key)
        assert stored is not None, key
        result, identity = stored
        assert (result.score, result.outcomes, result.n) == (score, old.OUTCOMES[key], 4)
        assert identity["model_revision"] == old.SHA
    assert results.count() == 2

    # Watcher state: seen rows, sources, the lease; dedupe still holds.
    assert state.counts() == {BASELINE: 1, LINKED: 1, RELEASED: 1}
    assert state.is_seen(f"hub:{old.REPO}") and state.is_seen(old.POST)
    assert state.unpublished() == []
    assert state.record_repo("hub", old.REPO, old.SHA, None) is None
    assert state.source("hub").etag == 'W/"etag-1"'
    failing = state.source("feed:acme")
    assert (failing.failures, failing.last_error) == (1, "HTTP 503")
    assert [(s["name"], s["polls"], s["errors"]) for s in state.sources_with_counts()] == [
        ("feed:acme", 1, 1),
        ("hub", 1, 0),
    ]
    held = state.acquire_lock("scheduler", "another pid 2", ttl_s=1e9)
    assert held is not None and held.startswith(old.OWNER)

    # Jobs: both finished with their results; the verdict reads back as this version's type.
    benchmark = jobs.get(old.BENCHMARK_JOB)
    assert benchmark is not None and benchmark.state == "done"
    assert benchmark.result is not None and set(benchmark.result) in ({old.FINETUNE}, {"pairs"})
    verdict_job = jobs.get(old.VERDICT_JOB)
    assert verdict_job is not None and verdict_job.parent == old.BENCHMARK_JOB
    release = verdict_job.event()
    assert isinstance(release, ModelReleased) and release.repo_id == old.REPO
    verdict = verdict_job.verdict()
    assert verdict is not None and verdict.verdict == "SUPERSEDED"
    assert (verdict.score_finetune, verdict.score_candidate) == (0.75, 0.875)
    queued = jobs.get(old.QUEUED_JOB)
    assert queued is not None and queued.state == "queued"
    if version == "v0.1":  # the columns 0002 added, with their values for earlier rows
        assert (verdict_job.notify_tries, verdict_job.notify_error, queued.unsent) == (0, None, 0)
    else:
        assert verdict_job.notify_tries == 1 and queued.unsent
        assert verdict_job.notify_error == "Slack said channel_not_found"
    tries = verdict_job.notify_tries
    assert jobs.notify_failed(old.VERDICT_JOB, "Slack 500", 60.0) == tries + 1

    # The Slack outbox: the sent message is known, so it is never claimed or posted again.
    delivery = outbox.get(old.DELIVERY)
    assert delivery is not None
    assert (delivery.ts, delivery.state, delivery.attempts) == (old.SLACK_TS, "sent", 1)
    assert delivery.claim_owner is None
    assert not outbox.claim(old.DELIVERY, "another pid 2", 60.0)
    assert outbox.record("e" * 64, old.VERDICT_JOB, "#models", old.SLACK_TS, "0" * 64)
    assert outbox.claim("e" * 64, "another pid 2", 60.0)

    # What 0003 added: who asked for a job (nobody, for the jobs already there), mutes, and the
    # log of actions taken in Slack.
    assert (verdict_job.requested_by, verdict_job.muted) == (None, None)
    assert MuteStore(url).mute("acme", 7, "cli:ops").owner == "acme"
    assert ActionLog(url).begin("a" * 64, Actor("U0LEAD", "alice"), "ack", "C1:1.0")
    assert not ActionLog(url).begin("a" * 64, Actor("U0LEAD", "alice"), "ack", "C1:1.0")
    # 0004: judge answers.
    JudgeCache(url).put("j" * 64, "f" * 64, JudgeReply('{"winner": "A"}', 120, 6))
    assert JudgeCache(url).get("j" * 64) == JudgeReply('{"winner": "A"}', 120, 6)


def test_each_revision_makes_what_its_version_made(make_store: Store) -> None:
    """An empty store at 0001 has the tables the version before stored results made; at 0002,
    those e0f0263 made (names, types, nullability, keys, unique constraints, indexes)."""
    made_by = {version: schema(make_store(version)) for version in VERSIONS}
    engine = create_engine(make_store(None))
    try:
        with engine.begin() as connection:
            cfg = config(connection)
            command.upgrade(cfg, "0001")
            assert schema(connection) == made_by["v0.1"]
            command.upgrade(cfg, "0002")
            assert schema(connection) == made_by["v0.2"]
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- the newest revision


def test_an_empty_store_upgraded_to_head_matches_the_models(make_store: Store) -> None:
    url = make_store(None)
    open_store(url)
    assert revision(url) == head()
    assert drift(url) == []


def test_revisions_go_down_and_up_again(make_store: Store) -> None:
    url = make_store(None)
    open_store(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            command.downgrade(config(connection), "0001")
            assert "notify_due" not in {c["name"] for c in inspect(connection).get_columns("jobs")}
            command.downgrade(config(connection), "base")
            assert inspect(connection).get_table_names() == ["alembic_version"]
            command.upgrade(config(connection), "head")
    finally:
        engine.dispose()
    assert drift(url) == []


# ---------------------------------------------------------------------------- stores made before


def test_a_store_holding_only_some_tables_gains_the_others(tmp_path: Path) -> None:
    """Each store class used to make only its own tables: a store only ``supersede compare``
    used holds the results alone."""
    path = tmp_path / "results-only.sqlite"
    shutil.copy(FIXTURES / "store-v0.2.sqlite", path)
    with sqlite3.connect(path) as connection:
        for table in ("jobs", "deliveries", "watch_seen", "watch_sources", "watch_locks"):
            connection.execute(f"DROP TABLE {table}")
    url = f"sqlite:///{path}"
    assert JobStore(url).get(old.BENCHMARK_JOB) is None
    assert ResultStore(url).count() == 2
    assert revision(url) == head()
    assert drift(url) == []


def test_a_store_from_a_newer_version_is_refused_by_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.sqlite'}"
    open_store(url)
    with sqlite3.connect(tmp_path / "newer.sqlite") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    core.db._upgraded.discard(url)  # another process, started later
    with pytest.raises(ConfigError, match=r"newer\.sqlite.*revision '9999'.*upgrade Supersede"):
        open_store(url)


def test_a_store_that_cannot_be_upgraded_is_one_config_error_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "foreign.sqlite"
    with sqlite3.connect(path) as connection:  # a table by that name, of another program
        connection.execute("CREATE TABLE deliveries (key VARCHAR(64) PRIMARY KEY)")
        connection.execute("INSERT INTO deliveries VALUES ('x')")
    with pytest.raises(ConfigError, match=r"cannot open the store \(sqlite:///.*foreign.sqlite"):
        WatchState(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:  # one transaction: nothing half-made
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert tables.fetchall() == [("deliveries",)]
