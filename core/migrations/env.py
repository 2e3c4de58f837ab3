"""Alembic's environment: run the revisions on the connection :mod:`core.migrations` passes.

There is no offline (``--sql``) mode and no URL of its own: a store is upgraded by the process
that opens it, inside the transaction that holds the store's upgrade lock.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit(
        "the store is upgraded when Supersede opens it (core.db.open_store), "
        "not by the alembic command; `alembic revision` works without a database"
    )
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
