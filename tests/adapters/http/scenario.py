"""The queue situation the HTTP and CLI tests share, created through the real use cases.

* ``UNASSIGNED_UID``: Jane's study arrives with a mistyped accession (ACC1243 for ACC1234) and a mistyped name:
  no safe match, so UNASSIGNED (unknown_accession) with ACC1234 as the best candidate and John's ZZZ0001 below.
* ``CONFLICT_UID``: Jane's header on the Study Instance UID of John's order B1: CONFLICT, quarantined.
"""

from __future__ import annotations

from pathlib import Path

from radsync.bootstrap import Container, build_container
from radsync.config import load_settings
from tests.app.imaging import JOHN, Hub, instance

UNASSIGNED_UID = "1.2.3.500"
CONFLICT_UID = "1.2.3.200"
BEST = "ACC1234"


def container_on(data_dir: Path) -> Container:
    """The composition root on a fresh data folder, as `radsync serve` would build it."""
    return build_container(load_settings(None, {"data_dir": data_dir}))


def populate(container: Container) -> Hub:
    """Place the orders and store the two studies; returns the hub for later checks (order statuses)."""
    hub = Hub(container.engines)
    hub.place(BEST)
    hub.place("ZZZ0001", JOHN)
    hub.place("B1", JOHN, study_uid=CONFLICT_UID)
    hub.store(instance(UNASSIGNED_UID, accession="ACC1243", name="Doe^Jnae"))
    hub.store(instance(CONFLICT_UID))
    return hub
