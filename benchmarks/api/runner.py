"""Scoring a candidate that is reachable only through an OpenAI-compatible chat-completions API.

Every document becomes one ``POST {base_url}/chat/completions`` with ``temperature: 0``: an
optional system message (``prompt.system_prompt`` and the task's description) and the task's
few-shot examples and question as user turns, as a local model's chat template gets them.

generate_until
    The last user message is the question; ``max_tokens`` is the task's ``max_gen_toks`` and
    ``stop`` its first four ``until`` strings (OpenAI accepts at most four). The reply is then cut
    at every ``until`` string in Python, as lm-eval does (``text = text.split(stop)[0]`` for each),
    and scored with the task's metrics exactly as the local runner scores generated text.

multiple_choice
    Asked in one of three modes, ``logprobs``, ``choice`` or ``auto``; how a reply names a
    choice is :mod:`benchmarks.answers`. In ``auto``, the first document is asked in logprobs
    mode on its own; if that reply carries ``choices[0].logprobs.content[0].top_logprobs`` the
    whole run uses logprobs mode, and otherwise (or when the endpoint rejects the log-prob
    request with HTTP 400 or 422) choice mode; ``extra["multiple_choice_mode"]`` records it.
    In logprobs mode, an example whose reply names no choice is asked again in choice mode
    (counted in ``extra["logprob_fallbacks"]``).

Retries, timeouts, token accounting and costs are :mod:`benchmarks.api.endpoint`'s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from benchmarks.answers import match_choice, pick_by_logprobs
from benchmarks.api.endpoint import Aborted, Endpoint, Rejected, Reply
from benchmarks.scoring import RunResult, build_result, score_choices, score_texts
from benchmarks.tasks.render import Request, chat_messages
from benchmarks.tasks.task import Task
from config.api import ApiCandidate
from config.settings import PromptSettings
from core.errors import EndpointRefused

__all__ = ["match_choice", "pick_by_logprobs", "run_api_task"]

log = logging.getLogger(__name__)

#: OpenAI's chat-completions endpoint accepts at most this many stop sequences.
MAX_STOP_SEQUENCES = 4
#: Alternatives asked for per token in logprobs mode (OpenAI's maximum).
TOP_LOGPROBS = 20
#: Log-prob requests the endpoint may reject as unsupported (auto mode then asks for a choice).
_LOGPROBS_REJECTED = frozenset({400, 422})

T = TypeVar("T")


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
    with Endpoint(candidate, api_key, transport) as endpoint:
        asker = _Asker(endpoint, prompt, task)
        extra: dict[str, Any]
        predictions: list[Any]
        if task.output_type == "multiple_choice":
            per_metric, predictions, extra = _run_choices(asker, task, requests, progress)
        else:
            per_metric, predictions = _run_generation(asker, task, requests, progress)
            extra = {"invalid_answers": 0}
    elapsed = time.perf_counter() - started
    extra.update(endpoint.usage_extra(candidate, len(requests)))
    extra.update(endpoint.latency_extra())
    return build_result(
        task, per_metric, predictions, endpoint.stats(elapsed, len(requests)), extra
    )


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
    per_metric, chosen = score_choices(task, requests, rows)
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
            request,
            max_tokens=task.max_gen_toks,
            **({"stop": stops[:MAX_STOP_SEQUENCES]} if stops else {}),
        ).text
        for stop in stops:  # the endpoint saw only four of them
            text = text.split(stop)[0]
        return text

    texts = _map_ordered(asker.endpoint, generate, requests, progress)
    return score_texts(task, requests, texts)


def _map_ordered(
    endpoint: Endpoint,
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
        raise next((e for e in failures if not isinstance(e, Aborted)), failures[0])
    return [results[i] for i in range(len(items))]


class _Asker:
    """Builds the chat messages of each kind of question and reads the answers."""

    def __init__(self, endpoint: Endpoint, prompt: PromptSettings, task: Task) -> None:
        self.endpoint = endpoint
        self.prompt = prompt
        self.config = task.config

    def ask(self, request: Request, suffix: str = "", /, **params: Any) -> Reply:
        """``request`` as chat turns (:func:`~benchmarks.tasks.render.chat_messages`), with
        ``suffix`` after its question."""
        messages = chat_messages(
            request,
            self.config,
            system_prompt=self.prompt.system_prompt,
            fewshot_as_multiturn=self.prompt.fewshot_as_multiturn,
            question_suffix=suffix,
        )
        return self.endpoint.chat(messages, params)

    def _ask_logprobs(self, request: Request) -> Reply:
        return self.ask(request, max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)

    def probe_logprobs(self, request: Request, *, allow_rejection: bool) -> Reply | None:
        """The first log-prob request; ``None`` when the endpoint rejects such requests."""
        try:
            return self._ask_logprobs(request)
        except Rejected as exc:
            if allow_rejection and exc.status in _LOGPROBS_REJECTED:
                log.info("%s; asking for a choice instead", exc)
                return None
            raise

    def pick_logprobs(self, request: Request, reply: Reply | None = None) -> _Pick:
        reply = reply or self._ask_logprobs(request)
        index = pick_by_logprobs(reply.top_logprobs or [], request.choices)
        if index is not None:
            return _Pick(index)
        return _Pick(self.pick_choice(request).index, fallback=True)

    def pick_choice(self, request: Request) -> _Pick:
        suffix = "\n\nAnswer with exactly one of: " + "; ".join(request.choices) + "."
        # Room for the longest choice (about 4 characters a token) and a little wrapping.
        budget = 16 + math.ceil(max(len(choice) for choice in request.choices) / 2)
        reply = self.ask(request, suffix, max_tokens=budget)
        return _Pick(match_choice(reply.text, request.choices))
