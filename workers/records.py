"""A job as the store keeps it: its table row, the frozen :class:`Job` read from it, and the typed
records it carries (:mod:`workers.jobs` moves it from state to state).

A job's payload holds the event it is about (:class:`watcher.events.ModelReleased` or
:class:`~watcher.events.Announcement`); a finished benchmark job records its
:class:`benchmarks.sides.BenchmarkScores`, a finished verdict job its
:class:`benchmarks.verdict.VerdictReport`. Each is written through its pydantic ``TypeAdapter`` and
read back as the same model (:meth:`Job.event`, :meth:`Job.scores`, :meth:`Job.verdict`): no
reader re-declares one or picks fields out of the JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from benchmarks.sides import BenchmarkScores
from benchmarks.verdict import REPORT_ADAPTER, VerdictReport
from core.clock import now, utc
from core.constants import JobKind, JobState
from core.db import Base
from watcher.events import Announcement, Event, ModelReleased

#: The event a job is about, read back from its payload as the watcher sent it.
_EVENT: TypeAdapter[ModelReleased | Announcement] = TypeAdapter(Event)
#: What a finished job records: a benchmark job its results' keys, a verdict job its verdict.
_RESULT: TypeAdapter[BenchmarkScores | VerdictReport] = TypeAdapter(BenchmarkScores | VerdictReport)


def stored(record: BenchmarkScores | VerdictReport | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON a job records for ``record``: a typed record through its TypeAdapter (the shape
    :meth:`Job.scores` and :meth:`Job.verdict` read back); a mapping is already JSON."""
    if isinstance(record, Mapping):
        return dict(record)
    return dict(_RESULT.dump_python(record, mode="json"))


class JobRow(Base):
    __tablename__ = "jobs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    candidate: Mapped[str] = mapped_column(String(600), index=True)
    finetune: Mapped[str | None] = mapped_column(String(64), nullable=True)
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    queue: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: 1 when the last message sent for this job was refused (broker down): the reconciler
    #: sends it again at its next pass.
    unsent: Mapped[int] = mapped_column(Integer, default=0)
    #: Failed notifications so far, the last one's reason, and when to try again.
    notify_tries: Mapped[int] = mapped_column(Integer, default=0)
    notify_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    notify_due: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Who asked for the last run by hand (``slack:U0123 (name)``, ``cli:user``); None: the
    #: watcher.
    requested_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: Why its notification was not posted (its release's owner was muted), when it was not.
    muted: Mapped[str | None] = mapped_column(String(512), nullable=True)


@dataclass(frozen=True)
class Job:
    """A job as read from the store."""

    key: str
    kind: JobKind
    candidate: str
    finetune: str | None
    parent: str | None
    queue: str
    state: JobState
    attempts: int
    reason: str | None
    payload: dict[str, Any]
    result: dict[str, Any] | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    unsent: bool = False
    notify_tries: int = 0
    notify_error: str | None = None
    notify_due: datetime | None = None
    requested_by: str | None = None
    muted: str | None = None

    @classmethod
    def of(cls, row: JobRow) -> Job:
        return cls(
            key=row.key,
            kind=JobKind(row.kind),
            candidate=row.candidate,
            finetune=row.finetune,
            parent=row.parent,
            queue=row.queue,
            state=JobState(row.state),
            attempts=row.attempts or 0,
            reason=row.reason,
            payload=dict(row.payload or {}),
            result=dict(row.result) if row.result is not None else None,
            created_at=utc(row.created_at) or now(),
            queued_at=utc(row.queued_at),
            started_at=utc(row.started_at),
            finished_at=utc(row.finished_at),
            lease_owner=row.lease_owner,
            lease_until=utc(row.lease_until),
            unsent=bool(row.unsent),
            notify_tries=row.notify_tries or 0,
            notify_error=row.notify_error,
            notify_due=utc(row.notify_due),
            requested_by=row.requested_by,
            muted=row.muted,
        )

    def event(self) -> ModelReleased | Announcement | None:
        """The release or announcement this job is about, as the watcher sent it; None when the
        payload holds no event. Raises ``pydantic.ValidationError`` (a ``ValueError``) when it
        holds one this version cannot read."""
        raw = self.payload.get("event")
        return None if raw is None else _EVENT.validate_python(raw)

    def release(self) -> ModelReleased:
        """The release a benchmark or verdict job is about (``ValueError`` when it holds none)."""
        event = self.event()
        if not isinstance(event, ModelReleased):
            raise ValueError(f"{self.kind} job {self.key[:12]} holds no release")
        return event

    def scores(self) -> BenchmarkScores | None:
        """What a finished benchmark job recorded (a re-tune job: its fine-tune's pair, with the
        re-tuned contender); None for other jobs and unfinished ones.
        Raises ``pydantic.ValidationError`` for a record this version cannot read."""
        if self.kind not in (JobKind.BENCHMARK, JobKind.RETUNE) or not self.result:
            return None
        return BenchmarkScores.model_validate(self.result)

    def verdict(self) -> VerdictReport | None:
        """The verdict a finished verdict job recorded; None for other jobs and for verdicts not
        made (waiting, failed, skipped). Raises ``pydantic.ValidationError`` for a record this
        version cannot read."""
        if self.kind != JobKind.VERDICT or not self.result:
            return None
        return REPORT_ADAPTER.validate_python(self.result)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``supersede status --json``)."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("payload", "result")}
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        return data
