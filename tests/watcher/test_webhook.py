"""Hub webhooks over real HTTP: the endpoint, the payload rules and the shared dedupe."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from config.settings import Settings
from config.watch import WebhookWatch
from core.errors import ConfigError
from tests.support.hub_server import HubServer
from tests.watcher.conftest import days_ago
from watcher.discovery import Discovery
from watcher.publish import Collect
from watcher.scheduler import WatchDaemon
from watcher.sources.webhook import SECRET_HEADER, WebhookHandler, WebhookListener
from watcher.state import WatchState

SECRET = "s3cret-from-the-hub-settings"
REPO = "acme/Acme-9B"
REPO_OBJECT_ID = "6650a1b2c3d4e5f601234567"
OWNER_OBJECT_ID = "6650a1b2c3d4e5f601234500"
WEBHOOK_OBJECT_ID = "6651f0e1d2c3b4a596877869"
OLD_SHA = "0" * 40
#: Every author whose repos these deliveries name.
AUTHORS = ("acme", "someone")


def payload(
    repo: str = REPO,
    *,
    scope: str = "repo",
    action: str = "create",
    sha: str | None = None,
    private: bool = False,
    repo_type: str = "model",
    **top: Any,
) -> dict[str, Any]:
    """A delivery as the Hub sends it (webhook version 3)."""
    kind = "" if repo_type == "model" else f"{repo_type}s/"
    body: dict[str, Any] = {
        "event": {"action": action, "scope": scope},
        "repo": {
            "type": repo_type,
            "name": repo,
            "id": REPO_OBJECT_ID,
            "private": private,
            "url": {
                "web": f"https://huggingface.co/{kind}{repo}",
                "api": f"https://huggingface.co/api/{repo_type}s/{repo}",
            },
            "owner": {"id": OWNER_OBJECT_ID},
        },
        "webhook": {"id": WEBHOOK_OBJECT_ID, "version": 3},
    }
    if sha is not None:
        body["repo"]["headSha"] = sha
    body.update(top)
    return body


def pushed(repo: str, sha: str, ref: str = "refs/heads/main") -> dict[str, Any]:
    return payload(
        repo,
        scope="repo.content",
        action="update",
        sha=sha,
        updatedRefs=[{"ref": ref, "oldSha": OLD_SHA, "newSha": sha}],
    )


def made_public(repo: str, private: bool = False) -> dict[str, Any]:
    return payload(
        repo,
        scope="repo.config",
        action="update",
        private=private,
        updatedConfig={"private": private},
    )


@dataclass
class Endpoint:
    """A running webhook server and what it feeds."""

    url: str
    base: str
    discovery: Discovery
    collected: Collect
    client: httpx.Client

    def post(
        self,
        body: Any,
        *,
        secret: str | None = SECRET,
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> httpx.Response:
        sent = {SECRET_HEADER: secret} if secret is not None else {}
        sent.update(headers or {})
        url = self.base + path if path else self.url
        if isinstance(body, bytes):
            return self.client.post(url, content=body, headers=sent)
        return self.client.post(url, json=body, headers=sent)

    def raw(self, request: bytes) -> bytes:
        """Send ``request`` as is on a fresh connection; the whole answer (until it closes)."""
        host, _, port = self.base.removeprefix("http://").partition(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


@pytest.fixture
def webhook(
    hub: HubServer,
    watch_settings: Callable[..., Settings],
    discover: Callable[[Settings], tuple[Discovery, Collect]],
) -> Iterator[Callable[..., Endpoint]]:
    """Start a WebhookListener on a free port; ``webhook(**watch_settings)`` -> Endpoint."""
    running: list[WebhookListener] = []
    with httpx.Client(timeout=10) as client:

        def start(hook: WebhookWatch | None = None, **watch: Any) -> Endpoint:
            hook = hook or WebhookWatch(port=0)
            settings = watch_settings(hub, authors=AUTHORS, webhook=hook, **watch)
            discovery, collected = discover(settings)
            listener = WebhookListener(WebhookHandler(discovery, SECRET, settings.watch.webhook))
            listener.start()
            running.append(listener)
            base = listener.url.removesuffix(hook.path)
            return Endpoint(listener.url, base, discovery, collected, client)

        yield start
    for listener in running:
        listener.stop()


def hub_requests(hub: HubServer) -> int:
    return len(hub.requests)


# ---------------------------------------------------------------------------- authentication


def test_secret_is_required_and_checked(
    hub: HubServer, publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model(REPO)
    endpoint = webhook()
    asked = hub_requests(hub)

    missing = endpoint.post(payload(sha=sha), secret=None)
    wrong = endpoint.post(payload(sha=sha), secret=SECRET + "x")
    prefix = endpoint.post(payload(sha=sha), secret=SECRET[:-1])
    empty = endpoint.post(payload(sha=sha), secret="")

    assert (missing.status_code, missing.json()) == (
        401,
        {"error": f"missing {SECRET_HEADER} header"},
    )
    for refused in (wrong, prefix, empty):
        assert (refused.status_code, refused.json()) == (403, {"error": f"wrong {SECRET_HEADER}"})
    assert hub_requests(hub) == asked  # nothing looked up
    assert endpoint.discovery.state.counts() == {}
    assert endpoint.collected.events == []

    # The header name is matched without regard to case.
    accepted = endpoint.post(payload(sha=sha), secret=None, headers={"x-webhook-secret": SECRET})
    assert accepted.status_code == 202


# ---------------------------------------------------------------------------- accepted events


def test_repo_created_is_released_once(
    hub: HubServer, publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model(REPO, params=9_000_000_000)
    endpoint = webhook()

    created = endpoint.post(payload(sha=sha))

    assert created.status_code == 202
    (released,) = created.json()["released"]
    assert released["kind"] == "model_released"
    assert (released["source"], released["repo_id"], released["revision"]) == ("webhook", REPO, sha)
    assert released["params"] == 9_000_000_000
    assert released["link"] == f"{hub.url}/{REPO}"
    assert released["api"] is None and released["title"] is None
    assert [(e.repo_id, e.revision) for e in endpoint.collected.events] == [(REPO, sha)]
    assert endpoint.collected.events[0].model_dump(mode="json") == released
    assert endpoint.discovery.state.counts() == {"model_released": 1}

    replayed = endpoint.post(payload(sha=sha))
    assert (replayed.status_code, replayed.json()) == (200, {"ignored": "already seen"})
    assert len(endpoint.collected.events) == 1
    assert endpoint.discovery.state.counts() == {"model_released": 1}
    assert endpoint.discovery.state.unpublished() == []


def test_concurrent_duplicate_deliveries_release_once(
    publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model(REPO)
    endpoint = webhook()

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: endpoint.post(payload(sha=sha)), range(6)))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 200, 200, 200, 200, 202]
    assert [e.repo_id for e in endpoint.collected.events] == [REPO]
    assert endpoint.discovery.state.counts() == {"model_released": 1}


def test_push_to_main_releases_a_new_repo_and_other_branches_are_ignored(
    hub: HubServer, publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model(REPO)
    endpoint = webhook()
    asked = hub_requests(hub)

    branch = endpoint.post(pushed(REPO, sha, ref="refs/heads/dev"))
    tag = endpoint.post(pushed(REPO, sha, ref="refs/tags/v1"))
    assert (branch.status_code, branch.json()) == (
        200,
        {"ignored": "push to a branch other than main"},
    )
    assert (tag.status_code, tag.json()) == (200, {"ignored": "push to a branch other than main"})
    assert hub_requests(hub) == asked
    assert endpoint.discovery.state.counts() == {}

    main = endpoint.post(pushed(REPO, sha))
    assert main.status_code == 202
    assert [(r["repo_id"], r["revision"]) for r in main.json()["released"]] == [(REPO, sha)]

    # A later push to main is a new commit of a known repo: recorded, not released again.
    newer = publish_model(REPO, files={"config.json": b"{}", "model.safetensors": b"\0" * 8})
    assert newer != sha
    update = endpoint.post(pushed(REPO, newer))
    assert (update.status_code, update.json()) == (200, {"ignored": "already seen"})
    assert [(e.repo_id, e.revision) for e in endpoint.collected.events] == [(REPO, sha)]
    assert endpoint.discovery.state.counts() == {"model_released": 1, "update": 1}


def test_repo_created_empty_is_released_when_the_weights_are_pushed(
    publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    empty = publish_model(REPO, files={"config.json": b"{}", "README.md": b"# soon"})
    endpoint = webhook()

    created = endpoint.post(payload(sha=empty))
    assert (created.status_code, created.json()) == (200, {"ignored": "no weight files yet"})
    assert endpoint.discovery.state.counts() == {}

    full = publish_model(REPO)
    answer = endpoint.post(pushed(REPO, full))
    assert answer.status_code == 202
    assert [(e.repo_id, e.revision) for e in endpoint.collected.events] == [(REPO, full)]


def test_push_to_main_pins_the_pushed_commit(
    hub: HubServer,
    publish_model: Callable[..., str],
    weights: Callable[..., Any],
    webhook: Callable[..., Endpoint],
) -> None:
    first = publish_model(REPO)
    # The branch moved on after the push that the delivery announces.
    later = hub.add_repo(REPO, weights({"config.json": b"{}", "model.safetensors": b"\1" * 8}))
    assert later != first
    endpoint = webhook()

    answer = endpoint.post(pushed(REPO, first))

    assert answer.status_code == 202
    assert [r["revision"] for r in answer.json()["released"]] == [first]


def test_repo_made_public_is_released_and_other_config_changes_are_ignored(
    hub: HubServer, publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model(REPO)  # public by now: the delivery says so
    endpoint = webhook()
    asked = hub_requests(hub)

    to_private = endpoint.post(made_public(REPO, private=True))
    other = endpoint.post(
        payload(REPO, scope="repo.config", action="update", updatedConfig={"gated": "auto"})
    )
    private_create = endpoint.post(payload("acme/Secret-9B", sha=sha, private=True))
    private_push = endpoint.post(
        {**pushed("acme/Secret-9B", sha), "repo": {**payload(private=True)["repo"]}}
    )
    ignored_config = {"ignored": "configuration change that does not make the repo public"}
    ignored_private = {"ignored": "private repo (considered when it is made public)"}
    assert (to_private.status_code, to_private.json()) == (200, ignored_config)
    assert (other.status_code, other.json()) == (200, ignored_config)
    assert (private_create.status_code, private_create.json()) == (200, ignored_private)
    assert (private_push.status_code, private_push.json()) == (200, ignored_private)
    assert hub_requests(hub) == asked
    assert endpoint.discovery.state.counts() == {}

    public = endpoint.post(made_public(REPO))
    assert public.status_code == 202
    assert [(r["repo_id"], r["revision"]) for r in public.json()["released"]] == [(REPO, sha)]
    assert [e.repo_id for e in endpoint.collected.events] == [REPO]


def test_old_repo_is_still_new_news_for_a_webhook(
    publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model(REPO, created=days_ago(30))
    endpoint = webhook()
    assert endpoint.discovery.watch.lookback < 30 * 86400

    answer = endpoint.post(made_public(REPO))

    assert answer.status_code == 202
    (released,) = answer.json()["released"]
    assert released["revision"] == sha
    assert released["created_at"].startswith(days_ago(30)[:10])
    assert endpoint.discovery.state.counts() == {"model_released": 1}
    assert [e.repo_id for e in endpoint.collected.events] == [REPO]


# ---------------------------------------------------------------------------- ignored events


@pytest.mark.parametrize(
    ("repo", "options", "reason"),
    [
        (
            "someone/Acme-9B-small",
            {"tags": ("base_model:quantized:acme/Acme-9B",)},
            "quantized of acme/Acme-9B",
        ),
        (
            "someone/Acme-9B-tuned",
            {"tags": ("base_model:finetune:acme/Acme-9B",)},
            "finetune of acme/Acme-9B",
        ),
        ("someone/Acme-9B-local", {"library_name": "gguf"}, "conversion (gguf)"),
        (
            "acme/Acme-Vision-9B",
            {"pipeline_tag": "image-classification"},
            "pipeline tag 'image-classification' not watched",
        ),
    ],
    ids=["quantized", "finetune", "gguf", "pipeline"],
)
def test_derivatives_and_unwatched_models_are_ignored_with_the_reason(
    publish_model: Callable[..., str],
    webhook: Callable[..., Endpoint],
    repo: str,
    options: dict[str, Any],
    reason: str,
) -> None:
    sha = publish_model(repo, **options)
    endpoint = webhook()

    answer = endpoint.post(payload(repo, sha=sha))

    assert (answer.status_code, answer.json()) == (200, {"ignored": reason})
    assert endpoint.collected.events == []
    assert endpoint.discovery.state.counts() == {}


def test_own_instruct_model_of_own_base_is_a_release(
    publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model("acme/Acme-9B-Instruct", tags=("base_model:finetune:acme/Acme-9B",))
    endpoint = webhook()

    answer = endpoint.post(payload("acme/Acme-9B-Instruct", sha=sha))

    assert answer.status_code == 202
    assert [e.repo_id for e in endpoint.collected.events] == ["acme/Acme-9B-Instruct"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (payload("acme/some-data", repo_type="dataset"), "dataset repo"),
        (payload("acme/demo", repo_type="space"), "space repo"),
        (payload(REPO, action="delete"), "event repo/delete"),
        (payload(REPO, scope="discussion", action="create"), "event discussion/create"),
    ],
    ids=["dataset", "space", "deleted", "discussion"],
)
def test_other_events_are_ignored_without_a_hub_lookup(
    hub: HubServer, webhook: Callable[..., Endpoint], body: dict[str, Any], reason: str
) -> None:
    endpoint = webhook()
    asked = hub_requests(hub)

    answer = endpoint.post(body)

    assert (answer.status_code, answer.json()) == (200, {"ignored": reason})
    assert hub_requests(hub) == asked
    assert endpoint.discovery.state.counts() == {}


def test_repo_not_on_the_hub_is_ignored(hub: HubServer, webhook: Callable[..., Endpoint]) -> None:
    endpoint = webhook()

    answer = endpoint.post(payload("acme/Ghost-9B", sha="1" * 40))

    assert answer.status_code == 200
    assert "acme/Ghost-9B" in answer.json()["ignored"]
    assert endpoint.discovery.state.counts() == {}


# ---------------------------------------------------------------------------- bad requests


def test_bad_bodies_are_refused(hub: HubServer, webhook: Callable[..., Endpoint]) -> None:
    endpoint = webhook()
    asked = hub_requests(hub)

    not_json = endpoint.post(b"{not json")
    not_utf8 = endpoint.post(b"\xff\xfe\x00{")
    array = endpoint.post([payload()])
    no_repo = endpoint.post({key: value for key, value in payload().items() if key != "repo"})
    bad_version = endpoint.post({**payload(), "webhook": {"id": WEBHOOK_OBJECT_ID, "version": 2}})

    assert (not_json.status_code, not_json.json()) == (400, {"error": "body is not JSON"})
    assert (not_utf8.status_code, not_utf8.json()) == (400, {"error": "body is not JSON"})
    assert (array.status_code, array.json()) == (400, {"error": "body is not a JSON object"})
    assert (no_repo.status_code, no_repo.json()) == (
        400,
        {"error": "not a Hub webhook payload: repo: Field required"},
    )
    assert bad_version.status_code == 400
    assert bad_version.json()["error"].startswith("not a Hub webhook payload: webhook.version:")
    assert hub_requests(hub) == asked
    assert endpoint.discovery.state.counts() == {}


def test_oversized_body_is_refused_unread(webhook: Callable[..., Endpoint]) -> None:
    endpoint = webhook(WebhookWatch(port=0, max_body_bytes=2048))

    # Headers only: a server that tried to read the announced 10 MB would never answer.
    started = time.monotonic()
    answer = endpoint.raw(
        b"POST /webhooks/hub HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
        + f"{SECRET_HEADER}: {SECRET}\r\nContent-Length: 10000000\r\n\r\n".encode()
    )
    assert time.monotonic() - started < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in head
    assert body == b'{"error": "body over 2048 bytes"}'

    # Over HTTP from a regular client too, and the limit is exact.
    padded = payload(padding="x" * 2100)
    assert endpoint.post(padded).status_code == 413
    fits = payload(padding="")
    size = len(httpx.Request("POST", endpoint.url, json=fits).content)
    fits["padding"] = "x" * (2048 - size + 1)
    assert endpoint.post(fits).status_code == 413  # 2049 bytes
    fits["padding"] = "x" * (2048 - size)
    assert endpoint.post(fits).status_code == 200  # 2048 bytes: read and handled
    assert endpoint.discovery.state.counts() == {}


@pytest.mark.parametrize(
    "framing",
    [b"", b"Transfer-Encoding: chunked\r\n"],
    ids=["none", "chunked"],
)
def test_body_without_a_length_is_refused(webhook: Callable[..., Endpoint], framing: bytes) -> None:
    endpoint = webhook()

    answer = endpoint.raw(
        b"POST /webhooks/hub HTTP/1.1\r\nHost: hub\r\n"
        + f"{SECRET_HEADER}: {SECRET}\r\n".encode()
        + framing
        + b"\r\n"
    )

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411 ")
    assert body == b'{"error": "Content-Length required"}'


def test_a_length_that_is_not_a_number_is_refused(webhook: Callable[..., Endpoint]) -> None:
    endpoint = webhook()

    answer = endpoint.raw(
        b"POST /webhooks/hub HTTP/1.1\r\nHost: hub\r\n"
        + f"{SECRET_HEADER}: {SECRET}\r\n".encode()
        + b"Content-Length: ten\r\n\r\n"
    )

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"].startswith("malformed HTTP request")


# ---------------------------------------------------------------------------- the Hub unavailable


def test_hub_down_asks_the_hub_to_redeliver_later(
    hub: HubServer, publish_model: Callable[..., str], webhook: Callable[..., Endpoint]
) -> None:
    sha = publish_model(REPO)
    endpoint = webhook(max_inline_wait_s=1)
    hub.fail_next(f"/api/models/{REPO}", 503, {"Retry-After": "600"}, count=10)

    refused = []
    for _ in range(10):
        started = time.monotonic()
        answer = endpoint.post(payload(sha=sha))
        assert time.monotonic() - started < 10  # no inline wait for a 10-minute Retry-After
        refused.append(answer)
        if answer.status_code != 503:
            break
    # Each delivery made exactly one Hub request, so the ten failures answer ten deliveries.
    assert [answer.status_code for answer in refused] == [503] * 10
    for answer in refused:
        assert answer.headers["Retry-After"] == "600"
        assert "503" in answer.json()["error"]
    assert endpoint.discovery.state.counts() == {}
    assert endpoint.collected.events == []

    recovered = endpoint.post(payload(sha=sha))
    assert recovered.status_code == 202
    assert [(e.repo_id, e.revision) for e in endpoint.collected.events] == [(REPO, sha)]


def test_hub_unreachable_is_retryable_with_a_default_wait(
    watch_settings: Callable[..., Settings],
    discover: Callable[[Settings], tuple[Discovery, Collect]],
) -> None:
    settings = watch_settings(None, authors=("acme",))  # the endpoint has nothing listening
    discovery, collected = discover(settings)
    handler = WebhookHandler(discovery, SECRET, WebhookWatch(port=0))

    reply = handler.handle({SECRET_HEADER: SECRET}, json.dumps(payload(sha="2" * 40)).encode())

    assert reply.status == 503
    assert reply.headers == {"Retry-After": "30"}
    assert collected.events == [] and discovery.state.counts() == {}


# ---------------------------------------------------------------------------- routes


def test_health_probe_and_unknown_paths(webhook: Callable[..., Endpoint]) -> None:
    endpoint = webhook()

    health = endpoint.client.get(endpoint.base + "/healthz")
    assert (health.status_code, health.json()) == (200, {"ok": True})
    assert endpoint.client.get(endpoint.base + "/healthz?probe=1").status_code == 200

    elsewhere = endpoint.post(payload(), path="/webhooks/other")
    assert (elsewhere.status_code, elsewhere.json()) == (404, {"error": "not found"})
    assert endpoint.client.get(endpoint.url).status_code == 404
    assert endpoint.client.get(endpoint.base + "/").status_code == 404
    # The client goes on after a 404 with a body (left unread: that connection was closed).
    assert endpoint.client.get(endpoint.base + "/healthz").status_code == 200
    assert endpoint.discovery.state.counts() == {}


# ---------------------------------------------------------------------------- the daemon


def test_daemon_refuses_to_start_without_the_secret(
    hub: HubServer, watch_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPERSEDE_WEBHOOK_SECRET", raising=False)
    settings = watch_settings(hub, authors=(), webhook=WebhookWatch(enabled=True, port=0))
    state = WatchState(settings.store.url)
    daemon = WatchDaemon(settings, state, Discovery(settings, state, Collect()))

    with pytest.raises(ConfigError) as caught:
        daemon.start()

    message = str(caught.value)
    assert "watch.webhook.enabled" in message
    assert "SUPERSEDE_WEBHOOK_SECRET is not set" in message
    assert daemon.listeners.get("webhook") is None
    # Nothing started: the scheduler lease is free for anyone.
    assert state.acquire_lock("scheduler", "someone else", ttl_s=60) is None


def test_daemon_serves_the_webhook_with_the_secret_from_the_environment(
    hub: HubServer,
    publish_model: Callable[..., str],
    watch_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sha = publish_model(REPO)
    monkeypatch.setenv("HUB_HOOK_SECRET", SECRET)
    hook = WebhookWatch(enabled=True, port=0, secret_env="HUB_HOOK_SECRET", path="/hooks")
    settings = watch_settings(hub, authors=AUTHORS, webhook=hook)
    # The author's listing is unavailable: only the webhook can tell of the release.
    hub.fail_next("author=", 503, {"Retry-After": "600"}, count=100)
    state = WatchState(settings.store.url)
    collected = Collect()
    daemon = WatchDaemon(settings, state, Discovery(settings, state, collected))

    daemon.start()
    try:
        webhook = daemon.listeners.get("webhook")
        assert webhook is not None and webhook.url.endswith("/hooks")
        with httpx.Client(timeout=10) as client:
            wrong = client.post(webhook.url, json=payload(sha=sha))
            answer = client.post(
                webhook.url, json=payload(sha=sha), headers={SECRET_HEADER: SECRET}
            )
    finally:
        assert daemon.stop(grace_s=5)
    assert wrong.status_code == 401
    assert answer.status_code == 202
    assert [(e.repo_id, e.revision) for e in collected.events] == [(REPO, sha)]
