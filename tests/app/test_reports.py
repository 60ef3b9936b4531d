"""Report and status use cases against a real database: what they store and which messages they queue.

The outbox rows are read back and parsed with python-hl7, as the receiver would; delivery itself is tested
against a real MLLP receiver in tests/e2e/test_results_out.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import hl7
import pytest
from sqlalchemy import select

from radsync.adapters.hl7.outbound.segments import Sender
from radsync.adapters.hl7.outbound.wire import Hl7Wire
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import outbox, outbox_payloads, reports
from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork, transaction
from radsync.app.outbound import Outbound
from radsync.app.outbox import DestinationRoutes
from radsync.app.ports import OrderKey
from radsync.app.procedures import MppsSet
from radsync.app.reports import RecordReport, record_report
from radsync.domain.errors import InvalidTransition, UnknownOrder
from radsync.domain.ids import EntityId
from radsync.domain.mpps import MppsChange, MppsStatus
from radsync.domain.names import PersonName
from radsync.domain.report import Report, ReportStatus
from tests.app.imaging import JANE, JOHN, Hub, instance
from tests.app.test_procedures import create, mpps, step_refs

ROUTES = DestinationRoutes({"ris": ["report", "status"], "ehr": ["report"]})
TEXT = "FINDINGS: Lungs clear | no effusion ^ R&L ~ \\ ok.\nIMPRESSION: Normal."


@dataclass
class OutboundHub(Hub):
    """The hub with the outbox wired as the composition root wires it (no dispatcher: rows are read back)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.outbound = Outbound(ROUTES, Hl7Wire(Sender("RADSYNC", "RAD")))

    def run(self, work):  # type: ignore[no-untyped-def,override]
        with transaction(self.engines.write, lambda: self.now, self.outbound) as uow:
            return work(uow)

    def report(self, accession: str, status: ReportStatus = ReportStatus.FINAL, text: str = TEXT):  # type: ignore[no-untyped-def]
        command = RecordReport(OrderKey(accession=EntityId(accession)),
                               Report(status, text, PersonName.of("Lee", "Hannah"), "R9001",
                                      dt.datetime(2024, 6, 12, 16, 29)), source="test")
        return self.run(lambda uow: record_report(uow, command))


@pytest.fixture
def hub(engines: Engines) -> OutboundHub:
    return OutboundHub(engines)


def queued(engines: Engines, message_type: str | None = None) -> list[tuple[str, Any]]:
    """(destination, parsed message) of every outbox row, oldest first."""
    query = select(outbox.c.destination, outbox.c.message_type, outbox_payloads.c.payload).join(
        outbox_payloads, outbox_payloads.c.outbox_pk == outbox.c.pk).order_by(outbox.c.pk)
    with engines.read.connect() as conn:
        rows = conn.execute(query).all()
    return [(r.destination, hl7.parse(bytes(r.payload).decode("utf-8"))) for r in rows
            if message_type is None or r.message_type == message_type]


def test_final_report_queues_one_oru_per_report_destination_with_the_orders_identifiers(hub: OutboundHub) -> None:
    order = hub.place("ACC1")
    recorded = hub.report("ACC1")

    messages = queued(hub.engines, "ORU^R01")
    assert [d for d, _ in messages] == ["ris", "ehr"]
    msg = messages[0][1]
    assert str(msg.segment("MSH")[10]) in recorded.control_ids
    assert str(msg.segment("PID")[3][0][0]) == "P1" and str(msg.segment("PID")[5]) == "Doe^Jane"
    orc, obr = msg.segment("ORC"), msg.segment("OBR")
    assert str(orc[1]) == "RE" and str(orc[3]) == "F-ACC1^RIS"
    assert str(obr[18]) == "ACC1" and str(obr[24]) == "RAD" and str(obr[25]) == "F"
    assert str(obr[32]) == "R9001&Lee&Hannah"
    text_obx = [s for s in msg.segments("OBX") if str(s[2]) == "TX"]
    assert {str(s[11]) for s in msg.segments("OBX")} == {"F"}
    assert "\n".join(msg.unescape(str(s[5])) for s in text_obx) == TEXT
    uid_obx = [s for s in msg.segments("OBX") if str(s[3]) == "113014^DICOM Study^DCM"]
    assert [str(s[5]) for s in uid_obx] == [order.procedures[0].study_instance_uid]


def test_final_report_also_tells_status_destinations_the_order_is_complete_with_its_result(hub: OutboundHub) -> None:
    hub.place("ACC1")
    hub.report("ACC1")

    [(destination, msg)] = queued(hub.engines, "ORM^O01")
    assert destination == "ris"
    assert str(msg.segment("ORC")[1]) == "SC" and str(msg.segment("ORC")[5]) == "CM"
    assert str(msg.segment("OBR")[25]) == "F"


def test_corrected_report_supersedes_the_final_one_and_goes_out_as_c(hub: OutboundHub) -> None:
    hub.place("ACC1")
    hub.report("ACC1")
    again = hub.report("ACC1", ReportStatus.FINAL, "IMPRESSION: small nodule, see addendum.")

    assert again.report.status is ReportStatus.CORRECTED
    last = queued(hub.engines, "ORU^R01")[-1][1]
    assert str(last.segment("OBR")[25]) == "C"
    assert {str(s[11]) for s in last.segments("OBX")} == {"C"}
    with hub.engines.read.connect() as conn:
        rows = conn.execute(select(reports.c.status, reports.c.superseded_at).order_by(reports.c.pk)).all()
    assert [(r.status, r.superseded_at is None) for r in rows] == [("F", False), ("C", True)]
    assert len(queued(hub.engines, "ORM^O01")) == 1  # the order was complete already: no second status


def test_preliminary_after_final_is_refused_and_changes_nothing(hub: OutboundHub) -> None:
    hub.place("ACC1")
    hub.report("ACC1")
    before = len(queued(hub.engines))
    with pytest.raises(InvalidTransition):
        hub.report("ACC1", ReportStatus.PRELIMINARY)
    assert len(queued(hub.engines)) == before


def test_report_for_an_unknown_order_is_refused(hub: OutboundHub) -> None:
    with pytest.raises(UnknownOrder):
        hub.report("NOPE")
    assert queued(hub.engines) == []


def test_study_fulfilling_two_orders_gives_one_oru_per_accession(hub: OutboundHub) -> None:
    a, b = hub.place("ACC1"), hub.place("ACC2")
    items = step_refs(a, b)
    hub.store(instance("1.2.3.77", accession="", items=items))

    hub.report("ACC1")

    to_ris = [m for d, m in queued(hub.engines, "ORU^R01") if d == "ris"]
    assert sorted(str(m.segment("OBR")[18]) for m in to_ris) == ["ACC1", "ACC2"]
    assert len({str(m.segment("ORC")[3]) for m in to_ris}) == 2
    assert all("1.2.3.77" in [str(s[5]) for s in m.segments("OBX")] for m in to_ris)


def test_mpps_in_progress_and_completed_send_ip_then_cm_once(hub: OutboundHub) -> None:
    order = hub.place("ACC1")
    create(hub, mpps("1.2.3.9", *step_refs(order)))
    hub.run(lambda uow: hub.procedures.mpps_set(uow, MppsSet("1.2.3.9", MppsChange(status=MppsStatus.IN_PROGRESS))))
    hub.run(lambda uow: hub.procedures.mpps_set(uow, MppsSet("1.2.3.9", MppsChange(status=MppsStatus.COMPLETED))))

    statuses = [(str(m.segment("ORC")[1]), str(m.segment("ORC")[5])) for _, m in queued(hub.engines, "ORM^O01")]
    assert statuses == [("SC", "IP"), ("SC", "CM")]
    msg = queued(hub.engines, "ORM^O01")[0][1]
    assert str(msg.segment("OBR")[18]) == "ACC1" and str(msg.segment("ORC")[3]) == "F-ACC1^RIS"


def test_images_reconciled_complete_the_order_and_send_cm(hub: OutboundHub) -> None:
    order = hub.place("ACC1")
    hub.store(instance(order.procedures[0].study_instance_uid, accession="ACC1"))

    [(_, msg)] = queued(hub.engines, "ORM^O01")
    assert str(msg.segment("ORC")[5]) == "CM"


def test_conflict_study_sends_nothing(hub: OutboundHub) -> None:
    hub.place("B1", JOHN, study_uid="1.2.3.200")
    hub.store(instance("1.2.3.200", patient=JANE))
    assert queued(hub.engines) == []


def test_without_destinations_nothing_is_queued(engines: Engines) -> None:
    plain = Hub(engines)
    plain.place("ACC1")
    with transaction(engines.write, lambda: plain.now) as uow:
        assert isinstance(uow, SqlUnitOfWork)
        record_report(uow, RecordReport(OrderKey(accession=EntityId("ACC1")), Report(ReportStatus.FINAL, "ok")))
    assert queued(engines) == []



def test_mpps_discontinued_sends_dc(hub: OutboundHub) -> None:
    order = hub.place("ACC1")
    create(hub, mpps("1.2.3.9", *step_refs(order)))
    hub.run(lambda uow: hub.procedures.mpps_set(uow, MppsSet("1.2.3.9", MppsChange(status=MppsStatus.DISCONTINUED))))

    statuses = [str(m.segment("ORC")[5]) for _, m in queued(hub.engines, "ORM^O01")]
    assert statuses == ["IP", "DC"]


def test_status_goes_as_omi_to_a_destination_configured_for_it(engines: Engines) -> None:
    """Per destination: the SWF.b receiver gets OMI^O23, the other keeps ORM^O01; the outbox row says which."""
    hub = OutboundHub(engines)
    routes = DestinationRoutes({"ris": ["status"], "ris25": ["status"]})
    hub.outbound = Outbound(routes, Hl7Wire(Sender("RADSYNC", "RAD"), status_messages={"ris25": "OMI^O23"}))
    order = hub.place("ACC1")
    create(hub, mpps("1.2.3.9", *step_refs(order)))
    hub.run(lambda uow: hub.procedures.mpps_set(uow, MppsSet("1.2.3.9", MppsChange(status=MppsStatus.IN_PROGRESS))))
    by_destination = {d: m for d, m in queued(hub.engines)}
    assert str(by_destination["ris"].segment("MSH")[9]) == "ORM^O01^ORM_O01"
    assert str(by_destination["ris25"].segment("MSH")[9]) == "OMI^O23^OMI_O23"
    assert [d for d, _ in queued(hub.engines, "OMI^O23")] == ["ris25"]
    assert str(by_destination["ris25"].segment("IPC")[1]).split("^")[0] == "ACC1"
