"""The one pipeline builder every process uses: the store, notifier and sends of its app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.constants import TASK_VERDICT
from tests.support.settings import build_settings
from workers.app import make_app
from workers.notify.console import ConsoleNotifier
from workers.wiring import build_pipeline


def test_the_pipeline_sends_through_its_app_to_the_apps_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    settings = build_settings(tmp_path, notify={"console_dir": str(tmp_path / "notifications")})
    app = make_app(settings)
    sent: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args, queue: sent.append((name, args, queue))
    )

    pipeline = build_pipeline(app)

    assert pipeline.settings is settings
    assert pipeline.jobs.engine.url.database == str(tmp_path / "store.db")
    assert isinstance(pipeline.notifier, ConsoleNotifier)
    assert pipeline.send(TASK_VERDICT, "job-1", "default") is True
    assert sent == [(TASK_VERDICT, ["job-1"], "default")]
    app.close()
