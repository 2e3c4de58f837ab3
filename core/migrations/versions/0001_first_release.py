"""The first release's tables: benchmark results, watcher state, jobs and the Slack outbox.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

A store made before migrations keeps its tables and rows; whatever it lacks is made here
(:mod:`core.migrations.adopt`). Counters added to an existing table get ``DEFAULT 0`` so that
its rows stay valid.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from core.migrations.adopt import create_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("benchmark_results", "watch_seen", "watch_sources", "watch_locks", "jobs", "deliveries")


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    create_table(
        "benchmark_results",
        sa.Column("key", sa.String(64), primary_key=True),
        _when("created_at"),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("model_revision", sa.String(80), nullable=False),
        sa.Column("adapter", sa.String(512), nullable=True),
        sa.Column("adapter_revision", sa.String(80), nullable=True),
        sa.Column("task", sa.String(256), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("engine_version", sa.String(16), nullable=False),
        sa.Column("identity", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
    )
    create_table(
        "watch_seen",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(700), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("repo_id", sa.String(512), nullable=True),
        sa.Column("revision", sa.String(80), nullable=True),
        sa.Column("event", sa.JSON(), nullable=True),
        _when("detected_at"),
        _when("published_at", nullable=True),
        sa.UniqueConstraint("key"),
        sa.UniqueConstraint("repo_id", "revision", name="uq_watch_seen_repo_sha"),
        indexes=["repo_id"],
    )
    create_table(
        "watch_sources",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("etag", sa.String(512), nullable=True),
        sa.Column("last_modified", sa.String(128), nullable=True),
        _when("not_before", nullable=True),
        _when("last_ok_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _when("last_error_at", nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        # Came in a version without migrations: an older store's sources have neither.
        sa.Column("polls", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("errors", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    create_table(
        "watch_locks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(256), nullable=False),
        _when("heartbeat_at"),
    )
    create_table(
        "jobs",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("candidate", sa.String(600), nullable=False),
        sa.Column("finetune", sa.String(64), nullable=True),
        sa.Column("parent", sa.String(64), nullable=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        _when("created_at"),
        _when("queued_at", nullable=True),
        _when("started_at", nullable=True),
        _when("finished_at", nullable=True),
        sa.Column("lease_owner", sa.String(256), nullable=True),
        _when("lease_until", nullable=True),
        indexes=["candidate", "parent", "state"],
    )
    create_table(
        "deliveries",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("thread_ts", sa.String(32), nullable=True),
        sa.Column("ts", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("created_at"),
        _when("sent_at", nullable=True),
        indexes=["job"],
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # its indexes go with it
