"""Hostile webhook deliveries: whatever arrives, the handler answers and records nothing wrong.

The Hub behind the Discovery is unreachable (nothing listens on port 9), so a delivery that gets
as far as a lookup is a RetryableError (503) at once, never a network hang. What must be kept:
``handle`` never raises (over HTTP an exception is a dropped connection, not an answer), always
answers one of the statuses the Hub understands with a JSON body, and records nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from config.watch import HubWatch, WatchSettings, WebhookWatch
from tests.support.settings import build_settings, isolated_environment
from tests.watcher.test_webhook import REPO, made_public, payload, pushed
from watcher.discovery import Discovery
from watcher.publish import Collect
from watcher.sources.webhook import SECRET_HEADER, Reply, WebhookHandler
from watcher.state import WatchState

SECRET = "whsec-fuzz-0123456789"
SHA = "1" * 40
STATUSES = {200, 202, 400, 401, 403, 503}
HEADERS = {SECRET_HEADER: SECRET}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    # The autouse environment fixture is function-scoped; nothing it sets changes per example.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@dataclass
class Endpoint:
    handler: WebhookHandler
    state: WatchState
    collected: Collect


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    folder = tmp_path_factory.mktemp("webhook-fuzz")
    with isolated_environment():
        config = build_settings(
            folder,
            watch=WatchSettings(
                hub=HubWatch(authors=("acme",)),
                webhook=WebhookWatch(port=0),
                connect_timeout_s=2,
                read_timeout_s=1,
                max_inline_wait_s=0,
            ),
        )
        state = WatchState(config.store.url)
        collected = Collect()
        handler = WebhookHandler(Discovery(config, state, collected), SECRET, config.watch.webhook)
        yield Endpoint(handler, state, collected)


def answer(endpoint: Endpoint, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    """Deliver ``body``; check what every answer must be and that nothing was recorded."""
    reply = endpoint.handler.handle(HEADERS if headers is None else headers, body)
    assert reply.status in STATUSES, reply
    assert isinstance(reply.body, dict)
    json.dumps(reply.body)  # the server sends it as JSON
    if reply.status == 503:
        assert reply.headers["Retry-After"].isdigit()
    assert endpoint.state.counts() == {}
    assert endpoint.collected.events == []
    return reply


# ---------------------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)

#: Deliveries as the Hub sends them: each one would be looked up (and answered 503 here) or
#: ignored on its own merits.
VALID = [
    payload(sha=SHA),
    pushed(REPO, SHA),
    pushed(REPO, SHA, ref="refs/heads/dev"),
    made_public(REPO),
    payload("acme/data", repo_type="dataset"),
    payload(REPO, scope="discussion", action="create"),
]


def key_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key (and list index) path in ``doc``, outermost first."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        yield (*prefix, key)
        if isinstance(value, dict | list):
            yield from key_paths(value, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, *, replace: bool) -> dict[str, Any]:
    """A valid delivery with one to three keys dropped, or their values replaced."""
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = list(key_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if replace:
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, list):
            parent.pop(path[-1])
        else:
            del parent[path[-1]]
    return doc


# ---------------------------------------------------------------------------- properties


@FUZZ
@given(body=st.binary(max_size=2048))
@example(body=b"")
@example(body=b"\xff\xfe\x00{")
@example(body=b"null")
@example(body=b'"\\ud800"')
@example(body=b"1e999999")
def test_any_bytes_body_is_answered_and_records_nothing(endpoint: Endpoint, body: bytes) -> None:
    reply = answer(endpoint, body)
    assert reply.status in (200, 400, 503)


@FUZZ
@given(value=json_values)
@example(value=[payload(sha=SHA)])
@example(value={"event": None, "repo": None, "webhook": None})
def test_any_json_value_is_answered_and_records_nothing(endpoint: Endpoint, value: Any) -> None:
    reply = answer(endpoint, json.dumps(value).encode())
    if not isinstance(value, dict):
        assert reply.status == 400


@FUZZ
@given(doc=mutated(replace=False))
def test_payloads_with_keys_dropped_are_answered_and_record_nothing(
    endpoint: Endpoint, doc: dict[str, Any]
) -> None:
    answer(endpoint, json.dumps(doc).encode())


@FUZZ
@given(doc=mutated(replace=True))
@example(doc={**made_public(REPO), "updatedConfig": "private"})
def test_payloads_with_values_replaced_are_answered_and_record_nothing(
    endpoint: Endpoint, doc: dict[str, Any]
) -> None:
    answer(endpoint, json.dumps(doc).encode())


@FUZZ
@given(headers=st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=4))
def test_any_headers_without_the_secret_are_refused_before_parsing(
    endpoint: Endpoint, headers: dict[str, str]
) -> None:
    reply = answer(endpoint, json.dumps(payload(sha=SHA)).encode(), headers)
    assert reply.status == (401 if SECRET_HEADER not in headers else 403)


@FUZZ
@given(secret=st.text(max_size=60).filter(lambda text: text != SECRET))
@example(secret=SECRET[:-1])
@example(secret=SECRET + "\x00")
@example(secret=SECRET.upper())
def test_any_wrong_secret_is_refused(endpoint: Endpoint, secret: str) -> None:
    reply = answer(endpoint, json.dumps(payload(sha=SHA)).encode(), {SECRET_HEADER: secret})
    assert reply.status == 403


# ---------------------------------------------------------------------------- regressions


def test_a_well_formed_delivery_reaches_the_unreachable_hub(endpoint: Endpoint) -> None:
    """The property tests would prove little if valid deliveries never got to the lookup."""
    reply = answer(endpoint, json.dumps(payload(sha=SHA)).encode())
    assert reply.status == 503 and "unreachable" in reply.body["error"]


def _with_repo(**fields: Any) -> dict[str, Any]:
    doc = payload(sha=SHA)
    doc["repo"].update(fields)
    return doc


@pytest.mark.parametrize("name", ["", "a b", "acme/../etc", "a/b/c", "x" * 200])
def test_a_repo_name_that_is_no_repo_id_is_answered(endpoint: Endpoint, name: str) -> None:
    answer(endpoint, json.dumps(_with_repo(name=name)).encode())


@pytest.mark.parametrize("head", [123, True, [SHA], {"sha": SHA}])
def test_a_head_sha_that_is_no_string_is_answered(endpoint: Endpoint, head: Any) -> None:
    answer(endpoint, json.dumps(_with_repo(headSha=head)).encode())


@pytest.mark.parametrize("config", ["private", [False], 1])
def test_an_updated_config_that_is_no_object_is_answered(endpoint: Endpoint, config: Any) -> None:
    answer(endpoint, json.dumps({**made_public(REPO), "updatedConfig": config}).encode())


def test_a_deeply_nested_body_is_answered(endpoint: Endpoint) -> None:
    answer(endpoint, b"[" * 100_000 + b"]" * 100_000)
