"""Slack delivery through slack-sdk's ``WebClient``, exactly once.

One parent message per release and channel, one thread reply per fine-tune. slack-sdk retries a
429 itself (``RateLimitErrorRetryHandler`` honours ``Retry-After``); its connection-error retry is
left out on purpose: a post whose reply was lost may have been accepted, and posting again would
duplicate it. Those (and 5xx) are retried here instead, each try after looking for the message in
the channel by the marker in its metadata (see :mod:`workers.notify.outbox`).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from benchmarks.http import full_jitter
from config.errors import ConfigError, FatalError, RetryableError
from config.settings import Settings
from workers.jobs import Job
from workers.notify import blocks
from workers.notify.blocks import Message
from workers.notify.outbox import Outbox, delivery_key, digest

log = logging.getLogger(__name__)

EVENT_TYPE = "supersede_notification"
#: Errors Slack gives for a transient failure on its side.
_TRANSIENT = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class SlackNotifier:
    """Posts a finished job's message to the fine-tune's channel (or the default one)."""

    def __init__(
        self, settings: Settings, token: str, *, base_url: str | None = None, client: Any = None
    ) -> None:
        from slack_sdk import WebClient
        from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

        self.settings = settings
        self.slack = settings.notify.slack
        self.hub_url = settings.hub.endpoint
        self.outbox = Outbox(settings.store.url)
        options: dict[str, Any] = {"token": token, "timeout": int(self.slack.timeout_s)}
        if base_url:
            options["base_url"] = base_url.rstrip("/") + "/"
        handler = RateLimitErrorRetryHandler(max_retry_count=self.slack.rate_limit_retries)
        self.client = client or WebClient(**options, retry_handlers=[handler])
        self.backoff_base_s = 1.0

    def channel_for(self, job: Job) -> str:
        for ft in self.settings.finetunes:
            if ft.name == job.finetune and ft.slack_channel:
                return ft.slack_channel
        if self.slack.channel:
            return self.slack.channel
        raise ConfigError("notify.slack.channel is not set: name the channel verdicts go to")

    def send(self, job: Job) -> None:
        channel = self.channel_for(job)
        message = blocks.for_job(job, self.hub_url)
        thread_ts = None
        if job.parent:
            event = job.payload.get("event", {})
            names = [f.name for f in self.settings.finetunes]
            parent = blocks.release(event, names, self.hub_url)
            thread_ts = self.deliver(delivery_key("release", job.parent, channel), job.parent,
                                     channel, parent, None)  # fmt: skip
        self.deliver(delivery_key("job", job.key, channel), job.key, channel, message, thread_ts)

    def deliver(
        self, key: str, job: str, channel: str, message: Message, thread_ts: str | None
    ) -> str:
        """Post ``message`` once (or correct it in place); returns its ``ts``."""
        hashed = digest(message.text, message.blocks)
        known = self.outbox.get(key)
        if known is not None and known.state == "sent" and known.ts:
            if known.digest != hashed:
                self._call("chat_update", channel=channel, ts=known.ts, text=message.text,
                           blocks=message.blocks)  # fmt: skip
                self.outbox.sent(key, known.ts, hashed)
            return known.ts
        self.outbox.record(key, job, channel, thread_ts, hashed)
        recorded = self.outbox.get(key)
        look_first = known is not None  # pending: an earlier try may have been accepted
        last: Exception | None = None
        for attempt in range(self.slack.max_attempts):
            if look_first:
                found = self._find(key, channel, thread_ts, recorded)
                if found:
                    self.outbox.sent(key, found, hashed)
                    return found
            self.outbox.attempt(key)
            try:
                reply = self._call(
                    "chat_postMessage",
                    channel=channel,
                    text=message.text,
                    blocks=message.blocks,
                    thread_ts=thread_ts,
                    metadata={"event_type": EVENT_TYPE, "event_payload": {"key": key}},
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except RetryableError as exc:
                last, look_first = exc, True
                log.warning("slack: %s; looking for the message before trying again", exc)
                time.sleep(full_jitter(attempt, self.backoff_base_s, 30.0))
                continue
            ts = str(reply["ts"])
            self.outbox.sent(key, ts, hashed)
            return ts
        raise RetryableError(f"Slack did not take the message after {self.slack.max_attempts} "
                             f"tries: {last}")  # fmt: skip

    def _find(self, key: str, channel: str, thread_ts: str | None, recorded: Any) -> str | None:
        """The ``ts`` of the message carrying ``key`` in its metadata, if Slack has it."""
        since = recorded.created_at - timedelta(minutes=5) if recorded else None
        if thread_ts:
            pages = self._call("conversations_replies", channel=channel, ts=thread_ts,
                               include_all_metadata=True, limit=200)  # fmt: skip
        else:
            pages = self._call("conversations_history", channel=channel, limit=200,
                               include_all_metadata=True,
                               oldest=f"{since.timestamp():.6f}" if since else None)  # fmt: skip
        for page in pages:
            for message in page.get("messages", []):
                payload = (message.get("metadata") or {}).get("event_payload") or {}
                if payload.get("key") == key:
                    return str(message["ts"])
        return None

    def _call(self, method: str, **kwargs: Any) -> Any:
        from slack_sdk.errors import SlackApiError

        arguments = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return getattr(self.client, method)(**arguments)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            status = exc.response.status_code
            if status >= 500 or status == 429 or error in _TRANSIENT:
                raise RetryableError(f"Slack answered {status} ({error or 'no detail'})") from None
            raise FatalError(f"Slack refused {method}: {error or status}") from None
        except (OSError, TimeoutError) as exc:  # URLError, RemoteDisconnected, reset, timeout
            raise RetryableError(f"Slack unreachable ({type(exc).__name__})") from None
