"""What every local protocol server shares: a free loopback port served from a daemon thread,
a quiet request handler with the usual replies, and a clean shutdown; usable as a context
manager."""

from __future__ import annotations

import json
import threading
import traceback
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = ["LocalHandler", "LocalServer"]


class LocalServer:
    """A server on ``http://127.0.0.1:<free port>``; subclasses name their ``handler_class``.

    Attributes:
        url: Base URL (no trailing slash), set by :meth:`start`.
        errors: Tracebacks of unexpected exceptions raised while handling requests.
        closing: Set while closing, so handlers that wait on it (a slow body) stop at once.
    """

    url: str = ""
    #: Handles each request; it reaches this object as ``self.server.owner``.
    handler_class: ClassVar[type[LocalHandler]]

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.closing = threading.Event()
        self._errors_lock = threading.Lock()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _bound(self, port: int) -> None:
        """Called once the port is known: set ``url`` (and anything else that names the port)."""
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        if self._server is None:
            self.closing.clear()
            self._server = _HTTPServer(self, self.handler_class)
            self._bound(self._server.server_address[1])
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=type(self).__name__,
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port; handlers waiting on ``closing`` stop at once."""
        self.closing.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def record_error(self) -> None:
        """Keep the traceback of the exception being handled (call it from an ``except``)."""
        text = traceback.format_exc()
        with self._errors_lock:
            self.errors.append(text)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: LocalServer, handler: type[LocalHandler]) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), handler)


class LocalHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and knows whether its reply has begun."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections give up after this; it never delays close().
    timeout = 30
    #: Whether the status line of the current request's reply went out.
    status_sent = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def parse_request(self) -> bool:
        self.status_sent = False  # one handler serves every request of a keep-alive connection
        return super().parse_request()

    def start_reply(self, status: int, headers: Mapping[str, str]) -> None:
        """Send the status line and headers; ``Connection: close`` ends the connection after."""
        self.status_sent = True
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        self.end_headers()

    def send_body(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        """A whole reply: ``Content-Length`` (unless given), and no body for ``HEAD`` or a
        status that has none (1xx, 204, 304)."""
        bodiless = status < 200 or status in (204, 304)
        if not bodiless:
            headers = {**headers, "Content-Length": headers.get("Content-Length", str(len(body)))}
        self.start_reply(status, headers)
        if self.command != "HEAD" and not bodiless:
            self.wfile.write(body)

    def send_json(
        self,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = "application/json",
    ) -> None:
        """A JSON reply (``payload`` already as bytes is sent as it is)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_body(status, data, {"Content-Type": content_type, **(headers or {})})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout): nothing to answer
