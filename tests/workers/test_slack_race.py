"""The shipped shape of notifying: two fine-tunes, a default Celery worker with two pool
processes, Slack configured. Both verdicts of a release finish together, so their two
``supersede.notify`` tasks run at once in two processes, and the first post meets a 429. No model
runs: the finished jobs are written to the store as the verdict tasks would leave them.

Each release must get exactly one parent message with one reply per fine-tune under it; the race
is repeated for many releases in a row, since one lucky pass proves nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.clock import now
from core.constants import DEFAULT_QUEUE, TASK_NOTIFY
from tests.support.hub_server import HubServer
from tests.support.slack_server import SlackServer
from tests.workers.conftest import SHIPPED_TASK, CeleryWorker, Client, wait_for
from tests.workers.test_slack import REPORT
from watcher.events import ModelReleased
from workers.jobs import job_key
from workers.notify.outbox import delivery_key

pytestmark = pytest.mark.slow

TOKEN = "xoxb-race-token"
CHANNEL = "C0RACE"
FINETUNES = ("reviews", "triage")
#: Releases raced in a row, each its own parent message.
RUNS = 20


def finished_release(client: Client, run: int) -> tuple[str, list[str]]:
    """A release whose benchmark and both verdicts are done (as the pipeline leaves them);
    returns the benchmark's key and the verdicts' keys."""
    event = ModelReleased(
        source="hub", detected_at=datetime.now(UTC), repo_id=f"acme/Race-{run}",
        revision=f"{run:040x}", params=1000,
    ).model_dump(mode="json")  # fmt: skip
    candidate = f"acme/Race-{run}@{run:040x}"
    bench = job_key("benchmark", candidate, "race")
    client.jobs.add(key=bench, kind="benchmark", candidate=candidate, queue="gpu-24g",
                    state="done", payload={"event": event, "finetunes": list(FINETUNES)},
                    result={}, finished_at=now())  # fmt: skip
    verdicts = []
    for name in FINETUNES:
        key = job_key("verdict", bench, name)
        result = {**REPORT, "finetune": name, "candidate": f"acme/Race-{run}"}
        client.jobs.add(key=key, kind="verdict", candidate=candidate, finetune=name,
                        parent=bench, queue=DEFAULT_QUEUE, state="done",
                        payload={"event": event}, result=result, finished_at=now())  # fmt: skip
        verdicts.append(key)
    return bench, verdicts


def marker(message: dict[str, Any]) -> str:
    return str(((message.get("metadata") or {}).get("event_payload") or {}).get("key", ""))


def test_two_verdicts_notified_at_once_make_one_release_message(
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: Callable[..., CeleryWorker],
    client: Callable[[Path], Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SlackServer(token=TOKEN) as slack:
        # The worker's environment is the test process's (see process_env).
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        finetunes = [{"name": name, "task": str(SHIPPED_TASK), "base": "acme/base",
                      "adapter": "acme/lora"} for name in FINETUNES]  # fmt: skip
        config = write_config(hub, broker_url=redis_url, finetunes=finetunes,
                              notify={"slack": {"channel": CHANNEL}})  # fmt: skip
        worker = start_worker(config, DEFAULT_QUEUE, concurrency=2)
        jobs = client(config)

        for run in range(RUNS):
            bench, verdicts = finished_release(jobs, run)
            slack.fail_next("chat.postMessage", 429, {"Retry-After": "1"})
            for key in verdicts:
                jobs.app.send_task(TASK_NOTIFY, args=[key], queue=DEFAULT_QUEUE)

            def notified(keys: list[str] = verdicts) -> bool:
                if worker.process is not None and worker.process.poll() is not None:
                    pytest.fail(f"worker died:\n{worker.tail()}")
                return all(jobs.job(key).state == "notified" for key in keys)

            wait_for(notified, 30, f"run {run}: both verdicts notified", every_s=0.05)
            release = delivery_key("release", bench, CHANNEL)
            parents = [m for m in slack.posts(CHANNEL) if marker(m) == release]
            assert len(parents) == 1, f"run {run}: {len(parents)} release messages"
            replies = [marker(m) for m in slack.replies(parents[0]["ts"])]
            assert sorted(replies) == sorted(delivery_key("job", k, CHANNEL) for k in verdicts), (
                f"run {run}: replies {replies}"
            )

        posts = slack.calls("chat.postMessage")
        assert sum(c.status == 429 for c in posts) == RUNS  # each run met its 429
        assert len(slack.posts(CHANNEL)) == RUNS
        assert len(posts) == 4 * RUNS  # a 429, the parent and two replies; nothing twice
        assert worker.succeeded(TASK_NOTIFY) == ["True"] * (2 * RUNS)
        assert slack.errors == []
