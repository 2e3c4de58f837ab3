"""How the page and the figures' descriptions write times, scores, prices and names."""

from __future__ import annotations

import math
import re
from datetime import datetime

#: Names longer than this are cut (with an ellipsis) in figure titles and point labels.
LABEL_CHARS = 40


_FULL_SHA = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{28}\b")


def short_shas(text: str) -> str:
    """``text`` with every 40-character commit sha cut to its first 12 characters, as tables
    show them (JSON and link targets keep them whole)."""
    return _FULL_SHA.sub(r"\1", text)


def when(value: datetime | None) -> str:
    """A moment, with its zone."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def moment(value: datetime | None) -> str:
    """A table cell's time (the column says UTC)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def duration(seconds: float | None) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def score(value: float | None) -> str:
    """A score to four decimals."""
    return "-" if value is None else f"{value:.4f}"


def delta(value: float | None) -> str:
    """A signed difference to four decimals."""
    return "-" if value is None else f"{value:+.4f}"


def p_value(value: float | None) -> str:
    """A p-value, or ``< 0.001``."""
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3g}"


def usd(value: float | None) -> str:
    """Dollars: four decimals under one dollar, cents above."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    size = abs(value)
    return f"{sign}${size:,.4f}" if size < 1 else f"{sign}${size:,.2f}"


def percent(value: float | None) -> str:
    """A confidence level (95% when none, or none readable, was recorded)."""
    return "95%" if value is None or not math.isfinite(value) else f"{value:.0%}"


def label(name: str) -> str:
    """A name cut to :data:`LABEL_CHARS`."""
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


#: The formatters the template calls, by the names it uses.
FORMATTERS = {
    "score": score,
    "delta": delta,
    "p": p_value,
    "usd": usd,
    "when": when,
    "pct": percent,
}
