"""Hub webhooks: the event-driven path, with no polling delay.

The Hub POSTs a JSON payload (``huggingface_hub.WebhookPayload``) and sends the secret set in the
webhook's settings verbatim in ``X-Webhook-Secret``; it is compared in constant time. Accepted:
a model repo created, a push to ``main``, and a ``repo.config`` update that makes a private repo
public (vendors often launch that way). Everything else is acknowledged and ignored. Accepted
events go through the same filters and dedupe as polling, so a replayed delivery changes nothing.

As a source it polls nothing: the daemon serves its endpoint (:class:`WebhookListener`, an ASGI
app under uvicorn, see :mod:`core.asgi`) when ``watch.webhook.enabled``. The secret is checked
before the body is read, the body's length is parsed strictly and capped, and a client that is
slow to send its request is disconnected (``watch.webhook.request_timeout_s``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from config.settings import Settings, secret
from config.watch import WebhookWatch
from core.asgi import (
    Headers,
    Limits,
    Receive,
    Reply,
    Router,
    Scope,
    Send,
    Server,
    in_thread,
    read_body,
    reply,
)
from core.constants import ENV_NESTED_DELIMITER, ENV_PREFIX
from core.errors import ConfigError, FatalError, RetryableError
from watcher.filters import author_reason, decide
from watcher.sources.base import Channel, SourceReport, register
from watcher.state import RELEASED

if TYPE_CHECKING:
    from watcher.discovery import Discovery

log = logging.getLogger(__name__)

WEBHOOK = "webhook"
SECRET_HEADER = "X-Webhook-Secret"
MAIN_REF = "refs/heads/main"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")
SHA = re.compile(r"^[0-9a-f]{40}$")
#: Deliveries handled at once (each a Hub lookup and a store write); more wait their turn.
WORKERS = 4

__all__ = ["SECRET_HEADER", "Reply", "WebhookHandler", "WebhookListener", "webhook_app"]


def what_changed(payload: Mapping[str, Any]) -> tuple[str, str | None] | str:
    """``(repo_id, sha)`` when the payload announces a possible release, else why it does not.

    Raises ValueError when the payload is not a Hub webhook payload.
    """
    from huggingface_hub import WebhookPayload
    from pydantic import ValidationError

    try:
        parsed = WebhookPayload.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"not a Hub webhook payload: {where}: {first['msg']}") from None
    repo, event = parsed.repo, parsed.event
    if repo.type != "model":
        return f"{repo.type} repo"
    if not REPO_ID.match(repo.name):
        raise ValueError(f"not a Hub webhook payload: repo.name {repo.name[:100]!r} is no repo id")
    head = payload.get("repo", {}).get("headSha") or repo.head_sha
    if head is not None and not (isinstance(head, str) and SHA.match(head)):
        raise ValueError("not a Hub webhook payload: repo.headSha is not a commit sha")
    if event.scope == "repo" and event.action == "create":
        kind = "created"
    elif event.scope == "repo.content" and event.action == "update":
        main = [ref for ref in parsed.updatedRefs or () if ref.ref == MAIN_REF]
        if not main or not main[0].newSha:
            return "push to a branch other than main"
        if not SHA.match(main[0].newSha):
            raise ValueError("not a Hub webhook payload: updatedRefs newSha is not a commit sha")
        head, kind = main[0].newSha, "pushed to main"
    elif event.scope == "repo.config" and event.action == "update":
        config = payload.get("updatedConfig") or {}
        if not isinstance(config, dict):
            raise ValueError("not a Hub webhook payload: updatedConfig is not an object")
        if config.get("private") is not False:
            return "configuration change that does not make the repo public"
        kind = "made public"
    else:
        return f"event {event.scope}/{event.action}"
    if repo.private and kind != "made public":
        return "private repo (considered when it is made public)"
    log.info("webhook: %s %s", repo.name, kind)
    return repo.name, head


def on_repo(discovery: Discovery, repo_id: str, sha: str | None) -> SourceReport:
    """A Hub webhook said ``repo_id`` changed (created, pushed to main, made public)."""
    report = SourceReport(WEBHOOK)
    report.seen = 1
    refused = author_reason(repo_id, discovery.watch.hub.authors)
    if refused:  # before asking the Hub anything: a stranger's repo costs no request
        log.info("%s skipped: %s", repo_id, refused)
        report.dropped, report.error = True, refused
        return report
    facts = discovery.hub.facts(repo_id, revision=sha)
    decision = decide(facts, discovery.watch.hub)
    if decision.action != "accept" or facts.sha is None:
        report.dropped = decision.action == "drop"
        report.error = decision.reason or "no commit"
        return report
    event = discovery.release(facts, WEBHOOK)
    # The webhook is the news: no lookback baseline (a private repo made public is new).
    if discovery.state.record_repo(WEBHOOK, repo_id, facts.sha, event) == RELEASED:
        report.events.append(event)
    discovery.flush()
    return report


class WebhookHandler:
    """Checks, parses and dispatches one delivery; no I/O of its own beyond ``discovery``."""

    def __init__(self, discovery: Discovery, secret: str, settings: WebhookWatch) -> None:
        self.discovery = discovery
        self._secret = secret.encode()
        self.settings = settings

    def authorize(self, headers: Mapping[str, str]) -> Reply | None:
        """The refusal of a delivery without the right secret (compared in constant time)."""
        given = headers.get(SECRET_HEADER)
        if given is None:
            return Reply(401, {"error": f"missing {SECRET_HEADER} header"})
        if not hmac.compare_digest(given.encode(), self._secret):
            return Reply(403, {"error": f"wrong {SECRET_HEADER}"})
        return None

    def handle(self, headers: Mapping[str, str], body: bytes) -> Reply:
        refused = self.authorize(headers)
        if refused is not None:
            return refused
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return Reply(400, {"error": "body is not JSON"})
        if not isinstance(payload, dict):
            return Reply(400, {"error": "body is not a JSON object"})
        try:
            change = what_changed(payload)
        except ValueError as exc:
            return Reply(400, {"error": str(exc)})
        if isinstance(change, str):
            return Reply(200, {"ignored": change})
        repo_id, sha = change
        try:
            report = on_repo(self.discovery, repo_id, sha)
        except RetryableError as exc:
            wait = f"{max(1, round(exc.retry_after_s or 30))}"
            return Reply(503, {"error": str(exc)}, {"Retry-After": wait})
        except FatalError as exc:
            return Reply(200, {"ignored": str(exc)})
        if report.events:
            released = [event.model_dump(mode="json") for event in report.events]
            return Reply(202, {"released": released})
        return Reply(200, {"ignored": report.error or "already seen"})


def webhook_app(handler: WebhookHandler) -> Router:
    """``POST <path>`` for the Hub, ``GET /healthz`` for probes.

    The secret is checked and the declared length validated before a byte of the body is read;
    a refused delivery's connection is closed with its body unread. The delivery itself (a Hub
    lookup, the store) runs on a thread, ``WORKERS`` at most at once, never on the event loop.
    """
    settings = handler.settings
    workers = asyncio.Semaphore(WORKERS)

    async def health(scope: Scope, receive: Receive, send: Send) -> None:
        await reply(send, Reply(200, {"ok": True}))

    async def deliver(scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers.of(scope)
        refused = handler.authorize(headers)
        body = refused or await read_body(scope, receive, settings.max_body_bytes)
        if isinstance(body, Reply):
            await reply(send, body, close=True)
            return
        try:
            async with workers:
                call = functools.partial(handler.handle, headers, body)
                answer = await in_thread(call, name="webhook delivery")
        except Exception:  # a bug: answered and logged, never a dropped connection
            log.exception("webhook delivery could not be handled")
            answer = Reply(500, {"error": "internal error; the delivery was not recorded"})
        await reply(send, answer)

    router = Router(WEBHOOK)
    router.add("GET", "/healthz", health)
    router.add("POST", settings.path, deliver)
    return router


@register
class WebhookSource:
    """Hub webhooks: no channel to poll; an endpoint while ``watch.webhook.enabled``."""

    name: ClassVar[str] = WEBHOOK

    def channels(self, settings: Settings) -> list[Channel]:
        return []

    def listener(self, discovery: Discovery) -> WebhookListener | None:
        hook = discovery.watch.webhook
        if not hook.enabled:
            return None
        value = secret(hook.secret_env)
        if not value:
            raise ConfigError(
                f"watch.webhook.enabled is true but {hook.secret_env} is not set: put the secret "
                "from the Hub's webhook settings in that environment variable"
            )
        return WebhookListener(WebhookHandler(discovery, value, hook))


class WebhookListener:
    """The webhook endpoint, served on a thread of its own (:mod:`core.asgi`)."""

    def __init__(self, handler: WebhookHandler) -> None:
        self.handler = handler
        self.url = ""
        #: The listener's routes (the daemon adds Slack's requests to them).
        self.router: Router | None = None
        self._server: Server | None = None

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._server.connections if self._server else 0

    def start(self) -> None:
        hook = self.handler.settings
        limits = Limits(
            request_timeout_s=hook.request_timeout_s, max_connections=hook.max_connections
        )
        router = webhook_app(self.handler)
        try:
            server = Server(router, hook.host, hook.port, name="webhook", limits=limits)
        except OSError as exc:
            variable = f"{ENV_PREFIX}WATCH{ENV_NESTED_DELIMITER}WEBHOOK{ENV_NESTED_DELIMITER}PORT"
            raise ConfigError(
                f"watch.webhook: cannot listen on {hook.host}:{hook.port} "
                f"({exc.strerror or exc}): stop what uses that port, or set watch.webhook.port "
                f"(or {variable}) to a free one"
            ) from None
        server.start()
        self._server, self.router = server, router
        self.url = f"http://{hook.host}:{server.port}{hook.path}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # A delivery still in a Hub lookup after the grace period is answered 503 and ends on
            # its own thread; the Hub's redelivery is deduplicated.
            server.stop()
