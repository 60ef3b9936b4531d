"""The SQLite write engine's cross-process writer lock (persistence/engine.py): a flock on ``<db>-writer.lock``
taken before BEGIN IMMEDIATE and released right after COMMIT or ROLLBACK, so a waiting writer is woken at once."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from radsync.adapters.persistence.engine import Engines, create_engines, writer_lock, writer_lock_is_free


@pytest.fixture
def sqlite(tmp_path: Path) -> Engines:
    engines = create_engines(f"sqlite:///{tmp_path / 'radsync.db'}")
    with engines.write.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engines
    engines.dispose()


def _write_in_thread(engines: Engines, n: int, done: threading.Event) -> threading.Thread:
    def write() -> None:
        with engines.write.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_writer_waits_for_the_lock_file_and_readers_do_not(sqlite: Engines, tmp_path: Path) -> None:
    fd = os.open(tmp_path / "radsync.db-writer.lock", os.O_RDWR)  # made by the engine's first connection
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another process's writer would hold it
        done = threading.Event()
        thread = _write_in_thread(sqlite, 1, done)
        assert not done.wait(0.3)
        with sqlite.read.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
        released = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert done.wait(5)
        assert time.monotonic() - released < 1.0  # woken by the unlock, not by a poll
        thread.join(5)
    finally:
        os.close(fd)
    with sqlite.read.connect() as conn:
        assert conn.execute(text("SELECT n FROM t")).scalars().all() == [1]


def test_commit_and_rollback_both_release_the_lock(sqlite: Engines) -> None:
    with pytest.raises(RuntimeError), sqlite.write.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (0)"))
        raise RuntimeError("rolled back")
    with sqlite.write.connect() as kept:  # a connection kept open between transactions, as the HL7 writer does
        with kept.begin():
            kept.execute(text("INSERT INTO t VALUES (1)"))
        done = threading.Event()
        _write_in_thread(sqlite, 2, done).join(5)
        assert done.is_set()  # the kept connection's commit released the lock
    with sqlite.read.connect() as conn:
        assert sorted(conn.execute(text("SELECT n FROM t")).scalars()) == [1, 2]


def test_writer_lock_holds_other_writers_back_but_not_its_own_thread(sqlite: Engines) -> None:
    done = threading.Event()
    with writer_lock(sqlite.write):
        thread = _write_in_thread(sqlite, 2, done)
        with sqlite.write.begin() as conn:  # this thread holds the lock already: no wait for itself
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert not done.wait(0.3)
    assert done.wait(5)
    thread.join(5)
    with sqlite.read.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY rowid")).scalars().all() == [1, 2]


def test_no_lock_file_for_memory_databases(tmp_path: Path) -> None:
    engines = create_engines("sqlite:///:memory:")
    try:
        with writer_lock(engines.write), engines.write.begin() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engines.dispose()


def test_writer_lock_is_free_tells_whether_another_writer_holds_the_lock(sqlite: Engines, tmp_path: Path) -> None:
    assert writer_lock_is_free(sqlite.write)
    fd = os.open(tmp_path / "radsync.db-writer.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer
        assert not writer_lock_is_free(sqlite.write)
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert writer_lock_is_free(sqlite.write)
        with writer_lock(sqlite.write):  # this thread's own hold is no wait for this thread
            assert writer_lock_is_free(sqlite.write)
            with pytest.raises(BlockingIOError):  # and still held: the probe did not release it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # the probe took and gave back the lock: another writer gets it at once
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    memory = create_engines("sqlite://")
    try:
        assert writer_lock_is_free(memory.write)  # no lock file, nothing to wait for
    finally:
        memory.dispose()
