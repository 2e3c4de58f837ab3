"""The HTTP side of an OpenAI-compatible chat-completions endpoint.

Reliability
    One shared :class:`httpx.Client` serves at most ``max_concurrency`` requests in flight.
    HTTP 408, 429, 500, 502, 503 and 504, connection errors, timeouts and malformed replies are
    retried up to ``max_retries`` times. Before retry *k* (1, 2, ...) it waits what the endpoint
    asks for in ``Retry-After`` (seconds or an HTTP date; or ``retry-after-ms``), at most 60 s,
    and otherwise a random delay in ``[0, min(30, 0.5 * 2**(k - 1))]`` s (exponential backoff
    with full jitter). When the retries are spent the run fails with
    :class:`~core.errors.EndpointUnavailable`. Any other 4xx (and any other status) fails at
    once with :class:`~core.errors.EndpointRefused`, naming the candidate, the status and the
    endpoint's own message. The API key never appears in an error, a log line or a result.

Costs and statistics
    ``usage.prompt_tokens`` and ``usage.completion_tokens`` are summed over all successful calls
    (a reply without usage is estimated as ``ceil(characters / 4)`` and sets
    ``extra["tokens_estimated"]``). ``extra`` also holds ``requests`` (successful calls, each
    possibly after retries), ``retries``, ``invalid_answers``, ``cost_usd`` and
    ``cost_per_1k_usd`` (per 1,000 examples). In :class:`RunStats` the "batches" are calls:
    ``p50_batch_s``/``p95_batch_s`` are per-call latencies including retries and waits, and
    ``extra["latency"]`` holds the same per-call latencies in the local runner's record
    (:mod:`benchmarks.latency`), marked ``"network": true``: every call is one request.
    ``acc_norm`` equals ``acc`` here: an API gives no per-character log-likelihood of a choice.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from benchmarks.engine import nearest_rank
from benchmarks.latency import summarize
from benchmarks.scoring import RunStats
from config.api import ApiCandidate
from core.errors import EndpointRefused, EndpointUnavailable
from core.http import full_jitter, retry_after

log = logging.getLogger(__name__)

#: Statuses worth another try: timeouts, rate limits and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 60.0
_ERROR_CHARS = 300


def _wait(seconds: float, stop: threading.Event) -> None:
    stop.wait(seconds)  # returns early when the run is aborted


#: How retries wait: ``(seconds, stop_event)``. Tests replace it to skip real backoff.
_sleep: Callable[[float, threading.Event], None] = _wait


@dataclass(frozen=True)
class Reply:
    text: str
    #: The first token's ``(token, logprob)`` alternatives; ``None`` when the reply has none.
    top_logprobs: list[tuple[str, float]] | None
    #: ``(input, output)`` tokens of this call: as the endpoint reported them, else estimated.
    usage: tuple[int, int] = (0, 0)


class Rejected(EndpointRefused):
    """EndpointRefused that keeps the HTTP status (auto mode reacts to 400/422)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Aborted(EndpointUnavailable):
    """A call given up because another one failed; never the error a run reports."""


class Endpoint:
    """One shared client with retries, and the run's counters (thread-safe)."""

    def __init__(
        self,
        candidate: ApiCandidate,
        api_key: str | None,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self.candidate = candidate
        self.url = candidate.base_url.rstrip("/") + "/chat/completions"
        self._key = api_key or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(candidate.timeout_s),
            limits=httpx.Limits(
                max_connections=candidate.max_concurrency,
                max_keepalive_connections=candidate.max_concurrency,
            ),
            transport=transport,
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.estimated = False
        self.latencies: list[float] = []

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def abort(self) -> None:
        """Make calls still in flight give up at their next attempt or wait."""
        self._stop.set()

    # ------------------------------------------------------------------ one call

    def chat(self, messages: list[dict[str, str]], params: Mapping[str, Any]) -> Reply:
        """One chat completion, retried as the module docstring says."""
        body = {"model": self.candidate.model, "messages": messages, "temperature": 0, **params}
        started = time.perf_counter()
        attempts = self.candidate.max_retries + 1
        reason = ""
        for attempt in range(attempts):
            if self._stop.is_set():
                raise Aborted(f"{self._who()}: run aborted after another request failed")
            wait: float | None = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                reason = f"timed out after {self.candidate.timeout_s:g} s"
            except httpx.TransportError as exc:
                reason = f"connection failed ({type(exc).__name__}: {self._redact(str(exc))})"
            except httpx.RequestError as exc:  # e.g. an undecodable compressed body
                reason = f"request failed ({type(exc).__name__}: {self._redact(str(exc))})"
            else:
                status = response.status_code
                if response.is_success:
                    parsed = _parse(response)
                    if parsed is not None:
                        reply, usage = parsed
                        took = time.perf_counter() - started
                        return replace(reply, usage=self._record(messages, reply, usage, took))
                    reason = f"malformed reply (HTTP {status}, not a chat completion)"
                elif status in RETRY_STATUSES:
                    reason = f"HTTP {status}: {self._error_text(response)}"
                    wait = _retry_after(response.headers)
                else:
                    raise Rejected(self._refusal(response), status)
            if attempt + 1 == attempts:
                break
            delay = wait if wait is not None else _backoff(attempt)
            log.info(
                "%s: %s; retry %d/%d in %.1f s",
                self._who(),
                reason,
                attempt + 1,
                attempts - 1,
                delay,
            )
            with self._lock:
                self.retries += 1
            _sleep(delay, self._stop)
        raise EndpointUnavailable(
            f"{self._who()}: no answer from {self.url} after {attempts} attempt"
            f"{'s' if attempts > 1 else ''}: {reason}. Try again later, or raise max_retries "
            "or timeout_s for this candidate"
        )

    def _who(self) -> str:
        return f"API candidate '{self.candidate.name}' (model '{self.candidate.model}')"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[API key]") if self._key else text

    def _error_text(self, response: httpx.Response) -> str:
        try:
            data = response.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        message: Any = None
        if isinstance(data, dict):
            error = data.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            message = message or data.get("message") or data.get("detail")
        if not isinstance(message, str) or not message.strip():
            message = response.text or response.reason_phrase or "no message"
        message = " ".join(message.split())
        if len(message) > _ERROR_CHARS:
            message = message[: _ERROR_CHARS - 1] + "…"
        return self._redact(message)

    def _refusal(self, response: httpx.Response) -> str:
        status, candidate = response.status_code, self.candidate
        if status == 401 and not self._key:
            hint = "no API key was sent: set api_key_env for this candidate and export the key"
        elif status == 401:
            where = f" in ${candidate.api_key_env}" if candidate.api_key_env else ""
            hint = f"check the API key{where}"
        elif status == 403:
            hint = f"the key has no access to model '{candidate.model}'"
        elif status == 404:
            hint = f"check base_url ({candidate.base_url}) and the model name"
        elif status in (400, 422):
            hint = "the endpoint rejected the request body (an unsupported parameter or model?)"
        elif 300 <= status < 400:
            hint = "the endpoint redirects elsewhere: put the final URL in base_url"
        else:
            hint = "retrying will not help"
        return (
            f"{self._who()}: the endpoint refused the request with HTTP {status}: "
            f"{self._error_text(response)} ({hint})"
        )

    # ------------------------------------------------------------------ accounting

    def _record(
        self,
        messages: Sequence[Mapping[str, str]],
        reply: Reply,
        usage: tuple[int, int] | None,
        latency: float,
    ) -> tuple[int, int]:
        """Count one successful call; its ``(input, output)`` tokens (estimated when the
        endpoint reported none)."""
        estimated = usage is None
        if usage is None:
            chars = sum(len(message["content"]) for message in messages)
            usage = (math.ceil(chars / 4), math.ceil(len(reply.text) / 4))
        with self._lock:
            self.requests += 1
            self.input_tokens += usage[0]
            self.output_tokens += usage[1]
            self.estimated |= estimated
            self.latencies.append(latency)
        return usage

    def usage_extra(self, candidate: ApiCandidate, n: int) -> dict[str, Any]:
        """Token counts, requests, retries and cost for ``RunResult.extra``."""
        cost = (
            self.input_tokens * candidate.input_usd_per_1m / 1e6
            + self.output_tokens * candidate.output_usd_per_1m / 1e6
        )
        return {
            "requests": self.requests,
            "retries": self.retries,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens_estimated": self.estimated,
            "cost_usd": cost,
            "cost_per_1k_usd": cost / n * 1000 if n else 0.0,
        }

    def latency_extra(self) -> dict[str, Any]:
        """``{"latency": ...}`` over every successful call (wall time, retries included);
        empty when no call succeeded."""
        if not self.latencies:
            return {}
        return {"latency": summarize(self.latencies, network=True)}

    def stats(self, elapsed: float, n: int) -> RunStats:
        """Run statistics; each call is one "batch"."""
        times = sorted(self.latencies) or [0.0]
        tokens = self.input_tokens + self.output_tokens
        return RunStats(
            scoring_s=elapsed,
            examples_per_s=n / elapsed if elapsed > 0 else 0.0,
            tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
            p50_batch_s=statistics.median(times),
            p95_batch_s=nearest_rank(times, 0.95),
            peak_memory_mb=0.0,
            batches=self.requests,
            tokens=tokens,
        )


def _parse(response: httpx.Response) -> tuple[Reply, tuple[int, int] | None] | None:
    """The reply and its ``(prompt, completion)`` token usage; ``None`` when malformed."""
    try:
        data = response.json()
        message = data["choices"][0]["message"]
        text = message.get("content")
    except (ValueError, UnicodeDecodeError, LookupError, TypeError, AttributeError):
        return None
    if text is None:  # e.g. a refusal or a tool call: no text at all
        text = ""
    if not isinstance(text, str):
        return None
    return Reply(text, _top_logprobs(data["choices"][0])), _usage(data.get("usage"))


def _top_logprobs(choice: Any) -> list[tuple[str, float]] | None:
    try:
        top = choice["logprobs"]["content"][0]["top_logprobs"]
        pairs = [(str(entry["token"]), float(entry["logprob"])) for entry in top]
    except (LookupError, TypeError, ValueError):
        return None
    return pairs or None


def _usage(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


def _retry_after(headers: httpx.Headers) -> float | None:
    """The wait the endpoint asks for, capped at 60 s."""
    seconds = retry_after(headers)
    return None if seconds is None else min(seconds, RETRY_AFTER_CAP_S)


def _backoff(attempt: int) -> float:
    return full_jitter(attempt, BACKOFF_BASE_S, BACKOFF_CAP_S)
