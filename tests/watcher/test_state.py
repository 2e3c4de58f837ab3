"""The watcher's durable state: dedupe of releases, the outbox, source back-off and the lease.

Every test runs against SQLite and PostgreSQL (the latter skipped when no server answers).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from config.settings import Settings
from core.errors import ConfigError
from tests.support.postgres import temporary_database
from watcher.discovery import Discovery
from watcher.events import Announcement, ModelReleased
from watcher.state import (
    ANNOUNCED,
    BASELINE,
    LINKED,
    RELEASED,
    UPDATE,
    NewRow,
    Seen,
    WatchState,
)

SHA1 = "1" * 40
SHA2 = "2" * 40
SHA3 = "3" * 40

Row = tuple[str, str, str | None, str | None]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'watch.db'}"
    else:
        with temporary_database() as url:
            yield url


@pytest.fixture
def state(store_url: str) -> Iterator[WatchState]:
    store = WatchState(store_url)
    yield store
    store.engine.dispose()


def release(repo_id: str, sha: str = SHA1, source: str = "hub") -> ModelReleased:
    return ModelReleased(
        source=source,
        detected_at=datetime.now(UTC),
        repo_id=repo_id,
        revision=sha,
        params=7_000_000_000,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC),
        pipeline_tag="text-generation",
        link=f"https://huggingface.co/{repo_id}",
    )


def announcement(entry_id: str) -> Announcement:
    return Announcement(
        source="feed:acme",
        detected_at=datetime.now(UTC),
        title=f"Post {entry_id}",
        link=f"https://acme.example/blog/{entry_id}",
        entry_id=entry_id,
        published_at=datetime(2026, 1, 2, tzinfo=UTC),
        summary="Something happened.",
    )


def rows(state: WatchState) -> list[Row]:
    """Every seen row as (key, kind, repo_id, revision), in insertion order."""
    with Session(state.engine) as session:
        found = session.execute(
            select(Seen.key, Seen.kind, Seen.repo_id, Seen.revision).order_by(Seen.id)
        ).all()
    return [(key, kind, repo, rev) for key, kind, repo, rev in found]


# ---------------------------------------------------------------------- record_repo


def test_first_sha_is_a_release_a_later_sha_an_update_and_repeats_are_none(
    state: WatchState,
) -> None:
    event = release("acme/A-7B")
    assert state.record_repo("hub", "acme/A-7B", SHA1, event) == RELEASED
    assert state.record_repo("hub", "acme/A-7B", SHA1, release("acme/A-7B")) is None
    assert state.record_repo("hub", "acme/A-7B", SHA2, release("acme/A-7B", SHA2)) == UPDATE
    assert state.record_repo("hub", "acme/A-7B", SHA2, release("acme/A-7B", SHA2)) is None
    assert state.record_repo("hub", "acme/A-7B", SHA1, release("acme/A-7B")) is None

    assert rows(state) == [
        ("hub:acme/A-7B", RELEASED, "acme/A-7B", SHA1),
        (f"hub:acme/A-7B@{SHA2}", UPDATE, "acme/A-7B", SHA2),
    ]
    assert [published for _, published in state.unpublished()] == [event]


def test_a_baseline_repo_never_becomes_a_release(state: WatchState) -> None:
    assert state.record_repo("hub", "acme/Old-1B", SHA1, None) == BASELINE
    assert state.record_repo("hub", "acme/Old-1B", SHA1, None) is None
    # A later commit of a baseline repo is an update, even when offered as a release.
    later = release("acme/Old-1B", SHA2)
    assert state.record_repo("hub", "acme/Old-1B", SHA2, later) == UPDATE
    assert state.record_repo("hub", "acme/Old-1B", SHA2, later) is None

    assert rows(state) == [
        ("hub:acme/Old-1B", BASELINE, "acme/Old-1B", SHA1),
        (f"hub:acme/Old-1B@{SHA2}", UPDATE, "acme/Old-1B", SHA2),
    ]
    assert state.unpublished() == []
    assert state.counts() == {BASELINE: 1, UPDATE: 1}


def test_the_same_repo_from_another_source_is_not_released_twice(state: WatchState) -> None:
    assert state.record_repo("hub", "acme/A-7B", SHA1, release("acme/A-7B")) == RELEASED
    linked = release("acme/A-7B", source="feed:acme")
    assert state.record_repo("feed:acme", "acme/A-7B", SHA1, linked) is None
    assert state.record_repo("webhook", "acme/A-7B", SHA1, release("acme/A-7B")) is None
    assert rows(state) == [("hub:acme/A-7B", RELEASED, "acme/A-7B", SHA1)]
    assert len(state.unpublished()) == 1


# ---------------------------------------------------------------------- races


def test_threads_racing_on_one_release_record_it_once(state: WatchState) -> None:
    threads_n, repos = 8, [f"acme/Race-{i}" for i in range(6)]
    barrier = threading.Barrier(threads_n)
    results: dict[str, list[str | None]] = {repo: [] for repo in repos}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            for repo in repos:
                barrier.wait(timeout=30)
                kind = state.record_repo("hub", repo, SHA1, release(repo))
                with lock:
                    results[repo].append(kind)
        except BaseException as exc:  # reported below, with the others' results
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    for repo in repos:
        assert Counter(results[repo]) == Counter({RELEASED: 1, None: threads_n - 1}), repo
    assert rows(state) == [(f"hub:{repo}", RELEASED, repo, SHA1) for repo in repos]
    assert [event.repo_id for _, event in state.unpublished()] == repos


def _race_in_process(url: str, repos: list[str], barrier: Any, results: Any) -> None:
    """Child process of the race test: record each repo right after the others are ready."""
    store = WatchState(url)
    kinds = []
    for repo in repos:
        barrier.wait(timeout=60)
        kinds.append(store.record_repo("hub", repo, SHA1, release(repo)))
    results.put((os.getpid(), kinds))


def _at_once(target: Any, args: list[tuple[Any, ...]]) -> tuple[dict[Any, Any], list[int]]:
    """Runs ``target(*each, barrier, results)`` in one spawned process per ``args`` entry, all
    released by one barrier; what they put on ``results`` (key, value pairs) and their PIDs."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(args))
    results = context.Queue()
    processes = [context.Process(target=target, args=(*each, barrier, results)) for each in args]
    try:
        for process in processes:
            process.start()
        outcomes = dict(results.get(timeout=90) for _ in processes)
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    return outcomes, [p.pid for p in processes if p.pid is not None]


def test_processes_racing_on_one_release_record_it_once(state: WatchState) -> None:
    repos = [f"acme/Proc-{i}" for i in range(10)]
    outcomes, pids = _at_once(_race_in_process, [(state.url, repos)] * 2)
    assert sorted(outcomes) == sorted(pids)
    first, second = outcomes.values()
    for repo, kinds in zip(repos, zip(first, second, strict=True), strict=True):
        assert Counter(kinds) == Counter({RELEASED: 1, None: 1}), repo
    assert rows(state) == [(f"hub:{repo}", RELEASED, repo, SHA1) for repo in repos]
    assert [event.repo_id for _, event in state.unpublished()] == repos


def _open_new_store_in_process(url: str, repo: str, barrier: Any, results: Any) -> None:
    """Child process of the table-creation race: open the store when the others do."""
    barrier.wait(timeout=60)
    try:
        kind = WatchState(url).record_repo("hub", repo, SHA1, release(repo))
    except Exception as exc:  # reported, so the test shows it
        kind = f"{type(exc).__name__}: {exc}"
    results.put((repo, kind))


def test_processes_opening_a_new_store_at_once_all_succeed(store_url: str) -> None:
    """Each makes sure the store's schema is at the newest revision; one upgrades it, the
    others wait for it and find it done."""
    repos = [f"acme/New-{i}" for i in range(3)]
    outcomes, _ = _at_once(_open_new_store_in_process, [(store_url, repo) for repo in repos])
    assert outcomes == {repo: RELEASED for repo in repos}
    state = WatchState(store_url)
    assert sorted(repo for _, kind, repo, _ in rows(state) if kind == RELEASED) == repos
    state.engine.dispose()


# ---------------------------------------------------------------------- also=


def test_linked_keys_are_recorded_with_the_repo(state: WatchState) -> None:
    event = release("acme/B-3B", source="feed:acme")
    kind = state.record_repo(
        "feed:acme", "acme/B-3B", SHA1, event, also=["feed:acme:post-1", "feed:acme:post-2"]
    )
    assert kind == RELEASED
    assert state.is_seen("feed:acme:post-1") and state.is_seen("feed:acme:post-2")
    # A later post linking a known repo: the repo is not released again, the post is kept.
    again = state.record_repo("feed:acme", "acme/B-3B", SHA1, event, also=["feed:acme:post-3"])
    assert again is None
    assert rows(state) == [
        ("feed:acme:post-1", LINKED, None, None),
        ("feed:acme:post-2", LINKED, None, None),
        ("hub:acme/B-3B", RELEASED, "acme/B-3B", SHA1),
        ("feed:acme:post-3", LINKED, None, None),
    ]
    assert [published for _, published in state.unpublished()] == [event]


def test_linked_keys_roll_back_with_a_failed_repo_insert(
    state: WatchState, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = state._insert

    def insert_failing_on_the_repo(session: Session, row: NewRow) -> bool:
        if row.key.startswith("hub:"):
            original(session, row)  # the row is written, then the transaction fails
            raise RuntimeError("store went away mid-transaction")
        return original(session, row)

    monkeypatch.setattr(state, "_insert", insert_failing_on_the_repo)
    with pytest.raises(RuntimeError, match="mid-transaction"):
        state.record_repo("feed:acme", "acme/C-1B", SHA1, release("acme/C-1B"), also=["feed:x:1"])
    assert not state.is_seen("feed:x:1")
    assert rows(state) == []
    assert state.unpublished() == []

    monkeypatch.undo()
    assert state.record_repo("feed:acme", "acme/C-1B", SHA1, None, also=["feed:x:1"]) == BASELINE
    assert rows(state) == [
        ("feed:x:1", LINKED, None, None),
        ("hub:acme/C-1B", BASELINE, "acme/C-1B", SHA1),
    ]


# ---------------------------------------------------------------------- outbox


def test_outbox_holds_releases_and_announcements_until_marked(state: WatchState) -> None:
    first = release("acme/A-7B")
    assert state.record_repo("hub", "acme/A-7B", SHA1, first) == RELEASED
    post = announcement("acme-blog-0003")
    post_row = NewRow("feed:acme:acme-blog-0003", ANNOUNCED, "feed:acme", event=post)
    assert state.record([post_row]) == [True]
    assert state.record_repo("hub", "acme/Old-1B", SHA1, None) == BASELINE
    assert state.record_repo("hub", "acme/A-7B", SHA2, release("acme/A-7B", SHA2)) == UPDATE
    assert state.record([NewRow("feed:acme:old", BASELINE, "feed:acme")]) == [True]
    last = release("acme/D-70B", SHA3, source="feed:acme")
    linked = state.record_repo("feed:acme", "acme/D-70B", SHA3, last, also=["feed:acme:d"])
    assert linked == RELEASED
    # The same announcement again is not queued twice.
    assert state.record([post_row]) == [False]

    queued = state.unpublished()
    assert [event for _, event in queued] == [first, post, last]
    ids = [row_id for row_id, _ in queued]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert isinstance(queued[1][1], Announcement)

    restarted = WatchState(state.url)
    assert restarted.unpublished() == queued

    state.mark_published([ids[0], ids[2]])
    assert state.unpublished() == [queued[1]]
    state.mark_published([])
    assert restarted.unpublished() == [queued[1]]
    restarted.mark_published([ids[1]])
    assert state.unpublished() == []
    assert WatchState(state.url).unpublished() == []
    assert state.counts() == {ANNOUNCED: 1, BASELINE: 2, LINKED: 1, RELEASED: 2, UPDATE: 1}


class FailingOnSecond:
    """Takes events, but raises on the second one it is given."""

    def __init__(self) -> None:
        self.calls = 0
        self.delivered: list[ModelReleased | Announcement] = []

    def publish(self, event: ModelReleased | Announcement) -> None:
        self.calls += 1
        if self.calls == 2:
            raise ConnectionError("queue unavailable")
        self.delivered.append(event)


class Keeping:
    def __init__(self) -> None:
        self.delivered: list[ModelReleased | Announcement] = []

    def publish(self, event: ModelReleased | Announcement) -> None:
        self.delivered.append(event)


def test_flush_keeps_what_the_publisher_refused_and_delivers_it_once(
    state: WatchState, watch_settings: Callable[..., Settings]
) -> None:
    settings = watch_settings(store_url=state.url)
    events: list[ModelReleased | Announcement] = [
        release("acme/A-7B"),
        release("acme/B-3B"),
        announcement("acme-blog-0009"),
        release("acme/C-1B"),
    ]
    for event in events:
        if isinstance(event, Announcement):
            key = f"feed:acme:{event.entry_id}"
            assert state.record([NewRow(key, ANNOUNCED, "feed:acme", event=event)]) == [True]
        else:
            assert event.repo_id is not None
            assert state.record_repo("hub", event.repo_id, SHA1, event) == RELEASED

    flaky = FailingOnSecond()
    discovery = Discovery(settings, state, flaky)
    assert discovery.flush() == 1
    assert flaky.delivered == events[:1]
    assert [event for _, event in state.unpublished()] == events[1:]

    working = Keeping()
    discovery.publisher = working
    assert discovery.flush() == 3
    assert working.delivered == events[1:]
    assert discovery.flush() == 0
    # A restarted watcher finds nothing left to publish.
    again = Keeping()
    assert Discovery(settings, WatchState(state.url), again).flush() == 0
    assert again.delivered == []

    deliveries = Counter(
        event.model_dump_json() for event in flaky.delivered + working.delivered + again.delivered
    )
    assert deliveries == Counter(event.model_dump_json() for event in events)
    assert set(deliveries.values()) == {1}


# ---------------------------------------------------------------------- sources


def test_source_state_keeps_validators_and_backs_off(state: WatchState) -> None:
    fresh = state.source("feed:acme")
    assert fresh.first_poll and fresh.failures == 0 and fresh.etag is None
    assert fresh.not_before is None

    state.source_ok("feed:acme", etag='"abc123"', last_modified="Wed, 01 Jan 2026 00:00:00 GMT")
    ok = WatchState(state.url).source("feed:acme")  # persisted, not cached
    assert ok.etag == '"abc123"'
    assert ok.last_modified == "Wed, 01 Jan 2026 00:00:00 GMT"
    assert not ok.first_poll and ok.failures == 0 and ok.not_before is None

    before = datetime.now(UTC)
    state.source_failed("feed:acme", "boom " + "x" * 5000, retry_in_s=60)
    after = datetime.now(UTC)
    failed = state.source("feed:acme")
    assert failed.failures == 1
    assert failed.not_before is not None
    assert before + timedelta(seconds=59) <= failed.not_before <= after + timedelta(seconds=61)
    assert failed.last_error is not None and len(failed.last_error) == 2000
    assert failed.last_error.startswith("boom x")
    assert failed.etag == '"abc123"'  # a failure keeps the validators

    state.source_failed("feed:acme", "again", retry_in_s=None)
    twice = state.source("feed:acme")
    assert twice.failures == 2 and twice.last_error == "again"

    state.source_ok("feed:acme")  # a 304: no new validators
    cleared = state.source("feed:acme")
    assert cleared.failures == 0 and cleared.not_before is None
    assert cleared.etag == '"abc123"'
    assert cleared.last_modified == "Wed, 01 Jan 2026 00:00:00 GMT"

    state.source_ok("feed:acme", etag="", last_modified="")  # "" forgets the validators
    forgotten = state.source("feed:acme")
    assert forgotten.etag is None and forgotten.last_modified is None

    state.source_failed("hub", "429", retry_in_s=None)
    assert [source.name for source in state.sources()] == ["feed:acme", "hub"]
    hub = state.source("hub")
    assert hub.failures == 1 and hub.not_before is None and hub.first_poll


# ---------------------------------------------------------------------- the lease


def test_lease_is_held_renewed_taken_over_when_stale_and_released(state: WatchState) -> None:
    a, b, c = "host-a pid 101", "host-b pid 202", "host-c pid 303"
    assert state.acquire_lock("scheduler", a, 0.5) is None
    assert state.acquire_lock("scheduler", a, 0.5) is None  # renewal
    held = state.acquire_lock("scheduler", b, 0.5)
    assert held is not None and a in held
    assert state.acquire_lock("other-lock", b, 0.5) is None  # leases are per name

    time.sleep(0.7)
    assert state.acquire_lock("scheduler", b, 0.5) is None  # a's heartbeat is stale
    taken = state.acquire_lock("scheduler", a, 60)
    assert taken is not None and b in taken

    state.release_lock("scheduler", a)  # not the holder: nothing happens
    refused = state.acquire_lock("scheduler", c, 60)
    assert refused is not None and b in refused

    state.release_lock("scheduler", b)
    assert state.acquire_lock("scheduler", c, 60) is None
    refused = state.acquire_lock("scheduler", a, 60)
    assert refused is not None and c in refused


def test_owners_racing_for_a_free_lease_get_it_once(state: WatchState) -> None:
    owners = [f"host pid {i}" for i in range(8)]
    barrier = threading.Barrier(len(owners))
    results: dict[str, str | None] = {}
    failures: list[BaseException] = []

    def worker(owner: str) -> None:
        try:
            barrier.wait(timeout=30)
            results[owner] = state.acquire_lock("scheduler", owner, 60)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    winners = [owner for owner, holder in results.items() if holder is None]
    assert len(winners) == 1 and len(results) == len(owners)
    for owner, holder in results.items():
        if owner not in winners:
            assert holder is not None and winners[0] in holder


# ---------------------------------------------------------------------- a store that won't open


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "postgresql+psycopg://u:secretpw@127.0.0.1:1/x",
        "postgresql+nosuchdriver://u:secretpw@127.0.0.1:1/x",
    ],
    ids=["postgresql-refused", "postgresql-password", "unknown-driver-password"],
)
def test_a_store_that_cannot_be_opened_is_a_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match=r"store\.url") as caught:
        WatchState(url)
    message = str(caught.value)
    assert "secretpw" not in message
    assert "127.0.0.1" in message


def test_a_sqlite_store_in_an_impossible_folder_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    with pytest.raises(ConfigError, match=r"store\.url"):
        WatchState(f"sqlite:///{blocker / 'watch.db'}")
