"""Scoring a candidate that is reachable only through an OpenAI-compatible chat-completions API.

Every document becomes one ``POST {base_url}/chat/completions`` with ``temperature: 0``: an
optional system message (``prompt.system_prompt``) and one user message.

generate_until
    The user message is the rendered context; ``max_tokens`` is the task's ``max_gen_toks`` and
    ``stop`` its first four ``until`` strings (OpenAI accepts at most four). The reply is then cut
    at every ``until`` string in Python, as lm-eval does (``text = text.split(stop)[0]`` for each),
    and scored with the task's metrics exactly as the local runner scores generated text.

multiple_choice, ``multiple_choice: logprobs``
    The user message is the rendered context, sent with ``max_tokens: 1, logprobs: true,
    top_logprobs: 20`` (the first document alone first: if that reply carries no log-probs the
    run stops with :class:`~config.errors.EndpointRefused`; configure ``auto`` or ``choice``).
    Each of the first generated token's top alternatives is attributed to at most one choice by
    comparing the token, stripped of whitespace, with each choice, stripped of whitespace, under
    these rules in order:

    1. the token equals the choice (case-sensitive);
    2. the token is a prefix of the choice (case-sensitive);
    3. the token equals the choice ignoring case;
    4. the token is a prefix of the choice ignoring case.

    The first rule that fits any choice decides: the token counts for that choice when the rule
    fits exactly one, and for none when it fits several; a token no rule fits counts for none.
    So ``"Positive"`` counts for the choice ``positive``, and ``"ne"`` for neither ``negative``
    nor ``neutral``. A choice's score is the highest log-prob among the tokens
    attributed to it; the prediction is the highest-scoring choice, the first one on ties. When
    no alternative is attributed to any choice (or a reply has no log-probs), that one example
    is asked again in choice mode (counted in ``extra["logprob_fallbacks"]``).

multiple_choice, ``multiple_choice: choice``
    The user message is ``context + "\\n\\nAnswer with exactly one of: " + "; ".join(choices) +
    "."``. The reply and every choice are *normalised*: surrounding whitespace, quotes
    (``" ' ` “ ” ‘ ’ « »``) and ``*`` are removed and trailing ``. , ; : ! ?`` too, repeatedly
    until nothing changes; runs of whitespace become one space; the text is lower-cased. The
    reply then names a choice by the first of these rules that applies:

    1. exact: the reply equals exactly one choice;
    2. prefix: the reply starts with a choice followed by the end of the reply or a character
       that is not a letter, digit or underscore; choices are tried longest first, so a reply
       ``not sure, sorry`` names ``not sure`` rather than ``not``;
    3. mention: exactly one choice occurs in the reply as a whole word or phrase (not inside a
       longer word); choices are searched longest first and each occurrence found is blanked out
       before shorter choices are searched, so ``i am not sure`` names ``not sure`` alone.

    Anything else (an empty reply, no choice found, two or more choices mentioned in step 3, or a
    match on text that two choices share after normalising) is an invalid answer: it counts as
    wrong, its prediction is ``-1``, and it is counted in ``extra["invalid_answers"]``.

multiple_choice, ``multiple_choice: auto``
    The first document is asked in logprobs mode on its own. If that reply carries
    ``choices[0].logprobs.content[0].top_logprobs``, the whole run uses logprobs mode; if it does
    not, or the endpoint rejects the log-prob request with HTTP 400 or 422, the whole run uses
    choice mode (the first document is asked again). ``extra["multiple_choice_mode"]`` records
    the mode used.

Reliability
    One shared :class:`httpx.Client` serves at most ``max_concurrency`` requests in flight.
    HTTP 408, 429, 500, 502, 503 and 504, connection errors, timeouts and malformed replies are
    retried up to ``max_retries`` times. Before retry *k* (1, 2, ...) it waits what the endpoint
    asks for in ``Retry-After`` (seconds or an HTTP date; or ``retry-after-ms``), at most 60 s,
    and otherwise a random delay in ``[0, min(30, 0.5 * 2**(k - 1))]`` s (exponential backoff
    with full jitter). When the retries are spent the run fails with
    :class:`~config.errors.EndpointUnavailable`. Any other 4xx (and any other status) fails at
    once with :class:`~config.errors.EndpointRefused`, naming the candidate, the status and the
    endpoint's own message. The API key never appears in an error, a log line or a result.

Costs and statistics
    ``usage.prompt_tokens`` and ``usage.completion_tokens`` are summed over all successful calls
    (a reply without usage is estimated as ``ceil(characters / 4)`` and sets
    ``extra["tokens_estimated"]``). ``extra`` also holds ``requests`` (successful calls, each
    possibly after retries), ``retries``, ``invalid_answers``, ``cost_usd`` and
    ``cost_per_1k_usd`` (per 1,000 examples). In :class:`RunStats` the "batches" are calls:
    ``p50_batch_s``/``p95_batch_s`` are per-call latencies including retries and waits.
    ``acc_norm`` equals ``acc`` here: an API gives no per-character log-likelihood of a choice.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from benchmarks.metrics import mean_and_stderr
from benchmarks.runner import RunResult, RunStats, _score_choices, _score_texts
from benchmarks.tasks import Request, Task
from config.errors import EndpointRefused, EndpointUnavailable
from config.settings import ApiCandidate, PromptSettings

__all__ = ["match_choice", "pick_by_logprobs", "run_api_task"]

log = logging.getLogger(__name__)

#: Statuses worth another try: timeouts, rate limits and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: OpenAI's chat-completions endpoint accepts at most this many stop sequences.
MAX_STOP_SEQUENCES = 4
#: Alternatives asked for per token in logprobs mode (OpenAI's maximum).
TOP_LOGPROBS = 20
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 60.0
#: Log-prob requests the endpoint may reject as unsupported (auto mode then asks for a choice).
_LOGPROBS_REJECTED = frozenset({400, 422})
_QUOTES = "\"'`“”‘’«»*"
_TRAILING = ".,;:!?"
_ERROR_CHARS = 300

T = TypeVar("T")


def _wait(seconds: float, stop: threading.Event) -> None:
    stop.wait(seconds)  # returns early when the run is aborted


#: How retries wait: ``(seconds, stop_event)``. Tests replace it to skip real backoff.
_sleep: Callable[[float, threading.Event], None] = _wait


def run_api_task(
    candidate: ApiCandidate,
    task: Task,
    *,
    api_key: str | None,
    limit: int | None = None,
    prompt: PromptSettings | None = None,
    progress: Callable[[int], None] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> RunResult:
    """Score ``candidate`` on ``task`` through its chat-completions endpoint.

    Args:
        candidate: The endpoint, model, prices and reliability settings.
        task: The loaded task.
        api_key: Sent as ``Authorization: Bearer``; ``None`` sends no header.
        limit: Score only the first ``limit`` documents.
        prompt: ``system_prompt`` is sent as a system message; ``num_fewshot`` overrides the
            task file's (``chat_template`` does not apply: an endpoint always chats).
        progress: Called with the number of examples finished, as they finish.
        transport: An httpx transport to use instead of the network (tests, proxies).

    Raises:
        EndpointRefused: the endpoint rejected a request (bad key, model, body): fatal.
        EndpointUnavailable: the endpoint kept failing after ``max_retries`` retries.
    """
    prompt = prompt or PromptSettings()
    if prompt.num_fewshot is not None:
        task = task.with_num_fewshot(prompt.num_fewshot)
    requests = task.requests(limit)
    started = time.perf_counter()
    with _Endpoint(candidate, api_key, transport) as endpoint:
        asker = _Asker(endpoint, prompt.system_prompt)
        extra: dict[str, Any]
        predictions: list[Any]
        if task.output_type == "multiple_choice":
            per_metric, predictions, extra = _run_choices(asker, task, requests, progress)
        else:
            per_metric, predictions = _run_generation(asker, task, requests, progress)
            extra = {"invalid_answers": 0}
    elapsed = time.perf_counter() - started
    metrics = {name: mean_and_stderr(values) for name, values in per_metric.items()}
    primary = task.metric.name
    score, stderr = metrics[primary]
    extra.update(endpoint.usage_extra(candidate, len(requests)))
    return RunResult(
        task=task.name,
        metric=primary,
        score=score,
        stderr=stderr,
        n=len(requests),
        outcomes=tuple(per_metric[primary]),
        predictions=tuple(predictions),
        metrics=metrics,
        stats=endpoint.stats(elapsed, len(requests)),
        extra=extra,
    )


# ---------------------------------------------------------------------- answer matching


def _normalise(text: str) -> str:
    previous = None
    while text != previous:
        previous = text
        text = text.strip().strip(_QUOTES).rstrip(_TRAILING)
    return " ".join(text.split()).lower()


def match_choice(reply: str, choices: Sequence[str]) -> int | None:
    """The index of the choice a free-text reply names, or ``None`` (invalid answer).

    The rule (normalisation, then exact, prefix, mention) is in this module's docstring.
    """
    said = _normalise(reply)
    norm = [_normalise(choice) for choice in choices]

    def single(texts: set[str]) -> int | None:
        hits = [i for i, text in enumerate(norm) if text in texts]
        return hits[0] if len(hits) == 1 else None

    if not said:
        return None
    if said in norm:
        return single({said})
    longest_first = sorted({text for text in norm if text}, key=len, reverse=True)
    for text in longest_first:
        if said.startswith(text) and not _is_word_char(said[len(text) : len(text) + 1]):
            return single({text})
    found: set[str] = set()
    for text in longest_first:
        pattern = re.compile(rf"(?<!\w){re.escape(text)}(?!\w)")
        if pattern.search(said):
            found.add(text)
            said = pattern.sub(" ", said)
    return single(found) if len(found) == 1 else None


def _is_word_char(char: str) -> bool:
    return bool(char) and (char.isalnum() or char == "_")


def pick_by_logprobs(top: Sequence[tuple[str, float]], choices: Sequence[str]) -> int | None:
    """The choice the first token's ``(token, logprob)`` alternatives favour, or ``None``.

    The attribution rule is in this module's docstring.
    """
    stripped = [choice.strip() for choice in choices]
    best: dict[int, float] = {}
    for token, logprob in top:
        index = _attribute(token.strip(), stripped)
        if index is not None and logprob > best.get(index, -math.inf):
            best[index] = logprob
    if not best:
        return None
    return max(sorted(best), key=lambda i: best[i])  # max() keeps the first on ties


def _attribute(token: str, choices: Sequence[str]) -> int | None:
    if not token:
        return None
    lowered = [choice.lower() for choice in choices]
    rules: tuple[Callable[[int], bool], ...] = (
        lambda i: choices[i] == token,
        lambda i: choices[i].startswith(token),
        lambda i: lowered[i] == token.lower(),
        lambda i: lowered[i].startswith(token.lower()),
    )
    for fits in rules:
        hits = [i for i in range(len(choices)) if fits(i)]
        if hits:
            return hits[0] if len(hits) == 1 else None
    return None


# ---------------------------------------------------------------------- the two task kinds


@dataclass(frozen=True)
class _Pick:
    index: int | None  # None: an invalid answer
    fallback: bool = False


def _run_choices(
    asker: _Asker,
    task: Task,
    requests: Sequence[Request],
    progress: Callable[[int], None] | None,
) -> tuple[dict[str, list[float]], list[Any], dict[str, Any]]:
    mode: str = asker.endpoint.candidate.multiple_choice
    picks: list[_Pick] = []
    rest = requests
    if mode != "choice" and requests:
        probe = asker.probe_logprobs(requests[0], allow_rejection=mode == "auto")
        if probe is not None and probe.top_logprobs:
            mode = "logprobs"
            picks.append(asker.pick_logprobs(requests[0], probe))
            rest = requests[1:]
            if progress is not None:
                progress(1)
        elif mode == "logprobs":
            raise EndpointRefused(
                f"API candidate '{asker.endpoint.candidate.name}': multiple_choice is 'logprobs' "
                "but the endpoint returned no top_logprobs; set multiple_choice to 'auto' or "
                "'choice' for this candidate"
            )
        else:
            mode = "choice"
    work = asker.pick_logprobs if mode == "logprobs" else asker.pick_choice
    picks += _map_ordered(asker.endpoint, work, rest, progress)

    # One-hot "log-likelihoods" let the runner's scorer compute every metric as it always does.
    rows = [
        [0.0 if i == pick.index else -math.inf for i in range(len(request.choices))]
        for request, pick in zip(requests, picks, strict=True)
    ]
    per_metric, chosen = _score_choices(task, requests, rows)
    predictions: list[Any] = list(chosen)
    for i, pick in enumerate(picks):
        if pick.index is None:  # all -inf would read as choice 0: an invalid answer is wrong
            predictions[i] = -1
            for values in per_metric.values():
                values[i] = 0.0
    extra = {
        "multiple_choice_mode": mode,
        "invalid_answers": sum(pick.index is None for pick in picks),
        "logprob_fallbacks": sum(pick.fallback for pick in picks),
    }
    return per_metric, predictions, extra


def _run_generation(
    asker: _Asker,
    task: Task,
    requests: Sequence[Request],
    progress: Callable[[int], None] | None,
) -> tuple[dict[str, list[float]], list[str]]:
    stops = [stop for stop in task.until if stop]

    def generate(request: Request) -> str:
        text = asker.ask(
            request.context,
            max_tokens=task.max_gen_toks,
            **({"stop": stops[:MAX_STOP_SEQUENCES]} if stops else {}),
        ).text
        for stop in stops:  # the endpoint saw only four of them
            text = text.split(stop)[0]
        return text

    texts = _map_ordered(asker.endpoint, generate, requests, progress)
    return _score_texts(task, requests, texts)


def _map_ordered(
    endpoint: _Endpoint,
    fn: Callable[[Request], T],
    items: Sequence[Request],
    progress: Callable[[int], None] | None,
) -> list[T]:
    """``fn`` over ``items`` with at most ``max_concurrency`` in flight; results in item order."""
    if not items:
        return []

    def guarded(item: Request) -> T:
        try:
            return fn(item)
        except BaseException:
            endpoint.abort()  # at once: the worker would otherwise start the next document
            raise

    results: dict[int, T] = {}
    pool = ThreadPoolExecutor(endpoint.candidate.max_concurrency, thread_name_prefix="api")
    futures = {pool.submit(guarded, item): i for i, item in enumerate(items)}
    try:
        for future in as_completed(futures):
            if future.exception() is not None:
                break
            results[futures[future]] = future.result()
            if progress is not None:
                progress(1)
    except BaseException:
        endpoint.abort()  # e.g. Ctrl-C: calls in flight stop at their next attempt or wait
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    errors = [f.exception() for f in futures if f.done() and not f.cancelled()]
    failures = [e for e in errors if e is not None]
    if failures:
        # Raise the error that stopped the run, not a call that gave up because of it.
        raise next((e for e in failures if not isinstance(e, _Aborted)), failures[0])
    return [results[i] for i in range(len(items))]


# ---------------------------------------------------------------------- requests


@dataclass(frozen=True)
class _Reply:
    text: str
    #: The first token's ``(token, logprob)`` alternatives; ``None`` when the reply has none.
    top_logprobs: list[tuple[str, float]] | None


class _Asker:
    """Builds the chat messages of each kind of question and reads the answers."""

    def __init__(self, endpoint: _Endpoint, system_prompt: str | None) -> None:
        self.endpoint = endpoint
        self.system_prompt = system_prompt

    def ask(self, user: str, **params: Any) -> _Reply:
        messages = [{"role": "user", "content": user}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.endpoint.chat(messages, params)

    def _ask_logprobs(self, request: Request) -> _Reply:
        return self.ask(request.context, max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)

    def probe_logprobs(self, request: Request, *, allow_rejection: bool) -> _Reply | None:
        """The first log-prob request; ``None`` when the endpoint rejects such requests."""
        try:
            return self._ask_logprobs(request)
        except _Rejected as exc:
            if allow_rejection and exc.status in _LOGPROBS_REJECTED:
                log.info("%s; asking for a choice instead", exc)
                return None
            raise

    def pick_logprobs(self, request: Request, reply: _Reply | None = None) -> _Pick:
        reply = reply or self._ask_logprobs(request)
        index = pick_by_logprobs(reply.top_logprobs or [], request.choices)
        if index is not None:
            return _Pick(index)
        return _Pick(self.pick_choice(request).index, fallback=True)

    def pick_choice(self, request: Request) -> _Pick:
        question = (
            request.context + "\n\nAnswer with exactly one of: " + "; ".join(request.choices) + "."
        )
        # Room for the longest choice (about 4 characters a token) and a little wrapping.
        budget = 16 + math.ceil(max(len(choice) for choice in request.choices) / 2)
        return _Pick(match_choice(self.ask(question, max_tokens=budget).text, request.choices))


class _Rejected(EndpointRefused):
    """EndpointRefused that keeps the HTTP status (auto mode reacts to 400/422)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Aborted(EndpointUnavailable):
    """A call given up because another one failed; never the error a run reports."""


class _Endpoint:
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

    def __enter__(self) -> _Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def abort(self) -> None:
        """Make calls still in flight give up at their next attempt or wait."""
        self._stop.set()

    # ------------------------------------------------------------------ one call

    def chat(self, messages: list[dict[str, str]], params: Mapping[str, Any]) -> _Reply:
        """One chat completion, retried as the module docstring says."""
        body = {"model": self.candidate.model, "messages": messages, "temperature": 0, **params}
        started = time.perf_counter()
        attempts = self.candidate.max_retries + 1
        reason = ""
        for attempt in range(attempts):
            if self._stop.is_set():
                raise _Aborted(f"{self._who()}: run aborted after another request failed")
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
                        self._record(messages, reply, usage, time.perf_counter() - started)
                        return reply
                    reason = f"malformed reply (HTTP {status}, not a chat completion)"
                elif status in RETRY_STATUSES:
                    reason = f"HTTP {status}: {self._error_text(response)}"
                    wait = _retry_after(response.headers)
                else:
                    raise _Rejected(self._refusal(response), status)
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
        reply: _Reply,
        usage: tuple[int, int] | None,
        latency: float,
    ) -> None:
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

    def stats(self, elapsed: float, n: int) -> RunStats:
        """Run statistics; each call is one "batch"."""
        times = sorted(self.latencies) or [0.0]
        tokens = self.input_tokens + self.output_tokens
        return RunStats(
            scoring_s=elapsed,
            examples_per_s=n / elapsed if elapsed > 0 else 0.0,
            tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
            p50_batch_s=statistics.median(times),
            p95_batch_s=times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)],
            peak_memory_mb=0.0,
            batches=self.requests,
            tokens=tokens,
        )


def _parse(response: httpx.Response) -> tuple[_Reply, tuple[int, int] | None] | None:
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
    return _Reply(text, _top_logprobs(data["choices"][0])), _usage(data.get("usage"))


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
    """The wait the endpoint asks for (``retry-after-ms``, ``Retry-After``), capped at 60 s."""
    seconds: float | None = None
    if millis := headers.get("retry-after-ms"):
        try:
            seconds = float(millis) / 1000
        except ValueError:
            seconds = None
    value = headers.get("retry-after")
    if seconds is None and value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _backoff(attempt: int) -> float:
    # Full jitter (AWS's "exponential backoff and jitter"): spreads clients that failed together.
    return random.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
