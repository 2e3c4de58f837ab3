"""Muted organisations and vendors: their releases are still recorded, benchmarked and judged,
but nothing about them is posted until the mute runs out or is lifted.

A mute is kept by the release's **owner**: the Hub organisation of a Hub release (``meta-llama``
for ``meta-llama/Llama-4``), the feed of a vendor post or of the API model it named, or the
``api_candidates`` entry of a hand-named API model. Names are compared case-insensitively, as the
Hub does. Set from a verdict message's Mute menu, ``/supersede mute <org> <days>`` or
``supersede mute add``; listed and lifted with ``supersede mute list|lift``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.clock import now, utc
from core.db import Base, Store
from watcher.events import Announcement, ModelReleased

#: Longest mute: a year (a mute is a pause, not a filter: filters live in watch.hub).
MAX_DAYS = 365


class MuteRow(Base):
    __tablename__ = "mutes"

    owner: Mapped[str] = mapped_column(String(256), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Mute:
    """One muted owner: until when, and who muted it (``slack:U0123 (name)``, ``cli:user``)."""

    owner: str
    until: datetime
    by: str
    created_at: datetime

    def describe(self) -> str:
        return f"{self.owner} muted until {self.until:%Y-%m-%d %H:%M} UTC by {self.by}"


def owner_of(event: ModelReleased | Announcement | None) -> str | None:
    """Whose release or post ``event`` is (see the module docstring); None when it names none."""
    if isinstance(event, Announcement):
        return _norm(event.source.removeprefix("feed:")) or None
    if event is None:
        return None
    if event.repo_id and "/" in event.repo_id:
        return _norm(event.repo_id.split("/", 1)[0])
    if event.api is not None:
        return _norm(event.api.feed or event.api.rule or event.api.model)
    if event.source.startswith("feed:"):
        return _norm(event.source.removeprefix("feed:"))
    return None


def _norm(name: str) -> str:
    return name.strip().lower()


def check_owner(owner: str) -> str:
    """A name given by a person (``/supersede mute``, the CLI), normalised; ``ValueError`` with
    what is expected for an empty or malformed one."""
    name = _norm(owner)
    if not name or len(name) > 256 or any(c.isspace() for c in name) or "/" in name:
        raise ValueError(
            f"{owner!r} is not an organisation or feed name: give the part before the '/' of a "
            "Hub id (e.g. meta-llama), or a feed's name"
        )
    return name


class MuteStore(Store):
    """The ``mutes`` table on ``url``."""

    def mute(self, owner: str, days: float, by: str) -> Mute:
        """Mute ``owner`` for ``days`` from now (a later mute of the same owner replaces it)."""
        if not 0 < days <= MAX_DAYS:
            raise ValueError(f"a mute lasts 1 to {MAX_DAYS} days, not {days:g}")
        name = check_owner(owner)
        moment = now()
        mute = Mute(name, moment + timedelta(days=days), by[:256], moment)
        with self._session() as session:
            session.execute(delete(MuteRow).where(MuteRow.owner == name))
            session.add(MuteRow(owner=name, until=mute.until, by=mute.by, created_at=moment))
        return mute

    def lift(self, owner: str) -> bool:
        """End ``owner``'s mute; False when it had none in force."""
        name = _norm(owner)
        with self._session() as session:
            active = session.get(MuteRow, name)
            if active is None:
                return False
            session.delete(active)
            return (utc(active.until) or now()) > now()

    def active(self) -> list[Mute]:
        """The mutes in force now, the soonest to end first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(MuteRow).where(MuteRow.until > now()).order_by(MuteRow.until)
            ).all()
            return [_mute(row) for row in rows]

    def of(self, event: ModelReleased | Announcement | None) -> Mute | None:
        """The mute in force over ``event``'s owner, if any."""
        owner = owner_of(event)
        if owner is None:
            return None
        with Session(self.engine) as session:
            row = session.get(MuteRow, owner)
            mute = _mute(row) if row is not None else None
        return mute if mute is not None and mute.until > now() else None


def _mute(row: MuteRow) -> Mute:
    return Mute(row.owner, utc(row.until) or now(), row.by, utc(row.created_at) or now())
