"""Database engines: SQLite (embedded default) or PostgreSQL, configured for durability.

SQLite: WAL so readers (MWL queries) never wait for the writer, every commit on disk (fsync) before it returns so
an acknowledged message survives power loss, and BEGIN IMMEDIATE on the write engine so two writers never deadlock
on a lock upgrade.
pysqlite's own transaction handling is switched off (SQLAlchemy's documented recipe) so SAVEPOINTs work, which
the HL7 group commit needs (one savepoint per message inside one transaction). The WAL is checkpointed every
4,000 pages (16 MiB) instead of SQLite's 1,000: a new order appends ~33 pages, so the default ran a checkpoint
(DB writes + fsync, ~1.5 ms) inside every ~30th commit; measured in one A/B run, +3.5 % msg/s on one MLLP
connection and +5 % on eight (README, HL7 ingest round 3).

Writers in several processes (HL7 and DICOM workers, adapters/workers.py) queue for SQLite's one write lock. SQLite's
busy handler retries a locked BEGIN IMMEDIATE after sleeping 1, 2, 5, 10, ... ms, so a waiter wakes up to
milliseconds after the lock was freed (a commit holds it ~1 ms) and the lock sits unused meanwhile. The write engine
therefore takes an exclusive ``flock`` on a file beside the database (``<database>-writer.lock``) before BEGIN
IMMEDIATE and releases it right after COMMIT or ROLLBACK: the kernel wakes the next waiter at once, in any process.
The flock only orders writers; SQLite's own lock (and busy_timeout) stays what guarantees correctness, so a writer
without it (the outbox's bookkeeping engine, another tool) is merely slower to get in. PostgreSQL needs none.

The write engine's fsync happens after the locks are free (``sqlite_synchronous = "FULL"``, the default). SQLite's
own synchronous=FULL syncs the WAL inside COMMIT, while it still holds the write lock, so every other writer (the
other HL7 and DICOM receiving processes) waited for that fsync too (with two HL7 processes the write lock was
held ~600 µs per message, the fsync included). The write engine's connections therefore run with
synchronous=NORMAL (COMMIT writes the WAL frames and returns) and ``_end_transaction`` then ``fdatasync``-s the WAL
file itself, after releasing the writer lock and before the commit returns to its caller: a commit is on disk when
it returns, exactly as with FULL, but the next writer works while it is being synced, and one fsync covers every
frame written before it (two processes' fsyncs overlap instead of queueing). Why this is as durable as FULL: a
commit's frames are either still in the WAL, which that fdatasync flushes (with the header and every earlier
frame, so recovery finds an unbroken log), or already copied into the database file by a checkpoint, which under
NORMAL syncs the WAL before and the database file after, and the WAL is only restarted after such a checkpoint.
The WAL file is never replaced while a connection is open, so its descriptor is opened once per connection. What
differs from FULL: another connection may read a commit up to one fsync (~0.3-1 ms) before it is durable (a
worklist query, or the outbox worker claiming a message the commit queued); nothing is acknowledged before it is,
and a power loss in that window loses only a commit that nobody was told about (its sender sends it again; a
message the outbox had already sent for it may then be sent twice, as at-least-once delivery allows). A writer
inside ``writer_lock`` syncs when that block ends, after the lock is free, so it answers only after the block.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
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


WAL_AUTOCHECKPOINT_PAGES = 4000


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engines(url: str, *, sqlite_synchronous: str = "FULL") -> Engines:
    if not is_sqlite(url):
        engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        return Engines(write=engine, read=engine)
    database = make_url(url).database or ""
    lock = None if database in ("", ":memory:") or database.startswith("file:") else f"{database}-writer.lock"
    return Engines(
        write=_sqlite_engine(url, begin="BEGIN IMMEDIATE", synchronous=sqlite_synchronous, write_lock=lock),
        read=_sqlite_engine(url, begin="BEGIN", synchronous=sqlite_synchronous),
    )


def _sqlite_engine(url: str, *, begin: str, synchronous: str, write_lock: str | None = None) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        poolclass=NullPool if ":memory:" in url else None,
    )

    syncs_itself = write_lock is not None and synchronous == "FULL"  # see "fsync after the locks" above
    wal = f"{make_url(url).database}-wal"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        journal = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if syncs_itself and str(journal).lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
            record.info["wal"] = wal
        else:  # no WAL (a filesystem without shared memory): SQLite's own FULL
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    if write_lock is not None:
        _order_writers(engine, write_lock, begin)
        _lock_paths[engine] = write_lock
        return engine

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # straight on the DBAPI connection: exec_driver_sql's execution context cost ~50 µs per transaction
        connection.connection.dbapi_connection.execute(begin)

    return engine


_holding = threading.local()  # ``info`` of the connection (or writer_lock) whose lock this thread took, if any
_lock_paths: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


@contextmanager
def writer_lock(engine: Engine) -> Iterator[None]:
    """Hold the cross-process writer lock of ``engine`` in this thread for the block (nothing without one).

    For a writer that wants the lock before deciding what to write (the HL7 intake in a worker collects its batch
    once it holds it, hl7/workers.py); write transactions begun in this thread meanwhile do not take it again.
    """
    path = _lock_paths.get(engine)
    mine = getattr(_holding, "info", None)
    if path is None or (mine is not None and mine.get("writer_locked")):
        yield
        return
    info: dict[str, Any] = {"writer_lock": _thread_lock_fd(path)}
    fcntl.flock(info["writer_lock"], fcntl.LOCK_EX)
    info["writer_locked"] = True
    _holding.info = info
    try:
        yield
    finally:
        _release(info)
        committed = info.pop("unsynced", None)
        if committed is not None:  # commits in the block left their fsync to now, after the lock is free
            _sync_wal(committed)


def writer_lock_is_free(engine: Engine) -> bool:
    """Whether no writer holds ``engine``'s cross-process writer lock now (True without one, or if this thread
    holds it). Only a probe: another writer may take the lock right after; it lets an event loop that would write
    itself hand the work to a thread instead when it can see that it would have to wait (hl7/intake.py)."""
    path = _lock_paths.get(engine)
    mine = getattr(_holding, "info", None)
    if path is None or (mine is not None and mine.get("writer_locked")):
        return True
    fd = _thread_lock_fd(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _thread_lock_fd(path: str) -> int:
    """This thread's own descriptor of the lock file (flock belongs to the open file, so each thread has one)."""
    fds = getattr(_holding, "fds", None)
    if fds is None:
        fds = _holding.fds = {}
    if path not in fds:
        fds[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return int(fds[path])


def _order_writers(engine: Engine, path: str, begin: str) -> None:
    """The cross-process writer queue described above: flock before BEGIN, unlock after COMMIT / ROLLBACK.

    Each DBAPI connection opens the file itself (flock belongs to the open file, so two connections of one
    process exclude each other too). COMMIT and ROLLBACK are issued here, in the "commit" / "rollback" events
    that SQLAlchemy calls just before its own, so the lock is released after them; pysqlite's ``commit()`` and
    ``rollback()`` do nothing when no transaction is open, so SQLAlchemy's own call that follows is a no-op. A
    thread that already holds the lock (a second write connection opened inside a write transaction) does not
    wait for it again: it waits in SQLite's busy handler as before, instead of for itself forever.
    """

    @event.listens_for(engine, "connect")
    def _open(_dbapi_connection: Any, record: Any) -> None:
        record.info["writer_lock"] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @event.listens_for(engine, "close")
    def _close(_dbapi_connection: Any, record: Any) -> None:
        _release(record.info)
        for name in ("writer_lock", "wal_fd"):
            fd = record.info.pop(name, None)
            if fd is not None:
                os.close(fd)

    @event.listens_for(engine, "invalidate")
    def _invalidated(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        _release(record.info)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        fairy = connection.connection
        info = fairy.info
        mine = getattr(_holding, "info", None)
        if "writer_lock" in info and not (mine is not None and mine.get("writer_locked")):
            fcntl.flock(info["writer_lock"], fcntl.LOCK_EX)  # waits without the GIL; woken as soon as it is free
            info["writer_locked"] = True
            _holding.info = info
        try:
            # straight on the DBAPI connection: exec_driver_sql's execution context cost ~50 µs per transaction
            fairy.dbapi_connection.execute(begin)
        except BaseException:
            _release(info)
            raise

    @event.listens_for(engine, "commit")
    def _on_commit(connection: Any) -> None:
        _end_transaction(connection, "commit")

    @event.listens_for(engine, "rollback")
    def _on_rollback(connection: Any) -> None:
        _end_transaction(connection, "rollback")


def _end_transaction(connection: Any, how: str) -> None:
    """COMMIT or ROLLBACK on the DBAPI connection, free the writer lock (whatever the outcome), then put a commit
    on disk: now, or when the ``writer_lock`` block that holds the lock ends."""
    if connection.invalidated:
        return
    fairy = connection.connection
    info = fairy.info
    try:
        getattr(fairy.dbapi_connection, how)()
    finally:
        _release(info)
    if how != "commit" or "wal" not in info:
        return
    outer = getattr(_holding, "info", None)
    if outer is not None and outer.get("writer_locked"):
        outer["unsynced"] = info
    else:
        _sync_wal(info)


def _sync_wal(info: dict[str, Any]) -> None:
    """fdatasync the WAL file of the connection whose ``info`` this is: its commits (and all before) are durable."""
    fd = info.get("wal_fd")
    if fd is None:
        fd = info["wal_fd"] = os.open(info["wal"], os.O_RDONLY | os.O_CLOEXEC)
    os.fdatasync(fd)


def _release(info: dict[str, Any]) -> None:
    if info.pop("writer_locked", False):
        fcntl.flock(info["writer_lock"], fcntl.LOCK_UN)
