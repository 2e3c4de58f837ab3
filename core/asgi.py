"""The daemon's HTTP endpoints: a small ASGI router served by uvicorn on a thread of its own.

One :class:`Router` per listener maps ``(method, path)`` to an ASGI app (the Hub webhook, the
Prometheus ``/metrics`` app, later Slack events); :class:`Server` serves it with uvicorn's h11
protocol on an event loop in a daemon thread, so a slow client holds a socket, never a thread.

uvicorn bounds a request's header size (h11) and the idle time between requests (keep-alive), but
not the time a client may take to send a request: a connection that sends half a header and
stops would be held forever. :class:`Limits` adds what is missing: every request must arrive
whole (headers and body) within ``request_timeout_s`` of the connection opening or the previous
answer, and at most ``max_connections`` are open at once (more are closed as they arrive).
Malformed requests (a ``Content-Length`` that is not ASCII digits among them) get a JSON 400;
an exception in an app is logged (through the root handlers, which redact secrets) and answered
with a JSON 500, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """An answer: a status, a JSON object, and extra headers."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """What one client may hold of a listener."""

    #: Seconds a request may take to arrive whole (headers and body).
    request_timeout_s: float = 10.0
    #: Connections open at once; more are closed as they arrive.
    max_connections: int = 64
    #: Seconds ``stop`` waits for answers in progress.
    shutdown_grace_s: float = 2.0


class Headers(dict[str, str]):
    """A request's headers by lower-case name (the last of repeated ones)."""

    @classmethod
    def of(cls, scope: Scope) -> Headers:
        return cls(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        )

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


async def reply(send: Send, answer: Reply, *, close: bool = False) -> None:
    """Send ``answer`` as JSON; ``close`` ends the connection after it (a body left unread)."""
    data = json.dumps(answer.body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    headers += [
        (key.encode("latin-1"), value.encode("latin-1")) for key, value in answer.headers.items()
    ]
    if close:
        headers.append((b"Connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def declared_length(scope: Scope, limit: int) -> int | Reply:
    """The request's ``Content-Length``, parsed strictly; a refusal when it is missing (411), not
    ASCII digits or repeated (400), or over ``limit`` bytes (413)."""
    values = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
    if not values:
        return Reply(411, {"error": "Content-Length required"})
    # bytes.isdigit is true for the ASCII digits only (str.isdigit also takes "²" and "١").
    if len(values) > 1 or not values[0].isdigit():
        return Reply(400, {"error": "Content-Length is not a number"})
    length = int(values[0])
    if length > limit:
        return Reply(413, {"error": f"body over {limit} bytes"})
    return length


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | Reply:
    """The request body, read only once its declared length is known to be at most ``limit``."""
    length = declared_length(scope, limit)
    if isinstance(length, Reply):
        return length
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return Reply(400, {"error": "the client left before the body was sent"})
        body += message.get("body", b"")
        if len(body) > length:  # the server enforces the length; never trust it blindly
            return Reply(413, {"error": f"body over {limit} bytes"})
        if not message.get("more_body", False):
            return bytes(body)


async def in_thread(call: Callable[[], T], *, name: str) -> T:
    """``call()`` on a daemon thread of its own, awaited: blocking work (a Hub lookup, the store)
    stays off the event loop, and a call that hangs never holds the process's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():
            return  # the request was abandoned (the server is stopping)
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def run() -> None:
        result: Any = None
        error: BaseException | None = RuntimeError(f"{name}: the call was interrupted")
        try:
            result, error = call(), None
        except Exception as exc:
            error = exc
        finally:
            # A closed loop (the server stopped) waits for nothing any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done


class Router:
    """An ASGI app that hands each request to the app registered for its method and path."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._routes: dict[tuple[str, str], App] = {}

    def add(self, method: str, path: str, app: App) -> None:
        self._routes[(method.upper(), path)] = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan, no websockets
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        app = self._routes.get((scope["method"], scope["path"]))
        try:
            if app is None:
                await reply(tracked, Reply(404, {"error": "not found"}), close=_has_body(scope))
            else:
                await app(scope, receive, tracked)
        except asyncio.CancelledError:
            # The server is stopping and its grace period is over: the sender may try again.
            log.warning("%s: %s %s abandoned: stopping", self.name, scope["method"], scope["path"])
            if not started:
                stopping = Reply(503, {"error": "the server is stopping"}, {"Retry-After": "30"})
                await reply(send, stopping, close=True)
        except Exception:
            log.exception(
                "%s: %s %s could not be answered", self.name, scope["method"], scope["path"]
            )
            if not started:
                await reply(send, Reply(500, {"error": "internal error"}), close=True)


def _has_body(scope: Scope) -> bool:
    """Whether the request may carry a body that was not read."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _protocol(limits: Limits, name: str) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a whole-request deadline, a connection cap and JSON 400s."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning("%s: over %d connections: one closed", name, limits.max_connections)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection has as long

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.request_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                return  # the request arrived whole: it is being answered
            if not self.transport.is_closing():
                log.debug("%s: a request took over %ss to arrive", name, limits.request_timeout_s)
                self.transport.close()

        def shutdown(self) -> None:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and cycle.more_body:
                self.transport.close()  # a request still arriving: it will not be answered
                return
            super().shutdown()

        def send_400_response(self, msg: str) -> None:
            data = json.dumps({"error": "malformed HTTP request (request line or headers)"})
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ]
            events = (
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=data.encode()),
                h11.EndOfMessage(),
            )
            try:
                for event in events:
                    self.transport.write(self.conn.send(event) or b"")
            except h11.LocalProtocolError:
                pass  # nothing more can be said on this connection
            self.transport.close()

    return Protocol


class Server:
    """``app`` served on ``host:port`` (0 = a free port) from a daemon thread. The socket is bound
    when constructed (an ``OSError`` names a taken port at once); ``start``, then ``stop``."""

    def __init__(self, app: App, host: str, port: int, *, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self._socket = socket.socket(family, kind, proto)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
        except OSError:
            self._socket.close()
            raise
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._app = app
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve from now on (``OSError`` when uvicorn cannot start)."""
        import uvicorn

        config = uvicorn.Config(
            self._app,
            http=_protocol(self.limits, self.name),
            loop="asyncio",
            lifespan="off",
            log_config=None,  # the process's logging (and its redaction) applies
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=max(1, min(5, round(self.limits.request_timeout_s))),
            timeout_graceful_shutdown=max(1, round(self.limits.shutdown_grace_s)),
        )
        quiet = logging.getLogger("uvicorn.error")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)  # not its start and stop notices, once per listener
        server = self._server = uvicorn.Server(config)
        failed: list[BaseException] = []

        def run() -> None:
            # A thread other than the main one: uvicorn installs no signal handlers.
            try:
                asyncio.run(server.serve(sockets=[self._socket]))
            except BaseException as exc:  # SystemExit from a failed start included
                failed.append(exc)
                log.exception("%s: the server stopped", self.name)

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if failed or not server.started:
            self._socket.close()
            raise OSError(f"{self.name}: the server did not start (see the log)")

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._server.server_state.connections) if self._server else 0

    def stop(self) -> None:
        """Stop listening, close idle connections and wait (a grace period at most) for answers in
        progress."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(self.limits.shutdown_grace_s + 2)
        self._socket.close()
