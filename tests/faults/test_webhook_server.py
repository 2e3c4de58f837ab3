"""Abusive clients of the webhook server: half-open connections, a large body announced with a
wrong secret, a ``Content-Length`` in other digits. What must be kept: valid deliveries are
answered at once, nothing is read before the secret is checked, every bad request gets a JSON
answer, and the server's connections and threads return to their idle figures."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from config.watch import HubWatch, WatchSettings, WebhookWatch
from tests.support.hub_server import HubServer
from tests.support.serving import served
from tests.support.settings import build_settings, isolated_environment
from tests.watcher.test_webhook import payload
from watcher.discovery import Discovery
from watcher.publish import Collect
from watcher.sources.webhook import SECRET_HEADER, WebhookHandler, WebhookListener
from watcher.state import WatchState

SECRET = "whsec-server-0123456789"
#: Seconds a request may take to arrive whole; the half-open connections are closed after it.
REQUEST_TIMEOUT_S = 1.5
HALF_OPEN = 200
PATH = "/webhooks/hub"


@dataclass
class Endpoint:
    listener: WebhookListener
    hub: HubServer
    host: str
    port: int
    collected: Collect

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=5)

    def raw(self, request: bytes, *, wait_s: float = 5) -> bytes:
        """Send ``request`` on a fresh connection; what comes back until it closes (or
        ``wait_s`` passes without a byte)."""
        with self.connect() as sock:
            sock.settimeout(wait_s)
            sock.sendall(request)
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except TimeoutError:
                pass
            return answer


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    folder = tmp_path_factory.mktemp("webhook-server")
    for hub in served(HubServer()):
        with isolated_environment():
            config = build_settings(
                folder,
                endpoint=hub,
                hub={"timeout_s": 5},
                watch=WatchSettings(
                    hub=HubWatch(authors=("acme",)),
                    webhook=WebhookWatch(port=0, request_timeout_s=REQUEST_TIMEOUT_S),
                    connect_timeout_s=2,
                    read_timeout_s=2,
                ),
            )
            state = WatchState(config.store.url)
            collected = Collect()
            handler = WebhookHandler(
                Discovery(config, state, collected), SECRET, config.watch.webhook
            )
            listener = WebhookListener(handler)
            listener.start()
            try:
                host, _, port = (
                    listener.url.removeprefix("http://").partition("/")[0].partition(":")
                )
                yield Endpoint(listener, hub, host, int(port), collected)
            finally:
                listener.stop()


def publish(hub: HubServer, folder: Path, repo_id: str) -> str:
    """A tiny model repo on the local Hub; its commit sha."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + b"\0" * 16
    )
    extra = {"pipeline_tag": "text-generation", "library_name": "transformers", "tags": []}
    return hub.add_repo(repo_id, folder, extra=extra)


def deliver(endpoint: Endpoint, body: dict[str, object]) -> httpx.Response:
    url = f"http://{endpoint.host}:{endpoint.port}{PATH}"
    return httpx.post(url, json=body, headers={SECRET_HEADER: SECRET}, timeout=2)


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes ``sock`` within ``within_s`` (what it sent before is dropped)."""
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def idle_thread_count(within_s: float = 2) -> int:
    """The process's thread count once no delivery is being handled (a delivery's thread may
    still be ending after its answer was sent)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(thread.name == "webhook delivery" for thread in threading.enumerate()):
            break
        time.sleep(0.01)
    return threading.active_count()


def test_half_open_connections_do_not_starve_a_delivery(endpoint: Endpoint, tmp_path: Path) -> None:
    warm = publish(endpoint.hub, tmp_path / "warm", "acme/Warm-1B")
    assert deliver(endpoint, payload("acme/Warm-1B", sha=warm)).status_code == 202
    sha = publish(endpoint.hub, tmp_path / "new", "acme/Held-9B")
    idle = idle_thread_count()

    sockets = []
    try:
        opened = time.monotonic()
        for _ in range(HALF_OPEN):
            sock = endpoint.connect()
            sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: hub\r\n{SECRET_HEADER[:9]}".encode())
            sockets.append(sock)
        started = time.monotonic()
        answer = deliver(endpoint, payload("acme/Held-9B", sha=sha))
        answered = time.monotonic()

        assert answer.status_code == 202
        assert answered - started < 2
        # Answered while every half-open connection was still held (none is closed earlier).
        assert answered - opened < REQUEST_TIMEOUT_S
        # The server gives up on each of them once the request deadline has passed.
        closed = [closed_by_server(sock, REQUEST_TIMEOUT_S + 2) for sock in sockets]
        assert closed.count(False) == 0
    finally:
        for sock in sockets:
            sock.close()
    assert idle_thread_count() == idle
    assert [e.repo_id for e in endpoint.collected.events] == ["acme/Warm-1B", "acme/Held-9B"]


@pytest.mark.parametrize(
    ("secret", "status"),
    [(None, 401), ("wrong-" + SECRET, 403)],
    ids=["missing", "wrong"],
)
def test_a_large_body_behind_a_wrong_secret_is_not_read(
    endpoint: Endpoint, secret: str | None, status: int
) -> None:
    line = f"{SECRET_HEADER}: {secret}\r\n" if secret is not None else ""
    started = time.monotonic()

    # Headers only: a server that read the announced megabyte first would never answer.
    answer = endpoint.raw(
        f"POST {PATH} HTTP/1.1\r\nHost: hub\r\n{line}Content-Type: application/json\r\n"
        "Content-Length: 1000000\r\n\r\n".encode(),
        wait_s=2,
    )

    assert time.monotonic() - started < 2
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"Connection: close" in head
    assert "X-Webhook-Secret" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "length",
    [b"\xb2", b"\xb9", b"1\xb3", "\uff11\uff10".encode(), "\u0661\u0662".encode(), b"+12", b"1e3"],
    ids=[
        "superscript-2",
        "superscript-1",
        "digit-superscript-3",
        "fullwidth",
        "arabic-indic",
        "signed",
        "exponent",
    ],
)
def test_a_length_in_other_digits_is_refused_and_the_server_goes_on(
    endpoint: Endpoint, length: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = endpoint.raw(
        f"POST {PATH} HTTP/1.1\r\nHost: hub\r\n{SECRET_HEADER}: {SECRET}\r\n".encode()
        + b"Content-Length: "
        + length
        + b"\r\n\r\n{}"
    )

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert json.loads(body)["error"].startswith("malformed HTTP request")
    health = httpx.get(f"http://{endpoint.host}:{endpoint.port}/healthz", timeout=2)
    assert (health.status_code, health.json()) == (200, {"ok": True})
    ignored = deliver(endpoint, payload("acme/data", repo_type="dataset"))
    assert (ignored.status_code, ignored.json()) == (200, {"ignored": "dataset repo"})
    assert "Traceback" not in capsys.readouterr().err


def test_connections_over_the_cap_are_closed_as_they_arrive(tmp_path: Path) -> None:
    config = build_settings(
        tmp_path, watch=WatchSettings(webhook=WebhookWatch(port=0, max_connections=5))
    )
    state = WatchState(config.store.url)
    handler = WebhookHandler(Discovery(config, state, Collect()), SECRET, config.watch.webhook)
    listener = WebhookListener(handler)
    listener.start()
    health = listener.url.removesuffix(PATH) + "/healthz"
    host, _, port = health.removeprefix("http://").partition("/")[0].partition(":")
    try:
        held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(5)]
        with socket.create_connection((host, int(port)), timeout=5) as over:
            assert closed_by_server(over, 2)
        for sock in held:
            assert not closed_by_server(sock, 0.01)  # the first five are kept
            sock.close()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            time.sleep(0.02)
        assert httpx.get(health, timeout=2).json() == {"ok": True}
    finally:
        listener.stop()
