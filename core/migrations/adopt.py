"""Operations for the revisions that may meet a store made before migrations (0001, 0002).

Such a store has no ``alembic_version`` table, yet it may hold some of the tables already, as
an earlier version left them: each store class used to create only its own tables (a store
used by ``supersede compare`` alone holds the results table and nothing else), and columns were
added to existing tables as they appeared. These operations make what is missing and keep what
is there, so one history serves an empty store and every earlier one.

Later revisions use plain ``op`` calls: every store that reaches them is versioned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op


def columns_of(table: str) -> set[str] | None:
    """The columns ``table`` has in the store, or None when the store has no such table."""
    inspector = sa.inspect(op.get_bind())  # a fresh inspector: earlier steps changed the schema
    if not inspector.has_table(table):
        return None
    return {column["name"] for column in inspector.get_columns(table)}


def create_table(
    name: str,
    *items: sa.Column[Any] | sa.Constraint,
    indexes: Sequence[str] = (),
) -> None:
    """Create table ``name`` with ``items`` and an index on each column named in ``indexes``.

    Where the store already has the table, only the columns it lacks are added (each must be
    nullable or have a server default, so that existing rows stay valid).
    """
    present = columns_of(name)
    if present is None:
        op.create_table(name, *items)
        for column in indexes:
            op.create_index(f"ix_{name}_{column}", name, [column])
        return
    add_columns(name, *(item for item in items if isinstance(item, sa.Column)))


def add_columns(table: str, *columns: sa.Column[Any]) -> None:
    """Add ``columns`` to ``table``, except those the store already has."""
    present = columns_of(table) or set()
    for column in columns:
        if column.name not in present:
            op.add_column(table, column)
