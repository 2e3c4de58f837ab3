"""Settings of notifications: Slack when a bot token is set, the console otherwise."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    signing_secret_env: str = Field(
        "SLACK_SIGNING_SECRET",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the app's signing secret: when set, `supersede "
        "run` answers Slack's requests (buttons, /supersede) at events_path over HTTP.",
    )
    app_token_env: str = Field(
        "SLACK_APP_TOKEN",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding an app-level token (xapp-...): when set, "
        "`supersede run` takes Slack's requests over Socket Mode instead (no inbound HTTP).",
    )
    events_path: str = Field(
        "/slack/events",
        pattern=r"^/[A-Za-z0-9/_.-]*$",
        description="Path of Slack's requests on the daemon's listener (watch.webhook.host and "
        "port, next to the Hub webhook).",
    )
    operators: tuple[str, ...] = Field(
        (),
        description="Who may act from Slack: user ids (U0123...) or user group ids (S0123...). "
        "Anyone else is told they are not allowed; empty: nobody.",
    )
    mute_days: tuple[int, ...] = Field(
        (7, 30), min_length=1, description="The mute periods offered on a verdict message."
    )

    @field_validator("operators")
    @classmethod
    def _ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not re.fullmatch(r"[UWS][A-Z0-9]{2,}", entry):
                raise ValueError(
                    f"{entry!r} is not a Slack user id (U..., W...) or user group id (S...): "
                    "copy it from the person's or group's profile (\u22ee > Copy member ID)"
                )
        return value

    @field_validator("mute_days")
    @classmethod
    def _days(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(day < 1 or day > 365 for day in value):
            raise ValueError("mute_days: each period is 1 to 365 days")
        return value


class NotifySettings(_Section):
    """Where verdicts, failures, skips and announcements go."""

    slack: SlackSettings = SlackSettings()
    console_dir: str = Field(
        ".supersede/notifications",
        description="Without Slack: each message's Block Kit JSON is written here too.",
    )
