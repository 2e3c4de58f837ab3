"""The Slack app (slack-bolt) answering signed requests: buttons on a real verdict message and
``/supersede``, served by the daemon's ASGI listener, against the local Slack Web API server."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from config.settings import Settings
from core.asgi import Limits, Router, Server
from core.constants import TASK_BENCHMARK, TASK_NOTIFY, TASK_VERDICT
from supersede.demo.zoo import Zoo
from tests.conftest import REPO, SHIPPED_TASK
from tests.support.cli import supersede
from tests.support.hub_server import HubServer
from tests.support.settings import build_settings, write_settings
from tests.support.slack_payloads import block_actions, slash_command
from tests.support.slack_server import SlackServer
from tests.workers.conftest import SMALL, wait_for
from tests.workers.test_slack import valid
from watcher.events import ModelReleased
from workers.jobs import JobStore
from workers.notify import make_notifier
from workers.notify.actions import ActionLog
from workers.notify.interact import SlackApp
from workers.pipeline import Pipeline

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-app-token"
CHANNEL = "C0LEADS"
LEAD, OUTSIDER, GROUP, MEMBER = "U0LEAD", "U0OUTSIDER", "S0OPS", "U0MEMBER"


class Sent:
    """Stands in for the broker: what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, name: str, key: str, queue: str) -> None:
        self.sent.append((name, key, queue))

    def benchmarks(self) -> list[str]:
        return [key for name, key, _ in self.sent if name == TASK_BENCHMARK]


@dataclass
class World:
    settings: Settings
    pipeline: Pipeline
    sent: Sent
    slack: SlackServer
    hub: HubServer
    zoo: Zoo
    url: str
    config: Path
    records: list[logging.LogRecord]

    def release(self, repo: str) -> ModelReleased:
        """A new Hub release of ``repo`` (the zoo's stronger model), run to its notification."""
        sha = self.hub.add_repo(repo, self.zoo.stronger, extra=SMALL)
        event = ModelReleased(
            source="hub", detected_at=time_now(), repo_id=repo, revision=sha, params=1000
        )
        start = len(self.sent.sent)
        self.pipeline.plan(event)
        self.drain(start)
        return event

    def drain(self, start: int = 0) -> None:
        """Run what was sent from ``start`` on (benchmarks, verdicts, notifications)."""
        i = start
        while i < len(self.sent.sent):
            name, key, _ = self.sent.sent[i]
            i += 1
            if name == TASK_BENCHMARK:
                self.pipeline.run_benchmark(key, "w")
            elif name == TASK_VERDICT:
                self.pipeline.run_verdict(key, "w")
            elif name == TASK_NOTIFY:
                self.pipeline.notify(key)

    def verdict_message(self, repo: str) -> dict[str, Any]:
        (parent,) = [p for p in self.slack.posts(CHANNEL) if repo in p["text"]]
        (reply,) = self.slack.replies(parent["ts"])
        return reply

    def post(
        self,
        body: str,
        *,
        secret: str = SECRET,
        age_s: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """``body`` signed as Slack signs it (slack-sdk's own signer), ``age_s`` old."""
        ts = str(int(time.time() - age_s))
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        sent = {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
            **(headers or {}),
        }
        return httpx.post(self.url, content=body, headers=sent, timeout=10)

    def click(
        self,
        message: dict[str, Any],
        action_id: str,
        *,
        user: str = LEAD,
        name: str = "alice",
        trigger: str = "1.1",
        selected: str | None = None,
        answer_to: str = "r",
    ) -> str:
        """The form body Slack sends when ``user`` uses the element ``action_id`` of
        ``message``; its response_url is named ``answer_to``."""
        (block,) = [b for b in message["blocks"] if b["type"] == "actions"]
        (element,) = [e for e in block["elements"] if e["action_id"] == action_id]
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block["block_id"],
            "type": element["type"],
            "action_ts": f"{time.time():.6f}",
        }
        if "value" in element:
            action["value"] = element["value"]
        if selected is not None:
            (option,) = [o for o in element["options"] if o["value"] == selected]
            action["selected_option"] = option
        payload = block_actions(
            message,
            action,
            channel=CHANNEL,
            user=user,
            name=name,
            trigger=trigger,
            response_url=self.slack.response_url(answer_to),
        )
        return urlencode({"payload": json.dumps(payload)})

    def command(
        self, text: str, *, user: str = LEAD, trigger: str = "9.1", answer_to: str = "c"
    ) -> str:
        """The form Slack posts for ``/supersede <text>``."""
        url = self.slack.response_url(answer_to)
        return urlencode(
            slash_command(text, channel=CHANNEL, user=user, trigger=trigger, response_url=url)
        )

    def answer(self, name: str) -> str:
        """The text posted to response_url ``name`` (waits for it)."""
        found = wait_for(
            lambda: [r for r in self.slack.responses if r["url_name"] == name],
            30,
            f"an answer at response_url {name}",
        )
        assert len(found) == 1, found
        assert found[0].get("response_type") == "ephemeral"
        return str(found[0]["text"])

    def ignored(self, count: int) -> None:
        """Wait until ``count`` requests have been ignored as seen before."""
        wait_for(
            lambda: sum("seen before" in r.getMessage() for r in self.records) >= count,
            30,
            f"{count} repeated requests ignored",
        )

    def cli(self, *args: str) -> str:
        done = supersede(
            *args, "-c", str(self.config), cwd=self.config.parent, env={"COLUMNS": "250"}
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def time_now() -> Any:
    from core.clock import now

    return now()


class _Records(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture
def world(
    tmp_path: Path, zoo: Zoo, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    with SlackServer(token=TOKEN, usergroups={GROUP: [MEMBER]}) as slack:
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
        sections: dict[str, Any] = {
            "finetunes": [
                {
                    "name": "reviews",
                    "task": str(SHIPPED_TASK),
                    "base": str(zoo.base),
                    "adapter": str(zoo.adapter),
                }
            ],
            "notify": {"slack": {"channel": CHANNEL, "operators": [LEAD, GROUP]}},
            "retune": {"when": "never"},
        }
        settings = build_settings(tmp_path, endpoint=hub, **sections)
        config = write_settings(tmp_path, endpoint=hub, **sections)
        sent = Sent()
        pipeline = Pipeline(settings, JobStore(settings.store.url), sent, make_notifier(settings))
        app = SlackApp(settings, pipeline)
        router = Router("slack-test")
        app.mount(router)
        server = Server(router, "127.0.0.1", 0, name="slack-test", limits=Limits())
        server.start()
        records: list[logging.LogRecord] = []
        handler = _Records(records)
        logger = logging.getLogger("workers.notify.interact")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        url = f"http://127.0.0.1:{server.port}/slack/events"
        try:
            yield World(settings, pipeline, sent, slack, hub, zoo, url, config, records)
        finally:
            logger.removeHandler(handler)
            server.stop()


def test_a_verdict_message_carries_valid_buttons(world: World) -> None:
    world.release("acme/stronger")
    message = world.verdict_message("acme/stronger")
    valid(message["blocks"])
    (block,) = [b for b in message["blocks"] if b["type"] == "actions"]
    ids = [e["action_id"] for e in block["elements"]]
    # Re-tune is hidden: retune.when is never here.
    assert ids == ["supersede_rerun", "supersede_ack", "supersede_mute"]
    mute = block["elements"][-1]
    assert [o["text"]["text"] for o in mute["options"]] == ["acme: 7 days", "acme: 30 days"]


def test_a_rerun_click_makes_one_job_and_the_same_request_again_none(world: World) -> None:
    world.release("acme/stronger")
    message = world.verdict_message("acme/stronger")
    before = list(world.sent.benchmarks())

    body = world.click(message, "supersede_rerun", trigger="100.1", answer_to="first")
    started = time.monotonic()
    answered = world.post(body)
    assert answered.status_code == 200
    assert time.monotonic() - started < 3  # Slack's deadline: acknowledged, the work after
    text = world.answer("first")
    # One benchmark sent (the fine-tune's job of this release, reset and queued again).
    new = world.sent.benchmarks()[len(before) :]
    assert len(new) == 1, world.sent.sent
    assert f"job {new[0][:12]} queued" in text and "against reviews" in text
    job = world.pipeline.jobs.get(new[0])
    assert job is not None and job.state == "queued"
    assert job.requested_by == f"slack:{LEAD} (alice)"

    # Slack retrying the request (or someone replaying it): no second job, no second answer.
    again = world.post(body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    assert again.status_code == 200
    world.ignored(1)
    assert world.sent.benchmarks()[len(before) :] == new
    # A second click while that run is queued: told so, nothing queued.
    world.post(world.click(message, "supersede_rerun", trigger="100.2", answer_to="second"))
    assert "already being re-run" in world.answer("second")
    assert world.sent.benchmarks()[len(before) :] == new
    assert len([r for r in world.slack.responses if r["url_name"] == "first"]) == 1

    rows = ActionLog(world.settings.store.url).list()
    assert sorted((r.user_id, r.action) for r in rows) == [(LEAD, "rerun"), (LEAD, "rerun")]
    status = world.cli("status")
    assert f"requested by slack:{LEAD} (alice)" in status and new[0][:12] in status


def test_bad_signatures_and_stale_requests_are_refused(world: World) -> None:
    world.release("acme/stronger")
    message = world.verdict_message("acme/stronger")
    before = world.sent.benchmarks()
    body = world.click(message, "supersede_rerun", trigger="200.1")

    assert world.post(body, secret="not-the-secret").status_code == 401
    assert world.post(body, age_s=600).status_code == 401  # ten minutes old
    # Signed, then changed on the way: the signature no longer matches.
    ts = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
    tampered = httpx.post(
        world.url,
        content=body.replace("alice", "admin"),
        timeout=10,
        headers={
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert tampered.status_code == 401
    unsigned = httpx.post(
        world.url,
        content=body,
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 401
    assert world.sent.benchmarks() == before
    assert [r for r in ActionLog(world.settings.store.url).list() if r.action == "rerun"] == []


def test_someone_not_an_operator_is_refused_and_recorded(world: World) -> None:
    world.release("acme/stronger")
    message = world.verdict_message("acme/stronger")
    before = world.sent.benchmarks()

    world.post(
        world.click(
            message,
            "supersede_rerun",
            user=OUTSIDER,
            name="mallory",
            trigger="300.1",
            answer_to="no",
        )
    )
    assert "not allowed" in world.answer("no")
    assert world.sent.benchmarks() == before
    (row,) = ActionLog(world.settings.store.url).list()
    assert (row.user_id, row.action, row.outcome) == (
        OUTSIDER,
        "refused",
        f"not allowed: rerun {message['blocks'][-1]['elements'][0]['value']}",
    )


def test_acknowledge_updates_the_message_in_place_with_the_name(world: World) -> None:
    world.release("acme/stronger")
    message = world.verdict_message("acme/stronger")

    # A member of the operators' user group may act.
    world.post(
        world.click(
            message, "supersede_ack", user=MEMBER, name="bob", trigger="400.1", answer_to="ack"
        )
    )
    assert "acknowledged by @bob" in world.answer("ack")
    (update,) = world.slack.calls("chat.update")
    assert update.params["ts"] == message["ts"] and "acknowledged by @bob" in update.params["text"]
    shown = world.verdict_message("acme/stronger")
    valid(shown["blocks"])
    assert "Acknowledged by <@U0MEMBER> (@bob)" in json.dumps(shown["blocks"])
    (block,) = [b for b in shown["blocks"] if b["type"] == "actions"]
    assert "supersede_ack" not in [e["action_id"] for e in block["elements"]]

    world.post(world.click(message, "supersede_ack", trigger="400.2", answer_to="twice"))
    assert world.answer("twice").startswith("Already acknowledged by @bob")
    assert len(world.slack.calls("chat.update")) == 1


def test_a_muted_organisation_is_benchmarked_not_posted_until_lifted(world: World) -> None:
    world.release("acme/stronger")
    message = world.verdict_message("acme/stronger")
    world.post(
        world.click(message, "supersede_mute", selected="7", trigger="500.1", answer_to="mute")
    )
    assert world.answer("mute").startswith("Muted acme for 7 days")
    assert "acme muted until" in world.cli("mute", "list")
    posts = len(world.slack.posts(CHANNEL))

    world.release("acme/stronger-2")
    verdicts = [
        j
        for j in world.pipeline.jobs.list()
        if j.kind == "verdict" and j.candidate.startswith("acme/stronger-2")
    ]
    assert len(verdicts) == 1 and verdicts[0].state == "notified" and verdicts[0].result
    assert verdicts[0].muted is not None and "acme muted until" in verdicts[0].muted
    assert len(world.slack.posts(CHANNEL)) == posts

    assert "no longer muted" in world.cli("mute", "lift", "acme")
    world.release("acme/stronger-3")
    assert len(world.slack.posts(CHANNEL)) == posts + 1
    world.verdict_message("acme/stronger-3")


def test_the_slash_command_answers_status_mute_and_usage(world: World) -> None:
    status = world.post(world.command("status", trigger="600.1"))
    assert status.status_code == 200 and "No jobs yet" in status.json()["text"]

    world.post(world.command("mute acme 30", trigger="600.2", answer_to="m"))
    assert world.answer("m").startswith("Muted acme for 30 days")
    world.post(world.command("unmute acme", trigger="600.3", answer_to="u"))
    assert "no longer muted" in world.answer("u")
    usage = world.post(world.command("dance", trigger="600.4"))
    assert "Usage:" in usage.json()["text"]
    world.post(world.command("mute acme 30", user=OUTSIDER, trigger="600.5", answer_to="x"))
    assert "not allowed" in world.answer("x")
    assert world.pipeline.mutes.active() == []


def test_the_slash_command_reruns_a_hub_model(world: World) -> None:
    sha = world.hub.add_repo("acme/fresh", world.zoo.stronger, extra=SMALL)
    world.post(world.command(f"rerun acme/fresh@{sha}", trigger="700.1", answer_to="r"))
    text = world.answer("r")
    (key,) = world.sent.benchmarks()
    assert f"job {key[:12]} queued" in text
    job = world.pipeline.jobs.get(key)
    assert job is not None and job.requested_by == f"slack:{LEAD} (alice)"
    assert sha in job.candidate


def test_the_manifest_matches_what_the_app_answers_and_calls() -> None:
    import yaml

    from config.notify import SlackSettings
    from workers.notify.interact import USAGE

    manifest = yaml.safe_load((REPO / "config" / "slack-app-manifest.yaml").read_text())
    path = SlackSettings().events_path
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/supersede" and command["url"].endswith(path)
    assert manifest["settings"]["interactivity"]["request_url"].endswith(path)
    for verb in ("status", "rerun", "mute", "unmute"):
        assert verb in command["usage_hint"] and f"/supersede {verb}" in USAGE
    # chat.postMessage / chat.update, conversations.history / replies, the slash command, and
    # usergroups.users.list (operators given as a user group).
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "channels:history", "commands", "usergroups:read"} <= scopes
