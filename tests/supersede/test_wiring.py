"""The running system, built once for ``supersede run`` and the demo: what it holds, and its
metrics endpoint's start and stop."""

from __future__ import annotations

import socket
import urllib.error
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


SLACK_SECRET = "wiring-signing-secret"


def _signed_status(url: str) -> tuple[int, str]:
    """``/supersede status`` as Slack sends it, signed with the test secret."""
    import time
    from urllib.parse import urlencode

    import httpx
    from slack_sdk.signature import SignatureVerifier

    fields = {
        "team_id": "T0TEAM",
        "user_id": "U0LEAD",
        "user_name": "alice",
        "trigger_id": "1.1",
        "command": "/supersede",
        "text": "status",
        "response_url": "http://127.0.0.1:9/x",
    }
    body = urlencode(fields)
    ts = str(int(time.time()))
    signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=ts, body=body)
    headers = {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    answer = httpx.post(url, content=body, headers=headers, timeout=10)
    return answer.status_code, answer.json().get("text", "") if answer.status_code == 200 else ""


@pytest.mark.parametrize("webhook", [True, False])
def test_supersede_run_answers_slack_at_the_webhooks_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: bool
) -> None:
    """With the Hub webhook on, Slack's path is one more route of its listener; with it off,
    the daemon listens for Slack alone at the webhook's host and port."""
    from tests.support.slack_server import SlackServer

    port = free_port()
    with SlackServer(token="xoxb-wiring") as slack:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wiring")
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        monkeypatch.setenv("SLACK_SIGNING_SECRET", SLACK_SECRET)
        monkeypatch.setenv("HOOK_SECRET", "hub-secret")
        settings = build_settings(
            tmp_path,
            watch={"webhook": {"enabled": webhook, "port": port, "secret_env": "HOOK_SECRET"}},
            notify={"slack": {"channel": "C0LEADS", "operators": ["U0LEAD"]}},
        )
        system = build_system(settings)
        assert system.slack is not None
        system.start()
        try:
            status, text = _signed_status(f"http://127.0.0.1:{port}/slack/events")
            assert (status, text) == (200, "No jobs yet.")
            health = f"http://127.0.0.1:{port}/healthz"
            if webhook:  # the Hub webhook's listener, still answering its own routes
                assert urllib.request.urlopen(health, timeout=10).status == 200
            else:
                with pytest.raises(urllib.error.HTTPError) as missing:
                    urllib.request.urlopen(health, timeout=10)
                assert missing.value.code == 404
        finally:
            assert system.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/slack/events", timeout=2)
