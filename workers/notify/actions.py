"""What an operator can do from Slack, without Slack: re-run, re-tune, acknowledge, mute, ask
for the status. :mod:`workers.notify.interact` maps buttons and ``/supersede`` onto these.

Every request is recorded in ``slack_actions`` **before** it has any effect, keyed by the
request it came in (Slack's ``trigger_id``, unique per click or command): a request Slack
retries, or one replayed, finds its row and does nothing again. A second click on Re-run (a new
request) finds the run the first one queued still going and makes none
(:meth:`workers.pipeline.Pipeline.plan` with ``unless_busy``). Each row keeps the Slack user id,
what was asked and what came of it, refusals included.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from benchmarks.tasks.task import load_task
from config.settings import finetune as configured_finetune
from config.settings import task_path
from core.clock import now, utc
from core.db import Base, Store, insert_once
from core.errors import SupersedeError
from workers.jobs import FINISHED, Job
from workers.notify.mutes import check_owner, owner_of
from workers.pipeline import Pipeline, retune_planned


class ActionRow(Base):
    __tablename__ = "slack_actions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user_id: Mapped[str] = mapped_column(String(32))
    user_name: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(600), index=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    job: Mapped[str | None] = mapped_column(String(64), nullable=True)


@dataclass(frozen=True)
class Actor:
    """The Slack user behind a request."""

    user_id: str
    name: str

    @property
    def label(self) -> str:
        """How jobs and mutes record them: ``slack:U0123 (alice)``."""
        return f"slack:{self.user_id} ({self.name})"


@dataclass(frozen=True)
class Action:
    """One recorded request."""

    key: str
    at: datetime
    user_id: str
    user_name: str
    action: str
    target: str
    outcome: str | None
    job: str | None


@dataclass(frozen=True)
class Outcome:
    """What came of an action: what the person is told, and the job it queued, if any."""

    text: str
    job: str | None = None


def request_key(*parts: str) -> str:
    """The key of a request: the same request (a retry, a replay), the same key."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class ActionLog(Store):
    """The ``slack_actions`` table on ``url``."""

    def begin(self, key: str, actor: Actor, action: str, target: str) -> bool:
        """Record a request about to take effect; False when it was recorded before (a retry or
        a replay: it must not take effect twice)."""
        values = {
            "key": key,
            "at": now(),
            "user_id": actor.user_id[:32],
            "user_name": actor.name[:256],
            "action": action,
            "target": target[:600],
        }
        with self._session() as session:
            return insert_once(session, ActionRow, values)

    def finish(self, key: str, outcome: Outcome) -> None:
        with self._session() as session:
            session.execute(
                update(ActionRow)
                .where(ActionRow.key == key)
                .values(outcome=outcome.text[:4000], job=outcome.job)
            )

    def last(self, action: str, target: str) -> Action | None:
        """The latest recorded ``action`` on ``target`` that took effect."""
        with Session(self.engine) as session:
            row = session.scalars(
                select(ActionRow)
                .where(ActionRow.action == action, ActionRow.target == target[:600],
                       ActionRow.outcome.is_not(None))
                .order_by(ActionRow.at.desc())
            ).first()  # fmt: skip
            return _action(row) if row is not None else None

    def list(self, limit: int = 100) -> list[Action]:
        """The newest first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(ActionRow).order_by(ActionRow.at.desc()).limit(limit)
            ).all()
            return [_action(row) for row in rows]


def _action(row: ActionRow) -> Action:
    return Action(row.key, utc(row.at) or now(), row.user_id, row.user_name, row.action,
                  row.target, row.outcome, row.job)  # fmt: skip


class Operations:
    """The actions, on one pipeline (the daemon's)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.jobs = pipeline.jobs
        self.mutes = pipeline.mutes

    def rerun_job(self, key: str, actor: Actor, *, retune: bool = False) -> Outcome:
        """Run the candidate of the job ``key`` (a verdict or a failure) again against its
        fine-tune, as a new benchmark job; with ``retune``, the re-tune contender is trained
        whatever the plain verdict. Nothing is queued while that run is still going."""
        job = self.jobs.get(key)
        if job is None:
            return Outcome(f"job {key[:12]} is not in this store (was it cleaned up?)")
        try:
            event = job.release()
        except ValueError as exc:
            return Outcome(f"job {key[:12]} cannot be re-run: {exc}")
        finetunes = (job.finetune,) if job.finetune else None
        if retune:
            why_not = self.why_no_retune(job)
            if why_not:
                return Outcome(f"no re-tune for {event.name}: {why_not}")
        try:
            keys = self.pipeline.plan(event, finetunes=finetunes, rerun=True, retune=retune,
                                      requested_by=actor.label, unless_busy=True)  # fmt: skip
        except SupersedeError as exc:
            return Outcome(f"{event.name} could not be re-run: {exc}")
        return self._queued(keys, event.name, job.finetune, retune)

    def rerun_named(self, candidate: str, actor: Actor) -> Outcome:
        """``/supersede rerun <model>[@revision]``: as ``supersede rerun`` (every fine-tune)."""
        from workers.manual import rerun

        try:
            keys = rerun(self.pipeline, candidate, requested_by=actor.label, unless_busy=True)
        except SupersedeError as exc:
            return Outcome(f"{candidate} could not be re-run: {exc}")
        return self._queued(keys, candidate, None, False)

    def _queued(self, keys: list[str], name: str, finetune: str | None, retune: bool) -> Outcome:
        what = "Re-tune and re-run" if retune else "Re-run"
        against = f" against {finetune}" if finetune else ""
        if not keys:
            return Outcome(f"{name}{against} is already being re-run: nothing new was queued. "
                           "Follow it with `/supersede status`.")  # fmt: skip
        job = self.jobs.get(keys[0])
        where = f"{job.state} on {job.queue}" if job is not None else "queued"
        return Outcome(f"{what} of {name}{against}: job {keys[0][:12]} {where}.", keys[0])

    def why_no_retune(self, job: Job) -> str | None:
        """Why job ``job``'s candidate cannot get a re-tune contender; None when it can."""
        event = job.release()
        if event.api is not None or not event.repo_id:
            return "it is an API model (its weights cannot be trained)"
        if not job.finetune:
            return "the job names no fine-tune"
        try:
            ft = configured_finetune(self.settings, job.finetune)
            task = load_task(task_path(self.settings, ft.task))
        except SupersedeError as exc:
            return str(exc)
        if not retune_planned(self.settings, ft, task):
            return (f"{ft.name} is not an adapter fine-tune with training data, or "
                    "retune.when is never")  # fmt: skip
        return None

    def acknowledge(self, actor: Actor, at: datetime) -> Outcome:
        """A message seen: ``acknowledged by @name, 14:02 UTC``."""
        return Outcome(f"acknowledged by @{actor.name}, {at:%H:%M} UTC")

    def mute(self, owner: str, days: float, actor: Actor) -> Outcome:
        try:
            mute = self.mutes.mute(owner, days, actor.label)
        except ValueError as exc:
            return Outcome(str(exc))
        return Outcome(
            f"Muted {mute.owner} for {days:g} days, until {mute.until:%Y-%m-%d %H:%M} UTC: their "
            "releases are still benchmarked, not posted. Lift it with "
            f"`/supersede unmute {mute.owner}` or `supersede mute lift {mute.owner}`."
        )

    def unmute(self, owner: str) -> Outcome:
        try:
            name = check_owner(owner)
        except ValueError as exc:
            return Outcome(str(exc))
        if self.mutes.lift(name):
            return Outcome(f"{name} is no longer muted: its next release is posted.")
        return Outcome(f"{name} was not muted.")

    def mute_target(self, key: str) -> str | None:
        """Whom the Mute menu of job ``key``'s message mutes."""
        job = self.jobs.get(key)
        if job is None:
            return None
        try:
            return owner_of(job.event())
        except ValueError:
            return None

    def status(self, limit: int = 8) -> str:
        """``/supersede status``: jobs by state, the newest ones, the mutes in force."""
        jobs = self.jobs.list(limit=500)
        if not jobs:
            return "No jobs yet."
        counts = Counter(str(job.state) for job in jobs)
        lines = ["*Jobs:* " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]
        for job in jobs[:limit]:
            note = ""
            if job.state not in FINISHED:
                note = f" (queued {job.queued_at:%m-%d %H:%M})" if job.queued_at else ""
            elif job.reason:
                note = f": {job.reason[:120]}"
            who = f", by {job.requested_by}" if job.requested_by else ""
            lines.append(f"• `{job.key[:12]}` {job.kind} {job.candidate[:80]} / "
                         f"{job.finetune or '-'}: {job.state}{note}{who}")  # fmt: skip
        mutes = self.mutes.active()
        if mutes:
            lines.append("*Muted:* " + "; ".join(m.describe() for m in mutes))
        return "\n".join(lines)
