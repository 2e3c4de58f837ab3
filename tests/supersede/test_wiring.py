"""The running system, built once for ``supersede run`` and the demo: what it holds, and its
metrics endpoint's start and stop."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from core.constants import DEFAULT_QUEUE
from supersede.wiring import System, build_system
from tests.support.redis_server import free_port
from tests.support.settings import build_settings


class FakeDaemon:
    def __init__(self) -> None:
        self.started: list[bool] = []
        self.stopped = False

    def start(self, *, wait_for_lock: bool = False) -> None:
        self.started.append(wait_for_lock)

    def stop(self) -> bool:
        self.stopped = True
        return True


def test_the_embedded_default_holds_a_worker_for_every_queue(tmp_path: Path) -> None:
    settings = build_settings(tmp_path, workers={"reconcile_every": 7})

    system = build_system(settings)

    assert system.pipeline is not None and system.metrics
    assert system.worker is not None
    assert system.worker.queues == [DEFAULT_QUEUE, *sorted(settings.workers.gpu_queues)]
    assert [(name, every) for name, _, every in system.daemon.extra_jobs] == [("jobs:reconcile", 7)]
    assert system.daemon.discovery.publisher.pipeline is system.pipeline


def test_the_metrics_endpoint_runs_with_the_system(tmp_path: Path) -> None:
    port = free_port()
    settings = build_settings(tmp_path, observability={"metrics_port": port})
    daemon = FakeDaemon()
    system = System(settings, daemon, metrics=True)  # type: ignore[arg-type]

    system.start(wait=True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
    assert system.stop() and daemon.started == [True] and daemon.stopped
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_taken_metrics_port_is_reported_and_the_system_still_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = build_settings(
            tmp_path, observability={"metrics_port": port, "metrics_host": "127.0.0.1"}
        )
        daemon = FakeDaemon()
        warned: list[str] = []
        system = System(settings, daemon, metrics=True)  # type: ignore[arg-type]

        system.start(warn=warned.append)

        assert daemon.started == [False]
        assert len(warned) == 1 and warned[0].startswith("metrics endpoint not started:")
        assert system.stop()
