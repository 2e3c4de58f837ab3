"""Acting from Slack: who asked for a job, muted owners, and every action taken in Slack.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``jobs``: ``requested_by`` (who asked for the last run by hand) and ``muted`` (why its
notification was not posted). ``mutes``: one row per muted organisation or vendor.
``slack_actions``: every button click and ``/supersede`` command, keyed by the request it came
in (a repeated request finds its row and does nothing twice), with the Slack user id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("requested_by", sa.String(256), nullable=True))
    op.add_column("jobs", sa.Column("muted", sa.String(512), nullable=True))
    op.create_table(
        "mutes",
        sa.Column("owner", sa.String(256), primary_key=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "slack_actions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("user_name", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(600), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("job", sa.String(64), nullable=True),
    )
    op.create_index("ix_slack_actions_target", "slack_actions", ["target"])


def downgrade() -> None:
    op.drop_index("ix_slack_actions_target", "slack_actions")
    op.drop_table("slack_actions")
    op.drop_table("mutes")
    op.drop_column("jobs", "muted")
    op.drop_column("jobs", "requested_by")
