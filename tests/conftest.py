"""Shared fixtures: fresh, migrated databases on SQLite and PostgreSQL, free ports, a fixed clock.

PostgreSQL runs at 127.0.0.1:5432 on the project's machines (user postgres, trust auth). Tests marked for it
skip cleanly when no server is reachable, except under CI (CI=true), where a missing server is a failure.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from radsync.adapters.persistence.engine import Engines, create_engines
from radsync.adapters.persistence.migrate import upgrade

POSTGRES_ADMIN_URL = os.environ.get(
    "RADSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def fixed_now() -> dt.datetime:
    return dt.datetime(2024, 6, 11, 9, 30, 0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A URL of an empty database, on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'radsync.db'}"
        return
    if not _postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 in CI")
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"radsync_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engines(database_url: str) -> Iterator[Engines]:
    """Migrated engines on a fresh database (SQLite and PostgreSQL)."""
    created = create_engines(database_url)
    upgrade(created.write)
    try:
        yield created
    finally:
        created.dispose()


@pytest.fixture
def sqlite_engines(tmp_path) -> Iterator[Engines]:  # type: ignore[no-untyped-def]
    """Migrated engines on a fresh SQLite database, for tests that need no second backend."""
    created = create_engines(f"sqlite:///{tmp_path / 'radsync.db'}")
    upgrade(created.write)
    try:
        yield created
    finally:
        created.dispose()
