"""Helpers for the outbox tests: settings with small timeouts, committing messages, reading rows back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from radsync.adapters.outbox.dispatcher import OutboxDispatcher, destination_routes
from radsync.adapters.outbox.store import SqlOutbox
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import outbox
from radsync.clock import utc_now
from radsync.config import HL7DestinationSettings, Settings
from tests.adapters.outbox.receiver import Receiver, oru

MakeDispatcher = Callable[..., OutboxDispatcher]

FAST = {
    "connect_timeout": 0.5,
    "ack_timeout": 0.4,
    "max_attempts": 3,
    "backoff_initial": 0.02,
    "backoff_max": 0.1,
}


def settings_for(*receivers: Receiver, names: tuple[str, ...] = ("ris",), **overrides: Any) -> Settings:
    destinations = tuple(
        HL7DestinationSettings(name=name, host="127.0.0.1", port=r.port, **{**FAST, **overrides})
        for name, r in zip(names, receivers, strict=True)
    )
    return Settings(hl7_destinations=destinations)


def enqueue(engines: Engines, settings: Settings, control_ids: list[str], destination: str = "ris") -> list[int]:
    """Commit one ORU per control ID, each in its own transaction (as separate use cases would)."""
    ids = []
    routes = destination_routes(settings)
    for control_id in control_ids:
        with engines.write.begin() as conn:
            ids.append(SqlOutbox(conn, utc_now(), routes).enqueue(destination, "ORU^R01", oru(control_id), control_id))
    return ids


def states(engines: Engines) -> dict[str, str]:
    """control ID -> state of every outbox row."""
    with engines.read.connect() as conn:
        return {r.control_id: r.state for r in conn.execute(select(outbox.c.control_id, outbox.c.state))}


def row(engines: Engines, control_id: str) -> Any:
    with engines.read.connect() as conn:
        return conn.execute(select(outbox).where(outbox.c.control_id == control_id)).one()
