"""The store's plumbing: engines, the one declarative base, inserts that race safely.

Every table (results, watcher state, jobs, the Slack outbox) is declared on :class:`Base`, so
one metadata describes the whole store; the schema itself is made and changed by the Alembic
revisions in :mod:`core.migrations`, which a test checks against this metadata.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session

from core.errors import ConfigError


class Base(DeclarativeBase):
    """Declarative base of every table in the store."""


_engines: dict[str, Engine] = {}
_upgraded: set[str] = set()  # the URLs whose store this process has brought to the newest schema
_lock = threading.Lock()


def open_store(url: str) -> Engine:
    """This process's engine for ``url``, its store upgraded to the newest schema revision.

    One engine per URL per process: a verdict job or ``compare()`` reuses the pool and skips
    the schema check after the first call.
    """
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        if url not in _upgraded:
            upgrade_store(engine, url)
            _upgraded.add(url)
        return engine


class Store:
    """A view of the store on ``url``: the shared engine and a transaction per call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_store(url)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A session inside one transaction: committed on return, rolled back on error."""
        with Session(self.engine) as session, session.begin():
            yield session


def _forget_pools_after_fork() -> None:
    """A forked child (a Celery prefork worker) must not share its parent's connections."""
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools_after_fork)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created on first use."""
    try:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            folder = Path(url.removeprefix("sqlite:///")).expanduser().parent
            folder.mkdir(parents=True, exist_ok=True)
        return create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # bad URL, missing driver, unusable folder: said plainly
        shown = str(exc).replace(url, safe_url(url))
        raise ConfigError(f"store.url {safe_url(url)!r} cannot be used: {shown}") from None


def insert_once(session: Session, table: Any, values: Mapping[str, Any]) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL; True when the row is new.

    Novelty comes from ``RETURNING``, not ``rowcount``: psycopg reports -1 for such an insert.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    key = next(iter(table.__table__.primary_key.columns))
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return session.execute(statement).first() is not None


def upgrade_store(engine: Engine, url: str) -> None:
    """Run the store's migrations up to the newest revision (:mod:`core.migrations`): an empty
    store gets every table, one made by an earlier version is upgraded in place. A store that
    cannot be opened or changed is one :class:`ConfigError` naming the (masked) URL."""
    from core.migrations import upgrade

    try:
        upgrade(engine)
    except DBAPIError as exc:
        reason = str(exc.orig)
    except ConfigError as exc:  # a store from a newer version
        reason = str(exc)
    else:
        return
    raise ConfigError(f"store.url: cannot open the store ({safe_url(url)}): {reason}") from None


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
