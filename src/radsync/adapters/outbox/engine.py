"""The delivery workers' own database engine: same database, commits that do not wait for the disk, and a
write lock taken without SQLite's coarse sleeps.

Durability: everything a worker writes (claims, sent/failed/dead marks) may be lost in a power failure without
harm: the row falls back to an earlier state and the message is sent again with the same control ID, which
at-least-once delivery allows anyway. The enqueue, which carries the state change, stays fully durable on the
caller's engine. The log is written in order, so a later durable commit makes every earlier one durable too.
Skipping the fsync per batch (SQLite synchronous=NORMAL, PostgreSQL synchronous_commit=off) is what lets delivery
keep pace with the wire.

Lock waits (SQLite): SQLite's busy handler retries a locked database after 1, 2, 5, 10, 15, 20, 25, 25, 25, 50,
50, 100 ms. Next to use cases committing back to back (each holding the write lock through its fsync) a worker
waiting that way falls tens of milliseconds behind per batch, and a queue builds up that need not exist. This
engine instead asks for the lock (BEGIN IMMEDIATE) every 0.1-1 ms until it gets it, for up to 30 s.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

from radsync.adapters.persistence.engine import is_sqlite

LOCK_TIMEOUT = 30.0


def bookkeeping_engine(engine: Engine, connections: int) -> Engine:
    """An engine for the outbox workers on the database of ``engine`` (``connections``: pool size, PostgreSQL)."""
    if is_sqlite(engine.url.render_as_string(hide_password=False)):
        return _sqlite_engine(engine)
    return create_engine(
        engine.url,
        pool_size=connections,
        max_overflow=connections,
        pool_pre_ping=True,
        connect_args={"options": "-c synchronous_commit=off"},
    )


def _sqlite_engine(engine: Engine) -> Engine:
    database = engine.url.database or ""
    bookkeeping = create_engine(
        engine.url,
        connect_args={"check_same_thread": False, "timeout": 0},  # never sleep in SQLite's busy handler
        poolclass=NullPool if database in ("", ":memory:") else None,
    )

    @event.listens_for(bookkeeping, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's documented recipe: we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(bookkeeping, "begin")
    def _on_begin(connection: Any) -> None:
        _begin_immediate(connection.connection.driver_connection)

    return bookkeeping


def _begin_immediate(dbapi_connection: sqlite3.Connection) -> None:
    deadline = time.monotonic() + LOCK_TIMEOUT
    pause = 0.0001
    while True:
        try:
            dbapi_connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.001)
