"""Judge answers kept in the result store, so that asking the same judge the same question
again costs nothing.

A call's key is the sha256 of the judge's fingerprint (:meth:`JudgeSpec.fingerprint`: model,
rubric, mode, prompt version) and the exact messages sent. Every answer the judge gave is kept,
readable or not: at temperature 0 asking again would give the same answer. Failed calls (no
answer) are not kept.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from benchmarks.judge.judges import JudgeReply
from core.db import Base, Store, insert_once


class JudgeCall(Base):
    """One judge answer, by the question's key."""

    __tablename__ = "judge_calls"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    judge: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answer: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)


def call_key(fingerprint: str, messages: list[dict[str, str]]) -> str:
    """sha256 over the judge's fingerprint and the canonical JSON of ``messages``."""
    payload = json.dumps({"judge": fingerprint, "messages": messages}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgeCache(Store):
    """Judge answers by key on the store at ``url``; safe to share between processes."""

    def get(self, key: str) -> JudgeReply | None:
        """The stored answer, or None."""
        with Session(self.engine) as session:
            row = session.get(JudgeCall, key)
            if row is None:
                return None
            return JudgeReply(row.answer, row.input_tokens, row.output_tokens)

    def put(self, key: str, fingerprint: str, reply: JudgeReply) -> None:
        """Keep ``reply`` under ``key``; an answer already stored under it is kept."""
        values = {
            "key": key,
            "judge": fingerprint,
            "created_at": datetime.now(UTC),
            "answer": reply.text,
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
        }
        with self._session() as session:
            insert_once(session, JudgeCall, values)

    def count(self) -> int:
        """How many answers are stored."""
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(JudgeCall)) or 0)
