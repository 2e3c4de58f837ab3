"""Vendor RSS and Atom feeds: fetched with httpx, parsed from bytes with feedparser.

The fetch is bounded on every side: connect and read timeouts, a deadline for the whole body (a
server dripping one byte at a time never trips a read timeout) and a byte cap (checked against
``Content-Length`` first, then while streaming). ETag and Last-Modified from the last good fetch
make it conditional; a 304 is not parsed.

As a source, each configured feed is its own channel (``feed:<name>``): its own validators,
back-off and scheduler job. An entry linking a Hub model page becomes that repo's release (once
the repo passes the filters); one naming an API model per ``api_models`` becomes an API release;
anything else is an announcement.
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx

from config.settings import Settings
from config.watch import FeedWatch, WatchSettings
from core.clock import now
from core.errors import FeedInvalid, FeedUnavailable, ModelNotFound, SupersedeError
from core.http import Resolver, non_public_reason, resolve_host, retry_after
from watcher.events import Announcement, ApiRelease, ModelReleased
from watcher.filters import AUTHORS_SETTING, author_reason, decide
from watcher.sources.base import Channel, Listener, SourceReport, register
from watcher.state import ANNOUNCED, BASELINE, RELEASED, NewRow

if TYPE_CHECKING:
    from watcher.discovery import Discovery

log = logging.getLogger(__name__)

USER_AGENT = "supersede-watcher (+https://github.com/supersede)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)
#: Hosts whose ``/<org>/<name>`` pages are Hub model pages (plus the configured endpoint's).
HUB_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
#: First path segments of Hub pages that are not models.
_NOT_MODELS = frozenset(
    {"datasets", "spaces", "docs", "blog", "papers", "models", "collections", "organizations",
     "settings", "join", "login", "pricing", "posts", "learn", "tasks", "api", "new", "chat",
     "enterprise", "inference-endpoints", "buckets", "storage"}
)  # fmt: skip
_NAME = re.compile(r"^[\w.\-]{1,96}$")
SUMMARY_CHARS = 500
#: Redirects followed per fetch (each to the same origin or a public address).
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FeedItem:
    """One feed entry, classified."""

    entry_id: str
    title: str
    link: str | None
    published_at: datetime | None
    summary: str
    hub_repo: str | None = None
    api: ApiRelease | None = None


@dataclass(frozen=True)
class Fetched:
    """A fetch: ``items`` is None on 304 Not Modified."""

    items: list[FeedItem] | None
    etag: str | None
    last_modified: str | None


def fetch(
    feed: FeedWatch,
    watch: WatchSettings,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    hub_hosts: Iterable[str] = (),
    resolve: Resolver = resolve_host,
) -> Fetched:
    """Fetch and classify ``feed``; raises FeedUnavailable (retry later) or FeedInvalid.

    Redirects are followed, at most :data:`MAX_REDIRECTS`, but only within the configured URL's
    origin or to public addresses (:func:`_check_redirect`). ``resolve`` resolves a redirect
    target's host name for that check only (the connection uses the system resolver): a test
    passes its own to follow a redirect to a local server as if it were public.
    """
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    timeout = httpx.Timeout(watch.read_timeout_s, connect=watch.connect_timeout_s)
    try:
        with (
            httpx.Client(timeout=timeout) as client,
            contextlib.closing(_open(client, feed, headers, resolve)) as response,
        ):
            if response.status_code == 304:
                return Fetched(None, etag, last_modified)
            _check_status(feed, response)
            body = _read_capped(feed, watch, response)
            content_type = response.headers.get("content-type", "")
            base = str(response.url)
            new_etag = response.headers.get("etag")
            new_modified = response.headers.get("last-modified")
    except httpx.TimeoutException as exc:
        raise FeedUnavailable(f"feed {feed.name}: timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise FeedUnavailable(f"feed {feed.name}: {type(exc).__name__}: {exc}") from None
    items = parse(feed, body, content_type=content_type, base=base, hub_hosts=hub_hosts)
    return Fetched(items, new_etag, new_modified)


def _open(
    client: httpx.Client, feed: FeedWatch, headers: dict[str, str], resolve: Resolver
) -> httpx.Response:
    """The streamed answer at the end of the feed's redirects, each hop checked before it is
    requested."""
    origin = httpx.URL(feed.url)
    request = client.build_request("GET", origin, headers=headers)
    for _ in range(MAX_REDIRECTS + 1):
        response = client.send(request, stream=True)
        if response.next_request is None:
            return response
        response.close()
        request = response.next_request
        _check_redirect(feed, origin, request.url, resolve)
    raise FeedInvalid(f"feed {feed.name}: more than {MAX_REDIRECTS} redirects from {feed.url}")


def _check_redirect(
    feed: FeedWatch, origin: httpx.URL, target: httpx.URL, resolve: Resolver
) -> None:
    """Refuse a redirect out of the configured URL's origin to a non-public address.

    The configured URL is the operator's choice and may be local (a mirror, a test server); where
    it redirects is the server's, so a redirect may stay on that origin (scheme, host and port)
    or go to a host whose every address is public, never to loopback, link-local (cloud metadata),
    private or otherwise non-public ones.
    """
    if _origin(target) == _origin(origin):
        return
    hop = f"{target.scheme}://{target.netloc.decode('ascii', 'replace')}{target.path}"[:300]
    try:
        reason = non_public_reason(target.raw_host.decode("ascii"), resolve)
    except (OSError, UnicodeError) as exc:
        raise FeedUnavailable(
            f"feed {feed.name}: redirected to {hop}, whose host does not resolve ({exc})"
        ) from None
    if reason is not None:
        raise FeedInvalid(
            f"feed {feed.name}: refused the redirect to {hop}: {reason}; a feed may only "
            "redirect to public addresses"
        )


def _origin(url: httpx.URL) -> tuple[str, bytes, int | None]:
    return url.scheme, url.raw_host, url.port


def _check_status(feed: FeedWatch, response: httpx.Response) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise FeedUnavailable(
            f"feed {feed.name}: the server answered {status}",
            retry_after_s=retry_after(response.headers),
        )
    if status >= 400:
        raise FeedInvalid(f"feed {feed.name}: the server answered {status} for {feed.url}")


def _read_capped(feed: FeedWatch, watch: WatchSettings, response: httpx.Response) -> bytes:
    cap = watch.feed_max_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise FeedInvalid(f"feed {feed.name}: {int(declared):,} bytes is over the {cap:,} cap")
    deadline = time.monotonic() + watch.feed_deadline_s
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise FeedInvalid(f"feed {feed.name}: body over the {cap:,} byte cap; not read further")
        if time.monotonic() > deadline:
            raise FeedUnavailable(
                f"feed {feed.name}: body not received within {watch.feed_deadline_s:g} s"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse(
    feed: FeedWatch,
    body: bytes,
    *,
    content_type: str = "",
    base: str = "",
    hub_hosts: Iterable[str] = (),
) -> list[FeedItem]:
    """Classify the entries of an RSS/Atom document (relative links resolve against ``base``)."""
    import feedparser

    parsed = feedparser.parse(
        body, response_headers={"content-type": content_type, "content-location": base or feed.url}
    )
    if not parsed.get("version") and not parsed.entries:
        # An error page or an empty body served with a 200: not a feed, whatever feedparser says.
        problem = getattr(parsed, "bozo_exception", None) or "no RSS or Atom element"
        raise FeedInvalid(f"feed {feed.name}: not a readable RSS or Atom document ({problem})")
    hosts = HUB_HOSTS | {h.lower() for h in hub_hosts}
    items: list[FeedItem] = []
    seen: set[str] = set()
    for entry in parsed.entries:
        item = _classify(feed, entry, hosts)
        if item is None or item.entry_id in seen:
            continue  # no id and no link: nothing to dedupe on; or a repeated id
        seen.add(item.entry_id)
        items.append(item)
    return items


def _classify(feed: FeedWatch, entry: Any, hub_hosts: frozenset[str]) -> FeedItem | None:
    link = entry.get("link") or None
    entry_id = entry.get("id") or link
    if not entry_id:
        return None
    # feedparser copies an Atom entry's content into its summary when it has none: read the
    # content when there is one, else the summary, never both.
    content = [part.get("value", "") for part in entry.get("content", [])]
    html = " ".join(content) if content else str(entry.get("summary") or "")
    text = _Text.of(html)
    hrefs = [link] + [ref.get("href") for ref in entry.get("links", [])] + _Text.links(html)
    # The title stays as the feed wrote it (plain text): notifiers escape it for their medium.
    title = " ".join(str(entry.get("title") or "").split()) or "(untitled)"
    hub_repo = next((r for r in (hub_model(h, hub_hosts) for h in hrefs if h) if r), None)
    api = None if hub_repo else _api_model(feed, f"{title}\n{text}\n{link or ''}")
    when = entry.get("published_parsed") or entry.get("updated_parsed")
    published = datetime.fromtimestamp(calendar.timegm(when), UTC) if when else None
    return FeedItem(
        entry_id=str(entry_id)[:500],
        title=title[:300],
        link=link,
        published_at=published,
        summary=" ".join(text.split())[:SUMMARY_CHARS],
        hub_repo=hub_repo,
        api=api,
    )


def hub_model(url: str, hub_hosts: Iterable[str] = HUB_HOSTS) -> str | None:
    """``org/name`` when ``url`` is a Hub model page (not a dataset, space, blog, ...)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.netloc.lower() not in set(hub_hosts):
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) != 2 and not (len(segments) > 2 and segments[2] in ("tree", "blob")):
        return None
    org, name = segments[0], segments[1]
    if org.lower() in _NOT_MODELS or not (_NAME.match(org) and _NAME.match(name)):
        return None
    return f"{org}/{name}"


def _api_model(feed: FeedWatch, text: str) -> ApiRelease | None:
    """The API model a post names, by the first matching rule: the model and the rule's name
    only (the worker reads the endpoint from its own configuration)."""
    for rule in feed.api_models:
        match = re.search(rule.pattern, text)
        if match:
            model = match.group(1) if match.groups() else match.group(0)
            if model:  # a group that matched nothing names no model
                return ApiRelease(model=model[:128], rule=rule.name, feed=feed.name)
    return None


class _Text(HTMLParser):
    """Plain text and link targets of an HTML fragment (scripts and styles dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hrefs: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "a":
            self.hrefs += [value for key, value in attrs if key == "href" and value]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    @classmethod
    def _run(cls, html: str) -> _Text:
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser

    @classmethod
    def of(cls, html: str) -> str:
        return " ".join(cls._run(html).parts)

    @classmethod
    def links(cls, html: str) -> list[str]:
        return cls._run(html).hrefs


# --------------------------------------------------------------------------- the source


def accepted_authors(feed: FeedWatch, watch: WatchSettings) -> tuple[tuple[str, ...], str]:
    """Whose repos a post of ``feed`` may link to be benchmarked, and the setting that says so."""
    if feed.accept_from is None:
        return watch.hub.authors, AUTHORS_SETTING
    return feed.accept_from, f"watch.feeds[{feed.name}].accept_from"


def feed_source(feed: FeedWatch) -> str:
    """The channel (state row, scheduler job) of ``feed``."""
    return f"feed:{feed.name}"


@register
class FeedSource:
    """One channel per configured feed, each fetched every ``feed.interval``."""

    name: ClassVar[str] = "feeds"

    def channels(self, settings: Settings) -> list[Channel]:
        return [
            Channel(
                feed_source(feed),
                f"fetch feed {feed.name}",
                feed.interval,
                functools.partial(poll, feed),
            )
            for feed in settings.watch.feeds
        ]

    def listener(self, discovery: Discovery) -> Listener | None:
        return None


def poll(feed: FeedWatch, discovery: Discovery) -> SourceReport:
    """Fetch one feed (conditionally); record and publish its new entries."""
    report = SourceReport(feed_source(feed))
    if discovery.backing_off(report):
        return report
    known = discovery.state.source(report.source)
    endpoint = urlsplit(discovery.settings.hub.endpoint).netloc
    try:
        fetched = fetch(
            feed,
            discovery.watch,
            etag=known.etag,
            last_modified=known.last_modified,
            hub_hosts=(endpoint,),
        )
        if fetched.items is None:
            report.status = "not_modified"
        else:
            for item in fetched.items:
                _record_item(discovery, feed, item, report, first_poll=known.first_poll)
    except SupersedeError as exc:
        log.warning("%s: %s", report.source, exc)
        discovery.finish(report, exc)
        return report
    if report.waiting:
        # Keep no validators: a 304 next time would hide the entries that are waiting.
        discovery.finish(report, None, etag="", last_modified="")
    else:
        discovery.finish(report, None, etag=fetched.etag, last_modified=fetched.last_modified)
    return report


def _record_item(
    discovery: Discovery,
    feed: FeedWatch,
    item: FeedItem,
    report: SourceReport,
    *,
    first_poll: bool,
) -> None:
    report.seen += 1
    state = discovery.state
    key = f"feed:{report.source.removeprefix('feed:')}:{item.entry_id}"
    if state.is_seen(key):
        return
    lookback = timedelta(seconds=discovery.watch.lookback)
    old = now() - item.published_at > lookback if item.published_at else first_poll
    if old:
        state.record([NewRow(key, BASELINE, report.source)])
        report.baseline += 1
        return
    if item.hub_repo:
        try:
            release = _linked_release(discovery, feed, item, report.source)
        except SupersedeError as exc:  # not public yet, Hub busy: this entry waits a pass
            log.info("%s: %s: %s", report.source, item.entry_id, exc)
            report.waiting += 1
            return
        if release is not None:
            kind = state.record_repo(
                report.source, item.hub_repo, str(release.revision), release, also=[key]
            )
            if kind == RELEASED:
                report.events.append(release)
            return
    if item.api is not None:
        event: ModelReleased | Announcement = ModelReleased(
            source=report.source,
            detected_at=now(),
            api=item.api,
            created_at=item.published_at,
            title=item.title,
            link=item.link,
        )
        kind = RELEASED
    else:
        event = Announcement(
            source=report.source,
            detected_at=now(),
            title=item.title,
            link=item.link,
            entry_id=item.entry_id,
            published_at=item.published_at,
            summary=item.summary or None,
        )
        kind = ANNOUNCED
    if state.record([NewRow(key, kind, report.source, event=event)])[0]:
        report.events.append(event)


def _linked_release(
    discovery: Discovery, feed: FeedWatch, item: FeedItem, source: str
) -> ModelReleased | None:
    """The release a post links to, or None when it is not one (then it is announced)."""
    assert item.hub_repo is not None
    accepted, setting = accepted_authors(feed, discovery.watch)
    refused = author_reason(item.hub_repo, accepted, setting)
    if refused:  # before any Hub request: the post may name anyone's repo
        log.info("%s: %s linked but skipped: %s", source, item.hub_repo, refused)
        return None
    facts = discovery.hub.facts(item.hub_repo)  # not found yet: raised, retried next pass
    decision = decide(facts, discovery.watch.hub, accept_from=accepted, accept_setting=setting)
    if decision.action == "drop" or facts.sha is None:
        log.info("%s: %s linked but %s", source, item.hub_repo, decision.reason)
        return None
    if decision.action == "wait":
        raise ModelNotFound(f"{item.hub_repo}: {decision.reason}; looking again next pass")
    return discovery.release(facts, source, title=item.title, link=item.link)
