"""A tiny, in-process OpenAI-compatible chat-completions server for tests.

Any OpenAI-compatible client works against it with ``base_url=server.url``::

    with OpenAIServer() as server:
        httpx.post(f"{server.url}/chat/completions", json={"model": "m", "messages": [...]})

Route: ``POST /v1/chat/completions``. The "model" answers deterministically with
``answer(messages) -> str`` (default: :func:`sentiment_answer`). Like the real endpoint it
honours ``stop`` (the reply is cut before the first stop string, which is not included) and
``max_tokens`` (counted in whitespace-separated words here), reports ``usage`` (prompt tokens =
words in all messages, completion tokens = words in the reply) and, when asked with
``logprobs: true``, returns ``choices[0].logprobs.content`` with ``top_logprobs`` alternatives for
the first token. Errors use OpenAI's shape: ``{"error": {"message", "type", "code"}}``.

Test controls: :meth:`OpenAIServer.fail_next` (inject statuses, headers or raw bodies),
:meth:`OpenAIServer.set_delay`, :meth:`OpenAIServer.require_key`, and the ``logprobs`` and
``usage`` switches. Observations: ``requests`` (every request with its body, headers, status and
arrival time), ``answered`` (those the model answered) and ``max_in_flight``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from supersede.demo.localhub.server import LocalHandler, LocalServer

__all__ = ["POSITIVE_WORDS", "OpenAIServer", "RecordedRequest", "sentiment_answer", "sentiment_of"]

Answer = Callable[[list[dict[str, Any]]], str]

#: Words that make the default model call a review positive (unless it also says "not ").
POSITIVE_WORDS = (
    "great", "lovely", "excellent", "perfect", "beautiful",
    "comfortable", "elegant", "superb", "stylish", "sturdy",
)  # fmt: skip
_REVIEW_RE = re.compile(r"Review:(.*?)\nSentiment:", re.DOTALL)
#: Plausible other first tokens, none of them a prefix of "positive" or "negative".
_FILLERS = ("The", "This", "I", "It", "Based", "Sure", "Overall", "Review", "Answer", "Mixed")


def sentiment_of(review: str) -> str:
    """The default model's rule: "positive" when a praise word occurs and no "not "."""
    text = review.lower()
    positive = any(word in text for word in POSITIVE_WORDS) and "not " not in text
    return "positive" if positive else "negative"


def sentiment_answer(messages: list[dict[str, Any]]) -> str:
    """Answer the last "Review: ...\\nSentiment:" of the last user message with its sentiment."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    reviews = _REVIEW_RE.findall(str(user))
    return sentiment_of(reviews[-1] if reviews else str(user))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received, and the status it was answered with."""

    path: str
    #: The parsed JSON body (``None`` when it was not JSON).
    body: dict[str, Any] | None
    #: Header names lower-cased.
    headers: dict[str, str]
    status: int
    #: Answered by :meth:`OpenAIServer.fail_next` rather than by the model.
    injected: bool
    #: ``time.monotonic()`` when it arrived.
    arrived: float


@dataclass
class _Fault:
    status: int
    headers: dict[str, str]
    body: bytes | None
    remaining: int


class _Handler(LocalHandler):
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server_version = "FakeOpenAI/1.0"

    def do_GET(self) -> None:
        self._reply(404, _error(f"Unknown route: GET {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:
        owner = cast("OpenAIServer", self.server.owner)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: dict[str, Any] | None = json.loads(raw)
        except ValueError:
            body = None
        headers = {key.lower(): value for key, value in self.headers.items()}
        arrived = time.monotonic()
        delay = owner._enter()
        fault = owner._take_fault()
        payload: bytes | dict[str, Any]
        try:
            if delay:
                time.sleep(delay)
            if fault is not None:
                status, extra = fault.status, fault.headers
                message = f"Injected failure {fault.status}"
                payload = _error(message, "server_error") if fault.body is None else fault.body
            else:
                status, payload, extra = self._handle(owner, body, headers)
        except Exception:
            owner.record_error()
            status, payload, extra = 500, _error("fake server error", "server_error"), {}
        finally:
            owner._leave()
        owner._record(RecordedRequest(self.path, body, headers, status, fault is not None, arrived))
        self._reply(status, payload, extra)

    def _handle(
        self, owner: OpenAIServer, body: dict[str, Any] | None, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.path.rstrip("/") != "/v1/chat/completions":
            return 404, _error(f"Unknown route: POST {self.path}", "invalid_request_error"), {}
        with owner._lock:
            key = owner._key
        if key is not None:
            sent = headers.get("authorization", "")
            if sent != f"Bearer {key}":
                # Some vendors echo the key they got: clients must keep it out of their errors.
                given = sent.removeprefix("Bearer ") or "(none)"
                message = f"Incorrect API key provided: {given}."
                return 401, _error(message, "invalid_request_error", "invalid_api_key"), {}
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return 400, _error("'messages' is a required property", "invalid_request_error"), {}
        if owner.model is not None and body.get("model") != owner.model:
            message = f"The model '{body.get('model')}' does not exist"
            return 404, _error(message, "invalid_request_error", "model_not_found"), {}
        return 200, owner.completion(body), {}

    def _reply(
        self,
        status: int,
        payload: bytes | dict[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_json(status, payload, headers)


class OpenAIServer(LocalServer):
    """Fake OpenAI-compatible endpoint on ``http://127.0.0.1:<free port>/v1``.

    Attributes:
        url: Base URL ending in ``/v1`` (``{url}/chat/completions`` is the route).
        logprobs: Whether replies carry log-probs when a request asks for them.
        usage: Whether replies carry ``usage``.
        errors: Tracebacks of unexpected exceptions while handling requests (answered 500).
    """

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        logprobs: bool = True,
        usage: bool = True,
        model: str | None = None,
    ) -> None:
        """Create the server (not yet listening).

        Args:
            answer: ``answer(messages) -> str``, the full reply before ``stop``/``max_tokens``.
            logprobs: Return log-probs when asked (``False``: like an endpoint that ignores it).
            usage: Report token usage.
            model: When given, any other model name is answered with 404 ``model_not_found``.
        """
        self.answer: Answer = answer or sentiment_answer
        self.logprobs = logprobs
        self.usage = usage
        self.model = model
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._delay = 0.0
        self._key: str | None = None
        self._in_flight = 0
        self._max_in_flight = 0
        super().__init__()

    # ------------------------------------------------------------------ lifecycle

    handler_class = _Handler

    def _bound(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1"

    # ------------------------------------------------------------------ test controls

    def fail_next(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        count: int = 1,
        *,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (queued after earlier faults).

        ``body`` replaces the OpenAI-style error JSON: e.g. ``fail_next(200, body=b"<html>")``
        sends a malformed success.
        """
        with self._lock:
            self._faults.append(_Fault(status, dict(headers or {}), body, count))

    def set_delay(self, seconds: float) -> None:
        """Hold every later request this long before answering (requests overlap)."""
        with self._lock:
            self._delay = seconds

    def require_key(self, key: str | None) -> None:
        """Answer 401 unless ``Authorization: Bearer <key>`` (``None``: no check)."""
        with self._lock:
            self._key = key

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def answered(self) -> list[RecordedRequest]:
        """The requests answered with a chat completion (status 200, no injected fault)."""
        return [r for r in self.requests if r.status == 200 and not r.injected]

    @property
    def max_in_flight(self) -> int:
        """The most requests seen being handled at the same time."""
        with self._lock:
            return self._max_in_flight

    # ------------------------------------------------------------------ internals

    def _enter(self) -> float:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return self._delay

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(0)
            return fault

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The chat-completion object answering ``body``."""
        messages = list(body.get("messages") or [])
        full = self.answer(messages)
        text, finish = _truncate(full, body.get("stop"), body.get("max_tokens"))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        if body.get("logprobs") and self.logprobs:
            choice["logprobs"] = {"content": _logprobs(text, int(body.get("top_logprobs") or 0))}
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
        }
        if self.usage:
            prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
            completion = len(text.split())
            payload["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return payload


def _truncate(text: str, stop: Any, max_tokens: Any) -> tuple[str, str]:
    finish = "stop"
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    if cut >= 0:
        text = text[:cut]
    if isinstance(max_tokens, int):
        words = re.findall(r"\s*\S+", text)
        if len(words) > max_tokens:
            text, finish = "".join(words[:max_tokens]), "length"
    return text, finish


def _logprobs(text: str, top_n: int) -> list[dict[str, Any]]:
    """Per-word token entries; the first carries plausible alternatives, the reply's highest."""
    words = re.findall(r"\s*\S+", text) or [""]
    first = words[0]
    alternatives = {first: -0.02}
    word = first.strip().lower()
    if word in ("positive", "negative"):
        other = "negative" if word == "positive" else "positive"
        for token, logprob in (
            (other, -3.9),
            (" " + word, -4.1),
            (word.capitalize(), -4.6),
            (word, -4.8),
            (" " + other, -6.2),
            (other.capitalize(), -6.8),
        ):
            alternatives.setdefault(token, logprob)
    for i, filler in enumerate(_FILLERS):
        alternatives.setdefault(filler, -7.0 - i * 0.5)
    ranked = sorted(alternatives.items(), key=lambda item: -item[1])[:top_n]
    entries = [
        {"token": w, "logprob": -0.02, "bytes": list(w.encode()), "top_logprobs": []} for w in words
    ]
    entries[0]["top_logprobs"] = [
        {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in ranked
    ]
    return entries


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
