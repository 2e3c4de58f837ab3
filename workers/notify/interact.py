"""The Slack app: buttons on verdict messages and ``/supersede``, on slack-bolt.

Two ways in, one app:

* **HTTP**: ``SLACK_SIGNING_SECRET`` set. Slack's requests arrive at ``notify.slack.events_path``
  on the daemon's listener (the Hub webhook's ``watch.webhook.host:port``; a listener of its own
  there when the webhook is off). bolt checks the signature and refuses a request whose
  timestamp is over five minutes off (401).
* **Socket Mode**: ``SLACK_APP_TOKEN`` (``xapp-...``) set. The daemon opens the connection; no
  inbound HTTP at all.

Slack wants an answer within three seconds: every listener acknowledges first, then records the
request (:class:`workers.notify.actions.ActionLog`: a retried or replayed request stops here),
then acts and tells the person (ephemerally) or updates the message. Only
``notify.slack.operators`` may act; anyone else is told so, and the refusal is recorded too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from config.settings import Settings, secret, slack_api_url, slack_app_mode
from core.asgi import Headers, Receive, Reply, Router, Scope, Send, in_thread, read_body, reply
from core.clock import now
from core.errors import ConfigError
from workers.notify.actions import ActionLog, Actor, Operations, Outcome, request_key
from workers.notify.blocks import escape
from workers.pipeline import Pipeline

if TYPE_CHECKING:
    from slack_bolt import App

log = logging.getLogger(__name__)

#: Largest request body taken (Slack's payloads are a few kilobytes).
MAX_BODY_BYTES = 256 * 1024
#: How long a user group's members are trusted before they are read again.
GROUP_TTL_S = 60.0
BUTTONS = ("supersede_rerun", "supersede_retune", "supersede_ack")
MUTE = "supersede_mute"
USAGE = (
    "`/supersede status` · `/supersede rerun <model>[@revision]` · "
    "`/supersede mute <org> <days>` · `/supersede unmute <org>`"
)


class Operators:
    """Who may act: ``notify.slack.operators`` user ids, and the members of its user groups
    (read with ``usergroups.users.list``, kept for a minute)."""

    def __init__(self, ids: tuple[str, ...], client: Any) -> None:
        self.users = {i for i in ids if not i.startswith("S")}
        self.groups = [i for i in ids if i.startswith("S")]
        self.client = client
        self._members: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def allowed(self, user_id: str) -> bool:
        if user_id in self.users:
            return True
        return any(user_id in self._group(group) for group in self.groups)

    def _group(self, group: str) -> set[str]:
        with self._lock:
            known = self._members.get(group)
            if known is not None and time.monotonic() - known[0] < GROUP_TTL_S:
                return known[1]
        try:
            users = set(self.client.usergroups_users_list(usergroup=group)["users"])
        except Exception as exc:  # SlackApiError, a lost connection: nobody is let in by it
            log.warning("slack: members of user group %s could not be read: %s", group, exc)
            return set()
        with self._lock:
            self._members[group] = (time.monotonic(), users)
        return users


class SlackApp:
    """The bolt app over one pipeline: its listeners, its HTTP endpoint and Socket Mode."""

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        from slack_bolt import App
        from slack_sdk import WebClient

        slack = settings.notify.slack
        token = secret(slack.token_env)
        if not token:
            raise ConfigError(f"the Slack app needs {slack.token_env} (the bot token)")
        base_url = slack_api_url()
        options: dict[str, Any] = {"token": token, "timeout": int(slack.timeout_s)}
        if base_url:
            options["base_url"] = base_url.rstrip("/") + "/"
        self.client = WebClient(**options)
        self.settings = settings
        self.ops = Operations(pipeline)
        self.log = ActionLog(settings.store.url)
        self.operators = Operators(slack.operators, self.client)
        from slack_bolt.error import BoltError

        try:
            # The token is checked now (auth.test): a wrong one stops the start, not a click.
            self.app: App = App(
                client=self.client,  # carries the bot token (and the base URL)
                signing_secret=secret(slack.signing_secret_env) or "",
                logger=logging.getLogger("workers.notify.bolt"),
                request_verification_enabled=slack_app_mode(settings) != "socket",
            )
        except BoltError as exc:
            raise ConfigError(f"Slack refused the bot token in {slack.token_env}: {exc}") from None
        self.app.action(BUTTONS[0])(self._button)
        self.app.action(BUTTONS[1])(self._button)
        self.app.action(BUTTONS[2])(self._button)
        self.app.action(MUTE)(self._mute)
        self.app.command("/supersede")(self._command)
        self._socket: Any = None

    # ------------------------------------------------------------------ serving

    def endpoint(self) -> Callable[[Scope, Receive, Send], Any]:
        """The ASGI app for ``POST events_path`` (bolt answers; the work runs on a thread)."""
        from slack_bolt.request import BoltRequest

        app = self.app

        async def events(scope: Scope, receive: Receive, send: Send) -> None:
            body = await read_body(scope, receive, MAX_BODY_BYTES)
            if isinstance(body, Reply):
                await reply(send, body, close=True)
                return
            request = BoltRequest(
                body=body.decode("utf-8", "replace"),
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=dict(Headers.of(scope)),
            )
            answer = await in_thread(lambda: app.dispatch(request), name="slack request")
            data = (answer.body or "").encode()
            headers = [
                (name.lower().encode("latin-1"), str(value).encode("latin-1"))
                for name, values in (answer.headers or {}).items()
                for value in values
                if name.lower() != "content-length"
            ]
            if not any(name == b"content-type" for name, _ in headers):
                headers.append((b"content-type", b"text/plain; charset=utf-8"))
            headers.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": answer.status,
                        "headers": headers})  # fmt: skip
            await send({"type": "http.response.body", "body": data})

        return events

    def mount(self, router: Router) -> None:
        router.add("POST", self.settings.notify.slack.events_path, self.endpoint())

    def connect(self) -> None:
        """Socket Mode: open the connection (its threads reconnect on their own). An app token
        Slack refuses stops the start with a :class:`ConfigError`."""
        from slack_bolt.adapter.socket_mode import SocketModeHandler
        from slack_sdk.errors import SlackApiError

        variable = self.settings.notify.slack.app_token_env
        self._socket = SocketModeHandler(self.app, secret(variable), web_client=self.client)
        try:
            self._socket.connect()
        except SlackApiError as exc:
            self.close()  # the client's threads started when it was built
            error = exc.response.get("error") if exc.response is not None else None
            raise ConfigError(
                f"Slack refused the app-level token in {variable} ({error or exc}): make one "
                "under Basic Information > App-Level Tokens with the connections:write scope"
            ) from None
        if self._socket.client.is_connected():
            log.info("slack: Socket Mode connected")
        else:  # slack-sdk logs a failed handshake and retries on its own
            log.warning("slack: Socket Mode not connected yet (Slack refused the connection or "
                        "could not be reached); retrying every 10 s")  # fmt: skip

    def close(self) -> None:
        socket, self._socket = self._socket, None
        if socket is not None:
            socket.close()

    # ------------------------------------------------------------------ listeners

    def _begin(self, body: dict[str, Any], actor: Actor, action: str, target: str) -> str | None:
        """Record the request before it acts. Its key when it may act; ``""`` when its user
        may not (recorded as refused); None when it was recorded before (a retry or a replay:
        it must not act twice)."""
        team = str((body.get("team") or {}).get("id") or body.get("team_id") or "")
        trigger = str(body.get("trigger_id") or "")
        if not trigger:
            actions = body.get("actions") or [{}]
            trigger = str(actions[0].get("action_ts") or "")
        key = request_key(team, trigger, actor.user_id, action, target)
        allowed = self.operators.allowed(actor.user_id)
        recorded = self.log.begin(key, actor, action if allowed else "refused", target)
        if not recorded:
            log.info("slack: request %s from %s seen before: ignored", key[:12], actor.user_id)
            return None
        if not allowed:
            self.log.finish(key, Outcome(f"not allowed: {action} {target}"))
            return ""
        return key

    def _button(self, ack: Any, body: dict[str, Any], respond: Any) -> None:
        ack()
        actor = _actor(body)
        action = body["actions"][0]
        kind = str(action["action_id"]).removeprefix("supersede_")
        job = str(action.get("value") or "")
        target = _message_ref(body) if kind == "ack" else job
        key = self._begin(body, actor, kind, target)
        if key is None:
            return
        if not key:
            respond(text=self._refusal(), response_type="ephemeral", replace_original=False)
            return
        if kind == "ack":
            outcome = self._acknowledge(body, actor, target)
        else:
            outcome = self.ops.rerun_job(job, actor, retune=kind == "retune")
        self.log.finish(key, outcome)
        respond(text=outcome.text, response_type="ephemeral", replace_original=False)

    def _acknowledge(self, body: dict[str, Any], actor: Actor, target: str) -> Outcome:
        earlier = self.log.last("ack", target)
        if earlier is not None:
            return Outcome(f"Already {earlier.outcome}.")
        moment = now()
        outcome = self.ops.acknowledge(actor, moment)
        message = body.get("message") or {}
        channel, ts = target.split(":", 1)
        self.client.chat_update(
            channel=channel,
            ts=ts,
            text=f"{message.get('text', '')} ({outcome.text})",
            blocks=acknowledged(list(message.get("blocks") or []), actor, moment),
        )
        return outcome

    def _mute(self, ack: Any, body: dict[str, Any], respond: Any) -> None:
        ack()
        actor = _actor(body)
        action = body["actions"][0]
        job = str(action.get("block_id") or "").removeprefix("supersede:")
        days = str((action.get("selected_option") or {}).get("value") or "")
        owner = self.ops.mute_target(job) or ""
        key = self._begin(body, actor, "mute", f"{owner} {days}")
        if key is None:
            return
        if not key:
            respond(text=self._refusal(), response_type="ephemeral", replace_original=False)
            return
        if not owner or not days.isdigit():
            outcome = Outcome("this message names no organisation to mute")
        else:
            outcome = self.ops.mute(owner, int(days), actor)
        self.log.finish(key, outcome)
        respond(text=outcome.text, response_type="ephemeral", replace_original=False)

    def _command(self, ack: Any, body: dict[str, Any], respond: Any) -> None:
        words = str(body.get("text") or "").split()
        verb, args = (words[0].lower(), words[1:]) if words else ("help", [])
        actor = Actor(str(body.get("user_id") or ""), str(body.get("user_name") or ""))
        if verb == "status":
            ack(text=self.ops.status(), response_type="ephemeral")
            return
        if verb not in ("rerun", "mute", "unmute") or not _arity(verb, args):
            ack(text=f"Usage: {USAGE}", response_type="ephemeral")
            return
        ack(text=f"Working on `{escape(' '.join(words))[:200]}`…", response_type="ephemeral")
        key = self._begin(body, actor, verb, " ".join(args))
        if key is None:
            return
        if not key:
            respond(text=self._refusal(), response_type="ephemeral")
            return
        if verb == "rerun":
            outcome = self.ops.rerun_named(args[0], actor)
        elif verb == "mute":
            outcome = self.ops.mute(args[0], _days(args[1]), actor)
        else:
            outcome = self.ops.unmute(args[0])
        self.log.finish(key, outcome)
        respond(text=outcome.text, response_type="ephemeral")

    def _refusal(self) -> str:
        return ("You are not allowed to act on Supersede's verdicts: ask an operator to add your "
                "user id (or a group of yours) to notify.slack.operators.")  # fmt: skip


def _arity(verb: str, args: list[str]) -> bool:
    return len(args) == {"rerun": 1, "mute": 2, "unmute": 1}[verb]


def _days(text: str) -> float:
    try:
        return float(text.lower().removesuffix("d"))
    except ValueError:
        return -1.0  # refused by the mute with its range


def _actor(body: dict[str, Any]) -> Actor:
    user = body.get("user") or {}
    user_id = str(user.get("id") or "")
    return Actor(user_id, str(user.get("username") or user.get("name") or user_id))


def _message_ref(body: dict[str, Any]) -> str:
    """``channel:ts`` of the message a button is on."""
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id") or ""
    ts = container.get("message_ts") or (body.get("message") or {}).get("ts") or ""
    return f"{channel}:{ts}"


def acknowledged(blocks: list[dict[str, Any]], actor: Actor, at: datetime) -> list[dict[str, Any]]:
    """A message's blocks once acknowledged: no Acknowledge button, and who did it, when."""
    kept: list[dict[str, Any]] = []
    for block in blocks:
        if block.get("type") == "actions":
            elements = [e for e in block.get("elements", []) if e.get("action_id") != BUTTONS[2]]
            if not elements:
                continue
            block = {**block, "elements": elements}
        kept.append(block)
    line = f"✅ Acknowledged by <@{escape(actor.user_id)}> (@{escape(actor.name)}), {at:%H:%M} UTC"
    kept.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]})
    return kept[-50:]
