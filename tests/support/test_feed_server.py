"""The feed server in ``feed_server.py`` behaves like a static web server for a real client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate

import feedparser
import httpx
import pytest

from tests.support.feed_server import CHUNK_SIZE, FeedServer, huge_rss
from tests.watcher.fixtures import load_fixture

RSS_V1 = b'<?xml version="1.0"?><rss version="2.0"><channel><title>v1</title></channel></rss>'
RSS_V2 = b'<?xml version="1.0"?><rss version="2.0"><channel><title>v2</title></channel></rss>'


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server
        assert server.errors == []


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as http:
        yield http


def test_get_and_head_carry_validators(feeds: FeedServer, client: httpx.Client) -> None:
    assert feeds.url.startswith("http://127.0.0.1:")
    url = feeds.publish("/blog/rss.xml", RSS_V1)
    assert url == f"{feeds.url}/blog/rss.xml"

    response = client.get(url, headers={"User-Agent": "poller/1"})
    assert response.status_code == 200
    assert response.content == RSS_V1
    assert response.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert response.headers["content-length"] == str(len(RSS_V1))
    assert response.headers["etag"].startswith('"') and response.headers["etag"].endswith('"')
    assert response.headers["last-modified"].endswith(" GMT")

    head = client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(RSS_V1))
    assert head.headers["etag"] == response.headers["etag"]

    assert client.get(f"{feeds.url}/nope.xml").status_code == 404
    assert [(r["method"], r["path"], r["status"]) for r in feeds.requests] == [
        ("GET", "/blog/rss.xml", 200),
        ("HEAD", "/blog/rss.xml", 200),
        ("GET", "/nope.xml", 404),
    ]
    assert feeds.requests[0]["headers"]["user-agent"] == "poller/1"


def test_conditional_get_and_republish(feeds: FeedServer, client: httpx.Client) -> None:
    url = feeds.publish("/feed.xml", RSS_V1)
    first = client.get(url)
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]

    by_etag = client.get(url, headers={"If-None-Match": etag})
    assert by_etag.status_code == 304
    assert by_etag.content == b""
    assert by_etag.headers["etag"] == etag
    listed = client.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304

    by_date = client.get(url, headers={"If-Modified-Since": last_modified})
    assert by_date.status_code == 304
    earlier = formatdate(time.time() - 3600, usegmt=True)
    assert client.get(url, headers={"If-Modified-Since": earlier}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110): a stale tag means a full answer.
    both = {"If-None-Match": '"stale"', "If-Modified-Since": last_modified}
    assert client.get(url, headers=both).status_code == 200

    # Republished within the same second: new tag, later date, both validators now stale.
    feeds.publish("/feed.xml", RSS_V2)
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 200
    assert again.content == RSS_V2
    assert again.headers["etag"] != etag
    since = client.get(url, headers={"If-Modified-Since": last_modified})
    assert since.status_code == 200
    assert since.headers["last-modified"] != last_modified


def test_fail_next_with_retry_after(feeds: FeedServer, client: httpx.Client) -> None:
    url = feeds.publish("/feed.xml", RSS_V1)
    feeds.fail_next("/feed.xml", 429, {"Retry-After": "1"})
    feeds.fail_next("/feed.xml", 503, count=2)

    limited = client.get(url)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert [client.get(url).status_code for _ in range(3)] == [503, 503, 200]
    # Faults match the exact path: another feed is unaffected.
    feeds.fail_next("/feed.xml", 500)
    assert client.get(f"{feeds.url}/feed.xml.bak").status_code == 404
    assert [r["status"] for r in feeds.requests] == [429, 503, 503, 200, 404]


def test_stall_times_out_and_close_is_quick(client: httpx.Client) -> None:
    feeds = FeedServer().start()
    body = RSS_V1 * 100
    url = feeds.publish("/slow.xml", body)
    feeds.stall("/slow.xml", after_bytes=100, seconds=30)
    received = bytearray()
    with (
        pytest.raises(httpx.ReadTimeout),
        client.stream("GET", url, timeout=httpx.Timeout(5, read=0.5)) as response,
    ):
        assert response.headers["content-length"] == str(len(body))
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == body[:100]

    started = time.monotonic()
    feeds.close()
    assert time.monotonic() - started < 1.0
    assert feeds.errors == []


def test_huge_streams_exact_size(feeds: FeedServer, client: httpx.Client) -> None:
    size = 3_000_000
    url = feeds.huge("/huge.xml", size)
    with client.stream("GET", url) as response:
        assert response.headers["content-length"] == str(size)
        total = sum(len(chunk) for chunk in response.iter_raw())
    assert total == size

    # Without a length the body ends when the connection closes.
    url = feeds.huge("/unsized.xml", size, with_length=False)
    with client.stream("GET", url) as response:
        assert "content-length" not in response.headers
        total = sum(len(chunk) for chunk in response.iter_raw())
    assert total == size

    # A client that stops early (a size cap) leaves the server without errors.
    for path in ("/huge.xml", "/unsized.xml"):
        with client.stream("GET", f"{feeds.url}{path}") as response:
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read > 100_000:
                    break
    assert client.get(feeds.publish("/small.xml", RSS_V1)).status_code == 200


def test_huge_body_is_well_formed_rss() -> None:
    for size in (0, 50, 20_000, CHUNK_SIZE * 2 + 7):
        chunks = list(huge_rss(size))
        assert sum(len(chunk) for chunk in chunks) == size
        assert all(len(chunk) <= CHUNK_SIZE for chunk in chunks)
    document = b"".join(huge_rss(20_000))
    assert document.startswith(b"<?xml") and document.endswith(b"</rss>\n")
    assert document.count(b"<item>") == document.count(b"</item>") > 10
    parsed = feedparser.parse(document)
    assert not parsed.bozo
    assert len(parsed.entries) == document.count(b"<item>")


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        (
            "vendor_rss.xml",
            "application/rss+xml; charset=utf-8",
            {
                "acme-blog-0001": "https://huggingface.co/acme/Acme-7B-Instruct",
                "acme-blog-0002": "https://acme.example/blog/acme-mini",
                "acme-blog-0003": "https://acme.example/blog/safety-report",
                None: "https://acme.example/blog/no-guid",
                "acme-blog-0006": "https://acme.example/blog/totally-normal",
                "acme-blog-0007": "https://huggingface.co/datasets/acme/some-data",
                "acme-blog-0008": "https://acme.example/blog/acme-1b",
            },
        ),
        (
            "vendor_atom.xml",
            "application/atom+xml",
            {
                "tag:beta.example,2026:beta-3b": "https://huggingface.co/beta/Beta-3B",
                "tag:beta.example,2025:launch": "https://beta.example/news/beta-launch",
                "tag:beta.example,2026:pricing": "https://beta.example/news/pricing",
                "tag:beta.example,2026:community-call": "https://beta.example/news/community-call",
            },
        ),
        (
            "latin1_rss.xml",
            "application/rss+xml",
            {
                "gallic-2026-geant-2b": "https://huggingface.co/gallic/Geant-2B",
                "gallic-2025-retro": "https://gallic.example/blog/retrospective",
            },
        ),
        ("malformed.xml", "text/html", {}),
    ],
)
def test_fixtures_served_and_parsed(
    feeds: FeedServer,
    client: httpx.Client,
    name: str,
    content_type: str,
    expected: dict[str | None, str],
) -> None:
    url = feeds.publish("/blog/rss.xml", load_fixture(name), content_type=content_type)
    response = client.get(url)
    # Relative links resolve against the feed's own address, as a poller would pass it.
    headers = {**response.headers, "content-location": "https://acme.example/blog/rss.xml"}
    parsed = feedparser.parse(response.content, response_headers=headers)
    assert {entry.get("id"): entry.get("link") for entry in parsed.entries} == expected
    assert bool(parsed.bozo) == (name == "malformed.xml")
    if name == "vendor_rss.xml":
        assert len(parsed.entries) == 8  # the duplicated guid is two entries
        assert parsed.entries[2].get("published_parsed") is None
    if name == "latin1_rss.xml":
        assert parsed.entries[0].title == "Modèle français Géant-2B disponible"
