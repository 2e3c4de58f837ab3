"""Scripted judges for the judge's tests: deterministic answer rules over the judge's own
prompts, usable as a :class:`benchmarks.judge.Judge` or as an :class:`OpenAIServer` model."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from benchmarks.judge import JudgeReply

Rule = Callable[[list[dict[str, Any]]], str]

_TAG_RE = {
    tag: re.compile(rf"<{tag}>\n(.*?)\n</{tag}>", re.DOTALL)
    for tag in ("prompt", "answer_a", "answer_b", "answer", "reference")
}


def section(messages: list[dict[str, Any]], tag: str) -> str:
    """The text inside ``<tag>`` of the last user turn."""
    user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    found = _TAG_RE[tag].search(str(user))
    assert found is not None, f"no <{tag}> in the judge's prompt"
    return found.group(1)


def reminded(messages: list[dict[str, Any]]) -> bool:
    """Whether this is the stricter re-ask."""
    return "could not be read" in str(messages[-1]["content"])


def prefer_longer(messages: list[dict[str, Any]]) -> str:
    """Prefers the longer answer; a tie when equally long."""
    a, b = len(section(messages, "answer_a")), len(section(messages, "answer_b"))
    winner = "A" if a > b else "B" if b > a else "tie"
    return f'{{"winner": "{winner}", "reason": "longer"}}'


def always_first(messages: list[dict[str, Any]]) -> str:
    """Always prefers whatever answer is shown first: its verdict flips with the order."""
    return "A"


def garbage(messages: list[dict[str, Any]]) -> str:
    """Never answers in the asked format."""
    return "Both answers have merit; it is hard to say which one is better overall."


def score_by_words(messages: list[dict[str, Any]]) -> str:
    """A reference-mode judge: the answer's word count, capped at 5; garbage for no words."""
    words = len(section(messages, "answer").split())
    return f'```json\n{{"score": {min(words, 5)}}}\n```' if words else "no idea"


class ScriptedJudge:
    """A :class:`Judge` answering by ``rule``; counts and records its questions."""

    def __init__(self, rule: Rule, name: str = "scripted/judge") -> None:
        self.rule = rule
        self._name = name
        self._lock = threading.Lock()
        self.asked: list[list[dict[str, str]]] = []

    @property
    def name(self) -> str:
        return self._name

    def ask(self, messages: list[dict[str, str]]) -> JudgeReply:
        with self._lock:
            self.asked.append(messages)
        text = self.rule(messages)
        return JudgeReply(text, sum(len(m["content"]) for m in messages) // 4, len(text) // 4)
