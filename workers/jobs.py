"""Job state in the store: what Celery's queue alone cannot be trusted to remember.

States::

    waiting ──► queued ──► running ──► done ──► notified
    (verdict    ▲   │         │   └──► failed ──► notified
     jobs wait  │   │         └──► (lease expired: taken over by the next delivery)
     for their  └───┘ retry   skipped (too large, refused) ──► notified
     benchmark)

Every transition is one conditional ``UPDATE`` (compare-and-set), so duplicated or redelivered
messages never run a job that is running under a live lease or already finished, on SQLite and
PostgreSQL alike. A running job holds a lease renewed by a heartbeat; a killed worker stops
renewing it, and the next delivery (or the reconciler) takes the job over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from benchmarks.sides import BenchmarkScores
from benchmarks.verdict import VerdictReport
from core.clock import now
from core.constants import ENGINE_VERSION, JobState
from core.db import Store, insert_once
from core.lease import holder_is_dead
from workers.records import Job, JobRow, stored

__all__ = ["FINISHED", "Claim", "Job", "JobStore", "job_key"]

FINISHED = (JobState.DONE, JobState.FAILED, JobState.SKIPPED, JobState.NOTIFIED)


def job_key(kind: str, *parts: str) -> str:
    """Deterministic: the same candidate revision, tasks and engine version, the same key."""
    payload = json.dumps([kind, *parts, ENGINE_VERSION])
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """The answer to "may I run this job?"."""

    outcome: Literal["run", "finished", "busy", "exhausted"]
    job: Job | None = None
    #: For ``busy``: seconds until the holder's lease runs out.
    wait_s: float = 0.0


class JobStore(Store):
    """The ``jobs`` table on ``url`` (created on first use)."""

    def add(self, **fields: Any) -> bool:
        """Insert a job; False when one with the same key exists (it is left as it is)."""
        values = {"attempts": 0, "unsent": 0, "notify_tries": 0, "created_at": now(), **fields}
        if values.get("state") == "queued":
            values.setdefault("queued_at", now())
        with self._session() as session:
            return insert_once(session, JobRow, values)

    def get(self, key: str) -> Job | None:
        with Session(self.engine) as session:
            row = session.get(JobRow, key)
            return Job.of(row) if row is not None else None

    def _set(self, key: str, where: Any, **values: Any) -> bool:
        with self._session() as session:
            statement = update(JobRow).where(JobRow.key == key).where(where).values(**values)
            return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]

    def claim(self, key: str, owner: str, lease_s: float, max_attempts: int) -> Claim:
        """Start a try of ``key`` under a lease, unless it is finished, running or exhausted."""
        moment = now()
        runnable = (JobRow.state == "queued") | (
            (JobRow.state == "running") & (JobRow.lease_until < moment)
        )
        # A holder on this host whose process is gone (a pool child killed with -9) can never
        # renew its lease: its job is taken over at once, not when the lease runs out.
        held = self.get(key)
        owner_of = held.lease_owner if held is not None and held.state == "running" else None
        if owner_of and holder_is_dead(owner_of):
            runnable = runnable | ((JobRow.state == "running") & (JobRow.lease_owner == owner_of))
        with self._session() as session:
            # The claim and its read-back are one transaction: if either fails, neither happened.
            claimed = session.execute(
                update(JobRow)
                .where(JobRow.key == key, runnable & (JobRow.attempts < max_attempts))
                .values(
                    state="running",
                    attempts=JobRow.attempts + 1,
                    lease_owner=owner,
                    lease_until=moment + timedelta(seconds=lease_s),
                    started_at=moment,
                )
            ).rowcount  # type: ignore[attr-defined]
            if claimed:
                row = session.get(JobRow, key)
                assert row is not None
                session.refresh(row)
                return Claim("run", Job.of(row))
        job = self.get(key)
        if job is None or job.state in FINISHED or job.state == "waiting":
            return Claim("finished", job)
        if job.state == "running" and job.lease_until and job.lease_until >= moment:
            return Claim("busy", job, (job.lease_until - moment).total_seconds())
        last = f": {job.reason}" if job.reason else ""
        reason = f"gave up after {job.attempts} attempts{last}"
        self._set(key, JobRow.state.in_(("queued", "running")), state="failed", reason=reason,
                  finished_at=moment, lease_owner=None, lease_until=None)  # fmt: skip
        return Claim("exhausted", self.get(key))

    def heartbeat(self, key: str, owner: str, lease_s: float) -> bool:
        """Renew a running job's lease; False when it is no longer ours."""
        return self._set(
            key,
            (JobRow.state == "running") & (JobRow.lease_owner == owner),
            lease_until=now() + timedelta(seconds=lease_s),
        )

    def finish(
        self, key: str, owner: str, result: BenchmarkScores | VerdictReport | Mapping[str, Any]
    ) -> bool:
        """Record the result of our try (see :func:`stored`); False (nothing recorded) when the
        lease was lost."""
        return self._set(
            key,
            (JobRow.state == "running") & (JobRow.lease_owner == owner),
            state="done",
            result=stored(result),
            reason=None,
            finished_at=now(),
            lease_owner=None,
            lease_until=None,
        )

    def fail(
        self,
        key: str,
        owner: str,
        reason: str,
        *,
        retry: bool,
        max_attempts: int,
        final: JobState = JobState.FAILED,
    ) -> str:
        """End our try with ``reason``: back to ``queued`` when ``retry`` and attempts remain,
        else ``final`` (``failed``, or ``skipped`` for a refused model). Returns the state set
        (or the current one when the lease was lost)."""
        job = self.get(key)
        if job is None:
            return "missing"
        again = retry and job.attempts < max_attempts
        state = JobState.QUEUED if again else final
        changed = self._set(
            key,
            (JobRow.state == "running") & (JobRow.lease_owner == owner),
            state=state,
            reason=reason[:4000],
            queued_at=now() if again else job.queued_at,
            finished_at=None if again else now(),
            lease_owner=None,
            lease_until=None,
        )
        return state if changed else (self.get(key) or job).state

    def finish_as(self, key: str, state: JobState, reason: str | None = None) -> bool:
        """Move a job that is not running to a final state (``skipped``, ``failed``)."""
        return self._set(
            key,
            JobRow.state.in_(("waiting", "queued")),
            state=state,
            reason=reason,
            finished_at=now(),
        )

    def release_waiting(self, parent: str) -> list[Job]:
        """Queue the jobs that waited for ``parent``; returns them."""
        with self._session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.parent == parent, JobRow.state == "waiting")
                .values(state="queued", queued_at=now())
            )
        return self.children(parent)

    def end_waiting(self, parent: str, state: JobState, reason: str) -> list[Job]:
        """The jobs that waited for a failed or skipped ``parent`` end with it."""
        with self._session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.parent == parent, JobRow.state.in_(("waiting", "queued")))
                .values(state=state, reason=reason, finished_at=now())
            )
        return self.children(parent)

    def children(self, parent: str) -> list[Job]:
        with Session(self.engine) as session:
            rows = session.scalars(select(JobRow).where(JobRow.parent == parent)).all()
            return [Job.of(row) for row in rows]

    def set_payload(self, key: str, payload: dict[str, Any]) -> bool:
        """Replace a job's payload (a re-run that asks for something else of it)."""
        return self._set(key, JobRow.key == key, payload=payload)

    def descendants(self, parent: str) -> list[Job]:
        """Children, their children, and so on (a benchmark's re-tune and verdict jobs)."""
        found: list[Job] = []
        todo = [parent]
        while todo:
            for child in self.children(todo.pop()):
                found.append(child)
                todo.append(child.key)
        return found

    def waiting_parents(self) -> list[Job]:
        """The jobs that have a child still ``waiting`` for them (for the reconciler)."""
        waiting = select(JobRow.parent).where(JobRow.state == "waiting", JobRow.parent.is_not(None))
        with Session(self.engine) as session:
            rows = session.scalars(
                select(JobRow).where(JobRow.key.in_(waiting.scalar_subquery())).order_by(JobRow.key)
            ).all()
            return [Job.of(row) for row in rows]

    def mark_notified(self, key: str, muted: str | None = None) -> bool:
        """``done``/``failed``/``skipped`` -> ``notified`` (with why nothing was posted, when its
        release's owner was muted); False when already notified."""
        return self._set(
            key, JobRow.state.in_(("done", "failed", "skipped")), state="notified",
            notify_error=None, notify_due=None, muted=muted,
        )  # fmt: skip

    def requeue(
        self,
        key: str,
        *,
        reset_attempts: bool = False,
        state: JobState = JobState.QUEUED,
        queue: str | None = None,
        requested_by: str | None = None,
        only_finished: bool = False,
    ) -> bool:
        """Put a job that is not running back in the queue (or back to ``waiting``), on
        ``queue`` when given. ``only_finished``: only a finished job (one compare-and-set: of
        two people re-running it at once, one does)."""
        values: dict[str, Any] = {"state": state, "queued_at": now(), "lease_owner": None,
                                  "lease_until": None, "finished_at": None}  # fmt: skip
        if queue is not None:
            values["queue"] = queue
        if reset_attempts:
            values.update(attempts=0, reason=None, result=None, muted=None)
        if requested_by is not None:
            values["requested_by"] = requested_by[:256]
        where = JobRow.state.in_(FINISHED) if only_finished else JobRow.state != "running"
        return self._set(key, where, **values)

    def stuck(self, queued_timeout_s: float) -> list[Job]:
        """Queued too long without starting, queued but never sent (the broker refused the
        message), or running under an expired lease."""
        moment = now()
        with Session(self.engine) as session:
            rows = session.scalars(
                select(JobRow).where(
                    ((JobRow.state == "queued")
                     & ((JobRow.queued_at < moment - timedelta(seconds=queued_timeout_s))
                        | (JobRow.unsent == 1)))
                    | ((JobRow.state == "running") & (JobRow.lease_until < moment))
                )
            ).all()  # fmt: skip
            return [Job.of(row) for row in rows]

    def touch(self, key: str) -> None:
        """A queued job was just sent again: restart its queued clock."""
        self._set(key, JobRow.state == "queued", queued_at=now(), unsent=0)

    def mark_unsent(self, key: str) -> None:
        """The task message of queued job ``key`` could not be sent: the reconciler's next pass
        sends it again."""
        self._set(key, JobRow.state == "queued", unsent=1)

    def notify_later(self, key: str, seconds: float) -> None:
        """The finished job ``key`` is due a notification in ``seconds`` (0: at the reconciler's
        next pass)."""
        self._set(
            key,
            JobRow.state.in_(("done", "failed", "skipped")),
            notify_due=now() + timedelta(seconds=seconds),
        )

    def notify_failed(self, key: str, reason: str, retry_in_s: float) -> int:
        """A notification failed: keep the reason, try again in ``retry_in_s``; returns how many
        notifications of ``key`` have failed so far (this one included)."""
        with self._session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.key == key, JobRow.state.in_(("done", "failed", "skipped")))
                .values(
                    notify_tries=JobRow.notify_tries + 1,
                    notify_error=reason[:2000],
                    notify_due=now() + timedelta(seconds=retry_in_s),
                )
            )
            row = session.get(JobRow, key)
            return (row.notify_tries or 0) if row is not None else 0

    def unnotified(self, older_than_s: float) -> list[Job]:
        """Finished jobs due a notification: never confirmed for ``older_than_s`` (a lost
        message), or whose failed notification's back-off has run out."""
        moment = now()
        cutoff = moment - timedelta(seconds=older_than_s)
        with Session(self.engine) as session:
            rows = session.scalars(
                select(JobRow).where(
                    JobRow.state.in_(("done", "failed", "skipped")),
                    JobRow.kind.not_in(("benchmark", "retune")),
                    ((JobRow.notify_due.is_(None)) & (JobRow.finished_at < cutoff))
                    | (JobRow.notify_due <= moment),
                )
            ).all()
            return [Job.of(row) for row in rows]

    def wait_again(self, key: str, owner: str, reason: str) -> bool:
        """Our running job goes back to ``waiting`` for its parent (which is being run again);
        False when the lease was lost."""
        return self._set(
            key,
            (JobRow.state == "running") & (JobRow.lease_owner == owner),
            state="waiting", reason=reason[:4000], lease_owner=None, lease_until=None,
        )  # fmt: skip

    def benchmarks(self, candidate: str) -> list[Job]:
        """The benchmark jobs of ``candidate`` (exactly, pinned ``candidate@sha``, or
        ``api:candidate``), the newest finished first."""
        wanted = (
            (JobRow.candidate == candidate)
            | (JobRow.candidate == f"api:{candidate}")
            | JobRow.candidate.startswith(candidate + "@", autoescape=True)
        )
        with Session(self.engine) as session:
            rows = session.scalars(
                select(JobRow)
                .where(JobRow.kind == "benchmark", wanted)
                .order_by(JobRow.finished_at.desc())
            ).all()
            return [Job.of(row) for row in rows]

    def list(self, limit: int = 200) -> list[Job]:
        """The newest jobs first."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            ).all()
            return [Job.of(row) for row in rows]
