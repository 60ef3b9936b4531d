"""The outbox table: enqueue in the caller's transaction, claims in queue order, compare-and-set."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import update

from radsync.adapters.outbox.dispatcher import destination_routes
from radsync.adapters.outbox.operations import OutboxOperations
from radsync.adapters.outbox.store import (
    _QUEUE_HEAD,
    _QUEUE_HEAD_AFTER,
    _RECOVER,
    FailureMark,
    OutboxState,
    QueueStore,
    SentMark,
    SqlOutbox,
    msh10,
)
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import outbox
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.app.commands import PlaceOrder
from radsync.app.orders import OrderService
from radsync.app.outbox import new_control_id
from radsync.app.ports import OrderKey
from radsync.app.stations import StationDirectory
from radsync.clock import utc_now
from radsync.config import HL7DestinationSettings, Settings
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import PatientUpdate
from tests.adapters.outbox.receiver import oru
from tests.adapters.outbox.support import enqueue, row

SETTINGS = Settings(hl7_destinations=(HL7DestinationSettings(name="ris", host="127.0.0.1", port=9),))
LEASE = dt.timedelta(seconds=60)


def store(engines: Engines) -> QueueStore:
    return QueueStore(engines.write, utc_now, lease=LEASE)


def test_the_message_commits_with_the_use_case_and_links_its_order(engines: Engines) -> None:
    order = ImagingOrder(
        patient_id=PatientId("100234567", Issuer("GENHOSP")),
        accession=EntityId("A2024061100017"),
        filler_number=EntityId("FIL-55501", Issuer("RIS")),
        procedures=(RequestedProcedure("RP1", "", steps=(ScheduledStep("SPS1", "CT", dt.datetime(2024, 6, 12)),)),),
    )
    service = OrderService(StationDirectory([]), lambda: "2.25.1")
    with transaction(engines.write, utc_now) as uow:
        placed = service.place(uow, PlaceOrder(PatientUpdate(order.patient_id, {}), order))
        box = SqlOutbox(uow.connection, uow.now(), destination_routes(SETTINGS))
        for destination in box.destinations("status"):
            box.enqueue(destination, "ORM^O01", oru("ST1"), "ST1", OrderKey.of(placed))
    assert box.enqueued == ["ris"]
    stored = row(engines, "ST1")
    assert (stored.state, stored.accession, stored.message_type, stored.attempts) == (
        "pending", "A2024061100017", "ORM^O01", 0)
    assert stored.order_pk is not None
    assert OutboxOperations(engines, utc_now).get(stored.pk).payload == oru("ST1")


def test_enqueue_refuses_what_could_never_be_delivered(engines: Engines) -> None:
    with engines.write.begin() as conn:
        box = SqlOutbox(conn, utc_now(), destination_routes(SETTINGS))
        with pytest.raises(ValueError, match="no outbox destination"):
            box.enqueue("nowhere", "ORU^R01", oru("X1"), "X1")
        with pytest.raises(ValueError, match="MSH-10"):
            box.enqueue("ris", "ORU^R01", oru("X1"), "X2")
        with pytest.raises(ValueError, match="control ID"):
            box.enqueue("ris", "ORU^R01", b"MSH|^~\\&|A|B|C|D|2024||ORU^R01||P|2.5", "")


def test_msh10_and_new_control_ids() -> None:
    assert msh10(oru("ABC")) == "ABC"
    assert msh10(b"MSH#^~\\&#A#B#C#D#2024##ORU^R01#Q9#P#2.5") == "Q9"
    assert msh10(b"not hl7") is None
    control_id = new_control_id()
    assert len(control_id) == 20 and control_id != new_control_id()


def test_claims_take_the_ready_prefix_in_order(engines: Engines) -> None:
    ids = enqueue(engines, SETTINGS, ["Q1", "Q2", "Q3", "Q4"])
    claim = store(engines).claim("ris", "me", 3)
    assert [m.control_id for m in claim.messages] == ["Q1", "Q2", "Q3"]
    assert row(engines, "Q1").state == "sending" and row(engines, "Q4").state == "pending"
    assert store(engines).claim("ris", "other", 10).messages == ()  # Q4 may not overtake Q1..Q3
    store(engines).settle("me", sent=[SentMark(ids[0], utc_now(), 0.001, "AA")], release=ids[1:3])
    assert [row(engines, c).state for c in ("Q1", "Q2", "Q3")] == ["sent", "pending", "pending"]


def test_a_failed_head_blocks_its_queue_until_due_and_a_dead_one_does_not(engines: Engines) -> None:
    ids = enqueue(engines, SETTINGS, ["B1", "B2", "B3"])
    queue = store(engines)
    queue.claim("ris", "me", 1)
    later = utc_now() + dt.timedelta(minutes=5)
    queue.settle("me", failure=FailureMark(ids[0], OutboxState.FAILED, 1, later, "AE"))
    blocked = queue.claim("ris", "me", 10)
    assert blocked.messages == () and blocked.head_due_at == later
    with engines.write.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.pk == ids[0]).values(state=OutboxState.DEAD))
    assert [m.control_id for m in queue.claim("ris", "me", 10).messages] == ["B2", "B3"]


def test_outcomes_are_only_recorded_by_the_claim_holder(engines: Engines) -> None:
    (pk,) = enqueue(engines, SETTINGS, ["O1"])
    queue = store(engines)
    queue.claim("ris", "me", 1)
    assert queue.settle("intruder", sent=[SentMark(pk, utc_now(), 0.001, "AA")]) == 1
    assert row(engines, "O1").state == "sending"
    assert queue.settle("me", sent=[SentMark(pk, utc_now(), 0.001, "AA")]) == 0
    assert row(engines, "O1").state == "sent"


def test_the_next_batch_is_claimed_past_the_one_in_flight_and_each_ack_is_recorded_as_it_came(
    engines: Engines,
) -> None:
    ids = enqueue(engines, SETTINGS, ["N1", "N2", "N3", "N4", "N5"])
    queue = store(engines)
    assert [m.control_id for m in queue.claim("ris", "me", 2).messages] == ["N1", "N2"]
    assert queue.claim("ris", "other", 10).messages == ()  # another node may not pass over our batch
    ahead = queue.claim("ris", "me", 2, after=ids[0:2])
    assert [m.control_id for m in ahead.messages] == ["N3", "N4"]
    at = dt.datetime(2026, 1, 2, 3, 4, 5)
    sent = [SentMark(ids[0], at, 0.0015, "AA"), SentMark(ids[1], at.replace(microsecond=7), 0.25, "CA")]
    last = queue.claim("ris", "me", 10, sent=sent, after=ids[2:4])
    assert [m.control_id for m in last.messages] == ["N5"] and last.lost == 0
    n1, n2 = row(engines, "N1"), row(engines, "N2")
    assert (n1.state, n1.sent_at, n1.ack_latency, n1.ack_code, n1.claimed_by) == ("sent", at, 0.0015, "AA", None)
    assert (n2.state, n2.sent_at, n2.ack_latency, n2.ack_code) == ("sent", at.replace(microsecond=7), 0.25, "CA")
    assert [row(engines, c).state for c in ("N3", "N4", "N5")] == ["sending"] * 3


def _plan(engines: Engines, statement: Any, params: dict[str, Any]) -> str:
    """The database's own plan for one of the store's statements, as text."""
    engine = engines.write
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.params | params
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny table: make the planner pick an index
            lines = conn.exec_driver_sql(f"EXPLAIN {compiled}", {k: values[k] for k in compiled.params}).all()
            return "\n".join(line[0] for line in lines)
        args = tuple(values[k] for k in compiled.positiontup or ())
        return "\n".join(str(line[-1]) for line in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args).all())


def test_the_queue_and_its_statistics_are_read_from_the_partial_index_of_unsent_rows(engines: Engines) -> None:
    # Sent rows leave ix_outbox_unsent with their sent mark (two index entries fewer per message than an index on
    # state alone). The queries must repeat its predicate literally for either planner to use it: without that,
    # SQLite scans the table on every claim.
    ids = enqueue(engines, SETTINGS, ["P1", "P2"])
    queue = store(engines)
    queue.claim("ris", "me", 1)
    queue.settle("me", sent=[SentMark(ids[0], utc_now(), 0.001, "AA")])
    now = utc_now()
    for statement, params in (
        (_QUEUE_HEAD, {"p_destination": "ris", "p_limit": 10, "p_now": now}),
        (_QUEUE_HEAD_AFTER, {"p_destination": "ris", "p_limit": 10, "p_now": now, "p_owner": "me"}),
        (_RECOVER, {"p_owner": "me", "p_now": now}),
    ):
        assert "ix_outbox_unsent" in _plan(engines, statement, params)
    operations = OutboxOperations(engines, utc_now)
    assert [e.control_id for e in operations.entries("pending")] == ["P2"]
    assert [e.control_id for e in operations.entries("sent")] == ["P1"]
    assert operations.stats(["ris"])[0].pending == 1
