"""The watcher daemon: its jobs, the store lease, failing sources, and ``supersede poll`` as a
long-running process stopped by signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from sqlalchemy.orm import Session

from config.settings import Settings
from config.watch import FeedWatch, WebhookWatch
from core.errors import AlreadyRunning, ConfigError
from core.lease import holder_is_dead
from tests.support.feed_server import FeedServer
from tests.support.hub_server import HubServer
from tests.support.settings import write_settings
from watcher.discovery import Discovery
from watcher.events import Announcement, ModelReleased
from watcher.publish import Collect
from watcher.scheduler import LOCK_NAME, WatchDaemon
from watcher.state import RELEASED, LockRow, WatchState

REPO_ID = "acme/Acme-7B"
SOURCE_JOBS = ("source:hub", "source:feed:acme-blog")


def wait_until(condition: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it is truthy; False when ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def rss(*titles: str) -> bytes:
    """A small RSS feed with one recent announcement per title (no Hub links, no API models)."""
    recent = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    items = "".join(
        f"<item><title>{title}</title><link>https://acme.example/blog/post-{n}</link>"
        f'<guid isPermaLink="false">acme-post-{n}</guid><pubDate>{recent}</pubDate>'
        f"<description>About {title}.</description></item>"
        for n, title in enumerate(titles)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        "<title>Acme AI Blog</title><link>https://acme.example/blog/</link>"
        f"<description>News from Acme.</description>{items}</channel></rss>"
    ).encode()


def releases(collected: Collect, repo_id: str = REPO_ID) -> list[ModelReleased]:
    return [e for e in collected.events if isinstance(e, ModelReleased) and e.repo_id == repo_id]


def announcements(collected: Collect) -> list[str]:
    return [e.title for e in collected.events if isinstance(e, Announcement)]


def new_daemon(settings: Settings, owner: str | None = None) -> tuple[WatchDaemon, Collect]:
    state = WatchState(settings.store.url)
    collected = Collect()
    daemon = WatchDaemon(settings, state, Discovery(settings, state, collected))
    if owner is not None:  # two daemons in one process would otherwise share the owner name
        daemon.owner = owner
    return daemon, collected


@pytest.fixture
def acme_sha(publish_model: Callable[..., str]) -> str:
    """The commit of the one new model of ``acme`` on the local Hub."""
    return publish_model(REPO_ID)


@pytest.fixture
def acme_hub(hub: HubServer, acme_sha: str) -> HubServer:
    """The local Hub with one new model of ``acme``."""
    return hub


@pytest.fixture
def blog(feeds: FeedServer) -> FeedWatch:
    url = feeds.publish("/blog/rss.xml", rss("Acme safety report", "Acme at NeurIPS"))
    return FeedWatch(name="acme-blog", url=url)


@pytest.fixture
def daemons() -> Iterator[list[WatchDaemon]]:
    """Daemons to stop after the test, whatever happened."""
    started: list[WatchDaemon] = []
    yield started
    for daemon in started:
        scheduler: Any = daemon._scheduler
        if not daemon.stopped.is_set() or (scheduler is not None and scheduler.running):
            daemon.stop(grace_s=5)


# ---------------------------------------------------------------------- in process


def test_jobs_are_scheduled_and_the_first_poll_runs_at_once(
    acme_hub: HubServer,
    acme_sha: str,
    blog: FeedWatch,
    watch_settings: Callable[..., Settings],
    daemons: list[WatchDaemon],
) -> None:
    settings = watch_settings(acme_hub, feeds=(blog,), jitter_s=0, lock_ttl_s=5)
    daemon, collected = new_daemon(settings)
    daemons.append(daemon)
    daemon.start()

    jobs = {job.id: job for job in daemon._scheduler.get_jobs()}  # type: ignore[attr-defined]
    assert sorted(jobs) == sorted([*SOURCE_JOBS, "lease:heartbeat", "outbox:flush"])
    intervals = {"source:hub": settings.watch.hub.interval, "source:feed:acme-blog": blog.interval}
    for job_id in SOURCE_JOBS:
        job = jobs[job_id]
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time == settings.watch.misfire_grace_s
        assert job.trigger.interval == timedelta(seconds=intervals[job_id])
        assert job.trigger.jitter is None
    assert jobs["lease:heartbeat"].trigger.interval == timedelta(seconds=5 / 3)

    assert wait_until(
        lambda: releases(collected) and len(announcements(collected)) == 2, timeout=15
    ), collected.events
    state = WatchState(settings.store.url)
    assert wait_until(lambda: all(s.last_ok_at for s in state.sources()), timeout=10)
    assert [s.name for s in state.sources()] == ["feed:acme-blog", "hub"]
    assert [e.revision for e in releases(collected)] == [acme_sha]
    assert sorted(announcements(collected)) == ["Acme at NeurIPS", "Acme safety report"]
    assert len(collected.events) == 3
    assert state.counts()[RELEASED] == 1
    assert state.unpublished() == []

    assert daemon.stop() is True
    assert state.acquire_lock(LOCK_NAME, "other-host pid 1", 60) is None  # the lease is free


def test_jitter_is_given_to_the_source_triggers(
    acme_hub: HubServer,
    blog: FeedWatch,
    watch_settings: Callable[..., Settings],
    daemons: list[WatchDaemon],
) -> None:
    settings = watch_settings(acme_hub, feeds=(blog,), jitter_s=7, lock_ttl_s=5)
    daemon, _ = new_daemon(settings)
    daemons.append(daemon)
    daemon.start()
    jobs = {job.id: job for job in daemon._scheduler.get_jobs()}  # type: ignore[attr-defined]
    assert [jobs[job_id].trigger.jitter for job_id in SOURCE_JOBS] == [7, 7]
    assert jobs["source:hub"].trigger.interval == timedelta(seconds=settings.watch.hub.interval)
    assert daemon.stop() is True


def test_a_second_daemon_refuses_to_start_then_takes_over_with_wait(
    acme_hub: HubServer,
    watch_settings: Callable[..., Settings],
    daemons: list[WatchDaemon],
) -> None:
    settings = watch_settings(acme_hub, jitter_s=0, lock_ttl_s=5)
    first, first_events = new_daemon(settings, owner="host-a pid 1111")
    second, second_events = new_daemon(settings, owner="host-b pid 2222")
    daemons.extend([first, second])
    first.start()
    assert wait_until(lambda: releases(first_events), timeout=15)

    with pytest.raises(AlreadyRunning) as refused:
        second.start()
    assert "host-a pid 1111" in str(refused.value)
    assert "--wait" in str(refused.value)
    assert second._scheduler is None

    outcome: list[BaseException | None] = []

    def start_waiting() -> None:
        try:
            second.start(wait_for_lock=True)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=start_waiting, daemon=True)
    waiter.start()
    time.sleep(1.5)  # at least one more refusal while the first one still runs
    assert waiter.is_alive() and second._scheduler is None

    before_takeover = datetime.now(UTC)
    assert first.stop() is True
    stopped_at = time.monotonic()
    waiter.join(timeout=15)
    assert not waiter.is_alive()
    assert outcome == [None]
    assert time.monotonic() - stopped_at < 10
    state = WatchState(settings.store.url)
    holder = state.acquire_lock(LOCK_NAME, "host-a pid 1111", 60)
    assert holder is not None and "host-b pid 2222" in holder

    # The new scheduler polls again at once, and does not publish the known release again.
    assert wait_until(
        lambda: (state.source("hub").last_ok_at or before_takeover) > before_takeover, timeout=15
    )
    assert second.stop() is True
    assert len(releases(first_events)) == 1
    assert releases(second_events) == []
    assert state.acquire_lock(LOCK_NAME, "host-c pid 3333", 60) is None


def test_a_failing_hub_does_not_stop_the_feeds(
    acme_hub: HubServer,
    feeds: FeedServer,
    blog: FeedWatch,
    watch_settings: Callable[..., Settings],
    daemons: list[WatchDaemon],
) -> None:
    # huggingface_hub retries a 500 five times (1+2+4+8+8 s) before the listing fails: the Hub
    # job stays busy for ~23 s, and the feed job must deliver meanwhile.
    acme_hub.fail_next("/api/models?author=acme", 500, count=100)
    settings = watch_settings(acme_hub, feeds=(blog,), jitter_s=0, lock_ttl_s=5)
    daemon, collected = new_daemon(settings)
    daemons.append(daemon)
    daemon.start()
    state = WatchState(settings.store.url)

    assert wait_until(lambda: len(announcements(collected)) == 2, timeout=15), collected.events
    hub_meanwhile = state.source("hub")
    assert hub_meanwhile.failures == 0 and hub_meanwhile.last_ok_at is None  # still retrying
    assert any("/api/models?author=acme" in path for _, path in acme_hub.requests)
    assert state.source("feed:acme-blog").last_ok_at is not None

    assert daemon.stop(grace_s=45) is True  # waits for the Hub job to give up
    hub = state.source("hub")
    assert hub.failures == 1 and hub.first_poll
    assert hub.last_error is not None and "500" in hub.last_error
    assert hub.not_before is not None
    assert hub.not_before > datetime.now(UTC) + timedelta(seconds=30)  # backing off
    assert sorted(announcements(collected)) == ["Acme at NeurIPS", "Acme safety report"]
    assert releases(collected) == []
    assert state.counts() == {"announcement": 2}
    assert state.acquire_lock(LOCK_NAME, "other-host pid 1", 60) is None


# ---------------------------------------------------------------------- `supersede poll` daemon


class PollProcess:
    """``supersede poll`` (no --once; or another ``command``, such as ``run``) in a subprocess;
    stdout and stderr go to files."""

    def __init__(self, config: Path, name: str, *args: str, command: str = "poll") -> None:
        folder = config.parent
        self.out_path = folder / f"{name}.stdout"
        self.err_path = folder / f"{name}.stderr"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERSEDE_", "HF_"))}
        env.pop("HUGGING_FACE_HUB_TOKEN", None)
        env.update({"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(folder / "hf-home")})
        self._files: list[IO[bytes]] = [self.out_path.open("wb"), self.err_path.open("wb")]
        argv = [sys.executable, "-m", "supersede.cli", command, "--config", str(config), *args]
        self.process = subprocess.Popen(
            argv, cwd=folder, env=env, stdout=self._files[0], stderr=self._files[1]
        )
        self.pid = self.process.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def signal_and_wait(self, signum: int, timeout: float = 20) -> int:
        """Send ``signum``; the exit code (fails the test if it takes longer than ``timeout``)."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within {timeout} s of {signum!r}; stderr:\n{self.stderr}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for file in self._files:
            file.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., PollProcess]]:
    """Start ``supersede poll`` processes; any still running at the end is killed."""
    started: list[PollProcess] = []

    def start(config: Path, name: str, *args: str, command: str = "poll") -> PollProcess:
        process = PollProcess(config, name, *args, command=command)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.close()


@pytest.fixture
def poll_config(tmp_path: Path, acme_hub: HubServer) -> tuple[Path, WatchState]:
    """A config file for the local Hub and a SQLite store (tables created up front)."""
    watch = {
        "hub": {"authors": ["acme"]},
        "jitter_s": 0,
        "read_timeout_s": 1,
        "connect_timeout_s": 1,
        "lock_ttl_s": 5,
    }
    config = write_settings(tmp_path, endpoint=acme_hub, watch=watch)
    return config, WatchState(f"sqlite:///{tmp_path / 'store.db'}")


def listing_requests(hub: HubServer) -> int:
    return sum(1 for _, path in list(hub.requests) if path.startswith("/api/models?"))


def released(state: WatchState) -> bool:
    return state.counts().get(RELEASED, 0) >= 1


def release_lines(output: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in output.splitlines() if line.strip()]
    return [e for e in events if e["kind"] == "model_released" and e["repo_id"] == REPO_ID]


def test_sigterm_during_a_hung_poll_exits_cleanly_and_frees_the_lease(
    acme_hub: HubServer,
    poll_config: tuple[Path, WatchState],
    spawn: Callable[..., PollProcess],
) -> None:
    config, state = poll_config
    acme_hub.hang_next("/api/models", 30, count=100)
    daemon = spawn(config, "hung")
    assert wait_until(lambda: listing_requests(acme_hub) >= 1, timeout=30), daemon.stderr
    assert daemon.process.poll() is None
    assert daemon.signal_and_wait(signal.SIGTERM, timeout=20) == 0
    assert "SIGTERM received" in daemon.stderr
    # Still in the listing's timeouts and retries after the grace time: abandoned, exit 0.
    assert "stopped (" in daemon.stderr and "abandoned" in daemon.stderr
    assert state.acquire_lock(LOCK_NAME, "x", 60) is None
    assert state.counts() == {}  # the hung listing recorded nothing


def test_a_second_daemon_on_the_same_store_exits_naming_the_first(
    poll_config: tuple[Path, WatchState],
    spawn: Callable[..., PollProcess],
) -> None:
    config, state = poll_config
    first = spawn(config, "first")
    assert wait_until(lambda: released(state), timeout=30), first.stderr
    second = spawn(config, "second")
    try:
        assert second.process.wait(timeout=30) == 2
    except subprocess.TimeoutExpired:
        pytest.fail(f"the second daemon kept running; stderr:\n{second.stderr}")
    assert f"pid {first.pid}" in second.stderr
    assert "--wait" in second.stderr
    assert first.process.poll() is None  # the first one is untouched
    assert first.signal_and_wait(signal.SIGTERM) == 0
    assert state.counts()[RELEASED] == 1


def test_a_release_is_printed_once_across_restarts(
    acme_hub: HubServer,
    poll_config: tuple[Path, WatchState],
    spawn: Callable[..., PollProcess],
) -> None:
    config, state = poll_config
    first = spawn(config, "run1", "--json")
    assert wait_until(lambda: release_lines(first.stdout), timeout=30), first.stderr
    assert first.signal_and_wait(signal.SIGTERM) == 0

    before = listing_requests(acme_hub)
    restarted_at = datetime.now(UTC)
    second = spawn(config, "run2", "--json")
    assert wait_until(lambda: listing_requests(acme_hub) > before, timeout=30), second.stderr
    assert wait_until(
        lambda: (state.source("hub").last_ok_at or restarted_at) > restarted_at, timeout=15
    ), second.stderr
    time.sleep(0.5)  # the pass has flushed its outbox; give a duplicate a chance to show
    assert second.signal_and_wait(signal.SIGTERM) == 0

    assert len(release_lines(first.stdout)) == 1
    assert release_lines(second.stdout) == []
    assert state.counts()[RELEASED] == 1
    assert state.unpublished() == []


def test_sigint_stops_like_sigterm(
    poll_config: tuple[Path, WatchState],
    spawn: Callable[..., PollProcess],
) -> None:
    config, state = poll_config
    daemon = spawn(config, "interrupted")
    assert wait_until(lambda: released(state), timeout=30), daemon.stderr
    assert daemon.signal_and_wait(signal.SIGINT, timeout=20) == 0
    assert "SIGINT received" in daemon.stderr
    assert "stopped" in daemon.stderr
    assert "Traceback" not in daemon.stderr
    assert state.acquire_lock(LOCK_NAME, "x", 60) is None


# ---------------------------------------------------------------------- a holder that died


HOST = socket.gethostname()


def dead_pid() -> int:
    """The PID of a process that ran, exited and was reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def lease_owner(state: WatchState) -> str | None:
    with Session(state.engine) as session:
        row = session.get(LockRow, LOCK_NAME)
        return row.owner if row is not None else None


def test_a_holder_is_dead_only_on_this_host_with_no_such_process() -> None:
    gone = dead_pid()
    assert holder_is_dead(f"{HOST} pid {gone}")
    assert holder_is_dead(f"{HOST} pid {gone} task 3f2a-77")  # a job lease's owner
    assert not holder_is_dead(f"other-host pid {gone}")  # cannot be seen from here
    assert not holder_is_dead(f"{HOST} pid {os.getpid()}")
    assert not holder_is_dead(f"{HOST} pid 1")  # init: alive
    for odd in ("someone else", f"{HOST} pid", f"{HOST} pid x", f"{HOST} pid {gone} extra"):
        assert not holder_is_dead(odd), odd
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not holder_is_dead(f"{HOST} pid {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_killed_but_unreaped_holder_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:  # not waited for: it stays a zombie, which can never renew a lease
        zombie = psutil.STATUS_ZOMBIE
        assert wait_until(lambda: psutil.Process(child.pid).status() == zombie, timeout=20)
        assert holder_is_dead(f"{HOST} pid {child.pid}")
    finally:
        child.wait()


def test_the_lease_of_a_dead_holder_on_this_host_is_taken_at_once(tmp_path: Path) -> None:
    state = WatchState(f"sqlite:///{tmp_path / 'store.db'}")
    dead = f"{HOST} pid {dead_pid()}"
    assert state.acquire_lock(LOCK_NAME, dead, 60) is None
    assert state.acquire_lock(LOCK_NAME, f"{HOST} pid {os.getpid()}", 60) is None
    assert lease_owner(state) == f"{HOST} pid {os.getpid()}"


def test_the_lease_of_a_live_holder_or_another_host_is_not_taken(tmp_path: Path) -> None:
    state = WatchState(f"sqlite:///{tmp_path / 'store.db'}")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for holder in (f"{HOST} pid {sleeper.pid}", f"other-host pid {dead_pid()}"):
            state.release_lock(LOCK_NAME, lease_owner(state) or "")
            assert state.acquire_lock(LOCK_NAME, holder, 60) is None
            refused = state.acquire_lock(LOCK_NAME, f"{HOST} pid {os.getpid()}", 60)
            assert refused is not None and holder in refused
            assert lease_owner(state) == holder
    finally:
        sleeper.kill()
        sleeper.wait()


def test_restarts_racing_for_a_dead_holder_take_it_once(tmp_path: Path) -> None:
    state = WatchState(f"sqlite:///{tmp_path / 'store.db'}")
    dead = f"{HOST} pid {dead_pid()}"
    assert state.acquire_lock(LOCK_NAME, dead, 60) is None
    # Owners of another host: only the dead holder's name is on this one, so each of them
    # sees it dead and tries the conditional takeover.
    owners = [f"restart-{i} pid {i + 1}" for i in range(8)]
    barrier = threading.Barrier(len(owners))
    results: dict[str, str | None] = {}

    def restart(owner: str) -> None:
        barrier.wait(timeout=30)
        results[owner] = state.acquire_lock(LOCK_NAME, owner, 60)

    threads = [threading.Thread(target=restart, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [owner for owner, holder in results.items() if holder is None]
    assert len(results) == len(owners) and len(winners) == 1, results
    assert lease_owner(state) == winners[0]
    assert all(winners[0] in str(h) for o, h in results.items() if o not in winners)


def test_a_taken_webhook_port_stops_the_start_before_any_poll(
    acme_hub: HubServer,
    watch_settings: Callable[..., Settings],
    daemons: list[WatchDaemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPERSEDE_WEBHOOK_SECRET", "whsec-test")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hook = WebhookWatch(enabled=True, port=port)
        settings = watch_settings(acme_hub, webhook=hook, jitter_s=0)
        daemon, _ = new_daemon(settings)
        daemons.append(daemon)
        with pytest.raises(ConfigError) as caught:
            daemon.start()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "watch.webhook.port" in message
    assert "SUPERSEDE_WATCH__WEBHOOK__PORT" in message
    assert daemon._scheduler is None and listing_requests(acme_hub) == 0
    assert lease_owner(daemon.state) is None  # the lease was given back


def test_run_killed_with_sigkill_restarts_at_once(
    tmp_path: Path, acme_hub: HubServer, spawn: Callable[..., PollProcess]
) -> None:
    config = write_settings(
        tmp_path,
        endpoint=acme_hub,
        watch={"hub": {"authors": ["acme"]}, "jitter_s": 0, "lock_ttl_s": 60},
        notify={"console_dir": str(tmp_path / "notifications")},
        observability={"metrics_port": 0},
    )
    state = WatchState(f"sqlite:///{tmp_path / 'store.db'}")

    first = spawn(config, "run1", command="run")
    first_owner = f"{HOST} pid {first.pid}"
    assert wait_until(lambda: lease_owner(state) == first_owner, timeout=60), first.stderr
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    assert lease_owner(state) == first_owner  # left behind, its heartbeat still fresh

    second = spawn(config, "run2", command="run")
    second_owner = f"{HOST} pid {second.pid}"
    # Well inside the 60 s lease: the dead holder's lease is not waited out.
    assert wait_until(lambda: lease_owner(state) == second_owner, timeout=30), second.stderr
    assert second.process.poll() is None, second.stderr
    assert f"took over the scheduler lease of {first_owner}" in second.stderr
    assert second.signal_and_wait(signal.SIGTERM) == 0
