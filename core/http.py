"""HTTP conventions shared by every client Supersede runs: how long a server asks us to wait."""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429/503 answer asks to wait, or None when it does not say.

    Reads ``retry-after-ms``, then ``Retry-After`` (seconds or an HTTP date), then the IETF
    draft ``RateLimit`` header (``"api";r=0;t=55``, what the Hugging Face Hub sends) when its
    remaining count is exhausted. Header names are matched case-insensitively.
    """
    lower = {key.lower(): value for key, value in headers.items()}
    seconds: float | None = None
    if millis := lower.get("retry-after-ms"):
        try:
            seconds = float(millis) / 1000
        except ValueError:
            seconds = None
    value = (lower.get("retry-after") or "").strip()
    if seconds is None and value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None and "ratelimit" in lower:
        from huggingface_hub.utils._http import parse_ratelimit_headers

        limit = parse_ratelimit_headers(lower)
        if limit is not None and limit.remaining == 0:
            seconds = float(limit.reset_in_seconds)
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def full_jitter(attempt: int, base_s: float, cap_s: float) -> float:
    """A back-off delay for the ``attempt``-th retry (0-based), AWS's "full jitter": spreads
    clients that failed together instead of retrying in lockstep."""
    return random.uniform(0.0, min(cap_s, base_s * 2**attempt))
