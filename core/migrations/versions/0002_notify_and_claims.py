"""Jobs keep their notification bookkeeping; a Slack delivery is claimed under a lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``jobs``: ``unsent`` (the task message could not be sent), ``notify_tries``, ``notify_error``
and ``notify_due`` (a failed notification is retried with back-off). ``deliveries``:
``claim_owner`` and ``claim_until`` (only the holder posts a release message). A store made
before migrations by the version that added them already has them (:mod:`core.migrations.adopt`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from core.migrations.adopt import add_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_columns(
        "jobs",
        # Counters start at 0 on the rows already there.
        sa.Column("unsent", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("notify_tries", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("notify_error", sa.Text(), nullable=True),
        sa.Column("notify_due", sa.DateTime(timezone=True), nullable=True),
    )
    add_columns(
        "deliveries",
        sa.Column("claim_owner", sa.String(256), nullable=True),
        sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    for column in ("unsent", "notify_tries", "notify_error", "notify_due"):
        op.drop_column("jobs", column)
    for column in ("claim_owner", "claim_until"):
        op.drop_column("deliveries", column)
