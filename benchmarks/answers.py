"""How an API reply names one of a multiple-choice task's choices.

multiple_choice, ``multiple_choice: logprobs``
    The user message is the rendered context, sent with ``max_tokens: 1, logprobs: true,
    top_logprobs: 20`` (the first document alone first: if that reply carries no log-probs the
    run stops with :class:`~core.errors.EndpointRefused`; configure ``auto`` or ``choice``).
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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

_QUOTES = "\"'`“”‘’«»*"
_TRAILING = ".,;:!?"


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
