"""The always-on part of the watcher: APScheduler jobs, the sources' endpoints, the store lease.

One job per channel of every registered source, with explicit ids (``source:hub``,
``source:feed:<name>``), ``coalesce`` (a backlog of missed runs becomes one), ``max_instances=1``
(a slow poll is never overlapped by the next), a misfire grace time and jitter (several daemons,
or a restart, do not poll in lockstep); the sources' listeners (the Hub webhook) are served
alongside.
Only one scheduler may run per store: it holds a lease row renewed by a heartbeat job; a second
one waits for it (``wait=True``) or stops with a message naming the holder.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from config.settings import Settings
from core.errors import AlreadyRunning
from core.lease import lock_owner
from watcher.discovery import Discovery
from watcher.sources.base import Listener
from watcher.state import WatchState

log = logging.getLogger(__name__)

LOCK_NAME = "scheduler"
FLUSH_EVERY_S = 30.0


class WatchDaemon:
    """Scheduler + the sources' listeners over one :class:`Discovery`. ``start``, then ``stop``."""

    def __init__(
        self,
        settings: Settings,
        state: WatchState,
        discovery: Discovery,
        extra_jobs: tuple[tuple[str, Callable[[], object], float], ...] = (),
    ) -> None:
        """``extra_jobs``: ``(id, function, every_s)`` run on the same scheduler (the job
        reconciler of ``supersede run``), first one ``every_s`` after start."""
        self.extra_jobs = extra_jobs
        self.settings = settings
        self.watch = settings.watch
        self.state = state
        self.discovery = discovery
        self.owner = lock_owner()
        self.stopped = threading.Event()
        #: The listeners serving, by source name (``listeners["webhook"].url``).
        self.listeners: dict[str, Listener] = {}
        self._scheduler: object | None = None
        self._running = 0
        self._idle = threading.Condition()

    # ------------------------------------------------------------------ lease

    def acquire(self, *, wait: bool) -> None:
        """Take the store's scheduler lease, waiting for the holder when ``wait``."""
        announced = False
        while True:
            holder = self.state.acquire_lock(LOCK_NAME, self.owner, self.watch.lock_ttl_s)
            if holder is None:
                return
            if not wait:
                raise AlreadyRunning(
                    f"another scheduler is running against this store: {holder}. Stop it, or "
                    "start this one with --wait to take over when it stops."
                )
            if not announced:
                log.warning("waiting for the scheduler lease held by %s", holder)
                announced = True
            if self.stopped.wait(min(5.0, self.watch.lock_ttl_s / 4)):
                raise AlreadyRunning("stopped while waiting for the scheduler lease")

    def _heartbeat(self) -> None:
        holder = self.state.acquire_lock(LOCK_NAME, self.owner, self.watch.lock_ttl_s)
        if holder is not None:
            log.error("lost the scheduler lease to %s; stopping", holder)
            self.stopped.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, wait_for_lock: bool = False) -> None:
        """Take the lease, start the listeners, publish any leftover outbox, start the jobs.

        Raises :class:`ConfigError` (the webhook's secret unset, its port taken) before the first
        poll, and :class:`AlreadyRunning` when another scheduler holds the lease.
        """
        listeners = self.discovery.listeners()  # config errors before anything starts
        self.acquire(wait=wait_for_lock)
        try:
            # Bound before the first poll: a port in use stops the start, not a running daemon.
            for name, listener in listeners.items():
                listener.start()
                self.listeners[name] = listener
                log.info("%s endpoint listening on %s", name, listener.url)
            self._start_jobs()
        except BaseException:
            self.stop(grace_s=0)
            raise

    def _start_jobs(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        self.discovery.flush()
        channels = self.discovery.channels()
        # One thread per channel, the heartbeat, the flush and each extra job: none waits.
        threads = len(channels) + 2 + len(self.extra_jobs)
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=threads)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(self.watch.misfire_grace_s),
            },
            timezone=UTC,
        )
        first = datetime.now(UTC)
        jitter = int(self.watch.jitter_s) or None
        for channel in channels:
            scheduler.add_job(
                self._guard(functools.partial(self.discovery.run, channel)),
                IntervalTrigger(seconds=channel.every_s, jitter=jitter),
                id=f"source:{channel.name}",
                name=channel.label,
                next_run_time=first,
            )
        scheduler.add_job(
            self._guard(self._heartbeat),
            IntervalTrigger(seconds=self.watch.lock_ttl_s / 3),
            id="lease:heartbeat",
            name="renew the scheduler lease",
        )
        scheduler.add_job(
            self._guard(self.discovery.flush),
            IntervalTrigger(seconds=FLUSH_EVERY_S),
            id="outbox:flush",
            name="publish the outbox",
        )
        for job_id, function, every_s in self.extra_jobs:
            scheduler.add_job(
                self._guard(function), IntervalTrigger(seconds=every_s), id=job_id, name=job_id
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info("watching: %s", ", ".join(job.id for job in scheduler.get_jobs()))

    def stop(self, grace_s: float = 10.0) -> bool:
        """Stop scheduling, wait up to ``grace_s`` for running polls, release the lease.

        Returns False when a poll was still running after the grace time (it records nothing
        half-way: each release is one transaction, so abandoning it loses nothing).
        """
        self.stopped.set()
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=False)  # type: ignore[attr-defined]
        listeners, self.listeners = self.listeners, {}
        for listener in listeners.values():
            listener.stop()
        deadline = time.monotonic() + grace_s
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            clean = self._running == 0
        try:
            self.state.release_lock(LOCK_NAME, self.owner)
        except Exception as exc:  # the store is down: the lease expires by itself
            log.warning("could not release the scheduler lease: %s", exc)
        return clean

    def _guard(self, job: Callable[[], object]) -> Callable[[], None]:
        """Run ``job`` unless stopping; count it as running; log, never raise, on a bug."""

        def run() -> None:
            if self.stopped.is_set():
                return
            with self._idle:
                self._running += 1
            try:
                job()
            except Exception:
                log.exception("job failed; it runs again at its next time")
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

        return run
