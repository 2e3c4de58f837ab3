"""Where finished jobs are told to people. Slack and the console notifier build on this."""

from __future__ import annotations

import logging
from typing import Protocol

from workers.jobs import Job

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """Delivers one finished job (verdict, failure, skip or announcement)."""

    def send(self, job: Job) -> None: ...


def headline(job: Job) -> str:
    """One line a phone notification can show."""
    if job.kind == "announcement":
        event = job.payload.get("event", {})
        return f"Announcement: {event.get('title')} {event.get('link') or ''}".strip()
    if job.state == "done" and job.result:
        result = job.result
        return (
            f"{result.get('verdict')}: {result.get('candidate')} vs fine-tune "
            f"{result.get('finetune')} on {result.get('task')}: {result.get('summary')}"
        )
    what = "Skipped" if job.state == "skipped" else "Benchmark failed"
    return f"{what}: {job.candidate} for fine-tune {job.finetune}: {job.reason}"


class LogNotifier:
    """Writes the headline to the log (the default until a Slack token is configured)."""

    def send(self, job: Job) -> None:
        log.info("notify: %s", headline(job))
