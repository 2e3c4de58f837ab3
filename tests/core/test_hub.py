"""The one Hub adapter: a policy reaches its own calls only, never another call in the process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import get_session

from benchmarks.models import ModelResolver
from config.settings import HubSettings
from core.errors import HubUnavailable, ModelNotFound
from core.hub import HubAdapter, RequestPolicy
from tests.support.hub_server import HubServer

#: The watcher's kind of policy: short timeouts, and no inline wait over one second.
WATCHER = RequestPolicy(connect_timeout_s=2.0, read_timeout_s=1.0, max_inline_wait_s=1.0)


def tiny_model(folder: Path) -> Path:
    """A repo a resolver accepts: a config and a one-tensor safetensors file."""
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    tensor = len(header).to_bytes(8, "little") + header + b"\0" * 8
    (folder / "model.safetensors").write_bytes(tensor)
    return folder


@pytest.fixture
def watcher(hub: HubServer) -> HubAdapter:
    return HubAdapter(hub.url, policy=WATCHER)


@pytest.fixture
def held_open(watcher: HubAdapter) -> Iterator[None]:
    """A watcher call in progress on another thread, as in the daemon that embeds a worker."""
    entered, done = threading.Event(), threading.Event()

    def hold() -> None:
        with watcher.call("a watcher call"):
            entered.set()
            done.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert entered.wait(10)
    yield
    done.set()
    thread.join(10)


def test_a_long_rate_limit_is_refused_inside_the_watchers_calls(
    hub: HubServer, watcher: HubAdapter
) -> None:
    hub.fail_next("/api/models?author=acme", 429, {"Retry-After": "30"})
    with pytest.raises(HubUnavailable, match="asks to wait 30 s") as refused:
        watcher.list_models("models of acme", author="acme")
    assert refused.value.retry_after_s == 30


def test_the_watchers_policy_does_not_reach_a_download_in_the_same_process(
    hub: HubServer, watcher: HubAdapter, held_open: None, tmp_path: Path
) -> None:
    sha = hub.add_repo("acme/tiny", tiny_model(tmp_path / "tiny"))
    # Both metadata requests of config.json (the quick one, then the retrying one) are told to
    # wait 2 s: over the watcher's 1 s, so a leaked guard would refuse the download.
    hub.fail_next("/acme/tiny/resolve/", 429, {"Retry-After": "2"}, count=2)
    settings = HubSettings(endpoint=hub.url, cache_dir=str(tmp_path / "hf-cache"), timeout_s=10)

    resolved = ModelResolver(settings).resolve("acme/tiny")

    assert resolved.revision == sha
    config_requests = [p for _, p in hub.requests if p.endswith("/resolve/" + sha + "/config.json")]
    assert len(config_requests) >= 3  # the two refusals, then the request that was answered


def test_request_timeouts_are_filled_in_only_inside_the_watchers_calls(
    watcher: HubAdapter,
) -> None:
    hooks = get_session().event_hooks["request"]

    def timeouts_given() -> dict[str, float | None]:
        no_timeout = {"connect": None, "read": None, "write": None, "pool": None}
        request = httpx2.Request(
            "GET", "http://127.0.0.1:9/api/models", extensions={"timeout": no_timeout}
        )
        for hook in hooks:
            hook(request)
        return dict(request.extensions["timeout"])

    assert set(timeouts_given().values()) == {None}
    with watcher.call("a listing"):
        assert timeouts_given() == {"connect": 2.0, "read": 1.0, "write": 1.0, "pool": 1.0}
    assert set(timeouts_given().values()) == {None}
    plain = HubAdapter("http://127.0.0.1:9")
    with watcher.call("outer"), plain.call("a call of another adapter inside it"):
        assert set(timeouts_given().values()) == {None}


def test_the_token_is_the_one_given_never_the_environments(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("acme/secret", tiny_model(tmp_path / "secret"), private=True)
    hub.grant("acme/secret", "hf_granted")
    assert HubAdapter(hub.url, "hf_granted").model_info("acme/secret").sha
    monkeypatch.setenv("HF_TOKEN", "hf_granted")  # settings read it; the adapter does not
    with pytest.raises(ModelNotFound, match="acme/secret: repo not found"):
        HubAdapter(hub.url).model_info("acme/secret")
