"""A local Slack Socket Mode endpoint for tests, on the standard library only.

Socket Mode turns Slack around: the app calls the Web API method ``apps.connections.open`` with
its app-level token (``xapp-...``), gets a WebSocket URL, connects to it and receives its
requests over that connection. Two pieces play Slack's side here:

* :class:`SocketModeServer`: a minimal WebSocket server (RFC 6455) on
  ``ws://127.0.0.1:<free port>/link?ticket=...&app_id=...``. It answers the HTTP upgrade with
  ``Sec-WebSocket-Accept``, sends ``{"type": "hello", ...}``, unmasks the client's frames
  (frames the client sends unmasked are a protocol error: close 1002), sends unmasked text
  frames, answers each ping with a pong carrying the same payload and a close frame with a
  close frame. A test sends envelopes with :meth:`SocketModeServer.send` and waits for the
  app's acknowledgement (``{"envelope_id": ..., "payload": ...}``) with
  :meth:`SocketModeServer.wait_ack`::

      with SocketModeServer() as socket, SocketModeSlackServer(socket, token=...) as slack:
          ...  # the app connects through slack.api_url
          envelope = socket.send("slash_commands", {"command": "/supersede", "text": "status"})
          assert socket.wait_ack(envelope)["payload"]["text"] == "No jobs yet."

* :class:`SocketModeSlackServer`: the local Slack Web API server
  (:class:`tests.support.slack_server.SlackServer`) with ``apps.connections.open``, which takes
  the app-level token only (the bot token gets ``not_allowed_token_type``, as on Slack) and
  answers ``{"ok": true, "url": <the socket server's url>}``.

Not implemented, because slack_sdk's clients never send them: fragmented messages from the
server, binary frames, extensions (``permessage-deflate``) and subprotocols.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import socket
import socketserver
import struct
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

from tests.support.slack_server import SlackServer

__all__ = [
    "APP_ID",
    "SocketConnection",
    "SocketModeServer",
    "SocketModeSlackServer",
    "accept_key",
    "frame",
]

_T = TypeVar("_T")

#: The app id in ``hello`` and in the connection URL.
APP_ID = "A0APP"
#: RFC 6455's magic string for ``Sec-WebSocket-Accept``.
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CONTINUATION = 0x1, 0x2, 0x0
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
#: Largest message taken from a client; Slack's acks are a few kilobytes.
_MAX_MESSAGE = 1 << 20
_MAX_HEADER_LINES = 100


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode("ascii")).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame, as a server sends them (RFC 6455, 5.2)."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size <= 125:
        head += bytes([size])
    elif size <= 0xFFFF:
        head += struct.pack("!BH", 126, size)
    else:
        head += struct.pack("!BQ", 127, size)
    return head + payload


class _ProtocolError(Exception):
    """The client broke RFC 6455: the connection is closed with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class SocketConnection:
    """One WebSocket connection as the server saw it."""

    #: Its number, from 1, in the order connections were accepted.
    number: int
    #: The request path with its query (``/link?ticket=...``).
    path: str
    #: The upgrade request's headers, names lower-cased.
    headers: dict[str, str]
    #: Text messages received that were not acks (an ack goes to the server's ``acks``).
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: The client's pings, each answered with a pong.
    pings: int = 0
    #: The client's pongs (to the server's pings).
    pongs: int = 0
    #: How it ended: ``"eof"`` (the client closed the socket), ``"close <code>"`` (the client's
    #: close frame), ``"server"`` (the server closed it), ``"protocol <code>"`` (the client
    #: broke the protocol). ``None`` while open.
    ended: str | None = None
    _sock: socket.socket | None = field(default=None, repr=False)
    _send_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def open(self) -> bool:
        """True until the connection ends."""
        return self.ended is None

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one frame (the handler's pongs and the test's envelopes may race: one lock)."""
        with self._send_lock:
            if self._sock is None:
                raise ConnectionError(f"connection {self.number} is closed")
            self._sock.sendall(frame(opcode, payload))


class _Handler(socketserver.StreamRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        owner = self.server.owner
        try:
            request = self._read_upgrade()
            if request is None:
                return
            path, headers = request
            connection = owner._opened(path, headers, self.request)
        except (OSError, ValueError):
            return
        reason = "eof"
        try:
            reason = self._serve(owner, connection)
        except _ProtocolError as error:
            reason = f"protocol {error.code}"
            self._try_close_frame(connection, error.code, str(error))
        except OSError:
            reason = "server" if owner.closing.is_set() else "eof"
        except Exception:
            owner._record_error()
        finally:
            owner._ended(connection, reason)

    # ------------------------------------------------------------------ handshake

    def _read_upgrade(self) -> tuple[str, dict[str, str]] | None:
        """The upgrade request's path and headers; None when it was refused (and answered)."""
        owner = self.server.owner
        line = self.rfile.readline(8192).decode("latin-1").rstrip("\r\n")
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            raw = self.rfile.readline(8192).decode("latin-1").rstrip("\r\n")
            if not raw:
                break
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "GET":
            self._refuse(405, "only GET upgrades")
            return None
        target = urlsplit(parts[1])
        query = parse_qs(target.query)
        if target.path.rstrip("/") != owner.path or query.get("ticket") != [owner.ticket]:
            self._refuse(404, "no such Socket Mode ticket")
            return None
        key = headers.get("sec-websocket-key", "")
        upgrade = headers.get("upgrade", "").lower() == "websocket"
        connection = "upgrade" in headers.get("connection", "").lower()
        if not (upgrade and connection and key and headers.get("sec-websocket-version") == "13"):
            self._refuse(400, "not a WebSocket version 13 upgrade")
            return None
        answer = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
        )
        self.wfile.write(answer.encode("latin-1"))
        self.wfile.flush()
        return parts[1], headers

    def _refuse(self, status: int, reason: str) -> None:
        body = reason.encode()
        head = (
            f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)
        self.wfile.flush()

    # ------------------------------------------------------------------ frames

    def _serve(self, owner: SocketModeServer, connection: SocketConnection) -> str:
        """Read the client's frames until the connection ends; how it ended."""
        message: list[bytes] = []
        message_opcode = 0
        while True:
            got = self._read_frame()
            if got is None:
                return "server" if owner.closing.is_set() else "eof"
            fin, opcode, payload = got
            if opcode == _PING:
                connection.send_frame(_PONG, payload)
                with owner._changed:
                    connection.pings += 1
                continue
            if opcode == _PONG:
                with owner._changed:
                    connection.pongs += 1
                continue
            if opcode == _CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                # The closing handshake: answer with the same code, then end the TCP connection.
                self._try_close_frame(connection, 1000 if code == 1005 else code, "")
                return f"close {code}"
            if opcode == _CONTINUATION:
                if not message:
                    raise _ProtocolError(1002, "continuation without a first frame")
            elif message:
                raise _ProtocolError(1002, "a new message inside a fragmented one")
            else:
                message_opcode = opcode
            message.append(payload)
            if sum(map(len, message)) > _MAX_MESSAGE:
                raise _ProtocolError(1009, "message too big")
            if fin:
                data, message = b"".join(message), []
                if message_opcode != _TEXT:
                    raise _ProtocolError(1003, "only text messages are understood")
                owner._received(connection, data)

    def _read_frame(self) -> tuple[bool, int, bytes] | None:
        """``(fin, opcode, unmasked payload)`` of the next frame; None at the end of the stream."""
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        if head[0] & 0x70:
            raise _ProtocolError(1002, "reserved bits set without an extension")
        if opcode not in (_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG):
            raise _ProtocolError(1002, f"unknown opcode {opcode:#x}")
        if not head[1] & 0x80:
            raise _ProtocolError(1002, "a client frame must be masked")
        size = head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._exactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._exactly(8))[0]
        if opcode >= _CLOSE and (size > 125 or not fin):
            raise _ProtocolError(1002, "a control frame must be short and final")
        if size > _MAX_MESSAGE:
            raise _ProtocolError(1009, "frame too big")
        mask = self._exactly(4)
        data = self._exactly(size)
        return fin, opcode, bytes(b ^ m for b, m in zip(data, itertools.cycle(mask)))

    def _exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise OSError("the connection ended inside a frame")
        return data

    def _try_close_frame(self, connection: SocketConnection, code: int, reason: str) -> None:
        with contextlib.suppress(OSError):  # already gone: nothing left to tell
            connection.send_frame(_CLOSE, struct.pack("!H", code) + reason.encode()[:120])


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: SocketModeServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class SocketModeServer:
    """Slack's Socket Mode side on ``ws://127.0.0.1:<free port>``, served from daemon threads.

    Use it as a context manager (or :meth:`start` / :meth:`close`). Thread-safe.

    Like Slack, it can ping its clients every ``ping_interval_s`` (default: never). That also
    bounds how long slack_sdk's client takes to close: its reader holds a lock while it waits
    on the socket (up to three seconds) and closing waits for that lock; a frame ends the wait.

    Attributes:
        url: ``ws://127.0.0.1:<port>/link?ticket=<ticket>&app_id=A0APP``, set by :meth:`start`.
        path: The path connections must ask for (``/link``).
        ticket: The ticket the URL carries; an upgrade without it is refused (404).
        errors: Tracebacks of unexpected exceptions while serving a connection.
        closing: Set while closing.
    """

    def __init__(
        self,
        *,
        path: str = "/link",
        ticket: str | None = None,
        ping_interval_s: float | None = None,
    ) -> None:
        """Create the server (not yet listening).

        Args:
            path: The path of the WebSocket URL.
            ticket: The ticket of the URL (default: a random one).
            ping_interval_s: Ping every open connection this often (default: never).
        """
        self.path = path.rstrip("/")
        self.ping_interval_s = ping_interval_s
        self.ticket = ticket or uuid.uuid4().hex
        self.url = ""
        self.errors: list[str] = []
        self.closing = threading.Event()
        self._changed = threading.Condition(threading.RLock())
        self._connections: list[SocketConnection] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None
        self._pinger: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind a free loopback port and accept connections from a daemon thread."""
        if self._server is None:
            self.closing.clear()
            self._server = _TCPServer(self)
            port = self._server.server_address[1]
            self.url = f"ws://127.0.0.1:{port}{self.path}?ticket={self.ticket}&app_id={APP_ID}"
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="SocketModeServer",
                daemon=True,
            )
            self._thread.start()
            if self.ping_interval_s is not None:
                self._pinger = threading.Thread(
                    target=self._ping, name="SocketModePing", daemon=True
                )
                self._pinger.start()
        return self

    def close(self) -> None:
        """Stop accepting, tell open connections the server is going away (close 1001) and end
        them, so that no handler thread outlives the server."""
        self.closing.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for thread in (self._thread, self._pinger):
            if thread is not None:
                thread.join(timeout=5)
        self._thread = self._pinger = None
        for connection in self.connections:
            sock = connection._sock
            if connection.open and sock is not None:
                try:
                    connection.send_frame(_CLOSE, struct.pack("!H", 1001))
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # the client left first

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ test controls

    def send(
        self,
        envelope_type: str,
        payload: Mapping[str, Any],
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool = True,
        timeout_s: float = 10.0,
        **extra: Any,
    ) -> str:
        """Send an envelope to the newest open connection (waiting up to ``timeout_s`` for one);
        its ``envelope_id``.

        Args:
            envelope_type: ``"interactive"``, ``"slash_commands"`` or ``"events_api"``.
            payload: What Slack would have posted over HTTP, as a JSON object.
            envelope_id: Default: a fresh one.
            accepts_response_payload: Whether the ack may carry a payload (slash commands and
                interactions: yes).
            extra: More envelope fields, e.g. ``retry_attempt`` / ``retry_reason``.
        """
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": dict(payload),
            "accepts_response_payload": accepts_response_payload,
            **extra,
        }
        connection = self.wait_connected(timeout_s)
        connection.send_frame(_TEXT, json.dumps(envelope).encode())
        return envelope_id

    def disconnect(self, *, timeout_s: float = 10.0) -> None:
        """Ask the newest open connection to go away, as Slack does before it rotates one
        (``{"type": "disconnect", "reason": "refresh_requested"}``)."""
        message = {"type": "disconnect", "reason": "refresh_requested", "debug_info": {}}
        self.wait_connected(timeout_s).send_frame(_TEXT, json.dumps(message).encode())

    # ------------------------------------------------------------------ observations

    @property
    def connections(self) -> list[SocketConnection]:
        """Every connection accepted so far, in order (the live objects)."""
        with self._changed:
            return list(self._connections)

    @property
    def acks(self) -> dict[str, dict[str, Any]]:
        """The acknowledgements received, by envelope id (the whole message: ``envelope_id``
        and, when the app answered something, ``payload``)."""
        with self._changed:
            return {key: dict(value) for key, value in self._acks.items()}

    def wait_connected(self, timeout_s: float = 10.0) -> SocketConnection:
        """The newest open connection, once there is one (``TimeoutError`` after
        ``timeout_s``)."""
        return self._wait(
            lambda: next((c for c in reversed(self._connections) if c.open), None),
            timeout_s,
            "an open Socket Mode connection",
        )

    def wait_ack(self, envelope_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The ack of ``envelope_id``, once it came (``TimeoutError`` after ``timeout_s``)."""
        ack = self._wait(lambda: self._acks.get(envelope_id), timeout_s, f"ack {envelope_id}")
        return dict(ack)

    def wait_closed(self, timeout_s: float = 10.0) -> list[SocketConnection]:
        """Every connection, once there was one and all of them have ended (``TimeoutError``
        after ``timeout_s``)."""
        return self._wait(
            lambda: [*self._connections] if not any(c.open for c in self._connections) else None,
            timeout_s,
            "every Socket Mode connection to end",
        )

    # ------------------------------------------------------------------ internals

    def _wait(self, found: Callable[[], _T | None], timeout_s: float, what: str) -> _T:
        """What ``found`` returns (under the lock) once it is truthy; woken by every change."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                value = found()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
                self._changed.wait(left)

    def _ping(self) -> None:
        assert self.ping_interval_s is not None
        while not self.closing.wait(self.ping_interval_s):
            for connection in self.connections:
                # One that ends meanwhile is left to its handler, which records how.
                with contextlib.suppress(OSError):
                    if connection.open:
                        connection.send_frame(_PING, f"ping-{time.time()}".encode())

    def _opened(self, path: str, headers: dict[str, str], sock: socket.socket) -> SocketConnection:
        with self._changed:
            connection = SocketConnection(len(self._connections) + 1, path, headers, _sock=sock)
            # Slack greets every connection first; the client ignores nothing before it.
            hello = {
                "type": "hello",
                "num_connections": sum(c.open for c in self._connections) + 1,
                "debug_info": {"host": "local-socket-mode", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
            connection.send_frame(_TEXT, json.dumps(hello).encode())
            self._connections.append(connection)
            self._changed.notify_all()
            return connection

    def _received(self, connection: SocketConnection, data: bytes) -> None:
        try:
            message = json.loads(data.decode("utf-8"))
        except ValueError:
            raise _ProtocolError(1007, "not a JSON text message") from None
        if not isinstance(message, dict):
            raise _ProtocolError(1007, "not a JSON object")
        with self._changed:
            envelope_id = message.get("envelope_id")
            if isinstance(envelope_id, str) and envelope_id not in self._acks:
                self._acks[envelope_id] = message
            else:
                connection.messages.append(message)
            self._changed.notify_all()

    def _ended(self, connection: SocketConnection, reason: str) -> None:
        with connection._send_lock:
            connection._sock = None
        with self._changed:
            connection.ended = reason
            self._changed.notify_all()

    def _record_error(self) -> None:
        with self._changed:
            self.errors.append(traceback.format_exc())


class SocketModeSlackServer(SlackServer):
    """The local Slack Web API server with ``apps.connections.open``, for Socket Mode.

    Every other method keeps the bot token; ``apps.connections.open`` takes only the app-level
    token (the bot token gets ``not_allowed_token_type``, any other ``invalid_auth``) and
    answers the socket server's URL.
    """

    def __init__(
        self,
        socket_mode: SocketModeServer,
        token: str = "xoxb-test",
        *,
        app_token: str = "xapp-1-A0APP-1-test",
        **options: Any,
    ) -> None:
        """Create the server (not yet listening); ``options`` go to :class:`SlackServer`."""
        super().__init__(token, **options)
        self.socket_mode = socket_mode
        self.app_token = app_token
        self._methods["apps.connections.open"] = self._connections_open

    def _call(
        self, method: str, params: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if method != "apps.connections.open":
            return super()._call(method, params, headers)
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else params.get("token")
        if token == self.token:
            return 200, {"ok": False, "error": "not_allowed_token_type"}
        if token != self.app_token:
            return 200, {"ok": False, "error": "invalid_auth"}
        with self._lock:
            return 200, self._connections_open(params)

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.socket_mode.url:
            return {"ok": False, "error": "internal_error"}
        return {"ok": True, "url": self.socket_mode.url}
