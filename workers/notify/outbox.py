"""The delivery outbox: every Slack message is recorded before it is posted and its ``ts`` after.

A crash (or a lost reply) between Slack accepting a post and the ``ts`` being stored leaves the
row ``pending``; the next attempt first looks for the message in the channel (by the marker in its
metadata) and only posts when it is not there. A delivered message whose content changed (a
re-run) is corrected with ``chat.update`` instead of posted again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from benchmarks.cache import create_tables, insert_once, make_engine
from watcher.state import now, utc


class OutboxBase(DeclarativeBase):
    """Declarative base of the delivery outbox."""


class DeliveryRow(OutboxBase):
    __tablename__ = "deliveries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    job: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(128))
    thread_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class Delivery:
    key: str
    channel: str
    thread_ts: str | None
    ts: str | None
    state: str
    digest: str
    attempts: int
    created_at: datetime


def delivery_key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def digest(text: str, blocks: list[dict[str, object]]) -> str:
    return hashlib.sha256(json.dumps([text, blocks], sort_keys=True).encode()).hexdigest()


class Outbox:
    """The ``deliveries`` table on ``url``."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        create_tables(OutboxBase.metadata, self.engine, url)

    def get(self, key: str) -> Delivery | None:
        with Session(self.engine) as session:
            row = session.get(DeliveryRow, key)
            if row is None:
                return None
            return Delivery(row.key, row.channel, row.thread_ts, row.ts, row.state, row.digest,
                            row.attempts or 0, utc(row.created_at) or now())  # fmt: skip

    def record(self, key: str, job: str, channel: str, thread_ts: str | None, hashed: str) -> None:
        """A message about to be posted (kept as it is when already recorded)."""
        values = {
            "key": key,
            "job": job,
            "channel": channel,
            "thread_ts": thread_ts,
            "state": "pending",
            "digest": hashed,
            "attempts": 0,
            "created_at": now(),
        }
        with Session(self.engine) as session, session.begin():
            insert_once(session, DeliveryRow, values)

    def attempt(self, key: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.key == key)
                .values(attempts=DeliveryRow.attempts + 1)
            )

    def sent(self, key: str, ts: str, hashed: str | None = None) -> None:
        values: dict[str, object] = {"state": "sent", "ts": ts, "sent_at": now()}
        if hashed is not None:
            values["digest"] = hashed
        with Session(self.engine) as session, session.begin():
            session.execute(update(DeliveryRow).where(DeliveryRow.key == key).values(**values))

    def for_job(self, job: str) -> list[Delivery]:
        with Session(self.engine) as session:
            keys = session.scalars(select(DeliveryRow.key).where(DeliveryRow.job == job)).all()
        return [d for d in (self.get(k) for k in keys) if d is not None]

    def summary(self) -> dict[str, Any]:
        """Deliveries by state, and posts tried more than once (for the metrics endpoint)."""
        with Session(self.engine) as session:
            rows = session.execute(select(DeliveryRow.state, DeliveryRow.attempts)).all()
        states: dict[str, int] = {}
        for state, _ in rows:
            states[state] = states.get(state, 0) + 1
        return {"states": states, "retries": sum(max(0, (a or 0) - 1) for _, a in rows)}
