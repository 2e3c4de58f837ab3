"""The running system, built once: ``supersede run`` and ``supersede demo`` start the same one.

:func:`build_system` composes the watcher's daemon (scheduler, webhook endpoint, store lease),
the pipeline its events are planned on (with the job reconciler on the same scheduler), the
metrics endpoint and, on the embedded default (no ``workers.broker_url``), the worker in a thread
of this process. On Redis the workers are separate ``celery -A workers worker`` processes, which
build the same pipeline (:func:`workers.wiring.build_pipeline`). ``supersede poll`` runs the
watcher alone (:func:`build_watcher`); :func:`run_until_signal` runs either until SIGTERM/SIGINT.

Start-up checks (:func:`workers.preflight.preflight`) stay with the callers: the demo runs them
before it builds its model zoo, a minute before the system is built.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from config.settings import Settings
    from watcher.publish import Publisher
    from watcher.scheduler import WatchDaemon
    from workers.embedded import EmbeddedWorker
    from workers.notify.interact import SlackApp
    from workers.pipeline import Pipeline

log = logging.getLogger(__name__)

Warn = Callable[[str], None]


@dataclass
class System:
    """The watcher's daemon, and what runs beside it in this process. ``start``, then ``stop``."""

    settings: Settings
    daemon: WatchDaemon
    #: Where the watcher's events are planned; None when the watcher runs alone.
    pipeline: Pipeline | None = None
    #: The embedded default's worker; None on Redis (the workers are separate processes).
    worker: EmbeddedWorker | None = None
    #: Serve the Prometheus endpoint the settings configure (``supersede run`` does, ``poll``
    #: does not).
    metrics: bool = False
    #: The Slack app (buttons, ``/supersede``), when a signing secret or an app token is set.
    slack: SlackApp | None = None
    _server: Any = field(default=None, init=False, repr=False)
    _slack_server: Any = field(default=None, init=False, repr=False)

    def start(self, *, wait: bool = False, warn: Warn = log.warning) -> None:
        """Serve the metrics endpoint (when configured), start the daemon (waiting for another
        scheduler's lease when ``wait``), then the embedded worker. A metrics port that is taken
        is reported through ``warn`` and the system runs without it."""
        config = self.settings.observability
        if self.metrics and config.metrics_port:
            from supersede.observability import serve

            try:
                self._server = serve(
                    self.settings.store.url, config.metrics_host, config.metrics_port
                )
            except OSError as exc:
                warn(f"metrics endpoint not started: {exc}")
        self.daemon.start(wait_for_lock=wait)
        try:
            self._start_slack()
        except BaseException:
            self.stop()
            raise
        if self.worker is not None:
            self.worker.start()

    def _start_slack(self) -> None:
        """Socket Mode, or ``events_path`` next to the Hub webhook (on a listener of its own at
        the webhook's host and port when the webhook is off)."""
        if self.slack is None:
            return
        from config.settings import slack_app_mode

        if slack_app_mode(self.settings) == "socket":
            self.slack.connect()
            return
        hook = self.daemon.listeners.get("webhook")
        router = getattr(hook, "router", None)
        if hook is not None and router is not None:
            self.slack.mount(router)
            log.info("slack endpoint at %s on the webhook's listener (%s)",
                     self.settings.notify.slack.events_path, hook.url)  # fmt: skip
            return
        from core.asgi import Limits, Router, Server
        from core.errors import ConfigError

        webhook = self.settings.watch.webhook
        router = Router("slack")
        self.slack.mount(router)
        limits = Limits(webhook.request_timeout_s, webhook.max_connections)
        try:
            server = Server(router, webhook.host, webhook.port, name="slack", limits=limits)
        except OSError as exc:
            raise ConfigError(
                f"the Slack endpoint cannot listen on {webhook.host}:{webhook.port} "
                f"({exc.strerror or exc}): set watch.webhook.port to a free one"
            ) from None
        server.start()
        self._slack_server = server
        log.info("slack endpoint listening on http://%s:%d%s", webhook.host, server.port,
                 self.settings.notify.slack.events_path)  # fmt: skip

    def stop(self) -> bool:
        """Stop the daemon, then the worker (after the job in hand); False when in-flight work
        was abandoned because it did not finish in time."""
        clean = self.daemon.stop()
        if self.worker is not None:
            clean = self.worker.stop() and clean
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.slack is not None:
            self.slack.close()
        if self._slack_server is not None:
            self._slack_server.stop()
            self._slack_server = None
        return clean


def connect(settings: Settings) -> tuple[Celery, Pipeline]:
    """The Celery app (made the default one) and a pipeline that sends through it; raises
    :class:`core.errors.BrokerUnavailable` when the broker cannot be reached."""
    from workers.app import check_broker, make_app
    from workers.wiring import build_pipeline

    app = make_app(settings)
    app.set_default()
    pipeline = build_pipeline(app)
    check_broker(app)
    return app, pipeline


def build_watcher(
    settings: Settings,
    publisher: Publisher,
    extra_jobs: tuple[tuple[str, Callable[[], object], float], ...] = (),
) -> WatchDaemon:
    """The watcher's daemon over the store, publishing what it finds to ``publisher``."""
    from watcher.discovery import Discovery
    from watcher.scheduler import WatchDaemon
    from watcher.state import WatchState

    state = WatchState(settings.store.url)
    return WatchDaemon(settings, state, Discovery(settings, state, publisher), extra_jobs)


def build_system(settings: Settings) -> System:
    """Everything ``supersede run`` runs, not yet started (the broker is checked first)."""
    from config.settings import slack_app_mode
    from workers.app import queue_names
    from workers.publish import QueuePublisher

    app, pipeline = connect(settings)
    reconcile = ("jobs:reconcile", pipeline.reconcile, settings.workers.reconcile_every)
    daemon = build_watcher(settings, QueuePublisher(pipeline), (reconcile,))
    worker = None
    if settings.workers.broker_url is None:
        from workers.embedded import EmbeddedWorker

        worker = EmbeddedWorker(app, queue_names(settings))
    slack = None
    if slack_app_mode(settings) is not None:
        from workers.notify.interact import SlackApp

        slack = SlackApp(settings, pipeline)  # checks the bot token before anything starts
    return System(settings, daemon, pipeline, worker, metrics=True, slack=slack)


def run_until_signal(system: System, *, wait: bool, warn: Warn = log.warning) -> None:
    """Start ``system`` and run it until SIGTERM/SIGINT (or until the daemon stops itself: its
    lease lost), then stop it."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()
        # Also ends a wait for another scheduler's lease.
        system.daemon.stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    system.start(wait=wait, warn=warn)
    try:
        while not stop.wait(0.5) and not system.daemon.stopped.is_set():
            pass
    finally:
        clean = system.stop()
        log.info("stopped%s", "" if clean else " (in-flight work was abandoned)")
        if not clean:
            # A poll blocked in a network call would hold the interpreter's exit; nothing is
            # half-recorded (each release and each job step is one transaction), so leave now.
            logging.shutdown()
            sys.stdout.flush()
            os._exit(0)
