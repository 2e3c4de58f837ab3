"""Asking the judge: the cache in front, one stricter re-ask after an unreadable answer, the
run's counters, and a stop after the first call that cannot be answered at all."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from benchmarks.judge.cache import JudgeCache, call_key
from benchmarks.judge.judges import Judge, JudgeReply
from benchmarks.judge.prompts import with_reminder
from benchmarks.judge.records import Judging
from benchmarks.judge.spec import JudgeSpec
from core.errors import SupersedeError

T = TypeVar("T")
R = TypeVar("R")

#: How much of an unreadable answer a failure reason quotes.
_QUOTE_CHARS = 120


class Asker:
    """Asks ``judge`` on behalf of one judgement; thread-safe."""

    def __init__(self, spec: JudgeSpec, judge: Judge, cache: JudgeCache | None) -> None:
        self.spec = spec
        self.judge = judge
        self.cache = cache
        self.fingerprint = spec.fingerprint()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.calls = 0
        self.cached_calls = 0
        self.reasks = 0
        self.input_tokens = 0
        self.output_tokens = 0
        #: The first error that left a question unanswered.
        self.error: SupersedeError | None = None
        #: The first unreadable answer, for the failure reason.
        self.bad_answer: str | None = None

    @property
    def stopped(self) -> bool:
        """True once a call failed: the questions not yet asked are left unasked."""
        return self._stop.is_set()

    def verdict(self, messages: list[dict[str, str]], parse: Callable[[str], T | None]) -> T | None:
        """The parsed answer to ``messages``, asked again once with a stricter reminder when
        unreadable; None when still unreadable or when the judge could not answer."""
        reply = self._answer(messages)
        if reply is None:
            return None
        value = parse(reply.text)
        if value is not None:
            return value
        with self._lock:
            self.reasks += 1
        reply = self._answer(with_reminder(messages, self.spec.mode))
        if reply is None:
            return None
        value = parse(reply.text)
        if value is None:
            with self._lock:
                if self.bad_answer is None:
                    self.bad_answer = reply.text
        return value

    def _answer(self, messages: list[dict[str, str]]) -> JudgeReply | None:
        key = call_key(self.fingerprint, messages)
        if self.cache is not None:
            stored = self.cache.get(key)
            if stored is not None:
                with self._lock:
                    self.cached_calls += 1
                return stored
        if self._stop.is_set():
            return None
        try:
            reply = self.judge.ask(messages)
        except SupersedeError as exc:
            with self._lock:
                if self.error is None:
                    self.error = exc
            self._stop.set()
            return None
        with self._lock:
            self.calls += 1
            self.input_tokens += reply.input_tokens
            self.output_tokens += reply.output_tokens
        if self.cache is not None:
            self.cache.put(key, self.fingerprint, reply)
        return reply

    def map(self, work: Callable[[int], R], n: int, max_workers: int) -> list[R]:
        """``work(i)`` for every example ``i`` in order, ``max_workers`` at a time."""
        if max_workers <= 1 or n <= 1:
            return [work(i) for i in range(n)]
        with ThreadPoolExecutor(max_workers=min(max_workers, n)) as pool:
            return list(pool.map(work, range(n)))

    @property
    def cost_usd(self) -> float:
        """The fresh calls' cost at the spec's prices."""
        return self.spec.cost_usd(self.input_tokens, self.output_tokens)

    def judging(self, n: int, unparsed: int, asked: int) -> Judging:
        """What a judgement of ``n`` examples records, ``unparsed`` of the ``asked`` ones left
        unread."""
        return Judging(
            judge=self.judge.name, fingerprint=self.fingerprint, n=n, unparsed=unparsed,
            calls=self.calls, cached_calls=self.cached_calls, reasks=self.reasks,
            input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            cost_usd=self.cost_usd, failed=self.failure(unparsed, asked),
        )  # fmt: skip

    def failure(self, unreadable: int, asked: int) -> str | None:
        """Why the judgement failed (None when it did not): the judge could not be asked, or
        more than ``max_failures`` of the ``asked`` examples got no readable answer."""
        if self.error is not None:
            return f"the judge '{self.judge.name}' could not answer: {self.error}"
        if asked == 0 or unreadable / asked <= self.spec.max_failures:
            return None
        quote = ""
        if self.bad_answer is not None:
            shown = self.bad_answer[:_QUOTE_CHARS]
            quote = (
                f"; e.g. it answered {shown!r}{'…' if len(self.bad_answer) > len(shown) else ''}"
            )
        return (
            f"the judge '{self.judge.name}' gave no readable answer on {unreadable} of {asked} "
            f"examples ({unreadable / asked:.0%}, above max_failures {self.spec.max_failures:.0%})"
            f"{quote}: check that the judge model follows instructions, or raise max_new_tokens"
        )


def check_lengths(**columns: Sequence[str]) -> int:
    """The common length of the per-example columns; ValueError naming them when they differ."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"per-example inputs differ in length: {shown}")
    return next(iter(lengths.values()), 0)
