"""A local static host for RSS/Atom feeds, in process, on loopback.

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
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import cast
from urllib.parse import urlsplit

from supersede.demo.localhub.server import LocalHandler, LocalServer

__all__ = ["Document", "FeedHandler", "FeedServer", "check_path", "http_date"]


@dataclass(frozen=True)
class Document:
    """A published feed document."""

    body: bytes
    content_type: str
    etag: str
    last_modified: int  # seconds since the epoch


class FeedHandler(LocalHandler):
    """Answers one request of the feed host. A subclass may override :meth:`answer` to answer
    some paths otherwise (an injected failure) before the published documents do."""

    disable_nagle_algorithm = True  # a reply's headers and body go out as separate writes
    server_version = "LocalFeeds/1.0"

    @property
    def feeds(self) -> FeedServer:
        """The server this request reached."""
        return cast("FeedServer", self.server.owner)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            self.answer(urlsplit(self.path).path)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away: nothing to answer
        except Exception:
            self.feeds.record_error()
            if self.status_sent:
                self.close_connection = True  # too late for a 500: cut the reply short
            else:
                self.send_body(500, b"Internal error in the local feed server\n", {})

    def answer(self, path: str) -> None:
        """Serve the document published at ``path`` (query string ignored), or 404."""
        document = self.feeds.document(path)
        if document is None:
            self.send_body(404, f"Not found: {path}\n".encode(), {"Content-Type": "text/plain"})
        else:
            self.serve_document(document)

    def serve_document(self, document: Document) -> None:
        """The document, or 304 when the request's validators still match it."""
        validators = {
            "ETag": document.etag,
            "Last-Modified": http_date(document.last_modified),
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
            return self.send_body(304, b"", {"ETag": document.etag})
        headers = {"Content-Type": document.content_type, **validators}
        self.send_body(200, document.body, headers)


class FeedServer(LocalServer):
    """Static feed host on ``http://127.0.0.1:<free port>``, served from a daemon thread.

    Use it as a context manager (or call :meth:`start` / :meth:`close`). All methods are
    thread-safe.

    Attributes:
        url: Base URL (no trailing slash); :meth:`publish` returns the full URL of a path.
        errors: Tracebacks of unexpected exceptions raised while handling requests (answered 500).
    """

    handler_class = FeedHandler

    def __init__(self) -> None:
        """Create the server (not yet listening)."""
        self._lock = threading.Lock()
        self._documents: dict[str, Document] = {}
        super().__init__()

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
        check_path(path)
        etag = f'"{hashlib.sha1(body).hexdigest()}"'
        with self._lock:
            previous = self._documents.get(path)
            last_modified = int(time.time())
            if previous is not None:
                last_modified = max(last_modified, previous.last_modified + 1)
            self._documents[path] = Document(bytes(body), content_type, etag, last_modified)
        return self.url + path

    def remove(self, path: str) -> None:
        """Stop serving ``path`` (it answers 404 again)."""
        with self._lock:
            self._documents.pop(path, None)

    def document(self, path: str) -> Document | None:
        """What is published at ``path``."""
        with self._lock:
            return self._documents.get(path)


def check_path(path: str) -> None:
    """Refuse a path that does not start with ``/``."""
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")


def http_date(seconds: int) -> str:
    """An HTTP date (RFC 9110 section 5.6.7)."""
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
