"""Fixtures for the HTTP API tests: the real container on a tmp data folder, populated through the use cases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from radsync.bootstrap import Container
from tests.adapters.http.scenario import container_on, populate
from tests.app.imaging import Hub


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    built = container_on(tmp_path / "data")
    try:
        yield built
    finally:
        built.engines.dispose()


@pytest.fixture
def hub(container: Container) -> Hub:
    return populate(container)
