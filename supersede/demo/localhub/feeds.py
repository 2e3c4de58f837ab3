"""A tiny, in-process HTTP server for RSS/Atom feeds in tests.

Any HTTP client (``httpx``, ``feedparser``'s own fetcher) works against it::

    with FeedServer() as feeds:
        url = feeds.publish("/blog/rss.xml", body)
        httpx.get(url).content == body

Behaviour mirrors a well-behaved static web server where feed pollers depend on it:

* ``GET`` and ``HEAD`` of a published path answer 200 with ``Content-Type``, ``Content-Length``,
  a strong ``ETag`` (the quoted sha1 of the body) and ``Last-Modified``; other paths answer 404.
* Conditional requests: ``If-None-Match`` (``*`` or a comma list, weak comparison) and, only when
  ``If-None-Match`` is absent (RFC 9110 section 13.2.2), ``If-Modified-Since`` answer
  ``304 Not Modified`` with the ``ETag`` and no body.
* Every :meth:`FeedServer.publish` moves that path's ``Last-Modified`` at least one second past
  the previous one, so a republish within the same second still defeats ``If-Modified-Since``.

Test controls, consumed in the order they were added and matched on the exact request path
(query string ignored): :meth:`FeedServer.fail_next` (an error status with headers, e.g. 429 with
``Retry-After``) and :meth:`FeedServer.stall` (headers and part of the body, then silence, then a
closed connection). :meth:`FeedServer.huge` serves an arbitrarily large RSS body streamed from a
generator. Observations: ``requests`` (method, path, lower-cased headers, status) and ``errors``.
"""

from __future__ import annotations

import hashlib
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from supersede.demo.localhub.server import LocalServer

__all__ = ["CHUNK_SIZE", "FeedServer", "huge_rss"]

#: Size of the chunks a :meth:`FeedServer.huge` body is generated and written in.
CHUNK_SIZE = 64 * 1024

_HUGE_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<rss version="2.0">\n<channel>\n'
    b"<title>Huge feed</title>\n<link>https://huge.example/</link>\n"
    b"<description>A feed far larger than any poller should accept.</description>\n"
)
_HUGE_TAIL = b"</channel>\n</rss>\n"
_HUGE_ITEM = (
    "<item><title>Filler post {n}</title>"
    "<link>https://huge.example/posts/{n}</link>"
    '<guid isPermaLink="false">huge-{n}</guid>'
    "<description>Nothing to see in post {n}; this feed only exists to be large.</description>"
    "</item>\n"
)


def huge_rss(size_bytes: int) -> Iterator[bytes]:
    """Yield an RSS document of exactly ``size_bytes`` bytes in chunks of :data:`CHUNK_SIZE`.

    The document is a channel header, as many ``<item>`` elements as fit, whitespace padding and
    the closing tags: well-formed XML whenever ``size_bytes`` leaves room for the header and
    the closing tags (below that, a prefix of the header). Memory stays at about one chunk.
    """
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    if size_bytes < len(_HUGE_HEAD) + len(_HUGE_TAIL):
        if size_bytes:
            yield _HUGE_HEAD[:size_bytes]
        return
    buffer = bytearray(_HUGE_HEAD)
    # Bytes still to be produced after what is in the buffer, the closing tags included.
    left = size_bytes - len(buffer)
    n = 0
    while left > len(_HUGE_TAIL):
        item = _HUGE_ITEM.format(n=n).encode()
        n += 1
        if len(item) + len(_HUGE_TAIL) <= left:
            buffer += item
            left -= len(item)
        else:
            # The next item no longer fits: pad so the document ends exactly at size_bytes.
            padding = left - len(_HUGE_TAIL)
            buffer += b"\n" * padding
            left -= padding
        while len(buffer) >= CHUNK_SIZE:
            yield bytes(buffer[:CHUNK_SIZE])
            del buffer[:CHUNK_SIZE]
    buffer += _HUGE_TAIL
    while buffer:
        yield bytes(buffer[:CHUNK_SIZE])
        del buffer[:CHUNK_SIZE]


@dataclass(frozen=True)
class _Document:
    body: bytes
    content_type: str
    etag: str
    last_modified: int  # seconds since the epoch


@dataclass(frozen=True)
class _Huge:
    size_bytes: int
    with_length: bool


@dataclass
class _Fault:
    path: str
    remaining: int
    # An error reply (fail_next) ...
    status: int = 0
    headers: dict[str, str] | None = None
    # ... or a stall.
    after_bytes: int = 0
    seconds: float = 0.0

    @property
    def is_stall(self) -> bool:
        return self.status == 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FeedServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class FeedServer(LocalServer):
    """Static feed host on ``http://127.0.0.1:<free port>``, served from a daemon thread.

    Use it as a context manager (or call :meth:`start` / :meth:`close`). All methods are
    thread-safe.

    Attributes:
        url: Base URL (no trailing slash); :meth:`publish` returns the full URL of a path.
        requests: Every request in arrival order, as ``{"method", "path", "headers", "status"}``;
            ``path`` includes the query string, ``headers`` has lower-cased names, and ``status``
            is the status sent (recorded when the status line goes out, before any body).
        errors: Tracebacks of unexpected exceptions raised while handling requests (answered 500).
    """

    def __init__(self) -> None:
        """Create the server (not yet listening)."""
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._documents: dict[str, _Document | _Huge] = {}
        self._faults: list[_Fault] = []
        # Set while closing, so stalled handlers wake up instead of holding the connection.
        self._closing = threading.Event()
        super().__init__()

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> _Server:
        server = _Server(self)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return server

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        self._closing.clear()
        return super().start()

    def close(self) -> None:
        """Stop serving and release the port; stalled responses are cut short."""
        self._closing.set()
        super().close()

    # ------------------------------------------------------------------ test controls

    def publish(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/rss+xml; charset=utf-8",
    ) -> str:
        """Serve ``body`` at ``path`` (e.g. ``"/blog/rss.xml"``), replacing what was there.

        Each call gives the path a new ``ETag`` (when the body changed) and a ``Last-Modified`` at
        least one second later than the previous one for that path.

        Args:
            path: Absolute path, starting with ``/``.
            body: The exact bytes to serve.
            content_type: The ``Content-Type`` header. A charset here overrides the XML
                declaration for ``application/*+xml`` in feed parsers (RFC 3023), so serve
                non-UTF-8 feeds with a matching charset or none.

        Returns:
            The full URL of the document.
        """
        _check_path(path)
        etag = f'"{hashlib.sha1(body).hexdigest()}"'
        with self._lock:
            previous = self._documents.get(path)
            last_modified = int(time.time())
            if isinstance(previous, _Document):
                last_modified = max(last_modified, previous.last_modified + 1)
            self._documents[path] = _Document(bytes(body), content_type, etag, last_modified)
        return self.url + path

    def huge(self, path: str, size_bytes: int, *, with_length: bool = True) -> str:
        """Serve an RSS document of exactly ``size_bytes`` bytes at ``path`` (see :func:`huge_rss`).

        The body is generated while it is written, in 64 KiB chunks, so sizes far beyond memory
        are fine; a client that hangs up early just ends the stream. It carries no validators.

        Args:
            path: Absolute path, starting with ``/``.
            size_bytes: Exact body size.
            with_length: Send ``Content-Length``. If ``False``, the body is delimited by closing
                the connection (``Connection: close``, no length), as from a server that does
                not know the size in advance.

        Returns:
            The full URL of the document.
        """
        _check_path(path)
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        with self._lock:
            self._documents[path] = _Huge(size_bytes, with_length)
        return self.url + path

    def fail_next(
        self,
        path: str,
        status: int,
        headers: dict[str, str] | None = None,
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` requests for ``path`` with ``status``, ``headers`` (e.g.
        ``{"Retry-After": "1"}``) and a short text body, whether or not ``path`` is published."""
        if status < 100:
            raise ValueError(f"Not an HTTP status: {status}")
        with self._lock:
            self._faults.append(_Fault(path, count, status=status, headers=dict(headers or {})))

    def stall(self, path: str, after_bytes: int, seconds: float, count: int = 1) -> None:
        """Make the next ``count`` requests for ``path`` hang mid-body.

        The reply is a 200 with the full headers (``Content-Length`` of the whole body) and the
        first ``after_bytes`` bytes of the body; then the server stays silent for ``seconds`` (or
        until it is closed) and closes the connection without sending the rest. Conditional
        headers are ignored for a stalled request. An unpublished ``path`` still answers 404.
        """
        if after_bytes < 0 or seconds < 0:
            raise ValueError("after_bytes and seconds must be >= 0")
        with self._lock:
            self._faults.append(_Fault(path, count, after_bytes=after_bytes, seconds=seconds))

    # ------------------------------------------------------------------ internals used by handler

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.path == path:
                    fault.remaining -= 1
                    return fault
            return None

    def _lookup(self, path: str) -> _Document | _Huge | None:
        with self._lock:
            return self._documents.get(path)

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")


def _http_date(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


def _etag_listed(header: str, etag: str) -> bool:
    """Weak comparison against an ``If-None-Match`` value (RFC 9110 section 13.1.2)."""
    if header.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in header.split(","))


def _not_modified_since(header: str, last_modified: int) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # an invalid date is ignored (RFC 9110 section 13.1.3)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return datetime.fromtimestamp(last_modified, UTC) <= since


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a stalled prefix must reach the client before the silence
    server_version = "FakeFeeds/1.0"
    _status_sent = False
    # Idle keep-alive connections give up after this; it never delays close().
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self) -> None:
        owner = self.server.owner
        self._status_sent = False
        path = urlsplit(self.path).path
        try:
            fault = owner._take_fault(path)
            document = owner._lookup(path)
            if fault is not None and not fault.is_stall:
                body = f"Injected failure {fault.status}\n".encode()
                self._send_bytes(
                    fault.status, body, {"Content-Type": "text/plain", **(fault.headers or {})}
                )
            elif document is None:
                self._send_bytes(
                    404, f"Not found: {path}\n".encode(), {"Content-Type": "text/plain"}
                )
            elif fault is not None:
                self._serve_stalled(document, fault)
            elif isinstance(document, _Huge):
                self._serve_huge(document)
            else:
                self._serve_document(document)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away: nothing to answer
        except Exception:
            with owner._lock:
                owner.errors.append(traceback.format_exc())
            if self._status_sent:
                self.close_connection = True  # too late for a 500: cut the reply short
            else:
                self._send_bytes(500, b"Internal error in fake feed server\n", {})

    def _start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers, recording the request with the status sent."""
        self.server.owner._record(
            {
                "method": self.command,
                "path": self.path,
                "headers": {key.lower(): value for key, value in self.headers.items()},
                "status": status,
            }
        )
        self._status_sent = True
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if headers.get("Connection", "").lower() == "close":
            self.close_connection = True
        self.end_headers()

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        bodiless = status == 304 or status < 200 or status == 204
        if not bodiless:
            headers = {**headers, "Content-Length": headers.get("Content-Length", str(len(body)))}
        self._start(status, headers)
        if self.command != "HEAD" and not bodiless:
            self.wfile.write(body)

    # ------------------------------------------------------------------ documents

    def _serve_document(self, document: _Document) -> None:
        validators = {
            "ETag": document.etag,
            "Last-Modified": _http_date(document.last_modified),
        }
        if_none_match = self.headers.get("If-None-Match")
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_none_match is not None:
            not_modified = _etag_listed(if_none_match, document.etag)
        elif if_modified_since is not None:
            not_modified = _not_modified_since(if_modified_since, document.last_modified)
        else:
            not_modified = False
        if not_modified:
            return self._send_bytes(304, b"", {"ETag": document.etag})
        headers = {"Content-Type": document.content_type, **validators}
        self._send_bytes(200, document.body, headers)

    def _serve_stalled(self, document: _Document | _Huge, fault: _Fault) -> None:
        owner = self.server.owner
        if isinstance(document, _Huge):
            prefix = bytearray()
            for chunk in huge_rss(document.size_bytes):
                prefix += chunk
                if len(prefix) >= fault.after_bytes:
                    break
            size, content_type = document.size_bytes, "application/rss+xml; charset=utf-8"
            headers = {"Content-Type": content_type, "Content-Length": str(size)}
        else:
            prefix = bytearray(document.body)
            headers = {
                "Content-Type": document.content_type,
                "Content-Length": str(len(document.body)),
                "ETag": document.etag,
                "Last-Modified": _http_date(document.last_modified),
            }
        self.close_connection = True  # the rest of the body never comes
        self._start(200, headers)
        if self.command != "HEAD":
            self.wfile.write(bytes(prefix[: fault.after_bytes]))
            self.wfile.flush()
        owner._closing.wait(fault.seconds)

    def _serve_huge(self, document: _Huge) -> None:
        headers = {"Content-Type": "application/rss+xml; charset=utf-8"}
        if document.with_length:
            headers["Content-Length"] = str(document.size_bytes)
        else:
            headers["Connection"] = "close"
        self._start(200, headers)
        if self.command == "HEAD":
            return
        closing = self.server.owner._closing
        for chunk in huge_rss(document.size_bytes):
            if closing.is_set():
                self.close_connection = True
                return
            self.wfile.write(chunk)
