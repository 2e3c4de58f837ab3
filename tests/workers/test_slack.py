"""Slack delivery with the real slack-sdk client against the local Slack Web API server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from config.errors import FatalError
from config.notify import NotifySettings, SlackSettings
from config.settings import FineTune, Settings, StoreSettings
from tests.conftest import SHIPPED_TASK
from tests.support.slack_server import SlackServer
from watcher.state import now
from workers.jobs import Job
from workers.notify import make_notifier
from workers.notify.blocks import MAX_BLOCKS, escape, for_job, link
from workers.notify.console import ConsoleNotifier
from workers.notify.outbox import Outbox
from workers.notify.slack import SlackNotifier

TOKEN = "xoxb-test-token"
CHANNEL = "C0VERDICTS"
RELEASE = {
    "source": "hub",
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
    "cost_per_1k_finetune": 0.42,
    "cost_per_1k_candidate": 0.2,
    "monthly_cost_finetune": 2040.0,
    "monthly_cost_candidate": 400.0,
    "monthly_savings_usd": 1640.0,
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


def valid(blocks: list[dict[str, Any]]) -> None:
    """Every block passes slack-sdk's own model checks (types, lengths, counts)."""
    assert 0 < len(blocks) <= MAX_BLOCKS
    for block in blocks:
        Block.parse(block).validate_json()  # type: ignore[union-attr]


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server
        assert server.errors == [], server.errors[0] if server.errors else ""


def settings(tmp_path: Path, **slack: Any) -> Settings:
    return Settings(
        store=StoreSettings(url=f"sqlite:///{tmp_path / 'store.db'}"),
        notify=NotifySettings(
            slack=SlackSettings(**{"channel": CHANNEL, **slack}),
            console_dir=str(tmp_path / "notes"),
        ),
        finetunes=(
            FineTune(name="support-triage", task=str(SHIPPED_TASK), base="a/b", adapter="a/c"),
            FineTune(
                name="copy",
                task=str(SHIPPED_TASK),
                base="a/b",
                adapter="a/d",
                slack_channel="C0COPY",
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


def test_rate_limited_then_accepted_is_one_message(tmp_path: Path, slack: SlackServer) -> None:
    slack.fail_next("chat.postMessage", 429, {"Retry-After": "1"})
    notifier(tmp_path, slack).send(job(parent=None))
    assert len(slack.posts(CHANNEL)) == 1
    assert len(slack.calls("chat.postMessage")) == 2


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
             "payload": {"event": {"source": "feed:acme", "title": "Our <script> safety report",
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
