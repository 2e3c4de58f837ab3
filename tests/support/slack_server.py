"""A tiny, in-process fake of the Slack Web API methods Supersede uses, for tests.

The real ``slack_sdk.WebClient`` works against it when given ``base_url=server.api_url``::

    with SlackServer(token="xoxb-test") as slack:
        client = WebClient(token="xoxb-test", base_url=slack.api_url)
        ts = client.chat_postMessage(channel="C1", text="hi")["ts"]
        assert slack.posts("C1")[0]["ts"] == ts

Methods (``POST /api/<method>`` with a JSON, form-encoded or empty body, or ``GET`` with query
parameters; query parameters of a POST are merged under the body's)::

    auth.test               who the token belongs to (U0BOT / B0BOT in team T0TEAM)
    chat.postMessage        store a message (top level, or a reply with ``thread_ts``)
    chat.update             replace the text / blocks / metadata of a message, counting edits
    conversations.history   top-level messages of a channel, newest first, cursor-paginated
    conversations.replies   a thread's parent and its replies, oldest first, cursor-paginated

How ``slack_sdk`` (3.x, the urllib ``WebClient``) sends them: every call is an HTTP ``POST`` to
``base_url + method`` whatever ``http_verb`` the SDK method declares, with
``Authorization: Bearer <token>``. ``chat.postMessage`` and ``chat.update`` send a JSON body
(``blocks`` and ``metadata`` stay JSON arrays / objects); ``conversations.history`` and
``conversations.replies`` send a form-encoded body (booleans as ``"1"`` / ``"0"``, numbers as
strings); ``auth.test`` sends an empty body. A form-encoded ``blocks`` or ``metadata`` (as from
``client.api_call(method, data=...)``) is a JSON string and is decoded here, as Slack does.

Behaviour mirrors Slack where a client depends on it:

* Errors are HTTP 200 with ``{"ok": false, "error": "<code>"}`` (the SDK raises
  ``SlackApiError``); only an unknown method answers 404 (``unknown_method``). A wrong or
  missing token gets ``invalid_auth``.
* ``ts`` values are ``"<seconds>.<6 digits>"``, strictly increasing across the server.
* ``chat.postMessage`` (and ``chat.update``, for what it is given) answers, like Slack:

  - ``channel_not_found``: no channel, or (with ``channels=`` given) a channel outside it;
  - ``not_in_channel``: a channel in ``foreign_channels``, or one the bot was kicked from;
  - ``no_text``: neither ``text`` nor non-empty ``blocks``;
  - ``msg_too_long``: text over 40,000 characters;
  - ``invalid_blocks``: blocks not a JSON array, more than 50 of them, one not an object with a
    ``type``, a section's text over 3,000 characters or a header's over 150
    (``response_metadata.messages`` says which); ``invalid_blocks_format``: undecodable JSON;
  - ``invalid_metadata_format``: ``metadata`` not ``{"event_type": str, "event_payload": {}}``;
  - ``invalid_thread_ts``: a malformed ``thread_ts``. As on Slack, a ``thread_ts`` naming a
    reply threads under that reply's parent, and a well-formed ``thread_ts`` naming no message
    is accepted (the reply is stored but shows up in no history).
* Replies are not in ``conversations.history`` unless posted with ``reply_broadcast``; a parent
  with replies carries ``thread_ts``, ``reply_count`` and ``latest_reply`` there.
* ``metadata`` is in the messages of ``conversations.history`` / ``conversations.replies`` only
  when ``include_all_metadata`` is true (it is always in the ``message`` a post returns).
* ``oldest`` / ``latest`` are exclusive unless ``inclusive`` is true; ``limit`` defaults to 100
  (at most 999); ``has_more`` and ``response_metadata.next_cursor`` (an opaque
  ``next_ts:<ts>`` in base64) page through the rest (a bad cursor is ``invalid_cursor``).

Test controls (thread-safe; faults are matched by method name, ``"*"`` matching any, and
consumed in the order they were queued): :meth:`SlackServer.fail_next` (an HTTP status such
as 429 with ``Retry-After``, 500, 503, or a custom body), :meth:`SlackServer.reset_after_accept`
(carry the request out, then close the connection without a byte of response: "Slack took the
post, the reply was lost") and :meth:`SlackServer.hang_next` (hold the request unanswered).
Seed messages from people with :meth:`SlackServer.add_message`; remove the bot from a channel
with :meth:`SlackServer.kick`.

Observations: :attr:`SlackServer.messages` (every message ever stored, in order),
:meth:`SlackServer.posts`, :meth:`SlackServer.replies`, :attr:`SlackServer.requests` /
:meth:`SlackServer.calls` (each request as received and how it was answered) and ``errors``
(tracebacks of exceptions raised while handling a request, answered 500).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from supersede.demo.localhub.server import LocalHandler, LocalServer

__all__ = [
    "BOT_ID",
    "BOT_USER_ID",
    "HUMAN_USER_ID",
    "MAX_BLOCKS",
    "MAX_TEXT_LENGTH",
    "TEAM_ID",
    "SlackRequest",
    "SlackServer",
]

#: The bot user the server's token belongs to (``auth.test`` ``user_id``; author of posts).
BOT_USER_ID = "U0BOT"
#: The bot id in ``auth.test`` and on the bot's messages.
BOT_ID = "B0BOT"
#: The workspace.
TEAM_ID = "T0TEAM"
#: Default author of messages seeded with :meth:`SlackServer.add_message`.
HUMAN_USER_ID = "U0HUMAN"
_APP_ID = "A0APP"
#: Longest message text ``chat.postMessage`` accepts (longer: ``msg_too_long``).
MAX_TEXT_LENGTH = 40_000
#: Most blocks in one message (more: ``invalid_blocks``).
MAX_BLOCKS = 50
_MAX_SECTION_TEXT = 3000
_MAX_HEADER_TEXT = 150
_MAX_LIMIT = 999
_DEFAULT_LIMIT = 100
_TS_RE = re.compile(r"^\d{1,12}(\.\d{1,6})?$")
_TRUE = frozenset({"1", "true", "yes"})
_FAULT_ERRORS = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}


@dataclass(frozen=True)
class SlackRequest:
    """One request as received, and how it was answered."""

    #: The Web API method, e.g. ``"chat.postMessage"`` (the path after ``/api/``).
    method: str
    #: The HTTP verb (``slack_sdk`` always sends ``POST``).
    http_verb: str
    #: Query parameters merged with the decoded body (JSON object or form fields).
    params: dict[str, Any]
    #: Header names lower-cased.
    headers: dict[str, str]
    #: ``"json"``, ``"form"``, ``"none"`` (no body) or the body's content type when undecoded.
    body_format: str
    #: The HTTP status answered; ``None`` when no response was sent (reset, hang, or not yet).
    status: int | None = None
    #: The ``error`` code of an ``{"ok": false}`` answer.
    error: str | None = None
    #: The fault that took this request: ``"fail"``, ``"reset"`` or ``"hang"``.
    fault: str | None = None


@dataclass
class _Fault:
    kind: str  # "fail", "reset" or "hang"
    method: str
    remaining: int
    status: int = 0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: dict[str, Any] | None = None
    seconds: float = 0.0
    carry_out: bool = False


class _SlackError(Exception):
    def __init__(self, code: str, *messages: str) -> None:
        super().__init__(code)
        self.code = code
        self.messages = list(messages)


class _Handler(LocalHandler):
    server_version = "FakeSlack/1.0"

    @property
    def owner(self) -> SlackServer:
        return cast("SlackServer", self.server.owner)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        owner = self.owner
        split = urlsplit(self.path)
        method = split.path[len("/api/") :] if split.path.startswith("/api/") else ""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        params: dict[str, Any] = dict(parse_qsl(split.query, keep_blank_values=True))
        body_format, body, invalid_json = _decode_body(raw, headers.get("content-type", ""))
        params.update(body)
        if split.path.startswith("/respond/"):  # an interaction's response_url: no token
            with owner._lock:
                owner._responses.append({**params, "url_name": split.path[len("/respond/") :]})
            self.send_body(200, b"ok", {"Content-Type": "text/plain"})
            return
        index = owner._record(SlackRequest(method, self.command, params, headers, body_format))

        fault = owner._take_fault(method)
        if fault is not None and fault.kind == "fail":
            error = f"http_{fault.status}" if fault.status != 200 else "fake_failure"
            payload = fault.body or {"ok": False, "error": _FAULT_ERRORS.get(fault.status, error)}
            owner._answered(index, status=fault.status, error=payload.get("error"), fault="fail")
            self._reply(fault.status, payload, fault.headers)
            return
        if fault is not None and fault.kind == "hang":
            owner._answered(index, fault="hang")
            closing = owner.closing.wait(fault.seconds)
            if closing or not fault.carry_out:
                self.close_connection = True
                return
        try:
            if invalid_json:
                status, payload = 200, {"ok": False, "error": "invalid_json"}
            else:
                status, payload = owner._call(method, params, headers)
        except Exception:
            owner.record_error()
            status, payload = 500, {"ok": False, "error": "fake_server_error"}
        if fault is not None and fault.kind == "reset":
            owner._answered(index, error=payload.get("error"), fault="reset")
            self.close_connection = True  # carried out; not a byte of the answer is sent
            return
        owner._answered(index, status=status, error=payload.get("error"))
        self._reply(status, payload)

    def _reply(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_json(status, payload, headers, content_type="application/json; charset=utf-8")


class SlackServer(LocalServer):
    """Fake Slack Web API on ``http://127.0.0.1:<free port>/api/``, served from a daemon thread.

    Use it as a context manager (or call :meth:`start` / :meth:`close`). All methods are
    thread-safe.

    Attributes:
        url: ``http://127.0.0.1:<port>`` (no trailing slash).
        token: The only token accepted.
        errors: Tracebacks of unexpected exceptions while handling requests (answered 500).
    """

    def __init__(
        self,
        token: str = "xoxb-test",
        *,
        channels: Iterable[str] | None = None,
        foreign_channels: Iterable[str] = (),
        usergroups: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """Create the server (not yet listening).

        Args:
            token: The bot token requests must carry (``Authorization: Bearer <token>``).
            channels: The channels the bot is in. ``None`` (the default): every channel id is
                accepted. Otherwise any other channel is ``channel_not_found``.
            foreign_channels: Channels that exist but the bot is not in: ``not_in_channel``.
            usergroups: User group id -> member user ids (``usergroups.users.list``).
        """
        self.token = token
        self._channels = None if channels is None else set(channels)
        self._foreign = set(foreign_channels)
        self._lock = threading.RLock()
        self._messages: list[dict[str, Any]] = []
        self._by_ts: dict[tuple[str, int], dict[str, Any]] = {}
        self._requests: list[SlackRequest] = []
        self._faults: list[_Fault] = []
        self._last_ts = 0
        self._usergroups = {k: list(v) for k, v in (usergroups or {}).items()}
        self._responses: list[dict[str, Any]] = []
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "usergroups.users.list": self._usergroup_users,
        }
        super().__init__()

    handler_class = _Handler

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``WebClient``: ``http://127.0.0.1:<port>/api/``."""
        return f"{self.url}/api/"

    # ------------------------------------------------------------------ test controls

    def fail_next(
        self,
        method: str,
        status: int,
        headers: Mapping[str, str] | None = None,
        count: int = 1,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        """Answer the next ``count`` calls of ``method`` with ``status``, not carrying them out.

        The body defaults to ``{"ok": false, "error": ...}`` with ``ratelimited`` (429),
        ``internal_error`` (500), ``service_unavailable`` (503) or ``http_<status>``. A 429
        carries ``Retry-After: 1`` unless ``headers`` names its own. ``fail_next(method, 200,
        body={"ok": False, "error": "channel_not_found"})`` injects a Slack-level error.
        """
        headers = dict(headers or {})
        if status == 429 and not any(name.lower() == "retry-after" for name in headers):
            headers["Retry-After"] = "1"
        fault = _Fault("fail", method, count, status, headers, None if body is None else dict(body))
        with self._lock:
            self._faults.append(fault)

    def reset_after_accept(self, method: str, count: int = 1) -> None:
        """Carry out the next ``count`` calls of ``method``, then close the connection unanswered.

        A post is stored with its ``ts``; the client sees the connection end before any
        response byte (``http.client.RemoteDisconnected`` from ``slack_sdk``).
        """
        with self._lock:
            self._faults.append(_Fault("reset", method, count))

    def hang_next(
        self, method: str, seconds: float, count: int = 1, *, carry_out: bool = False
    ) -> None:
        """Hold the next ``count`` calls of ``method`` for ``seconds`` without answering.

        By default the request is then dropped (not carried out, connection closed unanswered).
        With ``carry_out=True`` it is carried out and answered after the hold: a slow Slack that
        still takes a post the client already gave up on. :meth:`close` cuts holds short (and
        then nothing is carried out).
        """
        with self._lock:
            self._faults.append(_Fault("hang", method, count, seconds=seconds, carry_out=carry_out))

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = HUMAN_USER_ID,
        thread_ts: str | None = None,
        blocks: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Store a message as if someone else posted it (not through the API); returns its ts."""
        with self._lock:
            try:
                root = self._thread_root(channel, thread_ts)
            except _SlackError as error:
                raise ValueError(f"{error.code}: {thread_ts!r}") from None
            message = self._store(
                channel,
                text=text,
                blocks=blocks,
                metadata=metadata,
                thread_ts=root,
                user=user,
                broadcast=False,
            )
            return str(message["ts"])

    def kick(self, channel: str) -> None:
        """Remove the bot from ``channel``: its calls there answer ``not_in_channel``."""
        with self._lock:
            if self._channels is not None:
                self._channels.discard(channel)
            self._foreign.add(channel)

    # ------------------------------------------------------------------ observations

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message ever stored, in order (copies).

        Each has ``channel``, ``ts``, ``thread_ts`` (``None`` for a top-level message), ``text``,
        ``blocks`` and ``metadata`` (as given, or ``None``), ``edits`` (how many ``chat.update``
        calls changed it), ``user`` and ``reply_broadcast``.
        """
        with self._lock:
            return copy.deepcopy(self._messages)

    def posts(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The top-level messages (no ``thread_ts``), in order, of ``channel`` or of all."""
        return [
            m
            for m in self.messages
            if m["thread_ts"] is None and (channel is None or m["channel"] == channel)
        ]

    def replies(self, thread_ts: str) -> list[dict[str, Any]]:
        """The replies in the thread under ``thread_ts`` (without the parent), in order."""
        key = _ts_key(thread_ts)
        return [m for m in self.messages if m["thread_ts"] and _ts_key(m["thread_ts"]) == key]

    @property
    def requests(self) -> list[SlackRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def response_url(self, name: str = "r") -> str:
        """A ``response_url`` as Slack puts in interaction payloads: what is posted to it is
        kept in :attr:`responses`."""
        return f"{self.url}/respond/{name}"

    @property
    def responses(self) -> list[dict[str, Any]]:
        """What was posted to response URLs, in order (each with its ``"url_name"``)."""
        with self._lock:
            return [dict(r) for r in self._responses]

    def calls(self, method: str) -> list[SlackRequest]:
        """The requests for one Web API method, in arrival order."""
        return [r for r in self.requests if r.method == method]

    # ------------------------------------------------------------------ internals: plumbing

    def _record(self, request: SlackRequest) -> int:
        with self._lock:
            self._requests.append(request)
            return len(self._requests) - 1

    def _answered(self, index: int, **changes: Any) -> None:
        with self._lock:
            self._requests[index] = dataclasses.replace(self._requests[index], **changes)

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.method in (method, "*"):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[i]
                    return fault
        return None

    def _call(
        self, method: str, params: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        handler = self._methods.get(method)
        if handler is None:
            return 404, {"ok": False, "error": "unknown_method"}
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else params.get("token")
        if token != self.token:
            return 200, {"ok": False, "error": "invalid_auth"}
        try:
            with self._lock:
                return 200, handler(params)
        except _SlackError as error:
            payload: dict[str, Any] = {"ok": False, "error": error.code}
            if error.messages:
                payload["response_metadata"] = {"messages": error.messages}
            return 200, payload

    # ------------------------------------------------------------------ internals: state

    def _check_channel(self, params: Mapping[str, Any]) -> str:
        channel = params.get("channel")
        if not isinstance(channel, str) or not channel:
            raise _SlackError("channel_not_found")
        if channel in self._foreign:
            raise _SlackError("not_in_channel")
        if self._channels is not None and channel not in self._channels:
            raise _SlackError("channel_not_found")
        return channel

    def _next_ts(self) -> int:
        now = time.time_ns() // 1000
        self._last_ts = max(now, self._last_ts + 1)
        return self._last_ts

    def _thread_root(self, channel: str, thread_ts: Any) -> str | None:
        if thread_ts is None or thread_ts == "":
            return None
        key = _ts_key(thread_ts)
        if key is None:
            raise _SlackError("invalid_thread_ts", f"[ERROR] {thread_ts} is not a valid thread_ts")
        parent = self._by_ts.get((channel, key))
        if parent is not None and parent["thread_ts"] is not None:
            return str(parent["thread_ts"])  # a reply to a reply goes to the parent's thread
        return _format_ts(key)

    def _store(
        self,
        channel: str,
        *,
        text: str,
        blocks: list[dict[str, Any]] | None,
        metadata: dict[str, Any] | None,
        thread_ts: str | None,
        user: str,
        broadcast: bool,
    ) -> dict[str, Any]:
        key = self._next_ts()
        message: dict[str, Any] = {
            "channel": channel,
            "ts": _format_ts(key),
            "thread_ts": thread_ts,
            "text": text,
            "blocks": copy.deepcopy(blocks),
            "metadata": copy.deepcopy(metadata),
            "edits": 0,
            "user": user,
            "reply_broadcast": broadcast,
        }
        self._messages.append(message)
        self._by_ts[(channel, key)] = message
        return message

    def _thread_of(self, parent: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            m
            for m in self._messages
            if m["channel"] == parent["channel"] and m["thread_ts"] == parent["ts"]
        ]

    def _render(self, message: dict[str, Any], *, metadata: bool) -> dict[str, Any]:
        """A stored message the way Slack's API shows it."""
        out: dict[str, Any] = {"type": "message", "user": message["user"]}
        if message["user"] == BOT_USER_ID:
            out.update(bot_id=BOT_ID, app_id=_APP_ID)
        out.update(text=message["text"], ts=message["ts"], team=TEAM_ID)
        if message["blocks"]:
            out["blocks"] = copy.deepcopy(message["blocks"])
        if message["thread_ts"] is not None:
            out["thread_ts"] = message["thread_ts"]
            out["parent_user_id"] = self._parent_user(message)
        else:
            thread = self._thread_of(message)
            if thread:
                users = list(dict.fromkeys(m["user"] for m in thread))
                out.update(
                    thread_ts=message["ts"],
                    reply_count=len(thread),
                    reply_users_count=len(users),
                    latest_reply=thread[-1]["ts"],
                    reply_users=users,
                )
        if message["reply_broadcast"]:
            out["subtype"] = "thread_broadcast"
        if message["edits"]:
            out["edited"] = {"user": message["user"], "ts": message["edited_ts"]}
        if metadata and message["metadata"] is not None:
            out["metadata"] = copy.deepcopy(message["metadata"])
        return out

    def _parent_user(self, message: dict[str, Any]) -> str | None:
        key = _ts_key(message["thread_ts"])
        parent = self._by_ts.get((message["channel"], key or 0))
        return None if parent is None else str(parent["user"])

    # ------------------------------------------------------------------ internals: methods

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://supersede-test.slack.com/",
            "team": "Supersede Test",
            "user": "supersede",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _content(
        self, params: dict[str, Any]
    ) -> tuple[str | None, list[dict[str, Any]] | None, dict[str, Any] | None]:
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = json.dumps(text) if isinstance(text, (dict, list)) else str(text)
        if text is not None and len(text) > MAX_TEXT_LENGTH:
            raise _SlackError("msg_too_long")
        return text, _check_blocks(params.get("blocks")), _check_metadata(params.get("metadata"))

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params)
        text, blocks, metadata = self._content(params)
        if not text and not blocks:
            raise _SlackError("no_text")
        thread_ts = self._thread_root(channel, params.get("thread_ts"))
        broadcast = thread_ts is not None and _truthy(params.get("reply_broadcast"))
        message = self._store(
            channel,
            text=text or "",
            blocks=blocks,
            metadata=metadata,
            thread_ts=thread_ts,
            user=BOT_USER_ID,
            broadcast=broadcast,
        )
        return {
            "ok": True,
            "channel": channel,
            "ts": message["ts"],
            "message": self._render(message, metadata=True),
        }

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params)
        key = _ts_key(params.get("ts"))
        message = None if key is None else self._by_ts.get((channel, key))
        if message is None:
            raise _SlackError("message_not_found")
        if message["user"] != BOT_USER_ID:
            raise _SlackError("cant_update_message")
        text, blocks, metadata = self._content(params)
        if text is None and "blocks" not in params:
            raise _SlackError("no_text")
        # As on Slack: blocks / metadata left out are kept; an empty blocks array removes them.
        if text is not None:
            message["text"] = text
        if "blocks" in params:
            message["blocks"] = blocks or None
        if metadata is not None:
            message["metadata"] = metadata
        message["edits"] += 1
        message["edited_ts"] = _format_ts(self._next_ts())
        rendered = self._render(message, metadata=True)
        return {
            "ok": True,
            "channel": channel,
            "ts": message["ts"],
            "text": message["text"],
            "message": rendered,
        }

    def _usergroup_users(self, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("usergroup")
        if group not in self._usergroups:
            raise _SlackError("no_such_subteam")
        return {"ok": True, "users": list(self._usergroups[group])}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params)
        found = [
            m
            for m in reversed(self._messages)
            if m["channel"] == channel and (m["thread_ts"] is None or m["reply_broadcast"])
        ]
        page = self._page(found, params, newest_first=True)
        page.update(pin_count=0, channel_actions_ts=None, channel_actions_count=0)
        return page

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params)
        key = _ts_key(params.get("ts"))
        message = None if key is None else self._by_ts.get((channel, key))
        if message is None:
            raise _SlackError("thread_not_found")
        if message["thread_ts"] is not None:
            root = self._by_ts.get((channel, _ts_key(message["thread_ts"]) or 0))
            if root is None:
                raise _SlackError("thread_not_found")
            message = root
        return self._page([message, *self._thread_of(message)], params, newest_first=False)

    def _page(
        self, found: list[dict[str, Any]], params: dict[str, Any], *, newest_first: bool
    ) -> dict[str, Any]:
        inclusive = _truthy(params.get("inclusive"))
        oldest = _bound(params, "oldest", default=None) or 0
        latest = _bound(params, "latest", default=None)
        try:
            limit = int(params.get("limit") or _DEFAULT_LIMIT)
        except (TypeError, ValueError):
            raise _SlackError("invalid_limit") from None
        limit = min(max(limit, 1), _MAX_LIMIT)

        def within(ts: int) -> bool:
            above = ts >= oldest if inclusive else ts > oldest
            below = latest is None or (ts <= latest if inclusive else ts < latest)
            return above and below

        keys = [(_ts_key(m["ts"]) or 0, m) for m in found]
        keys = [(ts, m) for ts, m in keys if within(ts)]
        cursor = params.get("cursor")
        if cursor:
            start = _decode_cursor(str(cursor))
            keys = [(ts, m) for ts, m in keys if (ts <= start if newest_first else ts >= start)]
        page, rest = keys[:limit], keys[limit:]
        include_metadata = _truthy(params.get("include_all_metadata"))
        out: dict[str, Any] = {
            "ok": True,
            "messages": [self._render(m, metadata=include_metadata) for _, m in page],
            "has_more": bool(rest),
        }
        if rest:
            out["response_metadata"] = {"next_cursor": _encode_cursor(rest[0][0])}
        return out


# ---------------------------------------------------------------------- helpers


def _ts_key(value: Any) -> int | None:
    """A ts as integer microseconds (``None`` when malformed)."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    if not _TS_RE.fullmatch(text):
        return None
    try:
        return int(Decimal(text) * 1_000_000)
    except InvalidOperation:
        return None


def _format_ts(key: int) -> str:
    return f"{key // 1_000_000}.{key % 1_000_000:06d}"


def _encode_cursor(key: int) -> str:
    return base64.b64encode(f"next_ts:{key}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        prefix, _, number = base64.b64decode(cursor, validate=True).decode().partition(":")
        if prefix == "next_ts" and number.isdigit():
            return int(number)
    except (ValueError, UnicodeDecodeError):
        pass
    raise _SlackError("invalid_cursor")


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in _TRUE


def _bound(params: Mapping[str, Any], name: str, *, default: int | None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return default
    key = _ts_key(value)
    if key is None:
        raise _SlackError(f"invalid_ts_{name}")
    return key


def _check_blocks(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _SlackError("invalid_blocks_format") from None
    if not isinstance(value, list):
        raise _SlackError("invalid_blocks", "[ERROR] must be an array [json-pointer:/blocks]")
    if len(value) > MAX_BLOCKS:
        message = f"[ERROR] no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
        raise _SlackError("invalid_blocks", message)
    for i, block in enumerate(value):
        where = f"[json-pointer:/blocks/{i}]"
        if not isinstance(block, dict):
            raise _SlackError("invalid_blocks", f"[ERROR] must be an object {where}")
        kind = block.get("type")
        if not isinstance(kind, str) or not kind:
            raise _SlackError("invalid_blocks", f"[ERROR] missing required field: type {where}")
        limit = {"section": _MAX_SECTION_TEXT, "header": _MAX_HEADER_TEXT}.get(kind)
        text = block.get("text")
        if limit is not None and isinstance(text, dict) and len(str(text.get("text", ""))) > limit:
            message = f"[ERROR] must be less than {limit + 1} characters"
            raise _SlackError("invalid_blocks", f"{message} [json-pointer:/blocks/{i}/text]")
    return value


def _check_metadata(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _SlackError("invalid_metadata_format") from None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("event_type"), str)
        or not isinstance(value.get("event_payload"), dict)
    ):
        raise _SlackError("invalid_metadata_format")
    return value


def _decode_body(raw: bytes, content_type: str) -> tuple[str, dict[str, Any], bool]:
    """``(body_format, params, invalid_json)`` of a request body."""
    if not raw:
        return "none", {}, False
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(raw)
        except ValueError:
            return "json", {}, True
        return "json", body if isinstance(body, dict) else {}, not isinstance(body, dict)
    if kind in ("application/x-www-form-urlencoded", ""):
        return "form", dict(parse_qsl(raw.decode(), keep_blank_values=True)), False
    return kind, {}, False
