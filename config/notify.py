"""Settings of notifications: Slack when a bot token is set, the console otherwise."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackSettings(_Section):
    """Slack Web API delivery (slack-sdk ``WebClient``)."""

    channel: str | None = Field(
        None, description="Channel id (C0123...) or name (#ai-leads); per fine-tune: slack_channel."
    )
    token_env: str = Field(
        "SLACK_BOT_TOKEN",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the bot token (xoxb-...).",
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one Web API call.")
    rate_limit_retries: int = Field(
        5, ge=0, le=20, description="Unused: 429s now count against max_attempts. Still read."
    )
    max_attempts: int = Field(
        4,
        ge=1,
        le=20,
        description="Tries of every Slack call (429 with Retry-After, 5xx, lost connection); a "
        "post whose reply was lost is tried again only after checking the channel for it.",
    )


class NotifySettings(_Section):
    """Where verdicts, failures, skips and announcements go."""

    slack: SlackSettings = SlackSettings()
    console_dir: str = Field(
        ".supersede/notifications",
        description="Without Slack: each message's Block Kit JSON is written here too.",
    )
