"""Serve a local protocol server for one test, and fail the test on any error it met."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from supersede.demo.localhub.server import LocalServer

__all__ = ["served"]

S = TypeVar("S", bound=LocalServer)


def served(server: S) -> Iterator[S]:
    """A fixture body: ``yield from served(HubServer())``. The server is closed after the test,
    which fails when a request raised inside the server (its first traceback is shown)."""
    with server:
        yield server
        assert server.errors == [], server.errors[0] if server.errors else ""
