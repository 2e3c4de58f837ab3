"""What may enter the queue: only repos of the watched authors, and feeds only from where they
are configured (a redirect never leads the watcher into a private network).

Repos arrive three ways: polling (listed by author, so always an author's), Hub webhooks and
feed posts linking a repo. The last two name any public repo; a repo whose author is not in
``watch.hub.authors`` (or the feed's own ``accept_from``) must cost no download and no GPU time.
A feed's configured URL is the operator's choice (here a local server); a redirect is the
server's, and is followed only within that origin or to public addresses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest

from config.settings import Settings
from config.watch import FeedWatch, WebhookWatch
from core.errors import FeedInvalid
from tests.support.feed_server import FeedServer
from tests.support.hub_server import HubServer
from tests.support.serving import served
from tests.watcher import conftest as watcher_fixtures
from watcher.discovery import Discovery
from watcher.publish import Collect
from watcher.sources.feeds import fetch, poll
from watcher.sources.webhook import SECRET_HEADER

# The watcher tests' fixtures: settings over local servers, a store, model repos on the Hub.
feeds = watcher_fixtures.feeds
weights = watcher_fixtures.weights
publish_model = watcher_fixtures.publish_model
watch_settings = watcher_fixtures.watch_settings
discover = watcher_fixtures.discover

WATCHED, STRANGER = "acme/Acme-9B", "mallory/Free-Gpu-70B"
SECRET = "hub-webhook-secret-for-intake"


def created(repo: str, sha: str) -> dict[str, Any]:
    """The Hub's delivery (webhook version 3) for a new model repo."""
    return {
        "event": {"action": "create", "scope": "repo"},
        "repo": {
            "type": "model",
            "name": repo,
            "id": "6650a1b2c3d4e5f601234567",
            "private": False,
            "headSha": sha,
            "url": {
                "web": f"https://huggingface.co/{repo}",
                "api": f"https://huggingface.co/api/models/{repo}",
            },
            "owner": {"id": "6650a1b2c3d4e5f601234500"},
        },
        "webhook": {"id": "6651f0e1d2c3b4a596877869", "version": 3},
    }


def rss(*links: str) -> bytes:
    """An RSS document with one fresh post per link (its guid is the link)."""
    date = format_datetime(datetime.now(UTC), usegmt=True)
    items = "".join(
        f"<item><guid>{escape(link)}</guid><title>Introducing {escape(link)}</title>"
        f"<link>{escape(link)}</link><pubDate>{date}</pubDate></item>"
        for link in links
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Vendor</title>'
        f"<link>https://vendor.example/</link><description>News</description>{items}"
        "</channel></rss>"
    ).encode()


# ---------------------------------------------------------------------------- webhooks


@pytest.fixture
def serve_webhook(
    hub: HubServer,
    watch_settings: Callable[..., Settings],
    discover: Callable[[Settings], tuple[Discovery, Collect]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[tuple[str, ...]], tuple[str, Discovery, Collect]]]:
    """The webhook endpoint as the daemon serves it, watching ``authors``."""
    monkeypatch.setenv("SUPERSEDE_WEBHOOK_SECRET", SECRET)
    running: list[Any] = []

    def start(authors: tuple[str, ...]) -> tuple[str, Discovery, Collect]:
        hook = WebhookWatch(enabled=True, port=0)
        discovery, collected = discover(watch_settings(hub, authors=authors, webhook=hook))
        listener = discovery.listeners()["webhook"]
        listener.start()
        running.append(listener)
        return listener.url, discovery, collected

    yield start
    for listener in running:
        listener.stop()


@pytest.mark.parametrize(
    ("authors", "reason"),
    [
        (("ACME",), "author mallory is not in watch.hub.authors"),
        ((), "author mallory is not in watch.hub.authors (the list is empty)"),
    ],
    ids=["another-author", "empty-authors"],
)
def test_webhook_delivery_for_an_author_not_watched_is_not_queued(
    hub: HubServer,
    publish_model: Callable[..., str],
    serve_webhook: Callable[[tuple[str, ...]], tuple[str, Discovery, Collect]],
    caplog: pytest.LogCaptureFixture,
    authors: tuple[str, ...],
    reason: str,
) -> None:
    stranger_sha, watched_sha = publish_model(STRANGER), publish_model(WATCHED)
    url, discovery, collected = serve_webhook(authors)
    signed = {SECRET_HEADER: SECRET}

    with caplog.at_level(logging.INFO), httpx.Client(timeout=10) as client:
        refused = client.post(url, json=created(STRANGER, stranger_sha), headers=signed)
        watched = client.post(url, json=created(WATCHED, watched_sha), headers=signed)

    assert (refused.status_code, refused.json()) == (200, {"ignored": reason})
    assert f"{STRANGER} skipped: {reason}" in caplog.text
    assert not [path for _, path in hub.requests if STRANGER in path]  # not even looked up
    if authors:  # a watched author's repo still goes through (names match whatever the case)
        assert watched.status_code == 202
        assert [(e.repo_id, e.revision) for e in collected.events] == [(WATCHED, watched_sha)]
    else:  # an empty list accepts no repo from a webhook
        assert watched.json() == {"ignored": reason.replace("mallory", "acme")}
        assert collected.events == []  # nothing published: no job, no download
        assert discovery.state.counts() == {}


# ---------------------------------------------------------------------------- feed links


@pytest.mark.parametrize(
    ("authors", "accept_from", "setting"),
    [
        (("acme",), None, "watch.hub.authors"),
        ((), ("acme",), "watch.feeds[vendor].accept_from"),
    ],
    ids=["hub-authors", "feed-accept-from"],
)
def test_feed_post_linking_a_repo_of_an_author_not_accepted_is_not_queued(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Callable[[Settings], tuple[Discovery, Collect]],
    caplog: pytest.LogCaptureFixture,
    authors: tuple[str, ...],
    accept_from: tuple[str, ...] | None,
    setting: str,
) -> None:
    watched_sha = publish_model(WATCHED)
    publish_model(STRANGER)
    links = (f"https://huggingface.co/{STRANGER}", f"https://huggingface.co/{WATCHED}")
    url = feeds.publish("/rss.xml", rss(*links))
    chosen = {} if accept_from is None else {"accept_from": accept_from}
    feed = FeedWatch(name="vendor", url=url, **chosen)
    discovery, collected = discover(watch_settings(hub, authors=authors, feeds=(feed,)))

    with caplog.at_level(logging.INFO):
        report = poll(feed, discovery)

    assert report.status == "ok", report.error
    released = [(e.repo_id, e.revision) for e in collected.events if e.kind == "model_released"]
    assert released == [(WATCHED, watched_sha)]
    # The stranger's post is only announced, and its repo was never even looked up.
    announced = [e.link for e in collected.events if e.kind == "announcement"]
    assert announced == [links[0]]
    assert not [path for _, path in hub.requests if STRANGER in path]
    assert f"{STRANGER} linked but skipped: author mallory is not in {setting}" in caplog.text


# ---------------------------------------------------------------------------- feed redirects


@pytest.fixture
def inner() -> Iterator[FeedServer]:
    """A second local server: an inner service a redirect must not reach."""
    yield from served(FeedServer())


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("inner", "is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.1/admin", "10.0.0.1 is a private address"),
    ],
    ids=["loopback", "link-local-metadata", "private"],
)
def test_feed_redirect_to_a_non_public_address_is_refused(
    feeds: FeedServer,
    inner: FeedServer,
    watch_settings: Callable[..., Settings],
    discover: Callable[[Settings], tuple[Discovery, Collect]],
    target: str,
    reason: str,
) -> None:
    secret_url = inner.publish("/internal.xml", rss("https://inner.example/secret"))
    location = secret_url if target == "inner" else target
    url = feeds.publish("/rss.xml", rss("https://vendor.example/post"))
    feeds.fail_next("/rss.xml", 302, {"Location": location})
    feed = FeedWatch(name="vendor", url=url)
    # Short connect timeout: where a redirect is followed, an unroutable target fails fast.
    settings = watch_settings(None, authors=(), feeds=(feed,), connect_timeout_s=0.5)
    discovery, collected = discover(settings)

    report = poll(feed, discovery)

    assert report.status == "failed"
    hop = location.split("?")[0]
    expected = f"feed vendor: refused the redirect to {hop}: "
    assert report.error is not None and report.error.startswith(expected), report.error
    assert reason in report.error
    assert discovery.state.source("feed:vendor").last_error == report.error
    assert inner.requests == []  # nothing asked of the inner server
    assert collected.events == []


def test_ordinary_redirects_are_still_followed(
    feeds: FeedServer,
    inner: FeedServer,
    watch_settings: Callable[..., Settings],
    discover: Callable[[Settings], tuple[Discovery, Collect]],
) -> None:
    settings = watch_settings(None, authors=())
    # Within the configured URL's origin (the operator chose that host): followed.
    url = feeds.publish("/rss.xml", rss("https://vendor.example/moved"))
    feeds.fail_next("/old.xml", 301, {"Location": "/rss.xml"})
    moved = FeedWatch(name="moved", url=feeds.url + "/old.xml")
    discovery, collected = discover(watch_settings(None, authors=(), feeds=(moved,)))
    assert poll(moved, discovery).status == "ok"
    assert [e.link for e in collected.events] == ["https://vendor.example/moved"]

    # To another host whose every address is public: followed. The resolver given to the check
    # says ``localhost`` is public; the connection itself goes to the local server.
    new_home = inner.publish("/feed.xml", rss("https://vendor.example/new-home"))
    port = new_home.split(":")[2].split("/")[0]
    feeds.fail_next("/rss.xml", 308, {"Location": f"http://localhost:{port}/feed.xml"})
    asked: list[str] = []

    def public(host: str) -> list[str]:
        asked.append(host)
        return ["93.184.216.34"]

    vendor = FeedWatch(name="vendor", url=url)
    fetched = fetch(vendor, settings.watch, resolve=public)
    assert fetched.items is not None
    assert [item.link for item in fetched.items] == ["https://vendor.example/new-home"]
    assert asked == ["localhost"]
    assert len(inner.requests) == 1

    # The same redirect checked with the system resolver: localhost is loopback, refused.
    feeds.fail_next("/rss.xml", 308, {"Location": f"http://localhost:{port}/feed.xml"})
    with pytest.raises(FeedInvalid, match=r"localhost resolves to .*, a loopback address"):
        fetch(vendor, settings.watch)
    assert len(inner.requests) == 1
