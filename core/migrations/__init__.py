"""The store's schema as a history of Alembic revisions (``versions/``), and the upgrade that
every process runs once per store when it opens it (:func:`core.db.open_store`).

Revisions use explicit ``op.*`` calls and import nothing from the layers above: each describes
the tables as they were when it was written, not as the models are today. A test upgrades an
empty store and checks the result against the models (``tests/core/test_migrations.py``).

- ``0001``: the first release's tables (results, watcher state, jobs, Slack outbox).
- ``0002``: a job's notification bookkeeping; a Slack delivery's claim.
- ``0003``: who asked for a job, muted owners, actions taken in Slack.
- ``0004``: the answers of judge models (judged tasks).

Stores made before migrations existed have no ``alembic_version`` table; 0001 and 0002 adopt
them in place (see :mod:`core.migrations.adopt`).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from core.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# Alembic logs one INFO line per built-in plugin when it is first imported: every process that
# opens a store would print seven lines of its set-up. (Hence, too, the imports inside functions.)
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

#: Where Alembic finds ``env.py`` and ``versions/`` (package notation: works when installed).
SCRIPTS = "core:migrations"

#: The PostgreSQL advisory lock held while a store is upgraded: any constant every process
#: shares would do; this one is "Supersed" in ASCII.
PG_LOCK_KEY = 0x5375706572736564


def config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the store on ``connection`` (``env.py`` runs on it)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPTS)
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision."""
    revision = _scripts().get_current_head()
    assert revision is not None, "core/migrations/versions holds no revision"
    return revision


def current(connection: Connection) -> str | None:
    """The store's revision; None for an empty store or one made before migrations."""
    # Read directly rather than through a MigrationContext, which logs its set-up at INFO:
    # every process opening a store would say so.
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine) -> None:
    """Bring the store on ``engine`` to :func:`head`.

    A store already there costs one read and takes no lock. Otherwise the upgrade runs in one
    transaction under a store-wide lock (a PostgreSQL advisory lock, a SQLite write
    transaction): of two processes opening a new store at once, one upgrades and the other
    waits, then finds it done.
    """
    with engine.connect() as connection:
        if current(connection) == head():
            return
        connection.rollback()  # end the read so the lock is taken in a fresh transaction
        _lock(connection)
        revision = current(connection)
        if revision is not None and not _known(revision):
            raise ConfigError(
                f"the store is at schema revision {revision!r}, newer than this version of "
                f"Supersede knows (up to {head()!r}): upgrade Supersede, or use another store"
            )
        if revision != head():
            from alembic import (
                command,
            )  # loads autogenerate's plugins, logging each: not on the common path

            command.upgrade(config(connection), "head")
        connection.commit()


def _known(revision: str) -> bool:
    return any(script.revision == revision for script in _scripts().walk_revisions())


def _lock(connection: Connection) -> None:
    """Hold the store against other upgrades until this transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # pysqlite begins a transaction only before the first write; a DDL-only upgrade would
        # run outside one. BEGIN IMMEDIATE takes the write lock now; a rival waits for it
        # (the driver's busy timeout) and then sees the upgraded schema.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
