"""Feed fixtures for the watcher tests, with their date placeholders filled in.

The files in ``fixtures/`` hold ``{{RECENT}}`` and ``{{OLD}}`` (RFC 822 dates, as in RSS
``pubDate``) and ``{{RECENT_ISO}}`` and ``{{OLD_ISO}}`` (RFC 3339, as in Atom) so that "new" entries
stay new whenever the tests run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

__all__ = ["FIXTURES", "OLD_AGE", "RECENT_AGE", "load_fixture"]

#: The folder holding the fixture feeds.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: How long before "now" ``{{RECENT}}`` lies.
RECENT_AGE = timedelta(hours=2)
#: How long before "now" ``{{OLD}}`` lies.
OLD_AGE = timedelta(days=90)

_KEYS = frozenset({"now", "recent", "old", "recent_iso", "old_iso"})


def _rfc822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _value(override: datetime | str | None, default: datetime, iso: bool) -> str:
    moment = default if override is None else override
    if isinstance(moment, str):
        return moment  # verbatim, e.g. a malformed date
    return _rfc3339(moment) if iso else _rfc822(moment)


def load_fixture(name: str, **now_overrides: datetime | str) -> bytes:
    """The bytes of ``fixtures/<name>`` with its date placeholders substituted.

    Substitution works on bytes (the placeholders and dates are ASCII), so a Latin-1 fixture
    stays Latin-1.

    Args:
        name: File name inside ``fixtures/``, e.g. ``"vendor_rss.xml"``.
        **now_overrides: ``now`` (an aware datetime; default: the current time) moves both
            defaults: ``{{RECENT}}`` is ``now - RECENT_AGE`` and ``{{OLD}}`` is ``now - OLD_AGE``.
            ``recent`` / ``old`` set a placeholder and its ``_ISO`` twin; ``recent_iso`` /
            ``old_iso`` set the ``_ISO`` one alone. A datetime is formatted for the placeholder,
            an ASCII string is inserted as it is.

    Raises:
        TypeError: On an unknown keyword.
    """
    unknown = set(now_overrides) - _KEYS
    if unknown:
        raise TypeError(f"Unknown load_fixture keywords: {sorted(unknown)}")
    now = now_overrides.get("now") or datetime.now(UTC)
    if not isinstance(now, datetime):
        raise TypeError("now must be a datetime")
    recent, old = now_overrides.get("recent"), now_overrides.get("old")
    values = {
        "{{RECENT}}": _value(recent, now - RECENT_AGE, iso=False),
        "{{OLD}}": _value(old, now - OLD_AGE, iso=False),
        "{{RECENT_ISO}}": _value(
            now_overrides.get("recent_iso", recent), now - RECENT_AGE, iso=True
        ),
        "{{OLD_ISO}}": _value(now_overrides.get("old_iso", old), now - OLD_AGE, iso=True),
    }
    data = (FIXTURES / name).read_bytes()
    for placeholder, value in values.items():
        data = data.replace(placeholder.encode("ascii"), value.encode("ascii"))
    return data
