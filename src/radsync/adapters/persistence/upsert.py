"""Insert a row unless its unique key exists, in one statement, on SQLite and PostgreSQL.

Why not SELECT-then-INSERT: two PostgreSQL sessions (two associations, two radsync nodes) may both see
"absent" and one would fail on the unique constraint, rolling back its whole transaction. ``ON CONFLICT DO
NOTHING`` waits for the other writer and then skips; the returned primary key says which happened. The
statement is built once per (dialect, table, key) and executed on the DBAPI cursor (fast_sql): on the C-STORE
hot path, building SQLAlchemy constructs per call, or executing them through ``Connection.execute``, costs more
than the database work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from radsync.adapters.persistence import fast_sql


def insert_or_skip(
    conn: Connection, table: Table, values: Mapping[str, Any], unique: Sequence[str]
) -> int | None:
    """Insert ``values``; return the new primary key, or ``None`` if a row with that ``unique`` key exists."""
    statement = _statement(conn.dialect.name, table, tuple(unique))
    pk = fast_sql.scalar(conn, statement, values)
    return None if pk is None else int(pk)


@lru_cache(maxsize=64)
def _statement(dialect_name: str, table: Table, unique: tuple[str, ...]) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=list(unique)).returning(table.c.pk)
