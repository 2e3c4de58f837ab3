"""Fixtures of the watcher tests: settings pointing at local servers, a store, model repos."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from config.watch import FeedWatch, HubWatch, WatchSettings, WebhookWatch
from tests.support.feed_server import FeedServer
from tests.support.hub_server import HubServer
from tests.support.serving import served
from tests.support.settings import build_settings
from watcher.discovery import Discovery
from watcher.publish import Collect
from watcher.state import WatchState

#: Fast timeouts: the fault tests wait for them.
FAST = {"connect_timeout_s": 2.0, "read_timeout_s": 1.0, "feed_deadline_s": 5.0}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def days_ago(days: float) -> str:
    return iso(datetime.now(UTC) - timedelta(days=days))


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    yield from served(FeedServer())


@pytest.fixture
def weights(tmp_path: Path) -> Callable[..., Path]:
    """A folder with a model's files (by default ``config.json`` + a tiny safetensors file)."""
    counter = iter(range(1_000_000))

    def make(files: dict[str, bytes] | None = None) -> Path:
        folder = tmp_path / f"repo-{next(counter)}"
        folder.mkdir()
        default = {"config.json": b'{"model_type": "llama"}', "model.safetensors": _tiny_tensor()}
        for name, data in (default if files is None else files).items():
            (folder / name).write_bytes(data)
        return folder

    return make


def _tiny_tensor() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 16


@pytest.fixture
def publish_model(hub: HubServer, weights: Callable[..., Path]) -> Callable[..., str]:
    """Publish a repo on the local Hub with listing metadata; returns its commit sha."""

    def publish(
        repo_id: str,
        *,
        tags: tuple[str, ...] = (),
        pipeline_tag: str | None = "text-generation",
        library_name: str | None = "transformers",
        params: int | None = 7_000_000_000,
        created: str | None = None,
        files: dict[str, bytes] | None = None,
        card: dict[str, Any] | None = None,
        **repo_options: Any,
    ) -> str:
        extra: dict[str, Any] = {
            "tags": list(tags),
            "pipeline_tag": pipeline_tag,
            "library_name": library_name,
        }
        if params is not None:
            extra["safetensors"] = {"parameters": {"BF16": params}, "total": params}
        if created is not None:
            extra["createdAt"] = created
            extra["lastModified"] = created
        if card is not None:
            extra["cardData"] = card
        return hub.add_repo(repo_id, weights(files), extra=extra, **repo_options)

    return publish


@pytest.fixture
def watch_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings whose watcher reads the given local servers, with a private SQLite store."""

    def make(
        hub: HubServer | None = None,
        *,
        authors: tuple[str, ...] = ("acme",),
        feeds: tuple[FeedWatch, ...] = (),
        store_url: str | None = None,
        webhook: WebhookWatch | None = None,
        hub_rules: dict[str, Any] | None = None,
        **watch: Any,
    ) -> Settings:
        return build_settings(
            tmp_path,
            endpoint=hub,
            store={"url": store_url} if store_url else {},
            hub={"timeout_s": 5},
            watch=WatchSettings(
                hub=HubWatch(authors=authors, **(hub_rules or {})),
                feeds=feeds,
                webhook=webhook or WebhookWatch(),
                **{**FAST, **watch},
            ),
        )

    return make


@pytest.fixture
def discover() -> Callable[[Settings], tuple[Discovery, Collect]]:
    """A Discovery over ``settings``' store whose publisher collects the events."""

    def make(settings: Settings) -> tuple[Discovery, Collect]:
        collected = Collect()
        return Discovery(settings, WatchState(settings.store.url), collected), collected

    return make
