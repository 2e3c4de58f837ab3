"""The store's plumbing: engines, the one declarative base, inserts that race safely.

Every table (results, watcher state, jobs, the Slack outbox) is declared on :class:`Base`, so
one metadata describes the whole store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session

from core.errors import ConfigError


class Base(DeclarativeBase):
    """Declarative base of every table in the store."""


_engines: dict[str, Engine] = {}
_made: dict[str, set[str]] = {}  # per URL, the tables this process has made sure exist
_lock = threading.Lock()


def open_store(url: str) -> Engine:
    """This process's engine for ``url``, with every table declared so far made sure to exist.

    One engine per URL per process: a verdict job or ``compare()`` reuses the pool and skips
    the schema inspection after the first call.
    """
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        made = _made.setdefault(url, set())
        if not set(Base.metadata.tables) <= made:
            create_tables(Base.metadata, engine, url)
            made.update(Base.metadata.tables)
        return engine


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


def create_tables(metadata: MetaData, engine: Engine, url: str) -> None:
    """Create ``metadata``'s tables if missing. Two processes opening a new store at once race
    to create them; the loser finds them made and goes on."""
    try:
        metadata.create_all(engine)
    except DBAPIError as exc:
        try:
            present = set(inspect(engine).get_table_names())
        except DBAPIError:
            present = set()
        if not set(metadata.tables) <= present:
            raise ConfigError(
                f"store.url: cannot open the store ({safe_url(url)}): {exc.orig}"
            ) from None
    _add_missing_columns(metadata, engine)


def _add_missing_columns(metadata: MetaData, engine: Engine) -> None:
    """A store made by an earlier version lacks the columns added since: add them (each new
    column is nullable or has a default, so existing rows stay valid)."""
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            default = getattr(column.default, "arg", None)
            clause = f" DEFAULT {int(default)}" if isinstance(default, int) else ""
            with engine.begin() as connection:
                connection.exec_driver_sql(
                    f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{clause}'
                )


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
