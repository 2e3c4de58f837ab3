"""The delivery outbox: every Slack message is recorded before it is posted and its ``ts`` after.

A crash (or a lost reply) between Slack accepting a post and the ``ts`` being stored leaves the
row without a ``ts``; the next attempt first looks for the message in the channel (by the marker in
its metadata) and only posts when it is not there. A delivered message whose content changed (a
re-run) is corrected with ``chat.update`` instead of posted again.

Only one process at a time may post a given row: it **claims** the row with one conditional
``UPDATE`` (compare-and-set, as jobs are claimed in :mod:`workers.jobs`) that succeeds only while
the row has no ``ts`` and no live claim of someone else. A claim is a lease: the holder renews it
before every call and every wait, so a killed holder blocks the row for one lease at most. Others
wait for the holder's ``ts`` and take over if the claim runs out without one. This is what keeps
two verdicts of one release, notified at once, from posting two release messages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Integer, String, select, true, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.clock import now, utc
from core.db import Base, Store, insert_once


class DeliveryRow(Base):
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
    claim_owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    claim_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class Delivery:
    """A delivery as read from the store."""

    key: str
    channel: str
    thread_ts: str | None
    #: The message's ``ts`` once Slack took it (``state`` is then ``sent``).
    ts: str | None
    state: str
    #: Of the content last recorded as posted (or about to be).
    digest: str
    #: Posts tried so far, by anyone: above 0, Slack may hold the message already.
    attempts: int
    created_at: datetime
    #: Who may post it now, and until when (unless renewed).
    claim_owner: str | None = None
    claim_until: datetime | None = None


def delivery_key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def digest(text: str, blocks: list[dict[str, object]]) -> str:
    return hashlib.sha256(json.dumps([text, blocks], sort_keys=True).encode()).hexdigest()


class Outbox(Store):
    """The ``deliveries`` table on ``url``."""

    def _set(self, key: str, where: Any, **values: Any) -> bool:
        with self._session() as session:
            statement = update(DeliveryRow).where(DeliveryRow.key == key).where(where)
            return bool(session.execute(statement.values(**values)).rowcount)  # type: ignore[attr-defined]

    def get(self, key: str) -> Delivery | None:
        with Session(self.engine) as session:
            row = session.get(DeliveryRow, key)
            if row is None:
                return None
            return Delivery(row.key, row.channel, row.thread_ts, row.ts, row.state, row.digest,
                            row.attempts or 0, utc(row.created_at) or now(), row.claim_owner,
                            utc(row.claim_until))  # fmt: skip

    def record(self, key: str, job: str, channel: str, thread_ts: str | None, hashed: str) -> bool:
        """A message about to be posted; False when it was already recorded (the row is then
        kept as it is: another process may be posting it, or has)."""
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
        with self._session() as session:
            return insert_once(session, DeliveryRow, values)

    def claim(self, key: str, owner: str, lease_s: float) -> bool:
        """Take (or renew) the right to post ``key`` for ``lease_s`` seconds.

        True when the message has no ``ts`` yet and the row is unclaimed, claimed by ``owner``, or
        claimed under a lease that ran out; False otherwise (someone else holds it, or it is
        sent). Renewing a claim that ran out succeeds only if nobody took it meanwhile.
        """
        moment = now()
        free = (
            DeliveryRow.claim_owner.is_(None)
            | (DeliveryRow.claim_owner == owner)
            | (DeliveryRow.claim_until < moment)
        )
        return self._set(
            key,
            DeliveryRow.ts.is_(None) & free,
            claim_owner=owner,
            claim_until=moment + timedelta(seconds=lease_s),
        )

    def release(self, key: str, owner: str) -> None:
        """Give up ``owner``'s claim (a failed try): the next one need not wait for the lease."""
        self._set(key, DeliveryRow.claim_owner == owner, claim_owner=None, claim_until=None)

    def attempt(self, key: str) -> None:
        """A post of ``key`` is about to be tried."""
        self._set(key, true(), attempts=DeliveryRow.attempts + 1)

    def sent(self, key: str, ts: str, hashed: str | None = None) -> None:
        """Slack holds ``key`` as ``ts`` (with content ``hashed`` when given); ends any claim."""
        values: dict[str, object] = {"state": "sent", "ts": ts, "sent_at": now(),
                                     "claim_owner": None, "claim_until": None}  # fmt: skip
        if hashed is not None:
            values["digest"] = hashed
        self._set(key, true(), **values)

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
