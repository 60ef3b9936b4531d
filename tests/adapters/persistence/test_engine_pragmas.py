"""The SQLite connections radsync opens carry its durability and checkpoint settings (engine.py)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from radsync.adapters.persistence.engine import WAL_AUTOCHECKPOINT_PAGES, create_engines


def test_every_sqlite_connection_is_wal_with_the_larger_checkpoint_interval(tmp_path: Path) -> None:
    engines = create_engines(f"sqlite:///{tmp_path / 'radsync.db'}")
    try:
        for engine in (engines.write, engines.read):
            with engine.connect() as connection:
                assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                # FULL on the read engine; NORMAL on the write engine, which syncs each commit itself (test_wal_sync)
                assert connection.execute(text("PRAGMA synchronous")).scalar() == (1 if engine is engines.write else 2)
                assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == WAL_AUTOCHECKPOINT_PAGES
    finally:
        engines.dispose()
