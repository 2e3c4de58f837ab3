"""The ``Source`` protocol and the registry of sources by name.

A source is a place new releases are discovered. From the settings it contributes:

* *channels*: what is polled on a schedule, each with its own state row (validators, back-off,
  last error) and its own scheduler job ``source:<channel>``. The Hub is one channel for all
  watched authors; feeds are one channel per feed.
* at most one *listener*: an endpoint others push to while the daemon runs (the Hub webhook).

An unconfigured source contributes nothing. Sources register themselves with :func:`register`;
:class:`~watcher.discovery.Discovery` and the scheduler iterate :func:`registered` and never
name one, so a new source is one module that registers itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, TypeVar

from core.errors import ConfigError
from core.suggest import did_you_mean
from watcher.events import Announcement, ModelReleased

if TYPE_CHECKING:
    from config.settings import Settings
    from watcher.discovery import Discovery


@dataclass
class SourceReport:
    """What one pass over one channel found."""

    source: str
    status: Literal["ok", "not_modified", "failed", "backing_off"] = "ok"
    events: list[ModelReleased | Announcement] = field(default_factory=list)
    seen: int = 0
    dropped: int = 0
    baseline: int = 0
    #: Entries left for the next pass (a linked Hub repo not public yet).
    waiting: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Channel:
    """One polled unit of a source."""

    #: Its state row and scheduler job (``source:<name>``): ``hub``, ``feed:<feed name>``.
    name: str
    #: What the scheduler job is called in logs: ``poll the Hub``.
    label: str
    every_s: float
    #: One pass: reads the channel, records what is new, returns the report.
    poll: Callable[[Discovery], SourceReport]


class Listener(Protocol):
    """An endpoint a source serves while the daemon runs."""

    #: Where it listens, once started.
    url: str

    def start(self) -> None:
        """Bind and serve in the background; :class:`ConfigError` when it cannot bind."""

    def stop(self) -> None:
        """Stop serving; idempotent."""


class Source(Protocol):
    """A place releases are discovered (see the module docstring)."""

    #: The registry name.
    name: ClassVar[str]

    def channels(self, settings: Settings) -> list[Channel]:
        """What to poll under ``settings``; empty when the source is not configured."""
        ...

    def listener(self, discovery: Discovery) -> Listener | None:
        """The push endpoint to serve, not started yet, or None.

        Raises :class:`ConfigError` when it is enabled but misconfigured, before anything runs.
        """
        ...


S = TypeVar("S", bound=type[Source])

_REGISTRY: dict[str, Source] = {}


def register(cls: S) -> S:
    """Class decorator: register an instance of ``cls`` under ``cls.name``."""
    name = cls.name
    known = _REGISTRY.get(name)
    if known is not None and _origin(type(known)) != _origin(cls):
        raise ValueError(f"source name {name!r} is taken by {_origin(type(known))}")
    _REGISTRY[name] = cls()
    return cls


def _origin(cls: type) -> str:
    # A module imported again (a reload) registers its class again: that replaces, not clashes.
    return f"{cls.__module__}.{cls.__qualname__}"


def get(name: str) -> Source:
    """The source registered as ``name``; a :class:`ConfigError` suggests the nearest name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY, listing="registered")
        raise ConfigError(f"unknown source {name!r}{hint}") from None


def registered() -> list[Source]:
    """Every registered source, in registration order."""
    return list(_REGISTRY.values())
