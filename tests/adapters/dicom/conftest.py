"""Fixtures for the DICOM adapter tests: the sample worklist on each backend, and a live DicomServer.

The worklist is built once per module and backend: the query tables run many cases against it, read-only.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from worklist_samples import SERVER_SETTINGS, seed_sample_worklist  # helper module next to this file

from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.persistence.engine import Engines, create_engines
from radsync.adapters.persistence.migrate import upgrade
from radsync.config import Settings

POSTGRES_ADMIN_URL = os.environ.get("RADSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def worklist_engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    """Migrated engines holding the sample worklist, once per test module and backend."""
    if request.param == "sqlite":
        engines = create_engines(f"sqlite:///{tmp_path_factory.mktemp('worklist') / 'radsync.db'}")
        upgrade(engines.write)
        seed_sample_worklist(engines)
        yield engines
        engines.dispose()
        return
    if not _postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 in CI")
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"radsync_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engines = create_engines(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        upgrade(engines.write)
        seed_sample_worklist(engines)
        yield engines
    finally:
        engines.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def sqlite_worklist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    """The sample worklist on SQLite only, for the network tests."""
    engines = create_engines(f"sqlite:///{tmp_path_factory.mktemp('served') / 'radsync.db'}")
    upgrade(engines.write)
    seed_sample_worklist(engines)
    yield engines
    engines.dispose()


@pytest.fixture(scope="module")
def dicom_server(sqlite_worklist: Engines) -> Iterator[tuple[DicomServer, int]]:
    """A running DicomServer on an ephemeral port over the sample worklist (answer cap 5)."""
    server = DicomServer(Settings(**SERVER_SETTINGS), sqlite_worklist)  # type: ignore[arg-type]
    port = server.start()
    try:
        yield server, port
    finally:
        server.stop()
