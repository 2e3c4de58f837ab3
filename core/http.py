"""HTTP conventions shared by every client Supersede runs: how long a server asks us to wait,
and which hosts a redirect may lead to."""

from __future__ import annotations

import email.utils
import ipaddress
import math
import random
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

#: Host name -> the IP addresses it resolves to (raises OSError when it does not resolve).
Resolver = Callable[[str], list[str]]


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


def resolve_host(host: str) -> list[str]:
    """Every address the system resolver gives for ``host``; OSError when there is none."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def non_public_reason(host: str, resolve: Resolver = resolve_host) -> str | None:
    """Why ``host`` may lead into a private network, or None when every address it has is public.

    A host name is resolved (with ``resolve``) and each address checked: loopback, link-local
    (cloud metadata services live there), private, unspecified, multicast, reserved and any other
    address that is not globally routable are refused. An IPv4 address written as IPv6
    (``::ffff:10.0.0.1``) is judged as IPv4. Raises OSError when the name does not resolve.

    The check and the later connection resolve separately, so a name whose DNS answer changes in
    between (DNS rebinding) is not caught here; it guards against plain redirects to inner hosts.
    """
    try:
        addresses = [ipaddress.ip_address(host)]
        literal = True
    except ValueError:
        # A scoped IPv6 address comes back as ``fe80::1%eth0``: the scope is not part of it.
        addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in resolve(host)]
        literal = False
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        kind = _kind(address)
        if kind is not None:
            return f"{host} is {kind}" if literal else f"{host} resolves to {address}, {kind}"
    return None


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for kind, flag in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("an unspecified address", address.is_unspecified),
        ("a multicast address", address.is_multicast),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
        ("a non-public address", not address.is_global),
    ):
        if flag:
            return kind
    return None


def connect_probe(url: str, timeout_s: float) -> None:
    """Open (and close) one TCP connection to ``url``'s host and port, or raise ``OSError``:
    a fast answer to "can this host be reached at all" before a client's own retries spend
    half a minute finding out. Nothing is checked when a proxy carries requests to that host
    (the direct connection is not the one the client will make)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    socket.create_connection((host, port), timeout=timeout_s).close()
