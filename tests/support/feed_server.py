"""The local feed host for tests: the demo's (``supersede.demo.localhub``) plus what tests need,
every request recorded, failures injected on demand and documents of any size.

Test controls, consumed in the order they were added and matched on the exact request path
(query string ignored): :meth:`FeedServer.fail_next` (an error status with headers, e.g. 429 with
``Retry-After``) and :meth:`FeedServer.stall` (headers and part of the body, then silence, then a
closed connection). :meth:`FeedServer.huge` serves an arbitrarily large RSS body streamed from a
generator. Observations: ``requests`` (method, path, lower-cased headers, status) and ``errors``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from supersede.demo.localhub import feeds
from supersede.demo.localhub.feeds import Document, check_path, http_date

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


class _Handler(feeds.FeedHandler):
    def start_reply(self, status: int, headers: Mapping[str, str]) -> None:
        owner = self.feeds
        assert isinstance(owner, FeedServer)
        owner._record(
            {
                "method": self.command,
                "path": self.path,
                "headers": {key.lower(): value for key, value in self.headers.items()},
                "status": status,
            }
        )
        super().start_reply(status, headers)

    def answer(self, path: str) -> None:
        owner = self.feeds
        assert isinstance(owner, FeedServer)
        fault = owner._take_fault(path)
        if fault is not None and not fault.is_stall:
            body = f"Injected failure {fault.status}\n".encode()
            headers = {"Content-Type": "text/plain", **(fault.headers or {})}
            return self.send_body(fault.status, body, headers)
        huge = owner._huge_at(path)
        document = huge or owner.document(path)
        if document is None or (fault is None and huge is None):
            return super().answer(path)
        if fault is not None:
            return self._serve_stalled(document, fault)
        assert huge is not None
        self._serve_huge(huge)

    def _serve_stalled(self, document: Document | _Huge, fault: _Fault) -> None:
        owner = self.feeds
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
                "Last-Modified": http_date(document.last_modified),
            }
        self.close_connection = True  # the rest of the body never comes
        self.start_reply(200, headers)
        if self.command != "HEAD":
            self.wfile.write(bytes(prefix[: fault.after_bytes]))
            self.wfile.flush()
        owner.closing.wait(fault.seconds)

    def _serve_huge(self, document: _Huge) -> None:
        headers = {"Content-Type": "application/rss+xml; charset=utf-8"}
        if document.with_length:
            headers["Content-Length"] = str(document.size_bytes)
        else:
            headers["Connection"] = "close"
        self.start_reply(200, headers)
        if self.command == "HEAD":
            return
        closing = self.feeds.closing
        for chunk in huge_rss(document.size_bytes):
            if closing.is_set():
                self.close_connection = True
                return
            self.wfile.write(chunk)


class FeedServer(feeds.FeedServer):
    """The local feed host, recording each request, failing or stalling those it was told to.

    Attributes:
        requests: Every request in arrival order, as ``{"method", "path", "headers", "status"}``;
            ``path`` includes the query string, ``headers`` has lower-cased names, and ``status``
            is the status sent (recorded when the status line goes out, before any body).
    """

    handler_class = _Handler

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._huge: dict[str, _Huge] = {}
        self._faults: list[_Fault] = []
        super().__init__()

    def publish(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/rss+xml; charset=utf-8",
    ) -> str:
        with self._lock:
            self._huge.pop(path, None)
        return super().publish(path, body, content_type=content_type)

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
        check_path(path)
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        self.remove(path)
        with self._lock:
            self._huge[path] = _Huge(size_bytes, with_length)
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

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.path == path:
                    fault.remaining -= 1
                    return fault
            return None

    def _huge_at(self, path: str) -> _Huge | None:
        with self._lock:
            return self._huge.get(path)

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
