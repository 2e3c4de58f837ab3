"""Polling the Hub through the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from config.settings import Settings
from tests.support.hub_server import HubServer
from tests.watcher.conftest import days_ago
from watcher.discovery import Discovery
from watcher.publish import Collect
from watcher.sources.hub import HUB
from watcher.state import WatchState

Discover = Callable[[Settings], tuple[Discovery, Collect]]


def listings(hub: HubServer) -> list[str]:
    return [path for method, path in hub.requests if path.startswith("/api/models?")]


@pytest.fixture
def org(publish_model: Callable[..., str]) -> dict[str, str]:
    """acme's page on the Hub: two foundation releases and each kind of derivative."""
    shas = {
        "acme/Acme-7B": publish_model("acme/Acme-7B"),
        "acme/Acme-7B-Instruct": publish_model(
            "acme/Acme-7B-Instruct", tags=("base_model:finetune:acme/Acme-7B",)
        ),
    }
    publish_model("acme/Acme-7B-Instruct-AWQ", tags=("awq", "base_model:quantized:acme/Acme-7B"))
    publish_model("acme/Acme-7B-GGUF", library_name="gguf", params=None)
    publish_model("acme/Acme-7B-mlx", library_name="mlx")
    publish_model("acme/Acme-7B-exl2")
    publish_model(
        "acme/Acme-7B-lora",
        tags=("base_model:adapter:acme/Acme-7B",),
        files={"adapter_config.json": b"{}", "adapter_model.safetensors": b"x" * 8},
    )
    publish_model("acme/Acme-Merge", tags=("base_model:merge:acme/Acme-7B",))
    publish_model("acme/Llama-8B-acme-ft", tags=("base_model:finetune:meta/Llama-8B",))
    publish_model("acme/acme-embed", pipeline_tag="feature-extraction")
    publish_model("acme/Acme-Old-13B", created=days_ago(40))
    publish_model("acme/Acme-Soon", files={"README.md": b"# coming soon"})
    return shas


def released(events: list[Any]) -> dict[str, str | None]:
    return {e.repo_id: e.revision for e in events if e.kind == "model_released"}


def test_exactly_the_foundation_models(
    hub: HubServer, org: dict[str, str], watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    discovery, collected = discover(watch_settings(hub))
    report = discovery.poll(HUB)
    assert report.status == "ok", report.error
    assert released(collected.events) == org
    assert released(report.events) == org
    assert report.baseline == 1  # the 40-day-old model
    assert report.dropped == 8  # and acme/Acme-Soon waits for its weights
    # One listing request per author, and no per-model request.
    assert len(hub.requests) == 1 and len(listings(hub)) == 1
    query = listings(hub)[0]
    for field in ("safetensors", "tags", "cardData", "siblings", "sha", "createdAt", "gated"):
        assert f"expand={field}" in query
    assert "author=acme" in query and "sort=createdAt" in query
    event = next(e for e in collected.events if e.repo_id == "acme/Acme-7B")
    assert event.params == 7_000_000_000 and event.source == HUB
    assert event.link == f"{hub.url}/acme/Acme-7B"

    again = discovery.poll(HUB)
    assert again.events == [] and len(collected.events) == 2


def test_a_restart_announces_nothing_again(
    hub: HubServer, org: dict[str, str], watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    settings = watch_settings(hub)
    first, _ = discover(settings)
    first.poll(HUB)
    restarted, collected = discover(settings)
    assert restarted.poll(HUB).events == [] and collected.events == []
    assert WatchState(settings.store.url).counts() == {"baseline": 1, "model_released": 2}


def test_repos_become_releases_once_their_weights_arrive(
    hub: HubServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    publish_model("acme/Acme-2", files={"README.md": b"soon"})
    discovery, _ = discover(watch_settings(hub))
    assert discovery.poll(HUB).events == []
    sha = publish_model("acme/Acme-2")
    assert released(discovery.poll(HUB).events) == {"acme/Acme-2": sha}


def test_a_new_commit_of_a_released_repo_is_an_update_not_a_release(
    hub: HubServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    settings = watch_settings(hub)
    first_sha = publish_model("acme/Acme-7B")
    discovery, collected = discover(settings)
    discovery.poll(HUB)
    second_sha = publish_model("acme/Acme-7B", files={"config.json": b"{}", "x.safetensors": b"y"})
    assert second_sha != first_sha
    assert discovery.poll(HUB).events == []
    assert released(collected.events) == {"acme/Acme-7B": first_sha}
    assert WatchState(settings.store.url).counts() == {"model_released": 1, "update": 1}


def test_rate_limit_with_a_short_retry_after_is_waited_out(
    hub: HubServer, org: dict[str, str], watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    hub.fail_next("/api/models?author=acme", 429, {"Retry-After": "1"})
    discovery, collected = discover(watch_settings(hub))
    report = discovery.poll(HUB)
    assert report.status == "ok"
    assert released(collected.events) == org
    assert len(listings(hub)) == 2  # the 429, then the retry


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "3600"},
        {"RateLimit": '"api";r=0;t=3600', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'},
    ],
)
def test_a_long_rate_limit_backs_the_source_off(
    hub: HubServer,
    org: dict[str, str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
    headers: dict[str, str],
) -> None:
    hub.fail_next("/api/models?author=acme", 429, headers)
    settings = watch_settings(hub, authors=("acme", "beta"))
    discovery, collected = discover(settings)
    started = time.monotonic()
    report = discovery.poll(HUB)
    assert time.monotonic() - started < 10  # not slept through
    assert report.status == "failed" and "3600" in str(report.error)
    assert len(listings(hub)) == 1  # the other author is not asked while rate-limited
    state = WatchState(settings.store.url).source(HUB)
    assert state.not_before is not None and state.failures == 1
    assert 3500 < (state.not_before.timestamp() - time.time()) <= 3600

    later = discovery.poll(HUB)
    assert later.status == "backing_off" and len(listings(hub)) == 1
    assert collected.events == []


def test_server_errors_are_retried_then_reported(
    hub: HubServer, org: dict[str, str], watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    hub.fail_next("/api/models?author=acme", 500, count=2)
    discovery, collected = discover(watch_settings(hub))
    assert discovery.poll(HUB).status == "ok"  # huggingface_hub's own back-off: 1 s, 2 s
    assert released(collected.events) == org


def test_a_hung_hub_times_out_and_the_retry_succeeds(
    hub: HubServer, org: dict[str, str], watch_settings: Callable[..., Settings], discover: Discover
) -> None:
    hub.hang_next("/api/models?author=acme", 30)
    discovery, collected = discover(watch_settings(hub, read_timeout_s=0.5))
    started = time.monotonic()
    assert discovery.poll(HUB).status == "ok"
    assert time.monotonic() - started < 10
    assert released(collected.events) == org


def test_one_failing_author_does_not_stop_the_others(
    hub: HubServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
) -> None:
    sha = publish_model("beta/Beta-3B")
    hub.fail_next("/api/models?author=acme", 404, count=1)
    discovery, collected = discover(watch_settings(hub, authors=("acme", "beta")))
    report = discovery.poll(HUB)
    assert report.status == "failed"  # recorded, so the operator sees it
    assert released(collected.events) == {"beta/Beta-3B": sha}


def test_the_token_is_sent_and_private_repos_stay_hidden_without_it(
    hub: HubServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    discover: Discover,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sha = publish_model("acme/Acme-Secret", private=True)
    hub.grant("acme/Acme-Secret", "hf_granted")
    discovery, _ = discover(watch_settings(hub))
    assert discovery.poll(HUB).events == []
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    from config.settings import Secrets

    with_token = watch_settings(hub).model_copy(update={"secrets": Secrets()})
    discovery, _ = discover(with_token)
    assert released(discovery.poll(HUB).events) == {"acme/Acme-Secret": sha}
