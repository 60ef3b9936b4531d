"""The write engine puts each commit on disk itself, after the writer lock is free (persistence/engine.py, "fsync
after the locks"): SQLite runs at synchronous=NORMAL and the WAL file is fdatasync-ed before the commit returns."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from radsync.adapters.persistence.engine import Engines, create_engines, writer_lock

Syncs = list[tuple[str, bool]]  # (file synced, whether the writer lock was free at that moment)


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engines]:
    engines = create_engines(f"sqlite:///{tmp_path / 'radsync.db'}")
    with engines.write.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engines
    engines.dispose()


@pytest.fixture
def syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Syncs:
    """Every fdatasync this process makes from now on: which file, and whether another writer could lock."""
    calls: Syncs = []
    real = os.fdatasync
    lock = tmp_path / "radsync.db-writer.lock"

    def fdatasync(fd: int) -> None:
        probe = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(probe)
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), free))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return calls


def _insert(engines: Engines, n: int) -> None:
    with engines.write.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})


def test_write_connections_leave_the_fsync_to_radsync_and_read_connections_keep_full(sqlite: Engines) -> None:
    with sqlite.write.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL: COMMIT does not sync
    with sqlite.read.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_a_commit_returns_after_the_wal_is_synced_with_the_writer_lock_already_free(
    sqlite: Engines, syncs: Syncs, tmp_path: Path
) -> None:
    _insert(sqlite, 1)
    assert syncs == [(str(tmp_path / "radsync.db-wal"), True)]
    _insert(sqlite, 2)
    assert len(syncs) == 2


def test_a_rollback_syncs_nothing(sqlite: Engines, syncs: Syncs) -> None:
    with pytest.raises(RuntimeError), sqlite.write.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (0)"))
        raise RuntimeError("abandon")
    assert syncs == []


def test_inside_writer_lock_the_sync_waits_for_the_end_of_the_block(
    sqlite: Engines, syncs: Syncs, tmp_path: Path
) -> None:
    with writer_lock(sqlite.write):
        _insert(sqlite, 1)
        _insert(sqlite, 2)
        assert syncs == []  # still holding the lock: the block's owner answers only after it
    assert syncs == [(str(tmp_path / "radsync.db-wal"), True)]


def test_with_sqlite_synchronous_normal_nothing_is_synced_per_commit(
    tmp_path: Path, syncs: Syncs
) -> None:
    engines = create_engines(f"sqlite:///{tmp_path / 'radsync.db'}", sqlite_synchronous="NORMAL")
    try:
        with engines.write.begin() as conn:
            conn.execute(text("CREATE TABLE t (n INTEGER)"))
        _insert(engines, 1)
        assert syncs == []
        with engines.write.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1
    finally:
        engines.dispose()
