"""Where releases are discovered: one module per source, each registering itself by name.

:mod:`watcher.sources.base` holds the :class:`Source` protocol and the registry; the built-in
sources are the Hub (polling), vendor feeds and Hub webhooks, imported here so that they are
registered whenever the package is.
"""

# Registration order is the order of polls and scheduler jobs: the Hub first, then feeds.
from watcher.sources import hub  # isort: skip
from watcher.sources import feeds, webhook
from watcher.sources.base import (
    Channel,
    Listener,
    Source,
    SourceReport,
    get,
    register,
    registered,
)

__all__ = [
    "Channel",
    "Listener",
    "Source",
    "SourceReport",
    "feeds",
    "get",
    "hub",
    "register",
    "registered",
    "webhook",
]
