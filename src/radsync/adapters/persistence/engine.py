"""Database engines: SQLite (embedded default) or PostgreSQL, configured for durability.

SQLite: WAL so readers (MWL queries) never wait for the writer, synchronous=FULL so an acknowledged message
survives power loss, and BEGIN IMMEDIATE on the write engine so two writers never deadlock on a lock upgrade.
pysqlite's own transaction handling is switched off (SQLAlchemy's documented recipe) so SAVEPOINTs work, which
the HL7 group commit needs (one savepoint per message inside one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool


@dataclass(frozen=True, slots=True)
class Engines:
    """``write`` for commands, ``read`` for queries; the same engine on PostgreSQL."""

    write: Engine
    read: Engine

    def dispose(self) -> None:
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engines(url: str, *, sqlite_synchronous: str = "FULL") -> Engines:
    if not is_sqlite(url):
        engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        return Engines(write=engine, read=engine)
    return Engines(
        write=_sqlite_engine(url, begin="BEGIN IMMEDIATE", synchronous=sqlite_synchronous),
        read=_sqlite_engine(url, begin="BEGIN", synchronous=sqlite_synchronous),
    )


def _sqlite_engine(url: str, *, begin: str, synchronous: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        poolclass=NullPool if ":memory:" in url else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # straight on the DBAPI connection: exec_driver_sql's execution context cost ~50 µs per transaction
        connection.connection.dbapi_connection.execute(begin)

    return engine
