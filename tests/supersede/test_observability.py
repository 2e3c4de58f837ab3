"""Structured logs with secrets redacted, and the Prometheus endpoint over the store."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.clock import now
from supersede.cli.console import setup_logging
from supersede.observability import serve
from tests.support.settings import write_settings
from watcher.events import ModelReleased
from watcher.state import WatchState
from workers.jobs import JobStore
from workers.notify.outbox import Outbox

SECRET = "xoxb-very-secret-token"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_secrets_redacted(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    setup_logging(log_format="json", secrets=[SECRET])
    log = logging.getLogger("supersede.test")
    log.info("posting with %s to %s", SECRET, "C0123")
    try:
        raise RuntimeError(f"refused token {SECRET}")
    except RuntimeError:
        log.exception("delivery failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["level"] for line in lines] == ["info", "error"]
    assert lines[0]["message"] == "posting with *** to C0123"
    assert lines[0]["logger"] == "supersede.test" and lines[0]["time"].endswith("Z")
    assert "refused token ***" in lines[1]["exception"]
    assert SECRET not in json.dumps(lines)


def test_text_logs_on_request(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    setup_logging(log_format="text")
    logging.getLogger("x").warning("plain %d", 1)
    assert capsys.readouterr().err.rstrip().endswith("WARNING x: plain 1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_come_from_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    state = WatchState(url)
    state.source_ok("hub")
    state.source_failed("feed:acme", "503", 60)
    event = ModelReleased(source="hub", detected_at=now(), repo_id="acme/A", revision="a" * 40)
    state.record_repo("hub", "acme/A", "a" * 40, event)
    jobs = JobStore(url)
    jobs.add(key="b1", kind="benchmark", candidate="acme/A@a", queue="gpu-24g", state="queued",
             payload={})  # fmt: skip
    jobs.claim("b1", "w", 60, 3)
    jobs.finish("b1", "w", {})
    jobs.add(key="v1", kind="verdict", candidate="acme/A@a", queue="default", state="waiting",
             payload={})  # fmt: skip
    outbox = Outbox(url)
    outbox.record("d1", "v1", "C1", None, "h")
    outbox.attempt("d1")
    outbox.attempt("d1")
    outbox.sent("d1", "1.000001")
    server = serve(url, "127.0.0.1", free_port())
    try:
        port = server.port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        server.stop()
    body = text.decode()
    for line in (
        'supersede_source_polls_total{source="hub"} 1.0',
        'supersede_source_errors_total{source="feed:acme"} 1.0',
        'supersede_source_backing_off{source="feed:acme"} 1.0',
        'supersede_events_total{kind="model_released"} 1.0',
        'supersede_jobs{kind="benchmark",state="done"} 1.0',
        'supersede_jobs{kind="verdict",state="waiting"} 1.0',
        'supersede_job_attempts_total{kind="benchmark"} 1.0',
        "supersede_benchmark_duration_seconds_count 1.0",
        'supersede_slack_deliveries{state="sent"} 1.0',
        "supersede_slack_retries_total 1.0",
    ):
        assert line in body, line


def test_worker_log_handlers_redact_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    import io

    from workers.tasks import redact_worker_logs

    config = write_settings(tmp_path, name="c.yaml")
    monkeypatch.setenv("SUPERSEDE_CONFIG", str(config))
    monkeypatch.setenv("HF_TOKEN", "hf_worker_secret_value")
    stream = io.StringIO()
    logger = logging.getLogger("celery.test-worker")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        redact_worker_logs(logger=logger)
        redact_worker_logs(logger=logger)  # Celery may call it twice: one filter
        assert len(handler.filters) == 1
        logger.error("download failed with token %s", "hf_worker_secret_value")
    finally:
        logger.removeHandler(handler)
    assert "hf_worker_secret_value" not in stream.getvalue()
    assert "download failed with token ***" in stream.getvalue()
