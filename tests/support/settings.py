"""The one way tests build Supersede settings: a private store, Hub cache and re-tune store under
the test's folder, a Hub nobody answers on (unless the test names its local one), the CPU; each
test adds the sections it is about.

``build_settings`` gives validated :class:`Settings`; ``write_settings`` writes the same document
as a config file, for what reads one (the CLI, worker processes, ``load_settings``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_core import to_jsonable_python

from config.settings import Settings
from supersede.demo.localhub.server import LocalServer

__all__ = ["UNREACHABLE_HUB", "build_settings", "settings_document", "write_settings"]

#: A loopback port nothing listens on: a test that reaches for the Hub by mistake fails fast.
UNREACHABLE_HUB = "http://127.0.0.1:9"


def settings_document(
    folder: Path, *, endpoint: LocalServer | str | None = None, **sections: Any
) -> dict[str, Any]:
    """The settings document for a test working in ``folder``.

    Args:
        folder: Where the store (``store.db``) and the Hub cache (``hf-cache``) go.
        endpoint: The Hub the settings point at: a local server or a URL (default: none).
        sections: Top-level sections. A mapping given for ``store``, ``hub``, ``runtime`` or
            ``retune`` is merged over those defaults; anything else is set as given.
    """
    url = endpoint.url if isinstance(endpoint, LocalServer) else endpoint
    document: dict[str, Any] = {
        "store": {"url": f"sqlite:///{folder / 'store.db'}"},
        "hub": {"endpoint": url or UNREACHABLE_HUB, "cache_dir": str(folder / "hf-cache")},
        "runtime": {"device": "cpu"},
        "retune": {"store_dir": str(folder / "retune")},
    }
    for name, section in sections.items():
        default = document.get(name)
        if isinstance(default, dict) and isinstance(section, dict):
            document[name] = {**default, **section}
        else:
            document[name] = section
    return document


def build_settings(
    folder: Path, *, endpoint: LocalServer | str | None = None, **sections: Any
) -> Settings:
    """Validated settings from :func:`settings_document` (the environment still applies)."""
    return Settings(**settings_document(folder, endpoint=endpoint, **sections))


def write_settings(
    folder: Path,
    *,
    name: str = "supersede.yaml",
    endpoint: LocalServer | str | None = None,
    **sections: Any,
) -> Path:
    """Write :func:`settings_document` as ``folder / name``; returns the file's path."""
    document = to_jsonable_python(settings_document(folder, endpoint=endpoint, **sections))
    path = folder / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def isolated_environment() -> Iterator[None]:
    """No Supersede or Hub variable of the caller's environment, for fixtures wider than one
    test (each test is isolated by ``tests/conftest.py`` already)."""
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(("SUPERSEDE_", "HF_")) or name == "HUGGING_FACE_HUB_TOKEN":
                env.delenv(name)
        yield
