"""Judged tasks: every answer a judge model gave, so a repeated judgement asks nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

``judge_calls``: one row per question asked of a judge, keyed by the sha256 of the judge's
fingerprint and the messages sent (:mod:`benchmarks.judge.cache`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judge_calls",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("judge", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("judge_calls")
