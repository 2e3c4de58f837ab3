"""Slack delivery with the real slack-sdk client against the local Slack Web API server."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from config.settings import FineTune, Settings
from core.clock import now
from core.errors import FatalError, RetryableError
from tests.conftest import SHIPPED_TASK
from tests.support import verdicts
from tests.support.postgres import temporary_database
from tests.support.serving import served
from tests.support.settings import build_settings
from tests.support.slack_server import BOT_USER_ID, SlackServer
from workers.jobs import Job
from workers.notify import make_notifier
from workers.notify.blocks import MAX_BLOCKS, escape, for_job, link
from workers.notify.console import ConsoleNotifier
from workers.notify.outbox import Outbox, delivery_key, digest
from workers.notify.slack import EVENT_TYPE, SlackNotifier

LOGGER = "workers.notify.slack"
TOKEN = "xoxb-test-token"
CHANNEL = "C0VERDICTS"
RELEASE = {
    "source": "hub",
    "detected_at": "2025-03-01T09:00:00+00:00",
    "kind": "model_released",
    "repo_id": "acme/Acme-7B",
    "revision": "0123456789abcdef0123456789abcdef01234567",
    "params": 7_000_000_000,
    "link": "https://huggingface.co/acme/Acme-7B",
}
REPORT = {
    "verdict": "SUPERSEDED",
    "finetune": "support-triage",
    "candidate": "acme/Acme-7B",
    "task": "review_sentiment",
    "metric": "acc",
    "n": 300,
    "score_finetune": 0.81,
    "score_candidate": 0.86,
    "delta": 0.05,
    "ci_low": 0.02,
    "ci_high": 0.08,
    "p_value": 0.0012,
    "test": "exact McNemar",
    "confidence": 0.95,
    "margin": 0.02,
    "cost_per_1k_finetune": 0.42,
    "cost_per_1k_candidate": 0.2,
    "monthly_cost_finetune": 2040.0,
    "monthly_cost_candidate": 400.0,
    "monthly_savings_usd": 1640.0,
    "tuning_cost_usd": 18000.0,
    "reason": "significantly better (95% CI +2.0 points to +8.0 points > 0)",
    "summary": "Switching to acme/Acme-7B saves $1,640/month; the $18,000 spent is sunk.",
    "hint": None,
    "warnings": [],
}


def job(key: str = "v" * 64, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "key": key, "kind": "verdict", "candidate": "acme/Acme-7B@0123", "finetune":
        "support-triage", "parent": "b" * 64, "queue": "default", "state": "done", "attempts": 1,
        "reason": None, "payload": {"event": RELEASE}, "result": REPORT, "created_at": now(),
        "queued_at": now(), "started_at": now(), "finished_at": now(), "lease_owner": None,
        "lease_until": None,
    }  # fmt: skip
    values.update(fields)
    return Job(**values)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warning lines logged so far (the notifier's and anyone else's)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def valid(blocks: list[dict[str, Any]]) -> None:
    """Every block passes slack-sdk's own model checks (types, lengths, counts)."""
    assert 0 < len(blocks) <= MAX_BLOCKS
    for block in blocks:
        Block.parse(block).validate_json()  # type: ignore[union-attr]


def texts(value: Any) -> list[str]:
    """Every text a message's blocks show, in order."""
    if isinstance(value, list):
        return [text for item in value for text in texts(item)]
    if isinstance(value, dict):
        own = [value["text"]] if isinstance(value.get("text"), str) else []
        return own + [text for item in value.values() for text in texts(item)]
    return []


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    yield from served(SlackServer(token=TOKEN))


def settings(
    tmp_path: Path, *, store: str | None = None, copy_channel: str | None = "C0COPY", **slack: Any
) -> Settings:
    return build_settings(
        tmp_path,
        store={"url": store} if store else {},
        notify={"slack": {"channel": CHANNEL, **slack}, "console_dir": str(tmp_path / "notes")},
        finetunes=(
            FineTune(name="support-triage", task=str(SHIPPED_TASK), base="a/b", adapter="a/c"),
            FineTune(
                name="copy",
                task=str(SHIPPED_TASK),
                base="a/b",
                adapter="a/d",
                slack_channel=copy_channel,
            ),
        ),
    )


def notifier(tmp_path: Path, slack: SlackServer, **options: Any) -> SlackNotifier:
    made = SlackNotifier(settings(tmp_path, **options), TOKEN, base_url=slack.api_url)
    made.backoff_base_s = 0.01
    return made


def test_a_verdict_is_a_thread_reply_under_one_release_message(
    tmp_path: Path, slack: SlackServer
) -> None:
    notify = notifier(tmp_path, slack)
    notify.send(job("v1" + "0" * 62))
    notify.send(job("v2" + "0" * 62, finetune="support-triage", result={**REPORT, "n": 299}))
    (parent,) = slack.posts(CHANNEL)
    assert parent["text"].startswith("New release acme/Acme-7B")
    replies = slack.replies(parent["ts"])
    assert len(replies) == 2
    reply = replies[0]
    assert reply["text"].startswith("SUPERSEDED: acme/Acme-7B vs fine-tune support-triage.")
    valid(parent["blocks"])
    valid(reply["blocks"])
    shown = json.dumps(reply["blocks"])
    expected = (
        "0.8100", "0.8600", "+0.0500", "95% CI +0.0200 to +0.0800", "0.0012", "$0.42", "$0.2",
        "$1,640 saved per month", "<https://huggingface.co/acme/Acme-7B|acme/Acme-7B>",
        "acme/Acme-7B@0123456789ab", "job v10000000000",
    )  # fmt: skip
    for fragment in expected:
        assert fragment in shown, fragment
    assert (
        reply["blocks"][0]["type"] == "header"
        and "SUPERSEDED" in reply["blocks"][0]["text"]["text"]
    )


def test_a_finetune_can_have_its_own_channel(tmp_path: Path, slack: SlackServer) -> None:
    notifier(tmp_path, slack).send(job(finetune="copy"))
    assert slack.posts(CHANNEL) == [] and len(slack.posts("C0COPY")) == 1


def test_rate_limited_then_accepted_is_one_message(
    tmp_path: Path, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    slack.fail_next("chat.postMessage", 429, {"Retry-After": "1"})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        notifier(tmp_path, slack).send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]
    # Waited what Slack asked (not the back-off), and no lookup: a 429 was not carried out.
    (line,) = warnings(caplog)
    assert "429, Retry-After 1.0" in line and line.endswith("try 2 of 4 in 1.0 s"), line
    assert slack.calls("conversations.history") == []


def test_server_errors_are_retried_without_duplicates(tmp_path: Path, slack: SlackServer) -> None:
    slack.fail_next("chat.postMessage", 500, count=2)
    notifier(tmp_path, slack).send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1


def test_a_reply_lost_after_slack_accepted_the_post_is_not_posted_twice(
    tmp_path: Path, slack: SlackServer
) -> None:
    slack.reset_after_accept("chat.postMessage")
    notifier(tmp_path, slack).send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1
    assert len(slack.calls("conversations.history")) == 1  # looked before posting again


def test_a_crash_between_the_post_and_the_record_does_not_post_twice_after_restart(
    tmp_path: Path, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = notifier(tmp_path, slack)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed after Slack answered")

    monkeypatch.setattr(first.outbox, "sent", crash)
    with pytest.raises(SystemExit):
        first.send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1
    restarted = notifier(tmp_path, slack)
    restarted.send(job(parent=None))
    restarted.send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1
    (delivery,) = Outbox(f"sqlite:///{tmp_path / 'store.db'}").for_job("v" * 64)
    assert delivery.state == "sent" and delivery.ts == slack.posts(CHANNEL)[0]["ts"]


def test_a_changed_verdict_corrects_the_message_in_place(
    tmp_path: Path, slack: SlackServer
) -> None:
    notify = notifier(tmp_path, slack)
    notify.send(job(parent=None))
    notify.send(job(parent=None, result={**REPORT, "verdict": "HOLDS", "summary": "Keep it."}))
    (message,) = slack.posts(CHANNEL)
    assert message["edits"] == 1 and message["text"].startswith("HOLDS")


def test_untrusted_text_is_escaped(tmp_path: Path, slack: SlackServer) -> None:
    hostile = {**RELEASE, "repo_id": "<!channel>/x", "link": "https://huggingface.co/<!here>|evil"}
    report = {**REPORT, "candidate": "<!channel>", "summary": "<@U123> <https://evil|click> & more"}
    notifier(tmp_path, slack).send(job(parent=None, payload={"event": hostile}, result=report))
    (message,) = slack.posts(CHANNEL)
    text = json.dumps(message["blocks"]) + message["text"]
    assert "<!channel>" not in json.dumps(message["blocks"])
    assert "<@U123>" not in json.dumps(message["blocks"]) and "<https://evil" not in text
    assert "&lt;!channel&gt;" in json.dumps(message["blocks"])
    assert "&lt;@U123&gt; &lt;https://evil|click&gt; &amp; more" in json.dumps(message["blocks"])
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert link("javascript:alert(1)", "x") == "x"
    assert link("https://h/a|b>c", "l|m") == "<https://h/a%7Cb%3Ec|l¦m>"


def test_an_oversized_verdict_is_clamped_and_still_valid(
    tmp_path: Path, slack: SlackServer
) -> None:
    report = {**REPORT, "finetune": "f" * 400, "summary": "s" * 9000, "hint": "h" * 9000,
              "warnings": [f"warning {i}: " + "w" * 5000 for i in range(80)]}  # fmt: skip
    notifier(tmp_path, slack).send(job(parent=None, result=report, finetune="support-triage"))
    (message,) = slack.posts(CHANNEL)
    valid(message["blocks"])
    assert len(message["blocks"]) == MAX_BLOCKS
    assert len(message["text"]) <= 3000


@pytest.mark.parametrize(
    ("made", "fragments", "absent"),
    [
        (
            verdicts.blocked_unbenchmarked,
            ["⛔ BLOCKED", "not run: blocked before the download", "*Blocked by*\n• licence "
             "cc-by-nc-4.0 not allowed", "*Deploy:* Licence cc-by-nc-4.0 · needs 15.2 GiB",
             "was not downloaded or benchmarked"],
            ["Fine-tune score", "n = 0", "*Switching:*", "Difference", "Monthly impact"],
        ),
        (
            verdicts.needs_review,
            ["🟡 NEEDS_REVIEW", "*Needs a person's review*\n• licence llama3.1 (the vendor's "
             "own) needs review", "*Switching:* pays back in 8 months · +$1,000/month after · "
             "$16,000 over 24 months", "*Deploy:* Licence llama3.1 · needs 15.2 GiB · p95 12 ms "
             "per request (target 500 ms)", "0.8600"],
            ["Blocked by"],
        ),
        (
            verdicts.superseded,
            ["🔴 SUPERSEDED", "*Switching:* pays back in 8 months · +$1,000/month after · "
             "$16,000 over 24 months", "Licence apache-2.0 · needs 0.1 GiB · p95 12 ms per "
             "request (target 500 ms)"],
            ["Blocked by", "Needs a person"],
        ),
        (  # stored by the version before these figures: shown as it was
            lambda: REPORT,
            ["🔴 SUPERSEDED", "$1,640 saved per month"],
            ["*Switching:*", "*Deploy:*", "Blocked by", "Needs a person"],
        ),
    ],
)  # fmt: skip
def test_deploy_checks_and_payback_are_shown_in_a_leads_words(
    tmp_path: Path,
    slack: SlackServer,
    made: Callable[[], Any],
    fragments: list[str],
    absent: list[str],
) -> None:
    report = made()
    result = report if isinstance(report, dict) else report.to_dict()
    notifier(tmp_path, slack).send(job(parent=None, result=result))
    (message,) = slack.posts(CHANNEL)
    valid(message["blocks"])
    shown = "\n".join([*texts(message["blocks"]), message["text"]])
    for fragment in fragments:
        assert fragment in shown, fragment
    for fragment in absent:
        assert fragment not in shown, fragment
    assert "None" not in shown and not re.search(r"\bnan\b", shown, re.IGNORECASE)


def test_a_refused_channel_is_a_fatal_error(tmp_path: Path) -> None:
    with (
        SlackServer(token=TOKEN, channels={"C0OTHER"}) as slack,
        pytest.raises(FatalError, match="channel_not_found"),
    ):
        notifier(tmp_path, slack).send(job(parent=None))


@pytest.mark.parametrize(
    ("fields", "fragments"),
    [
        (
            {"state": "failed", "reason": "gave up after 3 attempts: the Hub answered 503",
             "result": None, "attempts": 3},
            ["Benchmark failed", "the Hub answered 503", "supersede rerun acme/Acme-7B "
             "--finetune support-triage"],
        ),
        (
            {"state": "skipped", "reason": "benchmark skipped: too large: needs about 156 GiB",
             "result": None},
            ["Skipped", "too large", "156 GiB"],
        ),
        (
            {"kind": "announcement", "parent": None, "result": None, "finetune": None,
             "payload": {"event": {"kind": "announcement", "source": "feed:acme",
                                   "detected_at": "2025-03-01T09:00:00+00:00", "entry_id": "p-1",
                                   "title": "Our <script> safety report",
                                   "link": "https://acme.example/p", "summary": "<!channel>"}}},
            ["Our &lt;script&gt; safety report", "&lt;!channel&gt;", "from acme"],
        ),
    ],
)  # fmt: skip
def test_failures_skips_and_announcements(
    tmp_path: Path, slack: SlackServer, fields: dict[str, Any], fragments: list[str]
) -> None:
    notifier(tmp_path, slack).send(job(**{"parent": None, **fields}))
    (message,) = slack.posts(CHANNEL)
    valid(message["blocks"])
    shown = json.dumps(message["blocks"], ensure_ascii=False)
    for fragment in fragments:
        assert fragment in shown, fragment


def test_without_a_token_the_console_shows_the_same_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    configured = settings(tmp_path)
    assert isinstance(make_notifier(configured), ConsoleNotifier)
    out = io.StringIO()
    ConsoleNotifier(configured, stream=out).send(job())
    printed = out.getvalue()
    assert "SUPERSEDED: support-triage vs acme/Acme-7B" in printed
    assert "Candidate: acme/Acme-7B (https://huggingface.co/acme/Acme-7B)" in printed
    written = json.loads(next((tmp_path / "notes").glob("*.json")).read_text())
    assert written["text"] == for_job(job(), configured.hub.endpoint).text
    valid(written["blocks"])


def test_with_a_token_slack_is_used(
    tmp_path: Path, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    made = make_notifier(settings(tmp_path))
    assert isinstance(made, SlackNotifier)
    made.send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1
    assert slack.calls("chat.postMessage")[0].headers["authorization"] == f"Bearer {TOKEN}"


# ---------------------------------------------------------------------- retries: one loop


def record_calls(notify: SlackNotifier, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Web API methods ``notify`` calls, in order (every ``WebClient`` method goes through
    ``api_call``, so this sees the calls a closed server never receives)."""
    calls: list[str] = []
    original = notify.client.api_call

    def spy(api_method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(api_method)
        return original(api_method, *args, **kwargs)

    monkeypatch.setattr(notify.client, "api_call", spy)
    return calls


@pytest.mark.parametrize("earlier_try", [False, True], ids=["fresh", "after-a-lost-reply"])
def test_slack_unreachable_is_tried_max_attempts_times_then_retryable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    earlier_try: bool,
) -> None:
    with SlackServer(token=TOKEN) as closed:
        pass  # its port now refuses connections
    notify = notifier(tmp_path, closed, max_attempts=3)
    if earlier_try:  # a post was tried before and its reply lost: each try must look first
        key = delivery_key("job", "v" * 64, CHANNEL)
        notify.outbox.record(key, "v" * 64, CHANNEL, None, "earlier")
        notify.outbox.attempt(key)
    calls = record_calls(notify, monkeypatch)
    with caplog.at_level(logging.INFO), pytest.raises(RetryableError) as caught:
        notify.send(job(parent=None))
    # A refused connection carried nothing out, so a fresh message is posted again without a
    # lookup; one that may already be in Slack is never posted while the lookup cannot answer.
    kind = "conversations.history" if earlier_try else "chat.postMessage"
    assert calls == [kind] * 3
    assert "after 3 tries" in str(caught.value) and "ConnectionRefusedError" in str(caught.value)
    lines = warnings(caplog)
    assert len(lines) == 2, lines
    assert [line.split("; ")[-1][:10] for line in lines] == ["try 2 of 3", "try 3 of 3"]
    (delivery,) = notify.outbox.for_job("v" * 64)
    assert delivery.claim_owner is None  # given up: the next try need not wait for the lease


def test_a_release_parent_that_cannot_be_posted_stops_the_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SlackServer(token=TOKEN) as closed:
        pass
    notify = notifier(tmp_path, closed, max_attempts=2)
    calls = record_calls(notify, monkeypatch)
    with pytest.raises(RetryableError):
        notify.send(job())
    assert calls == ["chat.postMessage"] * 2  # the parent's tries; no reply without its thread


def test_a_failing_lookup_is_retried_inside_the_loop(
    tmp_path: Path, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    slack.reset_after_accept("chat.postMessage")  # taken by Slack, reply lost
    slack.fail_next("conversations.history", 503)
    with caplog.at_level(logging.INFO):
        notifier(tmp_path, slack).send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1
    assert len(slack.calls("chat.postMessage")) == 1
    assert [c.status for c in slack.calls("conversations.history")] == [503, 200]
    lines = warnings(caplog)
    assert len(lines) == 2, lines
    assert "RemoteDisconnected" in lines[0] and "503" in lines[1]


def test_lookups_and_posts_share_max_attempts(tmp_path: Path, slack: SlackServer) -> None:
    slack.reset_after_accept("chat.postMessage")
    slack.fail_next("conversations.history", 500, count=10)
    with pytest.raises(RetryableError, match="after 3 tries"):
        notifier(tmp_path, slack, max_attempts=3).send(job(parent=None))
    assert len(slack.calls("chat.postMessage")) == 1
    assert len(slack.calls("conversations.history")) == 2
    assert len(slack.posts(CHANNEL)) == 1  # never posted twice


def test_a_failing_update_is_retried(tmp_path: Path, slack: SlackServer) -> None:
    notify = notifier(tmp_path, slack)
    notify.send(job(parent=None))
    slack.fail_next("chat.update", 500)
    notify.send(job(parent=None, result={**REPORT, "verdict": "HOLDS", "summary": "Keep it."}))
    (message,) = slack.posts(CHANNEL)
    assert message["edits"] == 1 and message["text"].startswith("HOLDS")
    assert [c.status for c in slack.calls("chat.update")] == [500, 200]


def test_a_retry_after_beyond_the_cap_ends_the_delivery_with_it(
    tmp_path: Path, slack: SlackServer
) -> None:
    slack.fail_next("chat.postMessage", 429, {"Retry-After": "600"})
    notify = notifier(tmp_path, slack)
    with pytest.raises(RetryableError) as caught:
        notify.send(job(parent=None))
    assert caught.value.retry_after_s == 600.0
    assert len(slack.calls("chat.postMessage")) == 1 and slack.posts(CHANNEL) == []
    # Released: the retry, whoever makes it, need not wait for the lease to run out.
    notify.wait_s = 0
    notify.send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1


# ---------------------------------------------------------------------- claims: one poster


@contextmanager
def store(tmp_path: Path, backend: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with temporary_database() as url:
            yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_outbox_claim_is_a_compare_and_set(tmp_path: Path, backend: str) -> None:
    with store(tmp_path, backend) as url:
        outbox = Outbox(url)
        try:
            assert outbox.record("d1", "j1", "C1", None, "h") is True
            assert outbox.record("d1", "j1", "C1", None, "other") is False
            assert outbox.claim("d1", "a", 60) and not outbox.claim("d1", "b", 60)
            assert outbox.claim("d1", "a", 60)  # renewed by its holder
            outbox.release("d1", "b")  # not b's to release
            assert not outbox.claim("d1", "b", 60)
            outbox.release("d1", "a")
            assert outbox.claim("d1", "b", -1)  # a lease that has already run out...
            assert outbox.claim("d1", "c", 60)  # ...is taken over
            assert not outbox.claim("d1", "b", 60)  # and its old holder cannot renew it
            outbox.sent("d1", "1.000001")
            delivery = outbox.get("d1")
            assert delivery is not None and delivery.claim_owner is None
            assert delivery.digest == "h" and delivery.ts == "1.000001"
            assert not outbox.claim("d1", "c", 60)  # sent: nobody posts it again
        finally:
            outbox.engine.dispose()


def test_a_claim_left_by_a_killed_worker_runs_out_and_the_next_looks_first(
    tmp_path: Path, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    notify = notifier(tmp_path, slack)
    notify.poll_s = 0.01
    key = delivery_key("job", "v" * 64, CHANNEL)
    message = for_job(job(parent=None), notify.hub_url)
    # A worker claimed the message, Slack took its post, and it was killed before the record.
    notify.outbox.record(key, "v" * 64, CHANNEL, None, digest(message.text, message.blocks))
    assert notify.outbox.claim(key, "killed worker", 0.3)
    notify.outbox.attempt(key)
    metadata = {"event_type": EVENT_TYPE, "event_payload": {"key": key}}
    posted = slack.add_message(
        CHANNEL, message.text, user=BOT_USER_ID, blocks=message.blocks, metadata=metadata
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        notify.send(job(parent=None))
    assert any("waiting for killed worker" in r.getMessage() for r in caplog.records)
    assert slack.calls("chat.postMessage") == []
    assert len(slack.calls("conversations.history")) == 1
    delivery = notify.outbox.get(key)
    assert delivery is not None and delivery.ts == posted and delivery.state == "sent"


def test_a_rival_waits_for_the_holder_then_gives_up_retryable(
    tmp_path: Path, slack: SlackServer
) -> None:
    notify = notifier(tmp_path, slack)
    notify.poll_s, notify.wait_s = 0.01, 0.3
    key = delivery_key("job", "v" * 64, CHANNEL)
    notify.outbox.record(key, "v" * 64, CHANNEL, None, "h")
    assert notify.outbox.claim(key, "busy worker", 60)
    with pytest.raises(RetryableError, match="busy worker") as caught:
        notify.send(job(parent=None))
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 30
    assert slack.requests == []  # neither posted nor looked while another holds it

    # The holder posts: the rival takes its ts (and corrects the content it recorded).
    ts = slack.add_message(CHANNEL, "by the holder", user=BOT_USER_ID)
    timer = threading.Timer(0.2, notify.outbox.sent, (key, ts, "h"))
    timer.start()
    notify.wait_s = 10
    notify.send(job(parent=None))
    timer.join()
    (message,) = slack.posts(CHANNEL)
    assert message["ts"] == ts and message["edits"] == 1
    assert slack.calls("chat.postMessage") == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_verdicts_of_one_release_at_once_make_one_parent(
    tmp_path: Path, slack: SlackServer, backend: str
) -> None:
    """Two notifiers (as two worker processes) send the two fine-tunes' verdicts of a release at
    the same moment while the first post meets a 429. Repeated: one lucky pass proves nothing.
    (Retry-After is fractional to keep the test short; the Celery race test waits real ones.)"""
    runs = 20
    with store(tmp_path, backend) as url:
        configured = settings(tmp_path, store=url, copy_channel=None)
        notifiers = [SlackNotifier(configured, TOKEN, base_url=slack.api_url) for _ in range(2)]
        for made in notifiers:
            made.backoff_base_s, made.poll_s = 0.01, 0.01
        try:
            for run in range(runs):
                parent = f"{run:02d}" + "b" * 62
                verdicts = [
                    job(f"{run:02d}{ft[:2]}" + "0" * 60, finetune=ft, parent=parent,
                        result={**REPORT, "finetune": ft})
                    for ft in ("support-triage", "copy")
                ]  # fmt: skip
                slack.fail_next("chat.postMessage", 429, {"Retry-After": "0.1"})
                errors = at_once(list(zip(notifiers, verdicts, strict=True)))
                assert errors == [], f"run {run}: {errors}"
                release = delivery_key("release", parent, CHANNEL)
                parents = [m for m in slack.posts(CHANNEL) if marker(m) == release]
                assert len(parents) == 1, f"run {run}: {len(parents)} release messages"
                replies = slack.replies(parents[0]["ts"])
                assert sorted(marker(m) for m in replies) == sorted(
                    delivery_key("job", v.key, CHANNEL) for v in verdicts
                ), f"run {run}"
            posts = slack.calls("chat.postMessage")
            assert sum(c.status == 429 for c in posts) == runs  # every run met the 429
            assert len(posts) == 4 * runs  # 429, parent, two replies: nothing else was tried
        finally:
            for made in notifiers:
                made.outbox.engine.dispose()


def at_once(sends: list[tuple[SlackNotifier, Job]]) -> list[BaseException]:
    """Each notifier sends its job in a thread of its own, all released at the same moment;
    returns what they raised."""
    together = threading.Barrier(len(sends))
    errors: list[BaseException] = []

    def send(made: SlackNotifier, verdict: Job) -> None:
        together.wait()
        try:
            made.send(verdict)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=send, args=pair) for pair in sends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def marker(message: dict[str, Any]) -> str:
    """The delivery key a message carries in its metadata."""
    return str(((message.get("metadata") or {}).get("event_payload") or {}).get("key", ""))
