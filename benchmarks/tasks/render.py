"""Prompts: a task's documents rendered as lm-eval's ConfigurableTask renders them.

Templates run in a sandboxed Jinja2 environment with lm-eval's settings, and few-shot examples
are drawn with lm-eval 0.4's sampler, so the same task file gives the same prompts under both.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import ModelRefused, TaskFileError

if TYPE_CHECKING:
    from benchmarks.tasks.task import Task

#: lm-eval's default few-shot seed; shots are drawn exactly as lm-eval 0.4 draws them.
FEWSHOT_SEED = 1234
#: Characters per token of a model's context a chat-rendered prompt may take: generous (a token
#: is a few characters; the engine cuts an over-long prompt from the left anyway), and still far
#: below what a template built to exhaust memory renders.
CHARS_PER_CONTEXT_TOKEN = 32


def check_chat_prompt(text: str, *, model: str, max_chars: int, context_tokens: int) -> str:
    """``text`` (a prompt ``model``'s chat template rendered), or :class:`ModelRefused` when it
    is longer than ``max_chars`` or than ``context_tokens`` with slack. Templates run in
    transformers' sandbox, which bounds neither output size nor loops (loops end at the
    worker's wall-clock limit)."""
    limit = min(max_chars, context_tokens * CHARS_PER_CONTEXT_TOKEN)
    if len(text) <= limit:
        return text
    why = (
        f"workers.max_prompt_chars = {max_chars:,}"
        if limit == max_chars
        else f"{CHARS_PER_CONTEXT_TOKEN} per token of its {context_tokens:,}-token context"
    )
    raise ModelRefused(
        f"{model}: refused: its chat template rendered a prompt of {len(text):,} characters, "
        f"over the limit of {limit:,} ({why})"
    )


def strict_jinja() -> Any:
    """A Jinja2 environment that renders as lm-eval's does, sandboxed."""
    # lm-eval's environment: undefined names fail loudly, trailing newlines are kept.
    # Sandboxed: renders ordinary templates exactly as lm-eval's plain Environment does, but a
    # template cannot reach Python internals (e.g. cycler.__init__.__globals__.os).
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True
    )
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(
        pattern, repl, s, count=count
    )
    return env


@dataclass(frozen=True)
class Request:
    """What the runner scores for one document.

    For ``multiple_choice``: ``continuations`` (target delimiter + choice) scored after
    ``context``; ``gold`` is the index of the right choice. For ``generate_until``: text is
    generated after ``context`` and compared with the ``gold`` string.
    """

    doc_id: int
    context: str
    continuations: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    gold: int | str | tuple[str, ...] = 0
    #: ``context``'s parts, unjoined, for chat turns (:func:`chat_messages`): the rendered
    #: description, each few-shot example's (question, answer) and the document's question.
    description: str = ""
    shots: tuple[tuple[str, str], ...] = ()
    question: str = ""


def join_delimited(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """``prefix`` + ``delimiter`` + ``suffix``, without the delimiter when either is empty or
    the boundary is already whitespace (how lm-eval joins a system instruction and a task's
    description)."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    if prefix[-1].isspace() or suffix[0].isspace():
        return prefix + suffix
    return prefix + delimiter + suffix


def chat_messages(
    request: Request,
    config: Mapping[str, Any],
    *,
    system_prompt: str | None = None,
    fewshot_as_multiturn: bool = True,
    question_suffix: str = "",
) -> list[dict[str, str]]:
    """The chat messages lm-eval builds for ``request`` with ``--apply_chat_template``.

    The system message is ``system_prompt`` and the task's description, joined by the few-shot
    delimiter. With ``fewshot_as_multiturn`` (lm-eval's default with a chat template) each
    few-shot example is a user turn and an assistant turn (no delimiters) and the document's
    question a last user turn; without it, the examples and the question are one user turn,
    joined exactly as the plain prompt joins them. ``question_suffix`` is appended to the last
    user turn (an endpoint asked to pick a choice by name).
    """
    messages = []
    fewshot = str(config.get("fewshot_delimiter", "\n\n"))
    system = join_delimited(system_prompt, request.description, fewshot)
    if system:
        messages.append({"role": "system", "content": system})
    if fewshot_as_multiturn:
        for question, answer in request.shots:
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": answer})
        user = request.question
    else:
        user = join_context(config, "", request.shots, request.question)
    messages.append({"role": "user", "content": user + question_suffix})
    return messages


def join_context(
    config: Mapping[str, Any], description: str, shots: Sequence[tuple[str, str]], question: str
) -> str:
    """The plain prompt: description, each example's question, target delimiter, answer and
    few-shot delimiter, then the question (lm-eval's order and delimiters)."""
    target = str(config.get("target_delimiter", " "))
    fewshot = str(config.get("fewshot_delimiter", "\n\n"))
    return description + "".join(q + target + a + fewshot for q, a in shots) + question


class Renderer:
    """Renders templates the way lm-eval's ConfigurableTask does."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.env = strict_jinja()
        self.features = set(task.docs[0]) if task.docs else set()
        self.cfg = task.config
        self._cache: dict[str, Any] = {}
        self._rng = random.Random(FEWSHOT_SEED)

    def _template(self, source: str) -> Any:
        if source not in self._cache:
            self._cache[source] = self.env.from_string(source)
        return self._cache[source]

    def _render(self, key: str, source: str, doc: Mapping[str, Any], doc_id: int) -> str:
        try:
            return str(self._template(source).render(**doc))
        except Exception as exc:
            raise TaskFileError(
                f"{self.task.path}: key '{key}': template failed on document {doc_id}: {exc}"
            ) from None

    def text(self, doc: Mapping[str, Any], doc_id: int) -> str:
        """The prompt for one document (``doc_to_text``)."""
        source = self.cfg.get("doc_to_text", "")
        if isinstance(source, int):
            return str(source)
        if source in self.features:
            return str(doc[source])
        return self._render("doc_to_text", source, doc, doc_id)

    def choices(self, doc: Mapping[str, Any], doc_id: int) -> list[str]:
        """The document's answer choices (``doc_to_choice``); empty when the task has none."""
        source = self.cfg.get("doc_to_choice")
        if source is None:
            return []
        if isinstance(source, list):
            return [str(c) for c in source]
        if isinstance(source, dict):
            return [str(c) for c in source.values()]
        if source in self.features:
            value = doc[source]
        else:
            rendered = self._render("doc_to_choice", source, doc, doc_id)
            try:
                value = ast.literal_eval(rendered)
            except (ValueError, SyntaxError):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_choice': document {doc_id} rendered "
                    f"{rendered[:80]!r}, which is not a list literal"
                ) from None
        if not isinstance(value, list | tuple) or not value:
            raise TaskFileError(
                f"{self.task.path}: key 'doc_to_choice': document {doc_id} has no list of choices"
            )
        return [str(c) for c in value]

    def target(self, doc: Mapping[str, Any], doc_id: int) -> Any:
        """The document's target (``doc_to_target``): an index, a string or a list of strings."""
        source = self.cfg.get("doc_to_target", "")
        if isinstance(source, int | list):
            return source
        if source in self.features:
            return doc[source]
        rendered = self._render("doc_to_target", source, doc, doc_id)
        if rendered.isdigit() and self.cfg.get("doc_to_choice") is not None:
            return int(rendered)
        if len(rendered) >= 2 and rendered[0] == "[" and rendered[-1] == "]":
            try:
                return ast.literal_eval(rendered)
            except (SyntaxError, ValueError):
                return rendered
        return rendered

    def _answer_text(self, doc: Mapping[str, Any], doc_id: int) -> str:
        answer = self.target(doc, doc_id)
        choices = self.choices(doc, doc_id)
        if choices and isinstance(answer, int):
            if not 0 <= answer < len(choices):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': few-shot document {doc_id} has "
                    f"target {answer}, not an index into its {len(choices)} choices"
                )
            return choices[answer]
        if isinstance(answer, list):
            if not answer:
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': few-shot document {doc_id} has an "
                    "empty list of targets"
                )
            return str(answer[0])
        return str(answer)

    def parts(
        self, doc: Mapping[str, Any], doc_id: int
    ) -> tuple[str, tuple[tuple[str, str], ...], str]:
        """The rendered description, few-shot (question, answer) pairs and the question."""
        source = self.cfg.get("description") or ""
        description = self._render("description", source, doc, doc_id) if source else ""
        shots: tuple[tuple[str, str], ...] = ()
        if self.task.num_fewshot:
            shots = tuple(
                (self.text(shot, j), self._answer_text(shot, j)) for j, shot in self._shots(doc)
            )
        return description, shots, self.text(doc, doc_id)

    def context(self, doc: Mapping[str, Any], doc_id: int) -> str:
        """Description, few-shot examples, then the document's prompt."""
        description, shots, question = self.parts(doc, doc_id)
        return join_context(self.cfg, description, shots, question)

    def _shots(self, doc: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
        # lm-eval's ContextSampler: one Random(1234) drawn from in document order; when the
        # few-shot split is the scored split, n + 1 are drawn and the document itself dropped.
        n = self.task.num_fewshot
        pool = list(enumerate(self.task.fewshot_docs))
        scored = self.cfg.get("test_split") or self.cfg.get("validation_split")
        if self.cfg.get("fewshot_split") != scored:
            return self._rng.sample(pool, n)
        shots = [s for s in self._rng.sample(pool, min(n + 1, len(pool))) if s[1] != doc][:n]
        if len(shots) < n:
            shots = self._rng.sample([s for s in pool if s[1] != doc], n)
        return shots

    def request(self, doc_id: int, doc: Mapping[str, Any]) -> Request:
        """The fully rendered request for one document, its target checked."""
        description, shots, question = self.parts(doc, doc_id)
        context = join_context(self.cfg, description, shots, question)
        parts: dict[str, Any] = {"description": description, "shots": shots, "question": question}
        if self.task.output_type == "multiple_choice":
            choices = self.choices(doc, doc_id)
            if not choices:
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_choice': required for multiple_choice"
                )
            gold = self.target(doc, doc_id)
            if isinstance(gold, str):
                if gold not in choices:
                    raise TaskFileError(
                        f"{self.task.path}: key 'doc_to_target': document {doc_id} has target "
                        f"{gold!r}, which is not one of its choices {choices}"
                    )
                gold = choices.index(gold)
            if not isinstance(gold, int) or not 0 <= gold < len(choices):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': document {doc_id} has target "
                    f"{gold!r}, not an index into its {len(choices)} choices"
                )
            delimiter = self.cfg.get("target_delimiter", " ")
            return Request(
                doc_id=doc_id,
                context=context,
                continuations=tuple(delimiter + c for c in choices),
                choices=tuple(choices),
                gold=gold,
                **parts,
            )
        target = self.target(doc, doc_id)
        if self.cfg.get("doc_to_choice") is not None:
            choices = self.choices(doc, doc_id)
            if not isinstance(target, int) or not 0 <= target < len(choices):
                raise TaskFileError(
                    f"{self.task.path}: key 'doc_to_target': document {doc_id} has target "
                    f"{target!r}; with doc_to_choice it must index one of {len(choices)} choices"
                )
            target = choices[target]
        if isinstance(target, list) and not target:
            raise TaskFileError(
                f"{self.task.path}: key 'doc_to_target': document {doc_id} has an empty list "
                "of targets"
            )
        answer: str | tuple[str, ...] = (
            tuple(str(t) for t in target) if isinstance(target, list) else str(target)
        )
        return Request(doc_id=doc_id, context=context, gold=answer, **parts)
