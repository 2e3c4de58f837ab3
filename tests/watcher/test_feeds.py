"""Vendor RSS/Atom feeds end to end: a local feed server, a local Hub, a private SQLite store."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from config.settings import Settings, load_settings
from config.watch import ApiModelRule, FeedWatch, WatchSettings
from core.errors import ConfigError, FeedInvalid, FeedUnavailable
from tests.support.feed_server import FeedServer
from tests.support.hub_server import HubServer
from tests.watcher.fixtures import OLD_AGE, RECENT_AGE, load_fixture
from watcher.discovery import Discovery
from watcher.events import Announcement, ApiRelease, ModelReleased
from watcher.publish import Collect
from watcher.sources import feeds as feeds_module
from watcher.sources.feeds import feed_source, hub_model, parse

Discover = Callable[[Settings], tuple[Discovery, Collect]]

API_RULE = ApiModelRule(
    pattern=r"\b(acme-mini-\d{4}-\d{2})\b", base_url="https://api.acme.example/v1"
)
#: The date placeholders are filled from this moment, so dates can be compared exactly.
NOW = datetime.now(UTC).replace(microsecond=0)
RECENT = NOW - RECENT_AGE
HOSTILE_TITLE = "Totally normal post <script>alert(1)</script> <!channel> <@U123>"


def rfc822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def item(guid: str, title: str, *, link: str | None = None, date: datetime | None = RECENT) -> str:
    """One RSS ``<item>`` (no ``pubDate`` when ``date`` is None)."""
    parts = [f"<title>{title}</title>", f'<guid isPermaLink="false">{guid}</guid>']
    parts.append(f"<link>{link or f'https://vendor.example/blog/{guid}'}</link>")
    if date is not None:
        parts.append(f"<pubDate>{rfc822(date)}</pubDate>")
    return "<item>" + "".join(parts) + "</item>"


def rss(*items: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        "<title>Vendor</title><link>https://vendor.example/</link><description>News</description>"
        + "\n".join(items)
        + "</channel></rss>\n"
    ).encode()


def with_items(body: bytes, *items: str) -> bytes:
    """``body`` (an RSS document) with ``items`` added at the end of its channel."""
    extra = "\n".join(items).encode()
    assert body.count(b"</channel>") == 1
    return body.replace(b"</channel>", extra + b"\n</channel>")


def feed_requests(feeds: FeedServer, path: str) -> list[dict[str, object]]:
    return [request for request in feeds.requests if request["path"] == path]


def summary(event: ModelReleased | Announcement) -> tuple[object, ...]:
    """The identifying fields of an event, for exact comparisons of whole passes."""
    if isinstance(event, Announcement):
        return ("announcement", event.entry_id, event.title, event.link)
    api = event.api.model if event.api else None
    return ("release", event.repo_id, event.revision, api, event.title, event.link)


# ---------------------------------------------------------------------------- the RSS fixture


def test_vendor_rss_first_pass_classifies_every_entry(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    sha = publish_model("acme/Acme-7B-Instruct")
    url = feeds.publish("/blog/rss.xml", load_fixture("vendor_rss.xml", now=NOW))
    feed = FeedWatch(name="acme", url=url, accept_from=("acme",), api_models=(API_RULE,))
    settings = watch_settings(hub, authors=(), feeds=(feed,))
    discovery, collected = discover(settings)

    report = discovery.poll(feed_source(feed))

    assert (report.status, report.error) == ("ok", None)
    assert [summary(event) for event in report.events] == [
        (
            "release",
            "acme/Acme-7B-Instruct",
            sha,
            None,
            "Introducing Acme-7B-Instruct",
            "https://huggingface.co/acme/Acme-7B-Instruct",
        ),
        (
            "release",
            None,
            None,
            "acme-mini-2026-11",
            "acme-mini-2026-11 is now available in the API",
            f"{feeds.url}/blog/acme-mini",  # relative link, resolved against the feed URL
        ),
        (
            "announcement",
            "acme-blog-0006",
            HOSTILE_TITLE,
            "https://acme.example/blog/totally-normal",
        ),
        (
            "announcement",
            "acme-blog-0007",
            "Releasing the Acme Instruct Mix dataset",
            "https://huggingface.co/datasets/acme/some-data",
        ),
    ]
    # Everything found reached the publisher, once, in the same order.
    assert collected.events == report.events
    # 7 distinct entries (the repeated guid counts once); undated + old entries are baseline;
    # acme-blog-0008 (a model not on the Hub yet) is neither an event nor baseline.
    assert (report.seen, report.baseline, report.dropped) == (7, 2, 0)

    release, api_release, hostile, dataset = report.events
    assert isinstance(release, ModelReleased)
    assert release.source == "feed:acme"
    assert release.params == 7_000_000_000
    assert release.pipeline_tag == "text-generation"
    assert release.api is None

    assert isinstance(api_release, ModelReleased)
    # The release names the model and the rule, never the endpoint: the worker reads that.
    assert api_release.api == ApiRelease(model="acme-mini-2026-11", rule="api.acme.example",
                                         feed="acme")  # fmt: skip
    assert api_release.created_at == RECENT
    assert api_release.repo_id is None and api_release.revision is None

    assert isinstance(hostile, Announcement)
    assert hostile.published_at == RECENT
    assert hostile.summary is not None
    assert hostile.summary.startswith("Hi ")
    assert "Read more" in hostile.summary
    for dangerous in ("<script", "alert(", "javascript:", "onmouseover"):
        assert dangerous not in hostile.summary
    assert isinstance(dataset, Announcement)
    assert dataset.summary == "The 1M-example instruction mix we trained on, now public."

    state = discovery.state
    assert state.counts() == {"announcement": 2, "baseline": 2, "linked": 1, "model_released": 2}
    for key in ("acme-blog-0003", "https://acme.example/blog/no-guid"):
        assert state.is_seen(f"feed:acme:{key}")
    assert not state.is_seen("feed:acme:acme-blog-0008")  # waits: looked at again next pass
    assert state.unpublished() == []


def test_entry_linking_a_repo_not_on_the_hub_yet_is_released_once_it_is(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    publish_model("acme/Acme-7B-Instruct")
    body = load_fixture("vendor_rss.xml", now=NOW)
    url = feeds.publish("/blog/rss.xml", body)
    feed = FeedWatch(name="acme", url=url, accept_from=("acme",), api_models=(API_RULE,))
    discovery, collected = discover(watch_settings(hub, authors=(), feeds=(feed,)))
    assert len(discovery.poll(feed_source(feed)).events) == 4

    small_sha = publish_model("acme/Acme-1B", params=1_000_000_000)
    feeds.publish("/blog/rss.xml", body + b"<!-- rebuilt -->\n")  # same entries, new ETag
    report = discovery.poll(feed_source(feed))

    assert report.status == "ok"
    assert [summary(event) for event in report.events] == [
        (
            "release",
            "acme/Acme-1B",
            small_sha,
            None,
            "Acme-1B: a small model for the edge",
            "https://acme.example/blog/acme-1b",  # the post, which named the repo as hf.co
        )
    ]
    assert (report.seen, report.baseline) == (7, 0)
    assert [event.name for event in collected.events if isinstance(event, ModelReleased)] == [
        "acme/Acme-7B-Instruct",
        "acme-mini-2026-11",
        "acme/Acme-1B",
    ]
    assert discovery.state.is_seen("feed:acme:acme-blog-0008")

    # A third pass over yet another rebuild finds nothing left.
    feeds.publish("/blog/rss.xml", body + b"<!-- rebuilt twice -->\n")
    third = discovery.poll(feed_source(feed))
    assert (third.status, third.events) == ("ok", [])
    assert len(collected.events) == 5


def test_waiting_entry_is_retried_on_the_next_pass_of_an_unchanged_feed(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    url = feeds.publish(
        "/blog/rss.xml",
        rss(item("acme-1b", "Acme-1B", link="https://huggingface.co/acme/Acme-1B")),
    )
    feed = FeedWatch(name="acme", url=url, accept_from=("acme",))
    discovery, _ = discover(watch_settings(hub, authors=(), feeds=(feed,)))
    first = discovery.poll(feed_source(feed))
    assert (first.status, first.events) == ("ok", [])

    sha = publish_model("acme/Acme-1B")  # the vendor makes the repo public; the feed is as it was
    second = discovery.poll(feed_source(feed))

    assert [(event.name, getattr(event, "revision", None)) for event in second.events] == [
        ("acme/Acme-1B", sha)
    ]


# ---------------------------------------------------------------------------- conditional GET


def test_unchanged_feed_is_not_modified_across_passes_and_restarts(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    publish_model("acme/Acme-7B-Instruct")
    publish_model("acme/Acme-1B")  # nothing waits: a waiting entry makes the next read full
    body = load_fixture("vendor_rss.xml", now=NOW)
    url = feeds.publish("/blog/rss.xml", body)
    feed = FeedWatch(name="acme", url=url, accept_from=("acme",), api_models=(API_RULE,))
    settings = watch_settings(hub, authors=(), feeds=(feed,))
    discovery, collected = discover(settings)

    first = discovery.poll(feed_source(feed))
    assert (first.status, len(first.events)) == ("ok", 5)
    assert "if-none-match" not in feeds.requests[0]["headers"]

    second = discovery.poll(feed_source(feed))
    assert (second.status, second.events, second.seen, second.error) == (
        "not_modified",
        [],
        0,
        None,
    )
    conditional = feed_requests(feeds, "/blog/rss.xml")[1]
    stored = discovery.state.source("feed:acme")
    assert stored.etag == f'"{hashlib.sha1(body).hexdigest()}"'  # the server's ETag
    assert stored.last_modified is not None
    assert conditional["headers"]["if-none-match"] == stored.etag
    assert conditional["headers"]["if-modified-since"] == stored.last_modified
    assert conditional["status"] == 304
    assert len(collected.events) == 5

    # A restart: a new state and discovery over the same store remember the validators.
    restarted, restarted_out = discover(settings)
    assert restarted.state is not discovery.state
    third = restarted.poll(feed_source(feed))
    assert (third.status, third.events) == ("not_modified", [])
    assert feed_requests(feeds, "/blog/rss.xml")[2]["headers"]["if-none-match"] == stored.etag
    assert restarted.flush() == 0
    assert restarted_out.events == []

    # The same entries plus a dated and an undated post: only those two are new. An undated
    # entry is baseline only on the first successful read of a feed.
    feeds.publish(
        "/blog/rss.xml",
        with_items(
            body,
            item("acme-blog-0009", "Acme at NeurIPS"),
            item("acme-blog-0010", "Office hours", date=None),
        ),
    )
    fourth = restarted.poll(feed_source(feed))
    assert fourth.status == "ok"
    assert [summary(event) for event in fourth.events] == [
        (
            "announcement",
            "acme-blog-0009",
            "Acme at NeurIPS",
            "https://vendor.example/blog/acme-blog-0009",
        ),
        (
            "announcement",
            "acme-blog-0010",
            "Office hours",
            "https://vendor.example/blog/acme-blog-0010",
        ),
    ]
    assert (fourth.seen, fourth.baseline) == (9, 0)
    assert restarted_out.events == fourth.events
    assert collected.events[5:] == []  # the first discovery's publisher saw nothing more
    assert restarted.state.counts() == {
        "announcement": 4,
        "baseline": 2,
        "linked": 2,
        "model_released": 3,
    }
    assert restarted.state.source("feed:acme").etag not in (None, stored.etag)


# ---------------------------------------------------------------------------- Atom, encodings


def test_atom_feed_resolves_links_against_xml_base_and_reads_dates(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    sha = publish_model("beta/Beta-3B", params=3_000_000_000)
    body = load_fixture("vendor_atom.xml", now=NOW)
    url = feeds.publish("/news/feed.atom", body, content_type="application/atom+xml")
    feed = FeedWatch(name="beta", url=url, accept_from=("beta",))
    discovery, collected = discover(watch_settings(hub, authors=(), feeds=(feed,)))

    report = discovery.poll(feed_source(feed))

    assert report.status == "ok"
    assert [summary(event) for event in report.events] == [
        (
            "release",
            "beta/Beta-3B",
            sha,
            None,
            "Beta-3B: open weights for everyone",
            "https://huggingface.co/beta/Beta-3B",
        ),
        (
            "announcement",
            "tag:beta.example,2026:pricing",
            "Pricing changes for the Beta API",
            "https://beta.example/news/pricing",  # href="news/pricing" under xml:base
        ),
    ]
    assert (report.seen, report.baseline) == (4, 2)  # the old launch post; the undated call notes
    release, pricing = report.events
    assert isinstance(release, ModelReleased) and release.params == 3_000_000_000
    assert isinstance(pricing, Announcement)
    assert pricing.published_at == RECENT  # <updated> when there is no <published>
    assert pricing.summary is not None
    assert pricing.summary.startswith("From next month, prices drop by 30% for batch & cached")
    assert "<b>" not in pricing.summary and "&amp;" not in pricing.summary
    assert collected.events == report.events
    for entry in ("tag:beta.example,2025:launch", "tag:beta.example,2026:community-call"):
        assert discovery.state.is_seen(f"feed:beta:{entry}")


def test_atom_content_only_entry_summary_is_not_repeated() -> None:
    feed = FeedWatch(name="beta", url="https://beta.example/feed.atom")
    items = parse(feed, load_fixture("vendor_atom.xml", now=NOW), content_type="application/xml")
    pricing = next(entry for entry in items if entry.entry_id.endswith(":pricing"))
    assert pricing.summary.count("From next month") == 1


def test_lookback_makes_recent_atom_entries_baseline(
    feeds: FeedServer, watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    url = feeds.publish(
        "/feed.atom", load_fixture("vendor_atom.xml", now=NOW), content_type="application/atom+xml"
    )
    feed = FeedWatch(name="beta", url=url)
    # Entries two hours old are past a one-hour lookback: baseline, with no Hub lookup at all.
    discovery, collected = discover(watch_settings(None, authors=(), feeds=(feed,), lookback="1h"))

    report = discovery.poll(feed_source(feed))

    assert (report.status, report.events, report.seen, report.baseline) == ("ok", [], 4, 4)
    assert collected.events == []
    assert discovery.state.counts() == {"baseline": 4}


def test_latin1_feed_without_charset_decodes_titles(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    sha = publish_model("gallic/Geant-2B", params=2_000_000_000)
    body = load_fixture("latin1_rss.xml", now=NOW)
    assert "Modèle".encode("latin-1") in body  # really ISO-8859-1 bytes
    url = feeds.publish("/rss.xml", body, content_type="application/rss+xml")
    feed = FeedWatch(name="gallic", url=url, accept_from=("gallic",))
    discovery, collected = discover(watch_settings(hub, authors=(), feeds=(feed,)))

    report = discovery.poll(feed_source(feed))

    assert report.status == "ok"
    assert [summary(event) for event in report.events] == [
        (
            "release",
            "gallic/Geant-2B",
            sha,
            None,
            "Modèle français Géant-2B disponible",
            "https://huggingface.co/gallic/Geant-2B",
        )
    ]
    assert (report.seen, report.baseline) == (2, 1)
    assert collected.events == report.events


# ---------------------------------------------------------------------------- failures


def test_malformed_feed_fails_alone_in_a_pass(
    feeds: FeedServer, watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    broken = FeedWatch(
        name="broken",
        url=feeds.publish("/broken.xml", load_fixture("malformed.xml"), content_type="text/html"),
    )
    good = FeedWatch(
        name="good", url=feeds.publish("/good.xml", rss(item("good-1", "Vendor news, part 1")))
    )
    discovery, collected = discover(watch_settings(None, authors=(), feeds=(broken, good)))

    reports = discovery.poll_all()

    assert [(r.source, r.status) for r in reports] == [
        ("feed:broken", "failed"),
        ("feed:good", "ok"),
    ]
    failed, ok = reports
    assert failed.error is not None
    assert failed.error.startswith("feed broken: not a readable RSS or Atom document")
    assert (failed.events, failed.seen) == ([], 0)
    assert [summary(event) for event in ok.events] == [
        ("announcement", "good-1", "Vendor news, part 1", "https://vendor.example/blog/good-1")
    ]
    assert collected.events == ok.events
    stored = discovery.state.source("feed:broken")
    assert stored.failures == 1 and stored.last_error == failed.error
    assert stored.last_ok_at is None and stored.etag is None
    assert stored.not_before is not None and stored.not_before > datetime.now(UTC)
    assert discovery.state.source("feed:good").failures == 0


@pytest.mark.parametrize(
    "body",
    [b"", b"<html><body><p>Down for maintenance</p></body></html>"],
    ids=["empty", "html-page"],
)
def test_a_200_that_is_not_a_feed_fails(
    feeds: FeedServer, watch_settings: Callable[..., Settings], discover: Discover, body: bytes
) -> None:
    feed = FeedWatch(name="proxy", url=feeds.publish("/rss.xml", body))
    discovery, _ = discover(watch_settings(None, authors=(), feeds=(feed,)))

    report = discovery.poll(feed_source(feed))

    assert report.status == "failed"
    assert discovery.state.source("feed:proxy").first_poll


def test_stalled_feed_fails_fast_backs_off_then_recovers(
    feeds: FeedServer, watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    body = rss(item("post-1", "First post"), item("post-2", "Second post"))
    url = feeds.publish("/stall.xml", body)
    feeds.stall("/stall.xml", after_bytes=120, seconds=30)
    feed = FeedWatch(name="slow", url=url)
    discovery, collected = discover(watch_settings(None, authors=(), feeds=(feed,)))

    started = time.monotonic()
    stalled = discovery.poll(feed_source(feed))
    assert time.monotonic() - started < 10

    assert stalled.status == "failed"
    assert stalled.error is not None and "timed out" in stalled.error
    assert stalled.events == [] and collected.events == []
    assert discovery.state.counts() == {}
    assert discovery.state.source("feed:slow").etag is None

    # Backing off: the next pass does not even ask.
    asked = len(feeds.requests)
    backing_off = discovery.poll(feed_source(feed))
    assert (backing_off.status, backing_off.events) == ("backing_off", [])
    assert backing_off.error is not None and backing_off.error.startswith("backing off until")
    assert len(feeds.requests) == asked

    discovery.state.source_ok("feed:slow")  # the back-off is over
    recovered = discovery.poll(feed_source(feed))
    assert recovered.status == "ok"
    assert [event.title for event in recovered.events] == ["First post", "Second post"]
    assert collected.events == recovered.events
    assert len(feeds.requests) == asked + 1


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_huge_feed_is_refused_at_the_byte_cap(
    feeds: FeedServer,
    watch_settings: Callable[..., Settings],
    discover: Discover,
    with_length: bool,
) -> None:
    url = feeds.huge("/huge.xml", 50 * 1024 * 1024, with_length=with_length)
    feed = FeedWatch(name="huge", url=url)
    settings = watch_settings(None, authors=(), feeds=(feed,))
    assert settings.watch.feed_max_bytes == 10 * 1024 * 1024
    discovery, collected = discover(settings)

    started = time.monotonic()
    report = discovery.poll(feed_source(feed))
    assert time.monotonic() - started < 10

    assert report.status == "failed"
    assert report.error is not None and "10,485,760" in report.error
    if with_length:
        assert "52,428,800 bytes is over the 10,485,760 cap" in report.error
    else:
        assert "body over the 10,485,760 byte cap" in report.error
    assert (report.events, report.seen) == ([], 0)
    assert collected.events == [] and discovery.state.counts() == {}
    assert len(feed_requests(feeds, "/huge.xml")) == 1


def test_cap_refuses_before_reading_a_declared_oversized_body() -> None:
    """With Content-Length over the cap, the body is not read (no stream iteration at all)."""

    class Unread(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            raise AssertionError("the body was read")

    response = httpx.Response(
        200, headers={"Content-Length": str(11 * 1024 * 1024)}, stream=Unread()
    )
    feed = FeedWatch(name="big", url="https://vendor.example/rss.xml")
    with pytest.raises(FeedInvalid, match="11,534,336 bytes is over the 10,485,760 cap"):
        feeds_module._read_capped(feed, WatchSettings(), response)


def test_dripping_body_is_cut_at_the_deadline() -> None:
    """A server sending a byte now and then never trips the read timeout; the deadline does."""

    class Drip(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for _ in range(200):
                time.sleep(0.05)
                yield b" "

    feed = FeedWatch(name="drip", url="https://vendor.example/rss.xml")
    started = time.monotonic()
    with pytest.raises(FeedUnavailable, match="feed drip: body not received within 1 s"):
        feeds_module._read_capped(
            feed, WatchSettings(feed_deadline_s=1.0), httpx.Response(200, stream=Drip())
        )
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("status", [429, 503])
def test_rate_limited_feed_backs_off_for_retry_after(
    feeds: FeedServer,
    watch_settings: Callable[..., Settings],
    discover: Discover,
    status: int,
) -> None:
    url = feeds.publish("/rss.xml", rss(item("post-1", "First post")))
    feeds.fail_next("/rss.xml", status, {"Retry-After": "120"})
    feed = FeedWatch(name="busy", url=url)
    discovery, collected = discover(watch_settings(None, authors=(), feeds=(feed,)))

    refused = discovery.poll(feed_source(feed))

    assert refused.status == "failed"
    assert refused.error == f"feed busy: the server answered {status}"
    not_before = discovery.state.source("feed:busy").not_before
    assert not_before is not None
    assert timedelta(seconds=100) < not_before - datetime.now(UTC) <= timedelta(seconds=120)

    asked = len(feeds.requests)
    later = discovery.poll(feed_source(feed))
    assert (later.status, later.events) == ("backing_off", [])
    assert len(feeds.requests) == asked == 1
    assert collected.events == [] and discovery.state.counts() == {}


def test_missing_feed_fails_without_retry_after(
    feeds: FeedServer, watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    feed = FeedWatch(name="gone", url=f"{feeds.url}/nothing-here.xml")
    discovery, _ = discover(watch_settings(None, authors=(), feeds=(feed,)))

    report = discovery.poll(feed_source(feed))

    assert report.status == "failed"
    assert report.error == f"feed gone: the server answered 404 for {feed.url}"
    stored = discovery.state.source("feed:gone")
    assert stored.failures == 1
    assert stored.not_before is not None
    # No Retry-After: the default back-off (60 s after a first failure).
    assert timedelta(seconds=50) < stored.not_before - datetime.now(UTC) <= timedelta(seconds=60)


# ---------------------------------------------------------------------------- parsing units


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://huggingface.co/org/name", "org/name"),
        ("https://huggingface.co/org/name/", "org/name"),
        ("http://huggingface.co/org/Name-7B.v2", "org/Name-7B.v2"),
        ("https://www.huggingface.co/org/name", "org/name"),
        ("https://HuggingFace.co/org/name", "org/name"),
        ("https://hf.co/org/name/tree/main", "org/name"),
        ("https://huggingface.co/org/name/blob/main/README.md", "org/name"),
        ("https://huggingface.co/org/name?library=transformers", "org/name"),
        ("https://huggingface.co/datasets/org/name", None),
        ("https://huggingface.co/spaces/org/name", None),
        ("https://huggingface.co/blog/some-post", None),
        ("https://huggingface.co/docs/transformers", None),
        ("https://huggingface.co/papers/2401.00001", None),
        ("https://huggingface.co/collections/org/some-collection", None),
        ("https://huggingface.co/org", None),
        ("https://huggingface.co/org/name/discussions/1", None),
        ("https://huggingface.co/org/name/resolve/main/config.json", None),
        ("https://huggingface.co/", None),
        ("https://github.com/org/name", None),
        ("https://huggingface.co.evil.example/org/name", None),
        ("ftp://huggingface.co/org/name", None),
        ("javascript:alert(1)", None),
        ("not a url", None),
    ],
)
def test_hub_model(url: str, expected: str | None) -> None:
    assert hub_model(url) == expected


def test_hub_model_with_a_custom_endpoint() -> None:
    hosts = {"127.0.0.1:8080"}
    assert hub_model("http://127.0.0.1:8080/org/name", hosts) == "org/name"
    assert hub_model("http://127.0.0.1:8080/datasets/org/name", hosts) is None
    assert hub_model("http://127.0.0.1:9090/org/name", hosts) is None
    # hub_hosts replaces the defaults; parse() adds the configured endpoint to them.
    assert hub_model("https://huggingface.co/org/name", hosts) is None


def test_parse_adds_the_endpoint_host_and_dedupes() -> None:
    feed = FeedWatch(name="mirror", url="https://vendor.example/rss.xml")
    body = rss(
        item("one", "On the mirror", link="http://hub.internal:8080/org/Mirror-1B"),
        item("one", "The same guid again", link="https://vendor.example/other"),
        item("two", "Plain post"),
        "<item><title>No link, no guid</title><description>lost</description></item>",
        "<item><title>Linked only</title><link>https://vendor.example/linked</link></item>",
        "<item><title>Linked only, again</title><link>https://vendor.example/linked</link></item>",
    )

    items = parse(feed, body, content_type="application/rss+xml", hub_hosts=["HUB.internal:8080"])

    assert [(entry.entry_id, entry.title, entry.hub_repo) for entry in items] == [
        ("one", "On the mirror", "org/Mirror-1B"),
        ("two", "Plain post", None),
        ("https://vendor.example/linked", "Linked only", None),
    ]
    assert parse(feed, body, content_type="application/rss+xml")[0].hub_repo is None


def test_parse_api_rule_and_text() -> None:
    feed = FeedWatch(name="acme", url="https://acme.example/blog/rss.xml", api_models=(API_RULE,))
    items = parse(
        feed,
        load_fixture("vendor_rss.xml", now=NOW),
        content_type="application/rss+xml; charset=utf-8",
        base="https://acme.example/blog/rss.xml",
    )

    by_id = {entry.entry_id: entry for entry in items}
    assert list(by_id) == [
        "acme-blog-0001",
        "acme-blog-0002",
        "acme-blog-0003",
        "https://acme.example/blog/no-guid",
        "acme-blog-0006",
        "acme-blog-0007",
        "acme-blog-0008",
    ]
    api = by_id["acme-blog-0002"]
    assert api.api is not None and api.api.model == "acme-mini-2026-11"
    assert api.link == "https://acme.example/blog/acme-mini"
    assert "<code>" not in api.summary and "acme-mini-2026-11" in api.summary
    assert by_id["acme-blog-0008"].hub_repo == "acme/Acme-1B"
    assert by_id["acme-blog-0008"].api is None
    assert by_id["acme-blog-0001"].api is None  # a Hub link wins over an API rule
    assert by_id["acme-blog-0003"].published_at is None
    assert by_id["https://acme.example/blog/no-guid"].published_at == NOW - OLD_AGE
    assert by_id["acme-blog-0006"].title == HOSTILE_TITLE


def test_parse_refuses_a_document_that_is_not_a_feed() -> None:
    feed = FeedWatch(name="broken", url="https://vendor.example/rss.xml")
    with pytest.raises(FeedInvalid, match="feed broken: not a readable RSS or Atom document"):
        parse(feed, load_fixture("malformed.xml"), content_type="text/html")
    with pytest.raises(FeedInvalid, match="feed broken: not a readable RSS or Atom document"):
        parse(feed, b"<h1>Bad Gateway", content_type="application/rss+xml")


# ---------------------------------------------------------------------------- configuration


def test_config_refuses_repeated_feed_names(tmp_path: Path) -> None:
    config = tmp_path / "supersede.yaml"
    config.write_text(
        "watch:\n"
        "  feeds:\n"
        "    - {name: acme, url: 'https://acme.example/rss.xml'}\n"
        "    - {name: beta, url: 'https://beta.example/feed.atom'}\n"
        "    - {name: acme, url: 'https://acme.example/other.xml'}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert message.startswith(f"{config}: invalid configuration: key 'watch.feeds':")
    assert "feed names must be unique; repeated: acme" in message


def test_config_refuses_an_invalid_api_model_pattern(tmp_path: Path) -> None:
    config = tmp_path / "supersede.yaml"
    config.write_text(
        "watch:\n"
        "  feeds:\n"
        "    - name: acme\n"
        "      url: https://acme.example/rss.xml\n"
        "      api_models:\n"
        "        - pattern: '(acme-mini'\n"
        "          base_url: https://api.acme.example/v1\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "key 'watch.feeds.0.api_models.0.pattern'" in message
    assert "'(acme-mini' is not a valid regular expression" in message


def test_config_accepts_feeds_with_api_rules(tmp_path: Path) -> None:
    config = tmp_path / "supersede.yaml"
    config.write_text(
        "watch:\n"
        "  feeds:\n"
        "    - name: acme\n"
        "      url: https://acme.example/rss.xml\n"
        "      interval: 15m\n"
        "      api_models:\n"
        "        - pattern: '\\b(acme-mini-\\d{4}-\\d{2})\\b'\n"
        "          base_url: https://api.acme.example/v1\n"
        "          api_key_env: ACME_API_KEY\n",
        encoding="utf-8",
    )
    (feed,) = load_settings(config).watch.feeds
    assert (feed.name, feed.interval) == ("acme", 900.0)
    assert feed.api_models[0].pattern == API_RULE.pattern
    assert feed.api_models[0].api_key_env == "ACME_API_KEY"
    assert feed.api_models[0].name == "api.acme.example"  # by default, base_url's host
