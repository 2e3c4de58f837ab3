"""The fake Slack in ``slack_server.py`` works with the real ``slack_sdk.WebClient``."""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

from tests.support.slack_server import BOT_ID, BOT_USER_ID, TEAM_ID, SlackServer

TOKEN = "xoxb-test"
FAST = FixedValueRetryIntervalCalculator(0.01)
METADATA = {"event_type": "verdict_posted", "event_payload": {"verdict_id": "v-1", "rev": 2}}
TS_RE = re.compile(r"^\d+\.\d{6}$")


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server
        assert server.errors == []


@pytest.fixture(autouse=True)
def _quiet_sdk_logger() -> Iterator[None]:
    # The SDK logs every failed send at ERROR; the failures here are on purpose.
    logger = logging.getLogger("slack_sdk.web.base_client")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def client_for(server: SlackServer, **kwargs: Any) -> WebClient:
    """A client with no retry handlers unless given (the SDK's default retries lost replies)."""
    kwargs.setdefault("retry_handlers", [])
    return WebClient(token=kwargs.pop("token", TOKEN), base_url=server.api_url, **kwargs)


def test_auth_test_and_request_shapes(slack: SlackServer) -> None:
    assert slack.api_url == f"{slack.url}/api/"
    client = client_for(slack)
    reply = client.auth_test()
    assert reply["ok"] is True
    assert (reply["user_id"], reply["team_id"], reply["bot_id"]) == (BOT_USER_ID, TEAM_ID, BOT_ID)

    client.chat_postMessage(channel="C1", text="hello")
    client.conversations_history(channel="C1", include_all_metadata=True, limit=5)
    auth, post, history = slack.requests
    # The SDK sends every method as POST: an empty body, JSON for chat.*, a form for reads.
    assert (auth.method, auth.http_verb, auth.body_format, auth.params) == (
        "auth.test",
        "POST",
        "none",
        {},
    )
    assert auth.headers["authorization"] == f"Bearer {TOKEN}"
    assert (post.http_verb, post.body_format) == ("POST", "json")
    assert post.params == {"channel": "C1", "text": "hello"}
    assert post.headers["content-type"].startswith("application/json")
    assert (history.http_verb, history.body_format) == ("POST", "form")
    assert history.params == {"channel": "C1", "include_all_metadata": "1", "limit": "5"}
    assert [r.status for r in slack.requests] == [200, 200, 200]


def test_wrong_or_missing_token_is_invalid_auth(slack: SlackServer) -> None:
    for token in ("xoxb-wrong", None):
        client = WebClient(token=token, base_url=slack.api_url, retry_handlers=[])
        with pytest.raises(SlackApiError) as caught:
            client.chat_postMessage(channel="C1", text="hi")
        assert caught.value.response.status_code == 200
        assert caught.value.response["error"] == "invalid_auth"
    assert slack.messages == []
    assert [r.error for r in slack.requests] == ["invalid_auth", "invalid_auth"]


def test_post_message_stores_and_returns_ts(slack: SlackServer) -> None:
    client = client_for(slack)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*new model wins*"}}]
    first = client.chat_postMessage(channel="C1", text="verdict", blocks=blocks, metadata=METADATA)
    second = client.chat_postMessage(channel="C2", text="other")

    assert first["channel"] == "C1"
    assert TS_RE.fullmatch(first["ts"]) and TS_RE.fullmatch(second["ts"])
    assert float(second["ts"]) > float(first["ts"])
    assert first["message"]["text"] == "verdict"
    assert first["message"]["blocks"] == blocks
    assert first["message"]["metadata"] == METADATA
    assert first["message"]["bot_id"] == BOT_ID

    stored = slack.messages
    assert [m["ts"] for m in stored] == [first["ts"], second["ts"]]
    assert stored[0] == {
        "channel": "C1",
        "ts": first["ts"],
        "thread_ts": None,
        "text": "verdict",
        "blocks": blocks,
        "metadata": METADATA,
        "edits": 0,
        "user": BOT_USER_ID,
        "reply_broadcast": False,
    }
    assert [m["text"] for m in slack.posts("C2")] == ["other"]
    assert len(slack.posts()) == 2


def test_form_encoded_post_and_plain_get(slack: SlackServer) -> None:
    client = client_for(slack)
    blocks = [{"type": "divider"}]
    reply = client.api_call(
        "chat.postMessage",
        data={"channel": "C1", "blocks": json.dumps(blocks), "metadata": json.dumps(METADATA)},
    )
    assert slack.calls("chat.postMessage")[0].body_format == "form"
    assert slack.messages[0]["blocks"] == blocks
    assert slack.messages[0]["metadata"] == METADATA

    url = f"{slack.api_url}conversations.history?channel=C1&include_all_metadata=true"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.load(response)
    assert [m["ts"] for m in body["messages"]] == [reply["ts"]]
    assert body["messages"][0]["metadata"] == METADATA
    get = slack.calls("conversations.history")[0]
    assert (get.http_verb, get.body_format) == ("GET", "none")


def test_thread_reply_is_in_replies_not_in_history(slack: SlackServer) -> None:
    client = client_for(slack)
    parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
    reply = client.chat_postMessage(channel="C1", text="detail", thread_ts=parent)["ts"]
    # A reply to a reply lands in the parent's thread, as on Slack.
    nested = client.chat_postMessage(channel="C1", text="more", thread_ts=reply)["ts"]
    later = client.chat_postMessage(channel="C1", text="later")["ts"]

    history = client.conversations_history(channel="C1")["messages"]
    assert [m["ts"] for m in history] == [later, parent]
    assert history[1]["reply_count"] == 2
    assert history[1]["latest_reply"] == nested

    replies = client.conversations_replies(channel="C1", ts=parent)["messages"]
    assert [m["text"] for m in replies] == ["parent", "detail", "more"]
    assert all(m["thread_ts"] == parent for m in replies)
    assert [m["ts"] for m in slack.replies(parent)] == [reply, nested]
    assert [m["ts"] for m in slack.posts("C1")] == [parent, later]

    with pytest.raises(SlackApiError) as caught:
        client.conversations_replies(channel="C1", ts="1.000001")
    assert caught.value.response["error"] == "thread_not_found"


def test_metadata_only_with_include_all_metadata(slack: SlackServer) -> None:
    client = client_for(slack)
    parent = client.chat_postMessage(channel="C1", text="v", metadata=METADATA)["ts"]
    client.chat_postMessage(channel="C1", text="r", thread_ts=parent, metadata=METADATA)

    plain = client.conversations_history(channel="C1")["messages"]
    assert "metadata" not in plain[0]
    full = client.conversations_history(channel="C1", include_all_metadata=True)["messages"]
    assert full[0]["metadata"] == METADATA
    off = client.conversations_history(channel="C1", include_all_metadata=False)["messages"]
    assert "metadata" not in off[0]

    thread = client.conversations_replies(channel="C1", ts=parent)["messages"]
    assert all("metadata" not in m for m in thread)
    thread = client.conversations_replies(channel="C1", ts=parent, include_all_metadata=True)
    assert [m["metadata"] for m in thread["messages"]] == [METADATA, METADATA]


def test_history_pagination_with_cursor(slack: SlackServer) -> None:
    client = client_for(slack)
    posted = [client.chat_postMessage(channel="C1", text=f"m{i}")["ts"] for i in range(7)]
    client.chat_postMessage(channel="C2", text="elsewhere")

    first = client.conversations_history(channel="C1", limit=3)
    assert [m["text"] for m in first["messages"]] == ["m6", "m5", "m4"]
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    second = client.conversations_history(channel="C1", limit=3, cursor=cursor)
    assert [m["text"] for m in second["messages"]] == ["m3", "m2", "m1"]

    # The SDK's own iteration follows next_cursor to the end.
    pages = [page["messages"] for page in client.conversations_history(channel="C1", limit=3)]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [m["ts"] for page in pages for m in page] == posted[::-1]
    assert "response_metadata" not in client.conversations_history(channel="C1").data

    window = client.conversations_history(channel="C1", oldest=posted[1], latest=posted[4])
    assert [m["text"] for m in window["messages"]] == ["m3", "m2"]
    window = client.conversations_history(
        channel="C1", oldest=posted[1], latest=posted[4], inclusive=True
    )
    assert [m["text"] for m in window["messages"]] == ["m4", "m3", "m2", "m1"]

    with pytest.raises(SlackApiError) as caught:
        client.conversations_history(channel="C1", cursor="not-a-cursor")
    assert caught.value.response["error"] == "invalid_cursor"


def test_update_changes_text_and_counts_edits(slack: SlackServer) -> None:
    client = client_for(slack)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "pending"}}]
    ts = client.chat_postMessage(channel="C1", text="pending", blocks=blocks, metadata=METADATA)[
        "ts"
    ]
    reply = client.chat_update(channel="C1", ts=ts, text="done")
    assert reply["ts"] == ts and reply["text"] == "done"
    assert "edited" in reply["message"]
    client.chat_update(channel="C1", ts=ts, text="done, again", blocks=[])

    (message,) = slack.messages
    assert message["text"] == "done, again"
    assert message["edits"] == 2
    assert message["blocks"] is None  # an empty array removes the blocks, as on Slack
    assert message["metadata"] == METADATA  # left out: kept

    for channel, target in (("C1", "1.000001"), ("C2", ts)):
        with pytest.raises(SlackApiError) as caught:
            client.chat_update(channel=channel, ts=target, text="x")
        assert caught.value.response["error"] == "message_not_found"

    human = slack.add_message("C1", "a person wrote this")
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel="C1", ts=human, text="x")
    assert caught.value.response["error"] == "cant_update_message"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
def test_validation_errors_like_slack() -> None:
    with SlackServer(token=TOKEN, channels={"C1"}, foreign_channels={"C9"}) as slack:
        client = client_for(slack)
        section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
        cases: list[tuple[dict[str, Any], str]] = [
            ({"channel": "C404", "text": "x"}, "channel_not_found"),
            ({"channel": "C9", "text": "x"}, "not_in_channel"),
            ({"channel": "C1"}, "no_text"),
            ({"channel": "C1", "text": "x" * 40_001}, "msg_too_long"),
            ({"channel": "C1", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
            ({"channel": "C1", "blocks": [{"text": "no type"}]}, "invalid_blocks"),
            ({"channel": "C1", "blocks": ["not an object"]}, "invalid_blocks"),
            ({"channel": "C1", "blocks": [section]}, "invalid_blocks"),
            ({"channel": "C1", "blocks": "[{"}, "invalid_blocks_format"),
            ({"channel": "C1", "text": "x", "metadata": {"a": 1}}, "invalid_metadata_format"),
            ({"channel": "C1", "text": "x", "thread_ts": "yesterday"}, "invalid_thread_ts"),
        ]
        for kwargs, error in cases:
            with pytest.raises(SlackApiError) as caught:
                client.chat_postMessage(**kwargs)
            assert caught.value.response["error"] == error, kwargs
        assert slack.messages == []

        long_ok = client.chat_postMessage(channel="C1", text="x" * 40_000)
        fifty = client.chat_postMessage(channel="C1", text="x", blocks=[{"type": "divider"}] * 50)
        assert long_ok["ok"] and fifty["ok"]

        slack.kick("C1")
        with pytest.raises(SlackApiError) as caught:
            client.conversations_history(channel="C1")
        assert caught.value.response["error"] == "not_in_channel"

        with pytest.raises(SlackApiError) as caught:
            client.api_call("chat.nope")
        assert caught.value.response.status_code == 404
        assert caught.value.response["error"] == "unknown_method"
        assert slack.errors == []


def test_rate_limit_then_success_retries_once(slack: SlackServer) -> None:
    slack.fail_next("chat.postMessage", 429, {"Retry-After": "1"})
    client = client_for(slack, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    started = time.monotonic()
    reply = client.chat_postMessage(channel="C1", text="hi")
    assert time.monotonic() - started >= 1.0  # the SDK waited Retry-After (plus jitter)
    assert [m["ts"] for m in slack.messages] == [reply["ts"]]
    calls = slack.calls("chat.postMessage")
    assert [(c.status, c.error, c.fault) for c in calls] == [
        (429, "ratelimited", "fail"),
        (200, None, None),
    ]

    slack.fail_next("chat.postMessage", 429)
    with pytest.raises(SlackApiError) as caught:
        client_for(slack).chat_postMessage(channel="C1", text="no handler")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "1"
    assert len(slack.messages) == 1


def test_server_errors_with_and_without_retry_handler(slack: SlackServer) -> None:
    slack.fail_next("chat.postMessage", 500)
    with pytest.raises(SlackApiError) as caught:
        client_for(slack).chat_postMessage(channel="C1", text="hi")
    assert caught.value.response.status_code == 500
    assert slack.messages == []

    # Faults are consumed in order; a custom body answers at any status.
    slack.fail_next("chat.postMessage", 503)
    slack.fail_next("chat.postMessage", 500)
    retrying = client_for(
        slack, retry_handlers=[ServerErrorRetryHandler(max_retry_count=2, interval_calculator=FAST)]
    )
    reply = retrying.chat_postMessage(channel="C1", text="hi")
    assert [m["ts"] for m in slack.messages] == [reply["ts"]]
    assert [c.status for c in slack.calls("chat.postMessage")] == [500, 503, 500, 200]

    slack.fail_next("*", 200, body={"ok": False, "error": "fatal_error"})
    with pytest.raises(SlackApiError) as caught:
        retrying.auth_test()
    assert caught.value.response["error"] == "fatal_error"


def test_reset_after_accept_loses_the_reply_but_keeps_the_post(slack: SlackServer) -> None:
    slack.reset_after_accept("chat.postMessage")
    with pytest.raises(http.client.RemoteDisconnected):
        client_for(slack).chat_postMessage(channel="C1", text="hi")
    (stored,) = slack.messages
    assert stored["text"] == "hi" and TS_RE.fullmatch(stored["ts"])
    (call,) = slack.calls("chat.postMessage")
    assert (call.status, call.fault) == (None, "reset")


@pytest.mark.parametrize("handlers", ["connection-retry", "sdk-default"])
def test_connection_retry_after_a_lost_reply_posts_twice(slack: SlackServer, handlers: str) -> None:
    """Why Supersede needs an outbox: the SDK retries a post whose reply was lost, and Slack
    then holds the message twice. ``WebClient``'s default handlers already do this."""
    if handlers == "connection-retry":
        client = client_for(slack, retry_handlers=[ConnectionErrorRetryHandler(1, FAST)])
    else:
        client = WebClient(token=TOKEN, base_url=slack.api_url)
        assert any(isinstance(h, ConnectionErrorRetryHandler) for h in client.retry_handlers)
    slack.reset_after_accept("chat.postMessage")
    reply = client.chat_postMessage(channel="C1", text="verdict", metadata=METADATA)
    assert [m["text"] for m in slack.posts("C1")] == ["verdict", "verdict"]
    assert reply["ts"] == slack.messages[1]["ts"]
    assert len(slack.calls("chat.postMessage")) == 2


def test_hang_times_the_client_out_and_close_cuts_it_short() -> None:
    slack = SlackServer(token=TOKEN).start()
    try:
        slack.hang_next("chat.postMessage", 30)
        with pytest.raises(TimeoutError):
            client_for(slack, timeout=0.3).chat_postMessage(channel="C1", text="hi")
        assert slack.messages == []  # a dropped hang is not carried out

        # A slow Slack: the client gives up, the post still lands.
        slack.hang_next("chat.postMessage", 0.6, carry_out=True)
        with pytest.raises(TimeoutError):
            client_for(slack, timeout=0.2).chat_postMessage(channel="C1", text="slow")
        deadline = time.monotonic() + 5
        while not slack.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m["text"] for m in slack.messages] == ["slow"]

        slack.hang_next("chat.postMessage", 30)
        outcome: list[BaseException] = []

        def post() -> None:
            try:
                client_for(slack, timeout=20).chat_postMessage(channel="C1", text="held")
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while len(slack.calls("chat.postMessage")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        started = time.monotonic()
        slack.close()
        assert time.monotonic() - started < 2
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], http.client.RemoteDisconnected)
    assert [m["text"] for m in slack.messages] == ["slow"]
    assert slack.errors == []
