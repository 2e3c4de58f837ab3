"""The watcher's durable state, in the same SQLAlchemy store as the results.

* ``watch_seen``: everything ever seen, unique by key (``hub:<repo>``, ``hub:<repo>@<sha>``,
  ``feed:<name>:<entry id>``) and by (repo, sha). A release is recorded and queued for
  publishing in one transaction; ``published_at`` is set once the publisher took it (an outbox:
  a crash in between republishes it on start-up, never loses it, and consumers dedupe on the key).
* ``watch_sources``: per source, the conditional-GET validators, the back-off deadline and the
  last error, so that a restart neither refetches unchanged feeds nor hammers a rate-limited Hub.
* ``watch_locks``: the single-scheduler lease.

Inserts use ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL), so two processes racing on the
same release record it once and exactly one of them publishes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.clock import now, utc
from core.db import Base, Store, insert_once
from core.lease import holder_is_dead
from watcher.events import Announcement, Event, ModelReleased

_EVENT = TypeAdapter[ModelReleased | Announcement](Event)

log = logging.getLogger(__name__)

#: Kinds of seen rows. Only the first two are published.
RELEASED, ANNOUNCED, BASELINE, UPDATE, LINKED = (
    "model_released",
    "announcement",
    "baseline",
    "update",
    "linked",
)


class Seen(Base):
    __tablename__ = "watch_seen"
    __table_args__ = (UniqueConstraint("repo_id", "revision", name="uq_watch_seen_repo_sha"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(700), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(128))
    repo_id: Mapped[str | None] = mapped_column(String(512), nullable=True, index=True)
    revision: Mapped[str | None] = mapped_column(String(80), nullable=True)
    event: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SourceRow(Base):
    __tablename__ = "watch_sources"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    etag: Mapped[str | None] = mapped_column(String(512), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(128), nullable=True)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_ok_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)


class LockRow(Base):
    __tablename__ = "watch_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(256))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class SourceState:
    """What the store remembers of one source."""

    name: str
    etag: str | None = None
    last_modified: str | None = None
    not_before: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str | None = None
    failures: int = 0

    @property
    def first_poll(self) -> bool:
        """True until the source has been read successfully once."""
        return self.last_ok_at is None


@dataclass(frozen=True)
class NewRow:
    """A row to record; ``event`` is published when ``kind`` is a release or announcement."""

    key: str
    kind: str
    source: str
    repo_id: str | None = None
    revision: str | None = None
    event: ModelReleased | Announcement | None = None


class WatchState(Store):
    """The watcher's tables on ``url`` (created on first use)."""

    # ------------------------------------------------------------------ seen releases

    def _insert(self, session: Session, row: NewRow) -> bool:
        values = {
            "key": row.key,
            "kind": row.kind,
            "source": row.source,
            "repo_id": row.repo_id,
            "revision": row.revision,
            "event": row.event.model_dump(mode="json") if row.event else None,
            "detected_at": now(),
        }
        return insert_once(session, Seen, values)

    def record(self, rows: list[NewRow]) -> list[bool]:
        """Insert ``rows`` in one transaction; for each, whether it was new."""
        with self._session() as session:
            return [self._insert(session, row) for row in rows]

    def record_repo(
        self,
        source: str,
        repo_id: str,
        sha: str,
        event: ModelReleased | None,
        *,
        also: tuple[str, ...] | list[str] = (),
    ) -> str | None:
        """Record a Hub repo at ``sha``: a release (``event`` given) or baseline (None).

        Returns the kind recorded (``model_released``, ``baseline`` or ``update``), or None when
        this repo at this sha was already known. Only a repo's first commit seen is a release;
        later commits are kept as updates and not benchmarked again. ``also`` are keys (a feed
        entry that links the repo) recorded in the same transaction.
        """
        kind = RELEASED if event else BASELINE
        first = NewRow(f"hub:{repo_id}", kind, source, repo_id, sha, event)
        with self._session() as session:
            for key in also:
                self._insert(session, NewRow(key, LINKED, source, repo_id=None))
            if self._insert(session, first):
                return first.kind
            known = session.scalars(select(Seen.revision).where(Seen.key == first.key)).first()
            if known == sha:
                return None
            later = NewRow(f"hub:{repo_id}@{sha}", UPDATE, source, repo_id, sha)
            return UPDATE if self._insert(session, later) else None

    def is_seen(self, key: str) -> bool:
        with Session(self.engine) as session:
            return session.scalars(select(Seen.id).where(Seen.key == key)).first() is not None

    def unpublished(self) -> list[tuple[int, ModelReleased | Announcement]]:
        """Releases and announcements recorded but not yet handed to the publisher, oldest first."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Seen.id, Seen.event)
                .where(Seen.kind.in_((RELEASED, ANNOUNCED)), Seen.published_at.is_(None))
                .order_by(Seen.id)
            ).all()
        return [(row_id, _EVENT.validate_python(event)) for row_id, event in rows if event]

    def mark_published(self, row_ids: list[int]) -> None:
        if not row_ids:
            return
        with self._session() as session:
            session.execute(update(Seen).where(Seen.id.in_(row_ids)).values(published_at=now()))

    def counts(self) -> dict[str, int]:
        """Seen rows by kind."""
        with Session(self.engine) as session:
            kinds = session.scalars(select(Seen.kind)).all()
        return {kind: kinds.count(kind) for kind in sorted(set(kinds))}

    # ------------------------------------------------------------------ sources

    def source(self, name: str) -> SourceState:
        with Session(self.engine) as session:
            row = session.get(SourceRow, name)
            if row is None:
                return SourceState(name)
            return SourceState(
                name=name,
                etag=row.etag,
                last_modified=row.last_modified,
                not_before=utc(row.not_before),
                last_ok_at=utc(row.last_ok_at),
                last_error=row.last_error,
                failures=row.failures or 0,
            )

    def sources_with_counts(self) -> list[dict[str, Any]]:
        """Per source: name, polls, errors, not_before (for the metrics endpoint)."""
        with Session(self.engine) as session:
            rows = session.scalars(select(SourceRow).order_by(SourceRow.name)).all()
            return [
                {"name": r.name, "polls": r.polls or 0, "errors": r.errors or 0,
                 "not_before": utc(r.not_before)}
                for r in rows
            ]  # fmt: skip

    def sources(self) -> list[SourceState]:
        with Session(self.engine) as session:
            names = session.scalars(select(SourceRow.name).order_by(SourceRow.name)).all()
        return [self.source(name) for name in names]

    def _source_row(self, session: Session, name: str) -> SourceRow:
        row = session.get(SourceRow, name)
        if row is None:
            row = SourceRow(name=name, failures=0, polls=0, errors=0)
            session.add(row)
        return row

    def source_ok(
        self, name: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> None:
        """A successful read: keep the validators (``""`` clears them), clear the back-off."""
        with self._session() as session:
            row = self._source_row(session, name)
            if etag is not None or last_modified is not None:
                row.etag, row.last_modified = etag or None, last_modified or None
            row.last_ok_at = now()
            row.not_before = None
            row.failures = 0
            row.polls = (row.polls or 0) + 1

    def source_failed(self, name: str, error: str, retry_in_s: float | None) -> None:
        """A failed read; ``retry_in_s`` (Retry-After or back-off) defers the next one."""
        with self._session() as session:
            row = self._source_row(session, name)
            row.last_error = error[:2000]
            row.last_error_at = now()
            row.failures = (row.failures or 0) + 1
            row.polls = (row.polls or 0) + 1
            row.errors = (row.errors or 0) + 1
            if retry_in_s is not None:
                row.not_before = now() + timedelta(seconds=retry_in_s)

    # ------------------------------------------------------------------ the scheduler lease

    def acquire_lock(self, name: str, owner: str, ttl_s: float) -> str | None:
        """Take or renew the lease ``name``; None on success, else a description of the holder.

        A lease is free when its heartbeat is older than ``ttl_s``, or at once when its holder
        is a process of this host that is no longer running (killed with -9, say): waiting for
        its heartbeat to age would only delay the restart.
        """
        stale = now() - timedelta(seconds=ttl_s)
        with self._session() as session:
            insert_once(session, LockRow, {"name": name, "owner": owner, "heartbeat_at": now()})
            taken = session.execute(
                update(LockRow)
                .where(LockRow.name == name)
                .where((LockRow.owner == owner) | (LockRow.heartbeat_at < stale))
                .values(owner=owner, heartbeat_at=now())
            ).rowcount  # type: ignore[attr-defined]
            if taken:
                return None
            row = session.get(LockRow, name)
            if row is None:  # released in between: try again next time
                return "a scheduler that was just stopping"
            holder = row.owner
            if holder_is_dead(holder):
                # Conditional on the dead holder's name: of two restarts racing for it, the
                # store lets exactly one change the row.
                taken = session.execute(
                    update(LockRow)
                    .where(LockRow.name == name, LockRow.owner == holder)
                    .values(owner=owner, heartbeat_at=now())
                ).rowcount  # type: ignore[attr-defined]
                if taken:
                    log.warning("took over the %s lease of %s: that process is gone", name, holder)
                    return None
                session.refresh(row)
            age = (now() - (utc(row.heartbeat_at) or now())).total_seconds()
            return f"{row.owner} (last heartbeat {age:.0f} s ago)"

    def release_lock(self, name: str, owner: str) -> None:
        with self._session() as session:
            session.execute(delete(LockRow).where(LockRow.name == name, LockRow.owner == owner))
