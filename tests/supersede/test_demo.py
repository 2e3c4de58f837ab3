"""End to end: ``supersede demo`` as a new user runs it, on Redis with a worker subprocess and on
the embedded default, with verdicts delivered to a local Slack server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis

from supersede.demo.zoo import Zoo
from tests.support.cli import supersede
from tests.support.slack_server import SlackServer

pytestmark = pytest.mark.slow
TOKEN = "xoxb-demo-token"
#: Flushed before and after the Redis run: a database of its own.
REDIS_URL = os.environ.get("SUPERSEDE_TEST_REDIS", "redis://127.0.0.1:6379/13")


@pytest.fixture
def workdir(tmp_path: Path, zoo: Zoo) -> Path:
    """A demo folder that already holds the session's tiny zoo (the demo reuses a complete one)."""
    folder = tmp_path / "demo"
    shutil.copytree(zoo.root, folder / "zoo")
    return folder


@pytest.mark.parametrize("broker", ["redis", "embedded"])
def test_the_demo_ends_with_both_verdicts_in_slack_and_a_report(
    workdir: Path, tmp_path: Path, broker: str
) -> None:
    url = REDIS_URL
    args = ["demo", "--workdir", str(workdir)]
    if broker == "redis":
        redis.Redis.from_url(url).flushdb()
        args += ["--broker", url]
    with SlackServer(token=TOKEN) as slack:
        done = supersede(
            *args,
            cwd=tmp_path,
            env={
                "SLACK_BOT_TOKEN": TOKEN,
                "SLACK_API_URL": slack.api_url,
                "SUPERSEDE_NOTIFY__SLACK__CHANNEL": "C0DEMO",
            },
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "SUPERSEDED" in done.stdout and "HOLDS" in done.stdout
        assert "newlab/Tiny-Chat-2" in done.stdout and "otherlab/Tiny-Mini" in done.stdout
        assert "Hub polling" in done.stdout and "the vendor feed" in done.stdout
        # One release message per release, one verdict reply in each thread: nothing twice.
        parents = slack.posts("C0DEMO")
        assert sorted(p["text"].split(":")[0] for p in parents) == [
            "New release newlab/Tiny-Chat-2",
            "New release otherlab/Tiny-Mini",
        ]
        verdicts = sorted(r["text"].split(":")[0] for p in parents for r in slack.replies(p["ts"]))
        assert verdicts == ["HOLDS", "SUPERSEDED"]
        assert slack.errors == []
    report = workdir / "report" / "index.html"
    assert f"Report: {report}" in done.stdout.replace("\n", "")
    page = report.read_text()
    assert "newlab/Tiny-Chat-2" in page and "otherlab/Tiny-Mini" in page
    assert len(list((workdir / "report" / "figures").glob("*.png"))) >= 2
    if broker == "redis":
        redis.Redis.from_url(url).flushdb()
