"""Slack delivery through slack-sdk's ``WebClient``, exactly once.

One parent message per release and channel, one thread reply per fine-tune. Each message is
posted by one process only: the one holding its claim in the outbox (see
:mod:`workers.notify.outbox`). Another process delivering the same message at the same time (two
verdicts of one release finishing together) waits for the holder's ``ts``, and takes over only if
the holder's claim runs out without one.

Every Web API call (post, update, history and replies lookups) goes through one retry loop:
``notify.slack.max_attempts`` tries in all, one warning line per retry, a wait of ``Retry-After``
(429, or a 5xx that carries it) or a jittered back-off otherwise, with the claim renewed before
each wait and call so no rival can post while the holder waits. slack-sdk's own retry handlers
are off: its 429 handler would wait where the claim cannot be renewed and outside
``max_attempts``, and its connection-error retry would post again after a lost reply. A
``Retry-After`` longer than :data:`MAX_WAIT_S` ends the delivery with a ``RetryableError`` carrying
it, for the caller to retry later. A post whose fate is unknown (a lost reply, a timeout, a 5xx)
is followed by a look for it in the channel, by the marker in its metadata, before posting again.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from config.settings import Settings, retune_for
from core.clock import now
from core.errors import ConfigError, FatalError, RetryableError
from core.http import full_jitter
from watcher.events import ModelReleased
from workers.jobs import Job
from workers.notify import blocks
from workers.notify.blocks import Message
from workers.notify.mutes import owner_of
from workers.notify.outbox import Outbox, delivery_key, digest

log = logging.getLogger(__name__)
T = TypeVar("T")

EVENT_TYPE = "supersede_notification"
#: Errors Slack gives for a transient failure on its side.
_TRANSIENT = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
#: Longest wait between two tries (a Retry-After, or the back-off's cap). A longer Retry-After
#: is not waited here: the caller retries the whole delivery after it.
MAX_WAIT_S = 30.0
#: Most pages of history or replies read when looking for a message (200 messages each).
MAX_PAGES = 50

# slack-sdk logs an error for every failed request; the retry loop below already logs one
# warning per retry, so the SDK's line would say the same thing twice.
_SDK_LOG = logging.getLogger(f"{__name__}.sdk")
_SDK_LOG.addFilter(lambda record: not record.getMessage().startswith("Failed to send a request"))


class _NotTaken(RetryableError):
    """A call that Slack certainly did not carry out (429, or no connection was made)."""


class _ClaimLost(Exception):
    """Our claim on a delivery ran out and another process took it over."""


class SlackNotifier:
    """Posts a finished job's message to the fine-tune's channel (or the default one)."""

    def __init__(
        self, settings: Settings, token: str, *, base_url: str | None = None, client: Any = None
    ) -> None:
        from slack_sdk import WebClient

        self.settings = settings
        self.slack = settings.notify.slack
        self.hub_url = settings.hub.endpoint
        self.outbox = Outbox(settings.store.url)
        options: dict[str, Any] = {"token": token, "timeout": math.ceil(self.slack.timeout_s)}
        if base_url:
            options["base_url"] = base_url.rstrip("/") + "/"
        self.client = client or WebClient(**options, logger=_SDK_LOG, retry_handlers=[])
        #: Scale of the jittered back-off between tries (tests shrink it).
        self.backoff_base_s = 1.0
        self.max_wait_s = MAX_WAIT_S
        #: A claim's lease. It is renewed before every wait and every call, so it must outlast
        #: the longest of them: a wait, or a call (its timeout applies per socket operation, so
        #: twice it), plus room for the store.
        self.lease_s = max(self.max_wait_s, 2 * self.slack.timeout_s) + 10.0
        #: How long a delivery waits for a rival's post before a RetryableError. One lease: a
        #: holder that died stops renewing, and its claim runs out within it.
        self.wait_s = self.lease_s
        #: How often a waiting delivery reads the outbox row.
        self.poll_s = 0.1

    def channel_for(self, job: Job) -> str:
        """The fine-tune's own channel, else ``notify.slack.channel``."""
        for ft in self.settings.finetunes:
            if ft.name == job.finetune and ft.slack_channel:
                return ft.slack_channel
        if self.slack.channel:
            return self.slack.channel
        raise ConfigError("notify.slack.channel is not set: name the channel verdicts go to")

    def controls_for(self, job: Job) -> blocks.Controls | None:
        """The message's buttons, when someone may use them (``notify.slack.operators`` set:
        the daemon's Slack app answers them, a check at its start-up); None otherwise."""
        if not self.slack.operators:
            return None
        try:
            event = job.event()
        except ValueError:
            return None
        release = event if isinstance(event, ModelReleased) else None
        ft = next((f for f in self.settings.finetunes if f.name == job.finetune), None)
        retune = (
            job.kind == "verdict" and release is not None and release.api is None
            and ft is not None and ft.adapter is not None
            and retune_for(self.settings, ft).when != "never"
        )  # fmt: skip
        return blocks.Controls(retune, owner_of(event), self.slack.mute_days)

    def send(self, job: Job) -> None:
        """Deliver ``job``'s message (under its release's parent message, when it has one)."""
        channel = self.channel_for(job)
        message = blocks.for_job(job, self.hub_url, self.controls_for(job))
        thread_ts = None
        if job.parent:
            names = [f.name for f in self.settings.finetunes]
            parent = blocks.release(blocks.release_of(job), names, self.hub_url)
            thread_ts = self.deliver(delivery_key("release", job.parent, channel), job.parent,
                                     channel, parent, None)  # fmt: skip
        self.deliver(delivery_key("job", job.key, channel), job.key, channel, message, thread_ts)

    def deliver(
        self, key: str, job: str, channel: str, message: Message, thread_ts: str | None
    ) -> str:
        """Post ``message`` once (or correct it in place); returns its ``ts``.

        Whoever claims the outbox row posts; the others wait for its ``ts`` (at most
        :attr:`wait_s`, then a ``RetryableError``). Raises ``RetryableError`` after
        ``max_attempts`` tries, ``FatalError`` when Slack refuses the message.
        """
        hashed = digest(message.text, message.blocks)
        self.outbox.record(key, job, channel, thread_ts, hashed)
        owner = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + self.wait_s
        waiting = False
        while True:
            row = self.outbox.get(key)
            assert row is not None, "recorded above, never deleted"
            if row.ts:
                if row.digest != hashed:
                    self._update(row.channel, row.ts, message)
                    self.outbox.sent(key, row.ts, hashed)
                return row.ts
            if self.outbox.claim(key, owner, self.lease_s):
                try:
                    self._post(key, owner, message, hashed)
                except _ClaimLost:
                    log.warning("slack: another worker took over message %s", key[:12])
                except BaseException:
                    self.outbox.release(key, owner)  # the next one need not wait for the lease
                    raise
                continue  # read back what was recorded (and correct it if it is stale)
            if time.monotonic() >= deadline:
                left = (row.claim_until - now()).total_seconds() if row.claim_until else 0.0
                raise RetryableError(
                    f"another worker ({row.claim_owner}) is still posting Slack message "
                    f"{key[:12]}", retry_after_s=max(1.0, left))  # fmt: skip
            if not waiting:
                waiting = True
                log.info("slack: waiting for %s to post message %s", row.claim_owner, key[:12])
            time.sleep(self.poll_s)

    def _update(self, channel: str, ts: str, message: Message) -> None:
        """Correct a delivered message in place (the same update twice is harmless: no claim)."""

        def once() -> None:
            self._call("chat_update", channel=channel, ts=ts, text=message.text,
                       blocks=message.blocks)  # fmt: skip

        self._retrying(once)

    def _post(self, key: str, owner: str, message: Message, hashed: str) -> None:
        """Under our claim: find the message in Slack or post it, and record its ``ts``."""
        row = self.outbox.get(key)
        assert row is not None
        # Posts tried before (ours, a killed worker's, a holder whose claim ran out) may have
        # been taken by Slack though the reply was lost: look before posting again.
        uncertain = row.attempts > 0

        def hold() -> None:
            if not self.outbox.claim(key, owner, self.lease_s):
                raise _ClaimLost(key)

        def once() -> None:
            nonlocal uncertain
            if uncertain:
                found = self._find(key, row.channel, row.thread_ts, row.created_at, hold)
                if found:
                    self.outbox.sent(key, found)  # its content is checked by the caller
                    return
                uncertain = False
            hold()
            self.outbox.attempt(key)
            try:
                reply = self._call(
                    "chat_postMessage",
                    channel=row.channel,
                    text=message.text,
                    blocks=message.blocks,
                    thread_ts=row.thread_ts,
                    metadata={"event_type": EVENT_TYPE, "event_payload": {"key": key}},
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except RetryableError as exc:
                uncertain = not isinstance(exc, _NotTaken)
                raise
            self.outbox.sent(key, str(reply["ts"]), hashed)

        self._retrying(once, hold)

    def _retrying(self, once: Callable[[], T], hold: Callable[[], None] | None = None) -> T:
        """``once()``, tried up to ``max_attempts`` times while it raises ``RetryableError``."""
        tries = self.slack.max_attempts
        for attempt in range(tries):
            try:
                return once()
            except RetryableError as exc:
                if attempt + 1 >= tries:
                    gave_up = f"Slack did not take the message after {tries} tries: {exc}"
                    raise RetryableError(gave_up, exc.retry_after_s) from None
                delay = self._delay(exc, attempt)
                log.warning("slack: %s; try %d of %d in %.1f s", exc, attempt + 2, tries, delay)
                if hold is not None:
                    hold()  # no rival may post while we wait
                time.sleep(delay)
        raise AssertionError("unreachable: max_attempts is at least 1")

    def _delay(self, exc: RetryableError, attempt: int) -> float:
        if exc.retry_after_s is None:
            return full_jitter(attempt, self.backoff_base_s, self.max_wait_s)
        if exc.retry_after_s > self.max_wait_s:
            raise RetryableError(f"{exc}; trying again later", exc.retry_after_s) from None
        return exc.retry_after_s

    def _find(
        self,
        key: str,
        channel: str,
        thread_ts: str | None,
        recorded: datetime,
        hold: Callable[[], None],
    ) -> str | None:
        """The ``ts`` of the message carrying ``key`` in its metadata, if Slack has it."""
        since = recorded - timedelta(minutes=5)  # room for clock skew between us and Slack
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            hold()
            if thread_ts:
                page = self._call("conversations_replies", channel=channel, ts=thread_ts,
                                  include_all_metadata=True, limit=200, cursor=cursor)  # fmt: skip
            else:
                page = self._call("conversations_history", channel=channel, limit=200,
                                  include_all_metadata=True, cursor=cursor,
                                  oldest=f"{since.timestamp():.6f}")  # fmt: skip
            for message in page.get("messages", []):
                payload = (message.get("metadata") or {}).get("event_payload") or {}
                if payload.get("key") == key:
                    return str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return None
        log.warning("slack: message %s not in the last %d pages of %s; posting it", key[:12],
                    MAX_PAGES, channel)  # fmt: skip
        return None

    def _call(self, method: str, **kwargs: Any) -> Any:
        """One Web API call; its failure classified as retryable or fatal."""
        from slack_sdk.errors import SlackApiError

        arguments = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return getattr(self.client, method)(**arguments)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "") or "")
            status = exc.response.status_code
            after = _retry_after(exc.response.headers)
            if status == 429:
                raise _NotTaken(f"Slack rate-limited {method} (429, Retry-After {after})",
                                after) from None  # fmt: skip
            if status >= 500 or error in _TRANSIENT:
                detail = error or "no detail"
                raise RetryableError(f"Slack answered {method} with {status} ({detail})",
                                     after) from None  # fmt: skip
            raise FatalError(f"Slack refused {method}: {error or status}") from None
        except OSError as exc:  # URLError, RemoteDisconnected, reset, timeout
            reason = getattr(exc, "reason", exc)
            name = type(reason).__name__
            if isinstance(reason, ConnectionRefusedError | socket.gaierror):
                raise _NotTaken(f"Slack unreachable for {method} ({name})") from None
            raise RetryableError(f"Slack unreachable for {method} ({name})") from None


def _retry_after(headers: Any) -> float | None:
    """The ``Retry-After`` header in seconds, if any (slack-sdk may give a value or a list)."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            first = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(first))
            except (TypeError, ValueError):
                return None
    return None
