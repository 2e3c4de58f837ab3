"""``supersede poll --once --json`` as an operator runs it, against a local Hub and feeds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.cli import supersede
from tests.support.feed_server import FeedServer
from tests.support.hub_server import HubServer
from tests.support.settings import write_settings
from tests.watcher.conftest import days_ago
from tests.watcher.fixtures import load_fixture

REQUIRED = {"kind", "source", "detected_at"}


def write_config(tmp_path: Path, hub: HubServer, feeds: list[dict[str, Any]]) -> Path:
    watch = {
        "hub": {"authors": ["acme", "community"]},
        "feeds": feeds,
        "read_timeout_s": 2,
        "connect_timeout_s": 2,
    }
    return write_settings(tmp_path, endpoint=hub, watch=watch)


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_poll_once_reports_exactly_the_new_foundation_models(
    hub: HubServer,
    feeds: FeedServer,
    publish_model: Callable[..., str],
    tmp_path: Path,
) -> None:
    base = publish_model("acme/Acme-7B")
    instruct = publish_model("acme/Acme-7B-Instruct", tags=("base_model:finetune:acme/Acme-7B",))
    publish_model("acme/Acme-7B-GGUF", library_name="gguf")
    publish_model("acme/Acme-7B-AWQ", tags=("awq", "base_model:quantized:acme/Acme-7B"))
    publish_model("community/Acme-7B-roleplay", tags=("base_model:finetune:acme/Acme-7B",))
    publish_model("community/Acme-7B-lora", tags=("base_model:adapter:acme/Acme-7B",))
    publish_model("acme/Acme-Legacy-3B", created=days_ago(60))
    beta = publish_model("beta/Beta-3B")  # not a watched author: found through its feed
    rss = feeds.publish("/acme/rss.xml", load_fixture("vendor_rss.xml"))
    atom = feeds.publish("/beta/atom.xml", load_fixture("vendor_atom.xml"))
    api_rule = {"pattern": r"\b(acme-mini-\d{4}-\d{2})\b", "base_url": "https://api.acme.test/v1"}
    config = write_config(
        tmp_path,
        hub,
        [
            {"name": "acme-blog", "url": rss, "api_models": [api_rule]},
            {"name": "beta-news", "url": atom, "accept_from": ["beta"]},
        ],
    )

    first = supersede("poll", "--once", "--json", "--config", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    found = events(first.stdout)
    assert all(set(event) >= REQUIRED for event in found)
    releases = {(e["repo_id"], e["revision"]) for e in found if e.get("repo_id")}
    assert releases == {
        ("acme/Acme-7B", base),
        ("acme/Acme-7B-Instruct", instruct),
        ("beta/Beta-3B", beta),
    }
    api = [e for e in found if e["kind"] == "model_released" and not e.get("repo_id")]
    assert [e["api"]["model"] for e in api] == ["acme-mini-2026-11"]
    assert api[0]["source"] == "feed:acme-blog" and api[0]["link"].endswith("/blog/acme-mini")
    hub_events = [e for e in found if e.get("repo_id")]
    assert all(e["params"] == 7_000_000_000 for e in hub_events)
    announced = sorted(e["title"] for e in found if e["kind"] == "announcement")
    assert announced == [
        "Pricing changes for the Beta API",
        "Releasing the Acme Instruct Mix dataset",
        "Totally normal post <script>alert(1)</script> <!channel> <@U123>",
    ]
    assert len(found) == 7  # nothing else: no derivative, no baseline, no duplicate

    second = supersede("poll", "--once", "--json", "--config", str(config), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == ""


def test_poll_once_table_and_a_failing_source(
    hub: HubServer, feeds: FeedServer, publish_model: Callable[..., str], tmp_path: Path
) -> None:
    publish_model("acme/Acme-7B")
    broken = feeds.publish("/broken.xml", load_fixture("malformed.xml"))
    config = write_config(tmp_path, hub, [{"name": "broken", "url": broken}])
    done = supersede("poll", "--once", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 75, done.stderr  # EX_TEMPFAIL: a source failed; try again later
    assert "release       acme/Acme-7B@" in done.stdout
    assert "feed:broken" in done.stderr and "not a readable RSS or Atom document" in done.stderr


def test_a_bad_watch_config_is_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("watch:\n  hub:\n    include: ['(unclosed']\n")
    done = supersede("poll", "--once", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert "watch.hub.include" in done.stderr and "not a valid regular expression" in done.stderr
    assert "Traceback" not in done.stderr
