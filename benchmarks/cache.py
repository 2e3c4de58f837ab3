"""The result store and cache (SQLAlchemy: SQLite file by default, PostgreSQL by URL).

A result is keyed by everything that can change its answer: the model's and adapter's identity
and pinned revision (or content hash for local folders), dtype, device type, the task file's bytes
and its data's bytes, the prompt settings, the example limit, the token budget and the engine
version. Batch size is not part of the key: batched and unbatched runs give the same answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from benchmarks.scoring import RunResult, RunStats
from core.constants import ENGINE_VERSION
from core.db import Base, Store


class BenchmarkResult(Base):
    """One scored (model, adapter, task, settings) combination."""

    __tablename__ = "benchmark_results"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(512))
    model_revision: Mapped[str] = mapped_column(String(80))
    adapter: Mapped[str | None] = mapped_column(String(512), nullable=True)
    adapter_revision: Mapped[str | None] = mapped_column(String(80), nullable=True)
    task: Mapped[str] = mapped_column(String(256))
    metric: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    engine_version: Mapped[str] = mapped_column(String(16))
    identity: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)


def result_key(identity: Mapping[str, Any]) -> str:
    """A stable sha256 over the canonical JSON of ``identity`` plus the engine version."""
    payload = json.dumps({**identity, "engine_version": ENGINE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def result_to_dict(result: RunResult) -> dict[str, Any]:
    """JSON-safe form of a run result (tuples become lists)."""
    return dataclasses.asdict(result)


def result_from_dict(data: Mapping[str, Any]) -> RunResult:
    """Inverse of :func:`result_to_dict`."""
    return RunResult(
        task=data["task"],
        metric=data["metric"],
        score=data["score"],
        stderr=data["stderr"],
        n=data["n"],
        outcomes=tuple(data["outcomes"]),
        predictions=tuple(data["predictions"]),
        metrics={k: (v[0], v[1]) for k, v in data["metrics"].items()},
        stats=RunStats(**data["stats"]),
        extra=dict(data.get("extra") or {}),
    )


class ResultStore(Store):
    """Benchmark results by key. Safe to share between processes (the key is the primary key)."""

    def get(self, key: str) -> tuple[RunResult, dict[str, Any]] | None:
        """The stored result and its identity, or None."""
        with Session(self.engine) as session:
            row = session.scalars(select(BenchmarkResult).where(BenchmarkResult.key == key)).first()
            if row is None:
                return None
            return result_from_dict(row.result), dict(row.identity)

    def put(self, key: str, identity: Mapping[str, Any], result: RunResult) -> None:
        """Store ``result`` under ``key``; a result already stored under it is kept."""
        row = BenchmarkResult(
            key=key,
            created_at=datetime.now(UTC),
            model=str(identity.get("model")),
            model_revision=str(identity.get("model_revision")),
            adapter=identity.get("adapter"),
            adapter_revision=identity.get("adapter_revision"),
            task=result.task,
            metric=result.metric,
            score=result.score,
            n=result.n,
            engine_version=ENGINE_VERSION,
            identity=dict(identity),
            result=result_to_dict(result),
        )
        with Session(self.engine) as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()  # another process stored the same key first: same answer

    def count(self) -> int:
        with Session(self.engine) as session:
            return len(session.scalars(select(BenchmarkResult.key)).all())
