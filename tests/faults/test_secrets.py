"""Secrets never leak: not into logs, errors, the store, the report or Slack messages.

Fake but distinctive secrets are put where Supersede reads them (the environment), then one
realistic sequence runs that produces logs, errors and artefacts: a poll refused by the Hub, a
webhook delivery with a wrong and the right secret, a failed benchmark notified to a Slack that
refuses the token once, the HTML report, and an API candidate that refuses its key (and echoes
it). Everything produced is then searched for the secrets. The only place a secret may travel is
the request header that carries it to its own service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.api import run_api_task
from benchmarks.tasks import load_task
from config.settings import api_key, load_settings, secret
from core.constants import TASK_NOTIFY
from core.errors import EndpointRefused
from tests.conftest import SHIPPED_TASK
from tests.support.cli import supersede
from tests.support.hub_server import HubServer
from tests.support.openai_server import OpenAIServer
from tests.support.serving import served
from tests.support.settings import write_settings
from tests.support.slack_server import SlackServer
from tests.watcher.test_webhook import payload
from watcher.discovery import Discovery
from watcher.publish import Collect
from watcher.sources.webhook import SECRET_HEADER, WebhookHandler
from watcher.state import WatchState
from workers.jobs import JobStore
from workers.notify import make_notifier
from workers.pipeline import Pipeline

#: Every secret carries this in its middle: a truncated or partly masked leak is found too.
CANARY = "Qx93canary"
SECRETS = {
    "HF_TOKEN": f"hf_FAKE_{CANARY}_hubtoken_0001",
    "SLACK_BOT_TOKEN": f"xoxb-FAKE-{CANARY}-slack-0002",
    "VENDOR_X_KEY": f"sk-FAKE-{CANARY}-vendor-0003",
    "SUPERSEDE_WEBHOOK_SECRET": f"whsec-FAKE-{CANARY}-hook-0004",
}
RELEASE = "acme/Acme-9B"
FINETUNE_BASE = "acme/Secret-Base"


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    yield from served(SlackServer(token=SECRETS["SLACK_BOT_TOKEN"]))


@pytest.fixture
def vendor() -> Iterator[OpenAIServer]:
    server = OpenAIServer()
    server.require_key("sk-the-key-the-vendor-expects")
    yield from served(server)


def tiny_weights(folder: Path) -> Path:
    folder.mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})
    data = len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(data)
    return folder


def publish(hub: HubServer, tmp_path: Path) -> str:
    """A private release only the HF token can see (so the token is proven to be sent), and the
    fine-tune's gated base, which that token was never granted."""
    extra = {
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "safetensors": {"parameters": {"BF16": 1_000_000}, "total": 1_000_000},
    }
    sha = hub.add_repo(RELEASE, tiny_weights(tmp_path / "release"), private=True, extra=extra)
    hub.grant(RELEASE, SECRETS["HF_TOKEN"])
    hub.add_repo(FINETUNE_BASE, tiny_weights(tmp_path / "base"), gated=True, extra=extra)
    hub.grant(FINETUNE_BASE, "hf_someone_else")
    # The listing is refused: 401 for one author, 403 for the other.
    hub.fail_next("author=acme", 401)
    hub.fail_next("author=beta", 403)
    return sha


def write_config(tmp_path: Path, hub: HubServer, vendor: OpenAIServer) -> Path:
    return write_settings(
        tmp_path,
        endpoint=hub,
        hub={"timeout_s": 10},
        finetunes=[{"name": "reviews", "task": str(SHIPPED_TASK), "model": FINETUNE_BASE}],
        api_candidates=[
            {
                "name": "vendor-x",
                "base_url": vendor.url,
                "model": "vendor-x-large",
                "api_key_env": "VENDOR_X_KEY",
                "max_retries": 0,
            }
        ],
        watch={
            "hub": {"authors": ["acme", "beta"]},
            "connect_timeout_s": 2,
            "read_timeout_s": 5,
            "webhook": {"port": 0},
        },
        workers={"max_attempts": 1, "retry_backoff": 0},
        notify={
            "slack": {"channel": "C0LEADS", "max_attempts": 2},
            "console_dir": str(tmp_path / "notifications"),
        },
    )


def leaks(name: str, data: bytes) -> list[str]:
    found = [f"{name}: {var}" for var, value in SECRETS.items() if value.encode() in data]
    if not found and CANARY.encode() in data:
        found.append(f"{name}: part of a secret")
    return found


def test_secrets_never_leak(
    tmp_path: Path,
    hub: HubServer,
    slack: SlackServer,
    vendor: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publish(hub, tmp_path)
    config = write_config(tmp_path, hub, vendor)
    env = {**SECRETS, "SLACK_API_URL": slack.api_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    produced: dict[str, bytes] = {}

    # (a) One poll, refused by the Hub: error text and JSON logs on stderr (not a terminal).
    poll = supersede(
        "poll", "--once", "--json", "--verbose", "--config", str(config),
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    produced |= {"poll stdout": poll.stdout.encode(), "poll stderr": poll.stderr.encode()}
    assert poll.returncode == 75, poll.stderr[-2000:]
    log_lines = [json.loads(line) for line in poll.stderr.splitlines() if line.startswith("{")]
    assert log_lines and {"level", "logger", "message"} <= set(log_lines[0])
    assert "401" in poll.stderr and "403" in poll.stderr

    with caplog.at_level(logging.DEBUG):
        settings = load_settings(config)
        hook_secret = secret(settings.watch.webhook.secret_env)
        assert hook_secret == SECRETS["SUPERSEDE_WEBHOOK_SECRET"]

        # (b) Webhook deliveries: wrong secrets, then the right one.
        state = WatchState(settings.store.url)
        collected = Collect()
        handler = WebhookHandler(
            Discovery(settings, state, collected), hook_secret, settings.watch.webhook
        )
        body = json.dumps(payload(RELEASE)).encode()
        replies = [
            handler.handle({SECRET_HEADER: "whsec-not-the-one"}, body),
            handler.handle({SECRET_HEADER: hook_secret[:-1]}, body),
            handler.handle({SECRET_HEADER: hook_secret}, body),
        ]
        assert [reply.status for reply in replies] == [403, 403, 202]
        (event,) = collected.events
        produced["webhook replies"] = json.dumps(
            [(r.status, r.body, r.headers) for r in replies]
        ).encode()

        # (c) The release is benchmarked; the fine-tune's gated base refuses the token, the job
        # fails, and its verdict is notified to a Slack that refuses the bot token once.
        sent = _Sent()
        notifier = make_notifier(settings)
        pipeline = Pipeline(settings, JobStore(settings.store.url), sent, notifier)
        (key,) = pipeline.plan(event)
        step = pipeline.run_benchmark(key, "worker-1")
        assert step.outcome == "failed" and "HF_TOKEN" in str(step.reason)
        (verdict,) = sent.keys(TASK_NOTIFY)
        slack.fail_next("chat.postMessage", 200, body={"ok": False, "error": "invalid_auth"})
        assert pipeline.notify(verdict) is False
        assert pipeline.notify(verdict) is True
        assert len(slack.posts("C0LEADS")) == 1
        reasons = [job.reason or "" for job in pipeline.jobs.list()]
        produced["job reasons"] = json.dumps(reasons).encode()

        # (e) An API candidate whose endpoint refuses the key, echoing it in its error.
        candidate = settings.api_candidates[0]
        with pytest.raises(EndpointRefused) as refused:
            run_api_task(candidate, load_task(SHIPPED_TASK), api_key=api_key(candidate), limit=3)
        produced["endpoint error"] = f"{refused.value}\n{refused.value!r}".encode()
        assert "HTTP 401" in str(refused.value) and "$VENDOR_X_KEY" in str(refused.value)

    # (d) The report over that store.
    report_dir = tmp_path / "report"
    report = supersede(
        "report", "--out", str(report_dir), "--config", str(config),
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    produced |= {"report stdout": report.stdout.encode(), "report stderr": report.stderr.encode()}
    assert report.returncode == 0, report.stderr[-2000:]
    page = report_dir / "index.html"
    assert page.is_file() and RELEASE in page.read_text()

    # The secrets were really in use: each went to its own service, in its header only.
    assert all(r.headers.get("authorization") == f"Bearer {SECRETS['SLACK_BOT_TOKEN']}"
               for r in slack.requests)  # fmt: skip
    assert [r.error for r in slack.calls("chat.postMessage")][:1] == ["invalid_auth"]
    assert vendor.requests and all(
        r.headers.get("authorization") == f"Bearer {SECRETS['VENDOR_X_KEY']}"
        for r in vendor.requests
    )
    assert any("invalid_auth" in r.getMessage() for r in caplog.records)

    produced["caplog"] = caplog.text.encode()
    produced["slack messages"] = json.dumps(slack.messages).encode()
    produced["slack request bodies"] = json.dumps(
        [r.params for r in slack.requests], default=str
    ).encode()
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert any(p.name == "store.db" for p in files)
    for file in files:
        produced[str(file.relative_to(tmp_path))] = file.read_bytes()
    assert all(produced[name] for name in ("poll stderr", "caplog", "slack messages"))

    found = [leak for name, data in produced.items() for leak in leaks(name, data)]
    assert found == []


class _Sent:
    """Stands in for the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, name: str, key: str, queue: str) -> None:
        self.sent.append((name, key, queue))

    def keys(self, name: str) -> list[str]:
        return [key for sent, key, _ in self.sent if sent == name]
