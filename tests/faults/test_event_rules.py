"""What a release may make a worker do, and what its text may do to a terminal.

A release crosses the broker and the store, which others may be able to write to. It names an API
model and the configured rule that serves it, nothing more: the endpoint, the key variable and the
prices come from the worker's own configuration. A forged (or earlier version's) release that
carries an endpoint of its own, say an attacker's URL and ``HF_TOKEN`` as the key variable, is
refused and recorded; no request ever leaves for the URL it names and the token appears nowhere.
Free text from feeds reaches the terminal and the logs without control characters or escape
sequences.
"""

from __future__ import annotations

import io
import json
import logging
import unicodedata
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from config.settings import Settings, load_settings
from core.clock import now
from core.constants import TASK_BENCHMARK, TASK_VERDICT, JobState
from supersede.cli.jobs import status
from supersede.demo.zoo import Zoo
from tests.conftest import SHIPPED_TASK
from tests.support.feed_server import FeedServer
from tests.support.openai_server import OpenAIServer
from tests.support.serving import served
from tests.support.settings import write_settings
from tests.support.tasks import write_task
from watcher.discovery import Discovery
from watcher.events import Announcement, ApiRelease, Event, ModelReleased
from watcher.publish import Collect
from watcher.state import WatchState
from workers.jobs import JobStore
from workers.manual import rerun
from workers.notify.console import ConsoleNotifier
from workers.pipeline import Pipeline

SENTINEL = "hf_FAKE_Zq71sentinel_hub_token"
KEY = "sk-vendor-Zq71-the-configured-key"
RULE = {"name": "acme-api", "pattern": r"\b(acme-mini-\d{4})\b", "api_key_env": "VENDOR_KEY",
        "input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0}  # fmt: skip
CANDIDATE = {"name": "vendor-mini", "model": "mini-2026", "api_key_env": "VENDOR_KEY"}
_EVENT: TypeAdapter[ModelReleased | Announcement] = TypeAdapter(Event)


@pytest.fixture(scope="module")
def small_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped review task on its first 20 test rows (fast on both sides)."""
    config = yaml.safe_load(SHIPPED_TASK.read_text())
    return write_task(tmp_path_factory.mktemp("task"), config, test_rows=20)


@pytest.fixture
def attacker() -> Iterator[OpenAIServer]:
    """A server the forged releases point at: it must never hear from a worker."""
    yield from served(OpenAIServer())


@pytest.fixture
def vendor() -> Iterator[OpenAIServer]:
    """The endpoint the configuration names, answering only with the configured key."""
    server = OpenAIServer(logprobs=False)
    server.require_key(KEY)
    yield from served(server)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("VENDOR_KEY", KEY)


def config_file(
    tmp_path: Path,
    task: Path,
    vendor_url: str,
    feed_url: str = "https://a.example/rss",
    zoo: Zoo | None = None,
) -> Path:
    """Settings with one fine-tune (the tiny zoo's when it is scored, else a Hub id never
    loaded), the vendor as an ``api_candidates`` entry and as the ``acme`` feed's rule."""
    base = (
        {"base": str(zoo.base), "adapter": str(zoo.adapter)} if zoo else {"model": "acme/Tuned-1B"}
    )
    finetune = {"name": "reviews", "task": str(task), **base}
    feed = {"name": "acme", "url": feed_url, "api_models": [{**RULE, "base_url": vendor_url}]}
    return write_settings(
        tmp_path,
        finetunes=[finetune],
        api_candidates=[{**CANDIDATE, "base_url": vendor_url}],
        watch={"feeds": [feed]},
        notify={"console_dir": str(tmp_path / "console")},
    )


class Sent:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, task: str, key: str, queue: str) -> None:
        self.sent.append((task, key, queue))


def pipeline_for(settings: Settings, stream: Any = None) -> tuple[Pipeline, Sent]:
    sent = Sent()
    notifier = ConsoleNotifier(settings, stream=stream)
    return Pipeline(settings, JobStore(settings.store.url), sent, notifier), sent


def forged(url: str, **api: Any) -> dict[str, Any]:
    """A release as an earlier version wrote it, or as someone with broker access forges it."""
    endpoint = {"model": "acme-mini", "base_url": url, "api_key_env": "HF_TOKEN", **api}
    return {"kind": "model_released", "source": "feed:acme", "detected_at": now().isoformat(),
            "api": endpoint, "title": "acme-mini is out"}  # fmt: skip


def store_text(tmp_path: Path) -> str:
    """Every byte the SQLite store holds (the database and its journal)."""
    return "".join(
        path.read_bytes().decode("latin-1") for path in tmp_path.glob("store.db*") if path.is_file()
    )


def test_a_forged_release_never_sends_a_token_to_the_url_it_names(
    tmp_path: Path,
    zoo: Zoo,
    small_task: Path,
    attacker: OpenAIServer,
    vendor: OpenAIServer,
    secrets: None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # The fine-tune can be scored: the job would go on to call the candidate's endpoint.
    path = config_file(tmp_path, small_task, vendor.url, zoo=zoo)
    stream = io.StringIO()
    pipeline, sent = pipeline_for(load_settings(path), stream)
    jobs = pipeline.jobs

    # 1. A release message on the broker (what the release task reads and plans).
    (planned,) = pipeline.plan(_EVENT.validate_python(forged(attacker.url)))
    # 2. A benchmark job written into the store and sent to a worker, with its verdict job.
    jobs.add(
        key="forged-benchmark",
        kind="benchmark",
        candidate="api:acme-mini",
        queue="default",
        state="queued",
        payload={"event": forged(attacker.url), "finetunes": ["reviews"]},
    )
    jobs.add(key="forged-verdict", kind="verdict", candidate="api:acme-mini", finetune="reviews",
             parent="forged-benchmark", queue="default", state="queued",
             payload={"event": forged(attacker.url, input_usd_per_1m=0)})  # fmt: skip
    pipeline.run_benchmark(planned, "w1")  # as if its message had been sent anyway
    steps = [
        pipeline.run_verdict("forged-verdict", "w1"),
        pipeline.run_benchmark("forged-benchmark", "w1"),
    ]
    # Nothing reached the URL the releases named; the configured endpoint was not asked either.
    leaked = [r.headers.get("authorization") for r in attacker.requests]
    assert attacker.requests == [] and vendor.requests == [], leaked
    assert [step.outcome for step in steps] == ["failed"] * 2
    assert TASK_BENCHMARK not in [task for task, _, _ in sent.sent]  # never sent to run
    # 3. One whose endpoint sits beside the release rather than in it: unreadable, refused too.
    unreadable = {**forged(attacker.url), "base_url": attacker.url, "api_key_env": "HF_TOKEN"}
    jobs.add(key="forged-unreadable", kind="benchmark", candidate="api:acme-mini",
             queue="default", state="queued",
             payload={"event": unreadable, "finetunes": ["reviews"]})  # fmt: skip
    assert pipeline.run_benchmark("forged-unreadable", "w1").outcome == "failed"

    refused = [jobs.get(key) for key in (planned, "forged-benchmark", "forged-verdict")]
    for job in refused:
        assert job is not None and job.state == "skipped", job
        assert "refused" in str(job.reason) and "base_url" in str(job.reason), job.reason
        assert "api_key_env" in str(job.reason) and attacker.url not in str(job.reason)
    bad = jobs.get("forged-unreadable")
    assert bad is not None and bad.state == "skipped"
    assert "refused: its event cannot be read" in str(bad.reason), bad.reason
    # The planned release keeps the model and the names of what it carried, not the endpoint.
    assert attacker.url not in json.dumps(jobs.get(planned).payload)  # type: ignore[union-attr]
    for job in jobs.list():
        pipeline.notify(job.key)
    assert attacker.requests == [] and vendor.requests == []
    # The refusals are what `supersede status` shows.
    status(limit=50, as_json=True, config=path)
    shown = capsys.readouterr().out
    assert shown.count("refused") >= 4
    # The token is nowhere: not in the server's log, the store, the logs, the messages.
    seen = [caplog.text, stream.getvalue(), shown, store_text(tmp_path), repr(attacker.requests)]
    seen += [p.read_text() for p in (tmp_path / "console").glob("*.json")]
    assert stream.getvalue() and all(SENTINEL not in text for text in seen)


def test_a_release_naming_an_unknown_rule_is_refused_and_recorded(
    tmp_path: Path, small_task: Path, vendor: OpenAIServer, secrets: None
) -> None:
    path = config_file(tmp_path, small_task, vendor.url)
    settings = load_settings(path)
    pipeline, sent = pipeline_for(settings)
    unknown = {
        ApiRelease(model="acme-mini-2026", rule="no-such-rule", feed="acme"): "not configured",
        ApiRelease(model="acme-mini-2026", rule="acme-api", feed="gone"): "no such feed",
        ApiRelease(model="mini-2026", rule="no-such-candidate"): "not configured",
        ApiRelease(model="other-model", rule="vendor-mini"): "serves the model 'mini-2026'",
    }
    for api, why in unknown.items():
        (key,) = pipeline.plan(ModelReleased(source="feed:acme", detected_at=now(), api=api))
        job = pipeline.jobs.get(key)
        assert job is not None and job.state == "skipped", job
        assert "refused" in str(job.reason) and why in str(job.reason), job.reason
        assert {c.state for c in pipeline.jobs.children(key)} == {"skipped"}
    assert sent.sent and {task for task, _, _ in sent.sent} == {"supersede.notify"}

    # Planned while the rule was configured, run by a worker whose configuration lost it: the
    # worker's own configuration decides.
    good = ApiRelease(model="acme-mini-2026", rule="acme-api", feed="acme")
    (key,) = pipeline.plan(ModelReleased(source="feed:acme", detected_at=now(), api=good))
    assert pipeline.jobs.get(key).state == "queued"  # type: ignore[union-attr]
    feeds = ({"name": "acme", "url": "https://a.example/rss"},)
    narrower = settings.model_copy(update={"watch": settings.watch.model_copy(
        update={"feeds": tuple(type(settings.watch.feeds[0])(**f) for f in feeds)})})  # fmt: skip
    worker, _ = pipeline_for(narrower)
    assert worker.run_benchmark(key, "w2").outcome == "failed"
    job = worker.jobs.get(key)
    assert job is not None and job.state == "skipped"
    assert "api_models rule 'acme-api' of the feed 'acme'" in str(job.reason), job.reason
    assert vendor.requests == []


def test_a_configured_rule_benchmarks_with_the_workers_own_key(
    tmp_path: Path, zoo: Zoo, small_task: Path, vendor: OpenAIServer, secrets: None
) -> None:
    settings = load_settings(config_file(tmp_path, small_task, vendor.url, zoo=zoo))
    pipeline, sent = pipeline_for(settings)
    release = ApiRelease(model="acme-mini-2026", rule="acme-api", feed="acme")
    (key,) = pipeline.plan(ModelReleased(source="feed:acme", detected_at=now(), api=release))
    assert pipeline.run_benchmark(key, "w1").outcome == "done"
    (verdict,) = pipeline.jobs.children(key)
    assert (TASK_VERDICT, verdict.key, "default") in sent.sent
    assert pipeline.run_verdict(verdict.key, "w1").outcome == "done"
    report = pipeline.jobs.get(verdict.key).verdict()  # type: ignore[union-attr]
    assert report is not None and report.cost_per_1k_candidate  # the rule's prices

    # `supersede rerun <api_candidates name>` still works: the release names the entry.
    (again,) = rerun(pipeline, "vendor-mini")
    assert pipeline.run_benchmark(again, "w1").outcome == "done"

    models = {r.body["model"] for r in vendor.requests if r.body}
    assert models == {"acme-mini-2026", "mini-2026"}
    assert {r.headers.get("authorization") for r in vendor.requests} == {f"Bearer {KEY}"}
    assert all(r.status == 200 for r in vendor.requests)


# ---------------------------------------------------------------------------- item: feed text

HOSTILE = "\x1b[2J\x1b]0;pwned\x07Caf\u00e9 \x1b[31mlaunch\x1b[0m\x9b1m \U0001f680\x00\x7f\x85"


def rss(items: list[tuple[str, str, str]]) -> bytes:
    when = format_datetime(now() - timedelta(hours=1), usegmt=True)
    body = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title><link>https://acme.example/{guid}</link>"
        f"<description>{text}</description><pubDate>{when}</pubDate></item>"
        for guid, title, text in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Acme</title>'
        f"<link>https://acme.example/</link>{body}</channel></rss>"
    ).encode()


def controls(text: str) -> list[str]:
    """Control characters other than the line breaks a multi-line message is made of."""
    return [c for c in text if unicodedata.category(c) == "Cc" and c != "\n"]


def test_feed_text_reaches_the_terminal_and_logs_without_control_characters(
    tmp_path: Path,
    small_task: Path,
    vendor: OpenAIServer,
    secrets: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with FeedServer() as feeds:
        url = feeds.publish(
            "/rss.xml",
            rss(
                [
                    ("post-1", f"Safety notes {HOSTILE}", f"Summary {HOSTILE}"),
                    ("post-2", f"acme-mini-2026 {HOSTILE}", "now in the API"),
                ]
            ),
        )
        settings = load_settings(config_file(tmp_path, small_task, vendor.url, url))
        discovery = Discovery(settings, WatchState(settings.store.url), Collect())
        report = discovery.poll("feed:acme")
    assert report.status == "ok", report.error
    assert {type(event).__name__ for event in report.events} == {"Announcement", "ModelReleased"}

    pipeline, _ = pipeline_for(settings)
    for event in report.events:
        pipeline.plan(event)
    stream = io.StringIO()
    on_terminal, in_logs = ConsoleNotifier(settings, stream), ConsoleNotifier(settings)
    for job in pipeline.jobs.list():
        if job.kind != "benchmark":
            pipeline.jobs.finish_as(job.key, JobState.SKIPPED, "not benchmarked here")
            told = pipeline.jobs.get(job.key)
            assert told is not None
            on_terminal.send(told)
            in_logs.send(told)  # no stream: a log line
    terminal, logged = stream.getvalue(), caplog.text
    assert "Safety notes" in terminal and "acme-mini-2026" in terminal
    assert "Safety notes" in logged and "notification" in logged
    assert "Caf\u00e9" in terminal and "\U0001f680" in terminal  # ordinary Unicode kept
    for text in (terminal, logged):
        assert controls(text) == [] and "pwned" not in text, repr(text)
