"""'Did you mean ...?' hints for a name that matches none of the known ones.

One helper so that every error about an unknown key, section, metric, task or source words its
hint the same way: ``unknown key 'runtme' (did you mean 'runtime'?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``word`` (difflib's ratio, cutoff 0.6), or None when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str], *, listing: str | None = None) -> str:
    """A hint to append to an error message, with its leading space.

    ``" (did you mean 'x'?)"`` when one of ``choices`` is close to ``word``. Otherwise ``""``,
    or, when ``listing`` is given, every choice under that label: ``" (known: a, b)"`` for
    ``listing="known"``.
    """
    known = list(choices)
    match = closest(word, known)
    if match is not None:
        return f" (did you mean '{match}'?)"
    if listing is not None:
        return f" ({listing}: {', '.join(known)})"
    return ""
