"""The watcher's events become jobs: the publisher ``supersede run`` gives the watcher."""

from __future__ import annotations

from watcher.events import Announcement, ModelReleased
from workers.pipeline import Pipeline


class QueuePublisher:
    """Plans an event's jobs and sends them. Raising (broker down) keeps the event in the
    watcher's outbox; planning again later is harmless (job keys are deterministic)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def publish(self, event: ModelReleased | Announcement) -> None:
        self.pipeline.plan(event)
