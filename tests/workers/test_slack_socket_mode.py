"""The Slack app over Socket Mode: slack-bolt's own ``SocketModeHandler`` (slack_sdk's built-in
client) against a local Socket Mode endpoint, opened through ``apps.connections.open`` on the
local Slack Web API server. Slash commands and button clicks arrive as envelopes on the
WebSocket; the app acknowledges each on the same connection."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from config.settings import Settings
from core.clock import now
from core.constants import DEFAULT_QUEUE
from core.errors import ConfigError
from tests.support.settings import build_settings
from tests.support.slack_payloads import block_actions, slash_command
from tests.support.socket_mode_server import (
    SocketModeServer,
    SocketModeSlackServer,
    accept_key,
)
from tests.workers.conftest import wait_for
from watcher.events import ModelReleased
from workers.jobs import JobStore
from workers.notify.actions import ActionLog
from workers.notify.interact import MUTE, SlackApp
from workers.pipeline import Pipeline

TOKEN = "xoxb-socket-bot"
APP_TOKEN = "xapp-1-A0APP-1-socket"
CHANNEL = "C0LEADS"
LEAD, OUTSIDER = "U0LEAD", "U0OUTSIDER"
#: A verdict job of an acme release: what the Mute menu of its message mutes.
JOB = "f" * 64
#: Generous upper bounds for waits, never measurements.
WAIT_S = 15.0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Rig:
    settings: Settings
    pipeline: Pipeline
    app: SlackApp
    socket: SocketModeServer
    slack: SocketModeSlackServer
    logs: _Records
    sent: list[tuple[str, str, str]]

    def command(self, text: str, *, user: str = LEAD, trigger: str = "9.1") -> dict[str, Any]:
        """A slash command's payload as Socket Mode carries it (the HTTP form's fields)."""
        url = self.slack.response_url(f"cmd-{trigger}")
        return slash_command(text, channel=CHANNEL, user=user, trigger=trigger, response_url=url)

    def mute_click(
        self, days: str, *, user: str = LEAD, name: str = "alice", trigger: str, answer_to: str
    ) -> dict[str, Any]:
        """The ``block_actions`` payload of choosing ``days`` in the Mute menu of ``JOB``'s
        verdict message."""
        option = {"text": {"type": "plain_text", "text": f"acme: {days} days"}, "value": days}
        message = {"type": "message", "ts": "1700000000.000100", "text": "verdict", "blocks": []}
        action = {
            "action_id": MUTE,
            "block_id": f"supersede:{JOB}",
            "type": "static_select",
            "selected_option": option,
            "action_ts": "1700000001.000200",
        }
        url = self.slack.response_url(answer_to)
        return block_actions(message, action, channel=CHANNEL, user=user, name=name,
                             trigger=trigger, response_url=url)  # fmt: skip

    def answer(self, name: str) -> str:
        """The ephemeral text posted to response_url ``name`` (waits for it; exactly one)."""
        found = wait_for(
            lambda: [r for r in self.slack.responses if r["url_name"] == name],
            WAIT_S,
            f"an answer at response_url {name}",
            every_s=0.02,
        )
        assert len(found) == 1, found
        assert found[0].get("response_type") == "ephemeral"
        return str(found[0]["text"])

    def ignored(self, count: int) -> None:
        """Wait until ``count`` requests have been ignored as seen before."""
        wait_for(
            lambda: sum("seen before" in r.getMessage() for r in self.logs.records) >= count,
            WAIT_S,
            f"{count} repeated requests ignored",
            every_s=0.02,
        )


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    with (
        # Pings, as Slack sends them, also let the client close at once (see the server).
        SocketModeServer(ping_interval_s=0.2) as socket_mode,
        SocketModeSlackServer(socket_mode, TOKEN, app_token=APP_TOKEN) as slack,
    ):
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
        settings = build_settings(
            tmp_path, notify={"slack": {"channel": CHANNEL, "operators": [LEAD]}}
        )
        sent: list[tuple[str, str, str]] = []
        pipeline = Pipeline(
            settings, JobStore(settings.store.url), lambda *message: sent.append(message)
        )
        logs = _Records()
        logger = logging.getLogger("workers.notify.interact")
        logger.addHandler(logs)
        logger.setLevel(logging.INFO)
        app = SlackApp(settings, pipeline)
        try:
            app.connect()
            yield Rig(settings, pipeline, app, socket_mode, slack, logs, sent)
        finally:
            app.close()
            logger.removeHandler(logs)
        assert socket_mode.errors == [] and slack.errors == []


def _acme_verdict(pipeline: Pipeline) -> None:
    """A verdict job of an acme release in the store, as if its message had been posted."""
    event = ModelReleased(
        source="hub", detected_at=now(), repo_id="acme/stronger", revision="a" * 40, params=1000
    )
    pipeline.jobs.add(
        key=JOB,
        kind="verdict",
        candidate=f"acme/stronger@{'a' * 40}",
        queue=DEFAULT_QUEUE,
        state="notified",
        payload={"event": event.model_dump(mode="json")},
    )


def test_it_connects_with_the_app_token_and_answers_status_in_the_ack(rig: Rig) -> None:
    (opened,) = rig.slack.calls("apps.connections.open")
    assert opened.headers["authorization"] == f"Bearer {APP_TOKEN}"
    assert opened.status == 200 and opened.error is None
    connection = rig.socket.wait_connected()
    assert connection.headers["sec-websocket-version"] == "13"
    assert connection.path.startswith("/link?ticket=")
    # The client pings as soon as it is connected: answered with a pong it recognises.
    client = rig.app._socket.client.current_session
    wait_for(lambda: client.last_ping_pong_time is not None, WAIT_S, "a pong", every_s=0.02)
    assert connection.pings >= 1
    # And it answers the server's pings.
    wait_for(lambda: connection.pongs >= 1, WAIT_S, "a pong from the client", every_s=0.02)

    envelope = rig.socket.send("slash_commands", rig.command("status", trigger="600.1"))
    ack = rig.socket.wait_ack(envelope, WAIT_S)
    assert ack["envelope_id"] == envelope
    assert ack["payload"] == {"text": "No jobs yet.", "response_type": "ephemeral"}

    usage = rig.socket.send("slash_commands", rig.command("dance", trigger="600.2"))
    assert rig.socket.wait_ack(usage, WAIT_S)["payload"]["text"].startswith("Usage:")
    # Status and usage change nothing and record nothing; no other connection was opened.
    assert ActionLog(rig.settings.store.url).list() == []
    assert len(rig.socket.connections) == 1 and connection.open


def test_an_operator_mutes_from_a_message_once_even_when_the_envelope_comes_twice(
    rig: Rig,
) -> None:
    _acme_verdict(rig.pipeline)
    payload = rig.mute_click("7", trigger="500.1", answer_to="mute")

    first = rig.socket.send("interactive", payload)
    # A click is acknowledged with nothing to show; the answer goes to the response_url.
    assert "payload" not in rig.socket.wait_ack(first, WAIT_S)
    assert rig.answer("mute").startswith("Muted acme for 7 days")
    (mute,) = rig.pipeline.mutes.active()
    assert mute.owner == "acme" and mute.by == f"slack:{LEAD} (alice)"

    # The same click delivered again (another envelope, the same trigger_id): acknowledged,
    # then ignored as seen before; one mute, one recorded action, one answer.
    again = rig.socket.send("interactive", payload, retry_attempt=1, retry_reason="timeout")
    assert again != first
    rig.socket.wait_ack(again, WAIT_S)
    rig.ignored(1)
    assert rig.pipeline.mutes.active() == [mute]
    (row,) = ActionLog(rig.settings.store.url).list()
    assert (row.user_id, row.action, row.target) == (LEAD, "mute", "acme 7")
    assert row.outcome is not None and row.outcome.startswith("Muted acme for 7 days")
    assert len([r for r in rig.slack.responses if r["url_name"] == "mute"]) == 1

    # The slash command acts on the same store: it lifts the mute.
    lift = rig.socket.send("slash_commands", rig.command("unmute acme", trigger="500.2"))
    assert rig.socket.wait_ack(lift, WAIT_S)["payload"]["text"].startswith("Working on")
    assert "no longer muted" in rig.answer("cmd-500.2")
    assert rig.pipeline.mutes.active() == []
    assert rig.sent == []  # muting queues no job


def test_someone_not_an_operator_is_refused_and_nothing_is_muted(rig: Rig) -> None:
    _acme_verdict(rig.pipeline)
    payload = rig.mute_click("30", user=OUTSIDER, name="mallory", trigger="300.1", answer_to="no")

    envelope = rig.socket.send("interactive", payload)
    rig.socket.wait_ack(envelope, WAIT_S)
    assert "not allowed" in rig.answer("no")
    command = rig.socket.send("slash_commands", rig.command("mute acme 7", user=OUTSIDER))
    rig.socket.wait_ack(command, WAIT_S)
    assert "not allowed" in rig.answer("cmd-9.1")

    assert rig.pipeline.mutes.active() == []
    rows = sorted(ActionLog(rig.settings.store.url).list(), key=lambda r: r.target)
    assert [(r.user_id, r.action, r.outcome) for r in rows] == [
        (OUTSIDER, "refused", "not allowed: mute acme 30"),
        (OUTSIDER, "refused", "not allowed: mute acme 7"),
    ]


def test_closing_the_app_ends_the_connection(rig: Rig) -> None:
    connection = rig.socket.wait_connected()
    rig.app.close()
    (ended,) = rig.socket.wait_closed(WAIT_S)
    assert ended is connection and ended.ended == "eof"
    # Closed for good: no new connection URL asked for, nothing to send to.
    assert len(rig.slack.calls("apps.connections.open")) == 1
    with pytest.raises(TimeoutError):
        rig.socket.send("slash_commands", rig.command("status"), timeout_s=0.2)


def test_the_bot_token_cannot_open_a_connection(rig: Rig) -> None:
    client = WebClient(token=TOKEN, base_url=rig.slack.api_url)
    with pytest.raises(SlackApiError) as refused:
        client.apps_connections_open(app_token=TOKEN)
    assert refused.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as unknown:
        client.apps_connections_open(app_token="xapp-1-not-ours")
    assert unknown.value.response["error"] == "invalid_auth"


def test_a_refused_app_token_stops_the_start_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        SocketModeServer() as socket_mode,
        SocketModeSlackServer(socket_mode, TOKEN, app_token=APP_TOKEN) as slack,
    ):
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-A0APP-1-revoked")
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        settings = build_settings(tmp_path, notify={"slack": {"operators": [LEAD]}})
        pipeline = Pipeline(settings, JobStore(settings.store.url), lambda *message: None)
        app = SlackApp(settings, pipeline)
        try:
            with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
                app.connect()
        finally:
            app.close()
        assert socket_mode.connections == []


# ---------------------------------------------------------------------- the endpoint itself


def _handshake(url: str) -> tuple[socket.socket, Any, bytes, str]:
    """Send the upgrade request for ``url``: the socket, its reader, the status line and the
    key sent."""
    target = urlsplit(url)
    assert target.hostname is not None and target.port is not None
    sock = socket.create_connection((target.hostname, target.port), timeout=WAIT_S)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {target.path}?{target.query} HTTP/1.1\r\nHost: {target.hostname}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    reader = sock.makefile("rb")
    return sock, reader, reader.readline(), key


def _upgrade(url: str) -> tuple[socket.socket, Any]:
    """A raw client socket and its reader past the handshake and the hello (both checked)."""
    sock, reader, status, key = _handshake(url)
    assert status.startswith(b"HTTP/1.1 101")
    headers = {}
    while (line := reader.readline().strip()) != b"":
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    assert headers["sec-websocket-accept"] == accept_key(key)
    opcode, hello = _read(reader)
    assert opcode == 0x1 and json.loads(hello)["type"] == "hello"
    return sock, reader


def _masked(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True) -> bytes:
    """A short client frame (masked, as RFC 6455 requires of clients, unless told)."""
    key = b"\x01\x02\x03\x04" if mask else b""
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if mask else payload
    head = bytes([(0x80 if fin else 0) | opcode, (0x80 if mask else 0) | len(payload)])
    return head + key + body


def _read(reader: Any) -> tuple[int, bytes]:
    """The opcode and payload of the next server frame."""
    first, second = reader.read(2)
    assert not second & 0x80, "a server frame is never masked"
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", reader.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", reader.read(8))[0]
    return first & 0x0F, reader.read(size)


def test_the_endpoint_speaks_websocket_pongs_and_closes() -> None:
    with SocketModeServer() as server:
        sock, reader = _upgrade(server.url)
        sock.sendall(_masked(0x9, b"are you there"))
        assert _read(reader) == (0xA, b"are you there")
        envelope = server.send("events_api", {"event": {"type": "app_mention"}})
        opcode, text = _read(reader)
        assert opcode == 0x1 and json.loads(text)["envelope_id"] == envelope
        # An ack split over two frames (a text frame, then a continuation) is one message.
        ack = json.dumps({"envelope_id": envelope}).encode()
        sock.sendall(_masked(0x1, ack[:5], fin=False) + _masked(0x0, ack[5:]))
        assert server.wait_ack(envelope, WAIT_S) == {"envelope_id": envelope}
        sock.sendall(_masked(0x8, struct.pack("!H", 1000)))
        assert _read(reader) == (0x8, struct.pack("!H", 1000))
        (ended,) = server.wait_closed(WAIT_S)
        assert ended.ended == "close 1000"
        sock.close()

        # A client frame left unmasked breaks the protocol: closed with 1002.
        sock, reader = _upgrade(server.url)
        sock.sendall(_masked(0x1, b"{}", mask=False))
        opcode, reason = _read(reader)
        assert opcode == 0x8 and struct.unpack("!H", reason[:2])[0] == 1002
        assert server.wait_closed(WAIT_S)[-1].ended == "protocol 1002"
        sock.close()

        # Without the ticket apps.connections.open gave out: refused before any upgrade.
        sock, _, status, _ = _handshake(server.url.replace(server.ticket, "stolen"))
        assert status.startswith(b"HTTP/1.1 404")
        sock.close()
        assert len(server.connections) == 2 and server.errors == []
