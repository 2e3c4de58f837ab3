"""Where finished jobs are told to people: Slack when a bot token is set, the console otherwise."""

from __future__ import annotations

import logging
from typing import Protocol

from config.settings import Settings, secret, slack_api_url
from workers.jobs import Job

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """Delivers one finished job (verdict, failure, skip or announcement)."""

    def send(self, job: Job) -> None: ...


def make_notifier(settings: Settings) -> Notifier:
    """Slack with ``$SLACK_BOT_TOKEN`` (and ``SLACK_API_URL`` as its base URL when set), else the
    console notifier."""
    token = secret(settings.notify.slack.token_env)
    if token:
        from workers.notify.slack import SlackNotifier

        return SlackNotifier(settings, token, base_url=slack_api_url())
    from workers.notify.console import ConsoleNotifier

    return ConsoleNotifier(settings)
