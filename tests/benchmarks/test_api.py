"""API-hosted candidates against a local OpenAI-compatible server: scores, faults, costs."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.answers import match_choice, pick_by_logprobs
from benchmarks.api import endpoint, run_api_task
from benchmarks.tasks import Task, load_task
from config.api import ApiCandidate
from config.settings import PromptSettings
from core import http
from core.errors import EndpointRefused, EndpointUnavailable
from tests.conftest import SHIPPED_TASK
from tests.support.openai_server import OpenAIServer, sentiment_answer, sentiment_of
from tests.support.serving import served
from tests.support.tasks import GENERATE, REVIEW_DIR, write_task

LIMIT = 60
CHOICE_SUFFIX = "\n\nAnswer with exactly one of: negative; positive."
KEY = "sk-test-SECRET-0123456789abcdef"


# ---------------------------------------------------------------------- helpers


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    yield from served(OpenAIServer())


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(endpoint, "_sleep", lambda seconds, stop: waits.append(seconds))
    return waits


@pytest.fixture(scope="module")
def review() -> Task:
    return load_task(SHIPPED_TASK)


@pytest.fixture(scope="module")
def generate(tmp_path_factory: pytest.TempPathFactory) -> Task:
    config = json.loads(json.dumps(GENERATE))
    # Five stop strings: the endpoint is sent four, the fifth (";") must be cut in Python.
    config["generation_kwargs"]["until"] = ["\n", ".", "!", "?", ";"]
    return load_task(write_task(tmp_path_factory.mktemp("generate"), config))


def make_candidate(url: str, **overrides: Any) -> ApiCandidate:
    fields: dict[str, Any] = {"name": "vendor-x", "base_url": url, "model": "vendor-x-large"}
    return ApiCandidate(**(fields | overrides))


def docs(limit: int = LIMIT) -> list[dict[str, Any]]:
    lines = (REVIEW_DIR / "test.jsonl").read_text().splitlines()[:limit]
    return [json.loads(line) for line in lines]


def rule_index(doc: dict[str, Any]) -> int:
    """The default model's answer as an index into ["negative", "positive"]."""
    return 1 if sentiment_of(doc["text"]) == "positive" else 0


def expected_accuracy(limit: int = LIMIT) -> float:
    rows = docs(limit)
    return sum(rule_index(d) == d["label"] for d in rows) / len(rows)


def review_of(messages: list[dict[str, Any]]) -> str:
    user = messages[-1]["content"]
    return user.rsplit("Review: ", 1)[1].split("\nSentiment:")[0]


def user_texts(fake: OpenAIServer) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in fake.answered if r.body]


def test_default_rule_is_good_but_not_perfect() -> None:
    # The score tests below are only meaningful if the rule gets some documents wrong.
    assert 0.6 < expected_accuracy() < 1.0


# ---------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize("mode", ["logprobs", "choice", "auto"])
def test_multiple_choice_scores_the_rule(server: OpenAIServer, review: Task, mode: str) -> None:
    done: list[int] = []
    result = run_api_task(
        make_candidate(server.url, multiple_choice=mode),
        review,
        api_key=None,
        limit=LIMIT,
        progress=done.append,
    )
    rows = docs()
    assert result.n == LIMIT and sum(done) == LIMIT
    assert list(result.predictions) == [rule_index(d) for d in rows]
    assert list(result.outcomes) == [float(rule_index(d) == d["label"]) for d in rows]
    assert result.score == pytest.approx(expected_accuracy())
    used = "logprobs" if mode == "auto" else mode
    assert result.extra["multiple_choice_mode"] == used
    assert result.extra["requests"] == LIMIT and result.extra["invalid_answers"] == 0
    bodies = [r.body for r in server.answered]
    assert len(bodies) == LIMIT
    assert all(b["model"] == "vendor-x-large" and b["temperature"] == 0 for b in bodies)
    if used == "logprobs":
        assert all(b["logprobs"] is True and b["top_logprobs"] == 20 for b in bodies)
        assert all(b["max_tokens"] == 1 for b in bodies)
        assert sorted(user_texts(server)) == sorted(r.context for r in review.requests(LIMIT))
    else:
        assert all("logprobs" not in b for b in bodies)
        assert sorted(user_texts(server)) == sorted(
            r.context + CHOICE_SUFFIX for r in review.requests(LIMIT)
        )


def test_auto_asks_for_a_choice_when_no_logprobs_come_back(review: Task) -> None:
    with OpenAIServer(logprobs=False) as fake:
        result = run_api_task(make_candidate(fake.url), review, api_key=None, limit=LIMIT)
    assert result.extra["multiple_choice_mode"] == "choice"
    assert result.score == pytest.approx(expected_accuracy())
    bodies = [r.body for r in fake.answered]
    # The probe, then every document (the first one again) as a choice question.
    assert result.extra["requests"] == len(bodies) == LIMIT + 1
    assert bodies[0]["logprobs"] is True
    assert all("logprobs" not in b for b in bodies[1:])
    assert all(b["messages"][-1]["content"].endswith(CHOICE_SUFFIX) for b in bodies[1:])


def test_auto_asks_for_a_choice_when_logprobs_are_rejected(
    server: OpenAIServer, review: Task
) -> None:
    error = {"error": {"message": "logprobs is not supported for this model", "code": None}}
    server.fail_next(400, body=json.dumps(error).encode())
    result = run_api_task(make_candidate(server.url), review, api_key=None, limit=20)
    assert result.extra["multiple_choice_mode"] == "choice"
    assert result.score == pytest.approx(expected_accuracy(20))
    assert result.extra["retries"] == 0


def test_logprobs_mode_refuses_an_endpoint_without_logprobs(review: Task) -> None:
    with OpenAIServer(logprobs=False) as fake:
        candidate = make_candidate(fake.url, multiple_choice="logprobs")
        with pytest.raises(EndpointRefused, match=r"no top_logprobs.*'auto' or 'choice'"):
            run_api_task(candidate, review, api_key=None, limit=LIMIT)
        assert len(fake.requests) == 1


def test_logprobs_without_a_choice_fall_back_to_asking(review: Task) -> None:
    def hesitant(messages: list[dict[str, Any]]) -> str:
        asked_choice = messages[-1]["content"].endswith(CHOICE_SUFFIX)
        if len(review_of(messages)) % 3 == 0 and not asked_choice:
            return "Hmm, hard to say"  # the top log-probs then hold no choice at all
        return sentiment_answer(messages)

    hesitations = sum(len(d["text"]) % 3 == 0 for d in docs())
    assert 0 < hesitations < LIMIT
    with OpenAIServer(hesitant) as fake:
        candidate = make_candidate(fake.url, multiple_choice="logprobs")
        result = run_api_task(candidate, review, api_key=None, limit=LIMIT)
    assert result.extra["logprob_fallbacks"] == hesitations
    assert result.extra["requests"] == LIMIT + hesitations
    assert list(result.predictions) == [rule_index(d) for d in docs()]
    assert result.score == pytest.approx(expected_accuracy())


def test_choice_replies_are_matched_through_their_wrapping(review: Task) -> None:
    wrappers = ['"{W}."', "The sentiment is {w}.", "**{w}**", "{w}, clearly", "  {W}!  "]

    def chatty(messages: list[dict[str, Any]]) -> str:
        word = sentiment_answer(messages)
        wrapper = wrappers[len(review_of(messages)) % len(wrappers)]
        return wrapper.format(w=word, W=word.capitalize())

    with OpenAIServer(chatty) as fake:
        candidate = make_candidate(fake.url, multiple_choice="choice")
        result = run_api_task(candidate, review, api_key=None, limit=LIMIT)
    assert result.extra["invalid_answers"] == 0
    assert list(result.predictions) == [rule_index(d) for d in docs()]


def test_invalid_answers_count_as_wrong(review: Task) -> None:
    def unsure(doc_text: str) -> str | None:
        return {0: "Hard to say.", 1: "Both positive and negative."}.get(len(doc_text) % 5)

    def model(messages: list[dict[str, Any]]) -> str:
        return unsure(review_of(messages)) or sentiment_answer(messages)

    with OpenAIServer(model) as fake:
        candidate = make_candidate(fake.url, multiple_choice="choice")
        result = run_api_task(candidate, review, api_key=None, limit=LIMIT)
    rows = docs()
    invalid = [unsure(d["text"]) is not None for d in rows]
    assert 0 < sum(invalid) < LIMIT
    assert result.extra["invalid_answers"] == sum(invalid)
    assert list(result.predictions) == [
        -1 if bad else rule_index(d) for bad, d in zip(invalid, rows, strict=True)
    ]
    want = [
        float(not bad and rule_index(d) == d["label"]) for bad, d in zip(invalid, rows, strict=True)
    ]
    assert list(result.outcomes) == want
    assert result.score == pytest.approx(sum(want) / LIMIT)


@pytest.mark.parametrize(
    ("reply", "choices", "want"),
    [
        ("Positive.", ["negative", "positive"], 1),
        ("  'NEGATIVE'  ", ["negative", "positive"], 0),
        ("“positive”", ["negative", "positive"], 1),
        ("positive, because it is great", ["negative", "positive"], 1),
        ("I would say: negative", ["negative", "positive"], 0),
        ("positively", ["negative", "positive"], None),
        ("both positive and negative", ["negative", "positive"], None),
        ("", ["negative", "positive"], None),
        ("not sure, sorry", ["not", "not sure", "sure"], 1),
        ("i am not   sure", ["not", "not sure", "sure"], 1),
        ("It is not.", ["not", "not sure", "sure"], 0),
        ("B", ["A", "B", "C"], 1),
        ("The answer is (C).", ["(A)", "(B)", "(C)"], 2),
        ("same", ["same", "Same"], None),
    ],
)
def test_match_choice_rule(reply: str, choices: list[str], want: int | None) -> None:
    assert match_choice(reply, choices) == want


@pytest.mark.parametrize(
    ("top", "choices", "want"),
    [
        ([("negative", -2.0), ("positive", -0.1)], ["negative", "positive"], 1),
        ([(" negative", -0.3), ("positive", -1.0)], ["negative", "positive"], 0),
        (
            [("Positive", -0.02), ("negative", -3.9), ("positive", -4.1)],
            ["negative", "positive"],
            1,
        ),
        ([("pos", -0.5), ("negative", -0.9)], ["negative", "positive"], 1),
        ([("ne", -0.1), ("positive", -2.0)], ["negative", "neutral", "positive"], 2),
        ([("The", -0.1), ("I", -0.5)], ["negative", "positive"], None),
        ([("A", -1.0), ("a", -0.5)], ["A", "a"], 1),
        ([("great", -0.2), ("awful", -0.4)], ["awful and cheap", "great and lovely"], 1),
    ],
)
def test_pick_by_logprobs_rule(
    top: list[tuple[str, float]], choices: list[str], want: int | None
) -> None:
    assert pick_by_logprobs(top, choices) == want


# ---------------------------------------------------------------------- generate_until


def test_generate_until_cuts_at_every_stop_and_sends_max_tokens(generate: Task) -> None:
    forms = ["{W}; because the review says so", "{W} really truly very much", "{W}. Sure of it"]
    cut = ["{W}", "{W} really truly very", "{W}"]

    def model(messages: list[dict[str, Any]]) -> str:
        word = sentiment_answer(messages)
        return forms[len(review_of(messages)) % 3].format(W=word.capitalize())

    with OpenAIServer(model) as fake:
        result = run_api_task(make_candidate(fake.url), generate, api_key=None, limit=LIMIT)
    rows = docs()
    assert list(result.predictions) == [
        cut[len(d["text"]) % 3].format(W=sentiment_of(d["text"]).capitalize()) for d in rows
    ]
    labels = ["negative", "positive"]
    assert list(result.outcomes) == [
        float(sentiment_of(d["text"]) == labels[d["label"]]) for d in rows
    ]
    assert result.metric == "exact_match"
    assert result.score == pytest.approx(expected_accuracy())
    for record in fake.answered:
        assert record.body["stop"] == ["\n", ".", "!", "?"]
        assert record.body["max_tokens"] == 4
        assert "logprobs" not in record.body


def test_results_keep_document_order_under_concurrency(generate: Task) -> None:
    def echo(messages: list[dict[str, Any]]) -> str:
        text = review_of(messages)
        time.sleep((len(text) * 7 % 5) * 0.01)  # answers finish out of order
        return "-".join(text.split()[:6]).rstrip(".")

    with OpenAIServer(echo) as fake:
        candidate = make_candidate(fake.url, max_concurrency=8)
        result = run_api_task(candidate, generate, api_key=None, limit=40)
    assert fake.max_in_flight > 1
    assert list(result.predictions) == [
        "-".join(d["text"].split()[:6]).rstrip(".") for d in docs(40)
    ]


# ---------------------------------------------------------------------- faults


def test_429_retry_after_is_honoured_and_nothing_is_lost(
    server: OpenAIServer, review: Task
) -> None:
    server.fail_next(429, {"Retry-After": "1"})
    candidate = make_candidate(server.url, max_concurrency=1, multiple_choice="choice")
    result = run_api_task(candidate, review, api_key=None, limit=5)
    first, second = server.requests[:2]
    assert first.status == 429 and second.status == 200
    assert second.arrived - first.arrived >= 0.95  # really waited the second it was asked to
    assert result.n == 5 and list(result.predictions) == [rule_index(d) for d in docs(5)]
    assert result.extra["retries"] == 1 and result.extra["requests"] == 5
    asked = [r.context + CHOICE_SUFFIX for r in review.requests(5)]
    assert sorted(user_texts(server)) == sorted(asked)  # each once: nothing lost or twice


def test_retry_after_dates_and_cap(server: OpenAIServer, review: Task, sleeps: list[float]) -> None:
    soon = email.utils.formatdate(time.time() + 3, usegmt=True)
    server.fail_next(429, {"Retry-After": soon})
    server.fail_next(503, {"Retry-After": "3600"})
    server.fail_next(429, {"retry-after-ms": "250"})
    candidate = make_candidate(server.url, max_concurrency=1, multiple_choice="choice")
    result = run_api_task(candidate, review, api_key=None, limit=3)
    assert len(sleeps) == 3
    assert 1.0 < sleeps[0] <= 3.0
    assert sleeps[1:] == [60.0, 0.25]
    assert result.extra["retries"] == 3 and result.n == 3


def test_server_errors_back_off_with_full_jitter(
    server: OpenAIServer, review: Task, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(http.random, "uniform", uniform)
    server.fail_next(500, count=2)
    candidate = make_candidate(server.url, max_concurrency=1, multiple_choice="choice")
    result = run_api_task(candidate, review, api_key=None, limit=4)
    assert bounds == [(0.0, 0.5), (0.0, 1.0)] and sleeps == [0.5, 1.0]
    assert result.extra["retries"] == 2 and result.extra["requests"] == 4
    assert list(result.predictions) == [rule_index(d) for d in docs(4)]
    assert [r.status for r in server.requests] == [500, 500, 200, 200, 200, 200]


def test_persistent_503_is_unavailable_after_capped_backoff(
    server: OpenAIServer, review: Task, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http.random, "uniform", lambda low, high: high)
    server.fail_next(503, count=1000)
    candidate = make_candidate(server.url, max_concurrency=1, max_retries=8)
    with pytest.raises(EndpointUnavailable) as caught:
        run_api_task(candidate, review, api_key=None, limit=5)
    assert "vendor-x" in str(caught.value) and "HTTP 503" in str(caught.value)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert len(server.requests) == 9


def test_wrong_key_is_refused_at_once_and_never_shown(
    server: OpenAIServer, review: Task, caplog: pytest.LogCaptureFixture
) -> None:
    server.require_key("sk-the-right-one")
    candidate = make_candidate(server.url, api_key_env="VENDOR_X_KEY")
    with caplog.at_level(logging.DEBUG), pytest.raises(EndpointRefused) as caught:
        run_api_task(candidate, review, api_key=KEY, limit=5)
    message = str(caught.value)
    assert "vendor-x" in message and "HTTP 401" in message
    assert "Incorrect API key provided" in message and "$VENDOR_X_KEY" in message
    assert KEY not in message and KEY not in repr(caught.value)
    assert KEY not in caplog.text
    assert len(server.requests) == 1  # no retry
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_right_key_is_sent_and_kept_out_of_results(server: OpenAIServer, review: Task) -> None:
    server.require_key(KEY)
    result = run_api_task(make_candidate(server.url), review, api_key=KEY, limit=5)
    assert result.n == 5
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert KEY not in repr(result)


def test_no_key_sends_no_authorization(server: OpenAIServer, review: Task) -> None:
    run_api_task(make_candidate(server.url), review, api_key=None, limit=3)
    assert all("authorization" not in r.headers for r in server.requests)


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_client_errors_are_refused_without_retry(
    server: OpenAIServer, review: Task, status: int
) -> None:
    server.fail_next(status)
    candidate = make_candidate(server.url, multiple_choice="choice", max_concurrency=1)
    with pytest.raises(EndpointRefused, match=f"HTTP {status}: Injected failure {status}"):
        run_api_task(candidate, review, api_key=None, limit=5)
    assert len(server.requests) == 1


def test_a_refusal_stops_calls_waiting_to_retry(server: OpenAIServer, review: Task) -> None:
    # Two calls at once: one is told to come back in a minute, the other is refused.
    server.set_delay(0.1)
    server.fail_next(429, {"Retry-After": "60"})
    server.fail_next(404)
    candidate = make_candidate(server.url, max_concurrency=2, multiple_choice="choice")
    started = time.monotonic()
    with pytest.raises(EndpointRefused, match="HTTP 404"):
        run_api_task(candidate, review, api_key=None, limit=6)
    assert time.monotonic() - started < 30  # the minute's wait was cut short, not sat out
    assert len(server.requests) == 2  # and no other document was started


def test_unknown_model_is_refused(review: Task) -> None:
    refused = pytest.raises(EndpointRefused, match="HTTP 404: The model 'vendor-x-large'")
    with OpenAIServer(model="the-real-name") as fake, refused:
        run_api_task(make_candidate(fake.url), review, api_key=None, limit=3)


def test_malformed_replies_are_retried(
    server: OpenAIServer, review: Task, sleeps: list[float]
) -> None:
    server.fail_next(200, body=b"<html>gateway hiccup</html>")
    server.fail_next(200, body=b'{"choices": []}')
    candidate = make_candidate(server.url, max_concurrency=1, multiple_choice="choice")
    result = run_api_task(candidate, review, api_key=None, limit=4)
    assert result.extra["retries"] == 2 and len(sleeps) == 2
    assert list(result.predictions) == [rule_index(d) for d in docs(4)]


def test_persistently_malformed_replies_are_unavailable(
    server: OpenAIServer, review: Task, sleeps: list[float]
) -> None:
    server.fail_next(200, body=b"not json", count=100)
    candidate = make_candidate(server.url, max_concurrency=1, max_retries=2)
    with pytest.raises(EndpointUnavailable, match="malformed reply"):
        run_api_task(candidate, review, api_key=None, limit=3)
    assert len(server.requests) == 3


def test_unreachable_endpoint_is_unavailable(review: Task, sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    candidate = make_candidate(f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(EndpointUnavailable, match="connection failed"):
        run_api_task(candidate, review, api_key=KEY, limit=3)
    assert len(sleeps) == 2


def test_hung_endpoint_times_out(server: OpenAIServer, review: Task, sleeps: list[float]) -> None:
    server.set_delay(1.0)
    candidate = make_candidate(server.url, timeout_s=0.2, max_retries=1, max_concurrency=1)
    with pytest.raises(EndpointUnavailable, match=r"timed out after 0\.2 s"):
        run_api_task(candidate, review, api_key=None, limit=2)
    assert len(sleeps) == 1


# ---------------------------------------------------------------------- concurrency, cost


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrency_limit_is_respected(review: Task, limit: int) -> None:
    with OpenAIServer() as fake:
        fake.set_delay(0.05)
        candidate = make_candidate(fake.url, max_concurrency=limit, multiple_choice="choice")
        result = run_api_task(candidate, review, api_key=None, limit=12)
    assert result.n == 12
    assert fake.max_in_flight <= limit
    assert fake.max_in_flight == limit  # and the allowed parallelism is used


def test_tokens_and_cost_from_usage(
    server: OpenAIServer, review: Task, sleeps: list[float]
) -> None:
    server.fail_next(500)  # a failed attempt is not billed
    candidate = make_candidate(
        server.url,
        input_usd_per_1m=2.5,
        output_usd_per_1m=10.0,
        multiple_choice="choice",
        max_retries=1,
    )
    result = run_api_task(candidate, review, api_key=None, limit=20)
    bodies = [r.body for r in server.answered]
    words_in = sum(len(m["content"].split()) for b in bodies for m in b["messages"])
    extra = result.extra
    assert extra["input_tokens"] == words_in
    assert extra["output_tokens"] == 20  # one word each
    assert extra["tokens_estimated"] is False
    cost = words_in * 2.5 / 1e6 + 20 * 10.0 / 1e6
    assert extra["cost_usd"] == pytest.approx(cost)
    assert extra["cost_per_1k_usd"] == pytest.approx(cost / 20 * 1000)
    assert result.stats.tokens == words_in + 20
    assert result.stats.batches == extra["requests"] == 20
    assert result.stats.peak_memory_mb == 0.0
    assert result.stats.p95_batch_s >= result.stats.p50_batch_s > 0


def test_tokens_are_estimated_without_usage(review: Task) -> None:
    with OpenAIServer(usage=False) as fake:
        candidate = make_candidate(fake.url, multiple_choice="choice", input_usd_per_1m=1.0)
        result = run_api_task(candidate, review, api_key=None, limit=10)
    bodies = [r.body for r in fake.answered]
    chars = [sum(len(m["content"]) for m in b["messages"]) for b in bodies]
    assert result.extra["tokens_estimated"] is True
    assert result.extra["input_tokens"] == sum(math.ceil(c / 4) for c in chars)
    assert result.extra["output_tokens"] == 10 * 2  # "positive"/"negative": 8 characters
    assert result.extra["cost_usd"] == pytest.approx(result.extra["input_tokens"] / 1e6)


# ---------------------------------------------------------------------- prompt settings


def test_system_prompt_is_sent_when_configured(server: OpenAIServer, review: Task) -> None:
    prompt = PromptSettings(system_prompt="You label reviews.")
    run_api_task(make_candidate(server.url), review, api_key=None, limit=4, prompt=prompt)
    run_api_task(make_candidate(server.url), review, api_key=None, limit=4)
    with_system, without = server.answered[:4], server.answered[4:]
    contexts = sorted(r.context for r in review.requests(4))
    assert all(r.body["messages"][0] == {"role": "system", "content": "You label reviews."}
               for r in with_system)  # fmt: skip
    assert all(len(r.body["messages"]) == 2 for r in with_system)
    assert all(len(r.body["messages"]) == 1 for r in without)
    assert sorted(r.body["messages"][-1]["content"] for r in with_system) == contexts


def test_num_fewshot_override_adds_shots_as_turns(server: OpenAIServer, review: Task) -> None:
    # Each example a user turn and an assistant turn (as a local model's chat template gets
    # them), then the question; with fewshot_as_multiturn false, all in one user turn.
    prompt = PromptSettings(num_fewshot=2)
    result = run_api_task(make_candidate(server.url), review, api_key=None, limit=5, prompt=prompt)
    roles = [[m["role"] for m in r.body["messages"]] for r in server.answered if r.body]
    assert roles == [["user", "assistant"] * 2 + ["user"]] * 5
    assert all(text.count("Review: ") == 1 for text in user_texts(server))
    assert list(result.predictions) == [rule_index(d) for d in docs(5)]
    single = PromptSettings(num_fewshot=2, fewshot_as_multiturn=False)
    result = run_api_task(make_candidate(server.url), review, api_key=None, limit=5, prompt=single)
    second = [r.body["messages"] for r in server.answered[5:] if r.body]
    assert [len(messages) for messages in second] == [1] * 5
    assert all(messages[0]["content"].count("Review: ") == 3 for messages in second)
    assert list(result.predictions) == [rule_index(d) for d in docs(5)]
