"""The only seam from the watcher to what consumes its events (the job queue, a terminal).

Events are recorded in the store before they are published and marked after (an outbox), so a
publisher sees every event at least once; consumers dedupe on the event's repo and revision.
"""

from __future__ import annotations

import json
import sys
from typing import Protocol, TextIO

from watcher.events import Announcement, ModelReleased


class Publisher(Protocol):
    """Takes one event; raising leaves it in the outbox for the next flush."""

    def publish(self, event: ModelReleased | Announcement) -> None: ...


class JsonLines:
    """One JSON object per event per line (``supersede poll --json``)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def publish(self, event: ModelReleased | Announcement) -> None:
        self.stream.write(json.dumps(event.model_dump(mode="json", exclude_none=True)) + "\n")
        self.stream.flush()


class Collect:
    """Keeps what it is given (for callers that report the events themselves)."""

    def __init__(self) -> None:
        self.events: list[ModelReleased | Announcement] = []

    def publish(self, event: ModelReleased | Announcement) -> None:
        self.events.append(event)
