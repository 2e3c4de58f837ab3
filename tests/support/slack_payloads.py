"""What Slack sends the app when someone clicks a button or runs ``/supersede``: the payloads
the HTTP and Socket Mode tests build, one shape for both."""

from __future__ import annotations

from typing import Any

from tests.support.slack_server import TEAM_ID

APP_ID = "A0APP"


def block_actions(
    message: dict[str, Any],
    action: dict[str, Any],
    *,
    channel: str,
    user: str,
    name: str,
    trigger: str,
    response_url: str,
) -> dict[str, Any]:
    """The ``block_actions`` payload of ``user`` using ``action`` on ``message`` in
    ``channel``."""
    return {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "test"},
        "user": {"id": user, "username": name, "name": name, "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "trigger_id": trigger,
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel},
        "channel": {"id": channel, "name": "leads"},
        "message": message,
        "response_url": response_url,
        "actions": [action],
    }


def slash_command(
    text: str, *, channel: str, user: str, trigger: str, response_url: str
) -> dict[str, str]:
    """The fields of ``/supersede <text>`` (a form over HTTP, a JSON payload over Socket
    Mode)."""
    return {
        "token": "legacy",
        "team_id": TEAM_ID,
        "channel_id": channel,
        "user_id": user,
        "user_name": "alice",
        "command": "/supersede",
        "text": text,
        "api_app_id": APP_ID,
        "response_url": response_url,
        "trigger_id": trigger,
    }
