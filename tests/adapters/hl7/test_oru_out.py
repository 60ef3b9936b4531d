"""ORU^R01 and ORM^O01 builders: every value escaped, identifiers echoed, statuses consistent (no database)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import hl7

from radsync.adapters.hl7.outbound.fields import esc
from radsync.adapters.hl7.outbound.order_status import build_order_status
from radsync.adapters.hl7.outbound.oru import build_oru
from radsync.adapters.hl7.outbound.segments import Sender
from radsync.app.outbound import Addressed, OrderContext, PlacerStatus
from radsync.domain.ids import Code, EntityId, Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep, Visit
from radsync.domain.patient import Patient, Sex
from radsync.domain.report import Report, ReportStatus

SENDER = Sender("RADSYNC", "RAD", ZoneInfo("Europe/Berlin"))
AT = dt.datetime(2024, 6, 12, 14, 30)  # UTC
ADDRESS = Addressed("ris", "0123456789ABCDEF0123", AT)
PATIENT = Patient(PatientId("100234567", Issuer("GENHOSP"), "MR"), PersonName.of("O'Brien|Müller", "Zoë^Ann"),
                  dt.date(1970, 4, 12), Sex.FEMALE)
ORDER = ImagingOrder(
    patient_id=PATIENT.id,
    accession=EntityId("A2024061100017"),
    placer_number=EntityId("PLC-0001", Issuer("HIS_ORD")),
    filler_number=EntityId("FIL-55501", Issuer("RIS_HUB")),
    visit=Visit(EntityId("V99887766", Issuer("GENHOSP")), patient_class="O"),
    procedures=(RequestedProcedure("RP00017", "2.25.1866", code=Code("71250", "C4", "CT thorax"),
                                   steps=(ScheduledStep("SPS1", "CT", dt.datetime(2024, 6, 12, 8, 35)),)),),
)
CTX = OrderContext(ORDER, PATIENT, ("2.25.1866",))
TEXT = "FINDINGS: a|b^c~d&e \\ f\nsecond line\n\nIMPRESSION: normal, größer."


def parse(payload: bytes) -> hl7.Message:
    return hl7.parse(payload.decode("utf-8"))


def test_escape_uses_python_hl7_and_keeps_unicode() -> None:
    assert esc("a|b^c~d&e\\f") == "a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f"
    assert esc("größer") == "größer"


def test_oru_carries_identifiers_status_text_and_study_uid() -> None:
    report = Report(ReportStatus.FINAL, TEXT, PersonName.of("Lee", "Hannah"), "R9001", dt.datetime(2024, 6, 12, 14, 29))
    msg = parse(build_oru(SENDER, CTX, report, ADDRESS))

    msh = msg.segment("MSH")
    assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[10]) == ADDRESS.control_id and str(msh[12]) == "2.5.1"
    assert str(msh[7]) == "20240612163000+0200"  # site zone, with its offset
    assert str(msh[5]) == "ris" and str(msh[18]) == "UNICODE UTF-8"
    pid = msg.segment("PID")
    assert str(pid[3]) == "100234567^^^GENHOSP^MR"
    assert msg.unescape(str(pid[5][0][0])) == "O'Brien|Müller"
    orc, obr = msg.segment("ORC"), msg.segment("OBR")
    assert (str(orc[1]), str(orc[2]), str(orc[3])) == ("RE", "PLC-0001^HIS_ORD", "FIL-55501^RIS_HUB")
    assert (str(obr[2]), str(obr[3]), str(obr[18]), str(obr[19])) == (
        "PLC-0001^HIS_ORD", "FIL-55501^RIS_HUB", "A2024061100017", "RP00017")
    assert str(obr[4]) == "71250^CT thorax^C4" and str(obr[24]) == "RAD" and str(obr[25]) == "F"
    text = [s for s in msg.segments("OBX") if str(s[2]) == "TX"]
    assert "\n".join(msg.unescape(str(s[5])) for s in text) == TEXT
    assert all(str(s[11]) == str(obr[25]) for s in msg.segments("OBX"))
    assert [str(s[5]) for s in msg.segments("OBX") if str(s[3]) == "113014^DICOM Study^DCM"] == ["2.25.1866"]
    assert [str(s[1]) for s in msg.segments("OBX")] == [str(i) for i in range(1, len(msg.segments("OBX")) + 1)]


def test_preliminary_and_corrected_set_obr25_and_every_obx11() -> None:
    for status in (ReportStatus.PRELIMINARY, ReportStatus.CORRECTED):
        msg = parse(build_oru(SENDER, CTX, Report(status, "x"), ADDRESS))
        assert str(msg.segment("OBR")[25]) == status.value
        assert {str(s[11]) for s in msg.segments("OBX")} == {status.value}


def test_order_status_is_orm_sc_with_orc5_and_the_study_uid() -> None:
    for status in PlacerStatus:
        msg = parse(build_order_status(SENDER, CTX, status, ADDRESS))
        assert str(msg.segment("MSH")[9]) == "ORM^O01^ORM_O01"
        assert (str(msg.segment("ORC")[1]), str(msg.segment("ORC")[5])) == ("SC", status.value)
        assert str(msg.segment("OBR")[18]) == "A2024061100017"
        assert str(msg.segment("OBX")[5]) == "2.25.1866"


def test_order_status_with_a_final_result_says_f() -> None:
    msg = parse(build_order_status(SENDER, CTX, PlacerStatus.COMPLETED, ADDRESS,
                                   Report(ReportStatus.FINAL, "x")))
    assert str(msg.segment("ORC")[5]) == "CM" and str(msg.segment("OBR")[25]) == "F"


def test_order_status_as_omi_for_a_destination_that_wants_it() -> None:
    """SWF.b receivers get OMI^O23: ORC SC + TQ1 + OBR + one IPC per step (accession, RP ID, Study UID, SPS ID)."""
    from radsync.adapters.hl7.outbound.wire import Hl7Wire

    wire = Hl7Wire(SENDER, status_messages={"ris": "OMI^O23"})
    assert wire.status_message_type("ris") == "OMI^O23"
    assert wire.status_message_type("billing") == "ORM^O01"
    msg = parse(wire.order_status(CTX, PlacerStatus.IN_PROGRESS, ADDRESS))
    assert str(msg.segment("MSH")[9]) == "OMI^O23^OMI_O23"
    assert [str(s[0]) for s in msg] == ["MSH", "PID", "PV1", "ORC", "TQ1", "OBR", "OBX", "IPC"]
    orc = msg.segment("ORC")
    assert (str(orc[1]), str(orc[5])) == ("SC", "IP")
    assert str(msg.segment("TQ1")[7]) == "20240612083500+0200"  # wall-clock start with the site offset
    ipc = msg.segment("IPC")
    assert (str(ipc[1]).split("^")[0], str(ipc[2]), str(ipc[3]), str(ipc[4])) == (
        "A2024061100017", "RP00017", "2.25.1866", "SPS1")
    assert str(ipc[5]).split("^")[0] == "CT"
    orm = parse(Hl7Wire(SENDER).order_status(CTX, PlacerStatus.IN_PROGRESS, ADDRESS))
    assert str(orm.segment("MSH")[9]) == "ORM^O01^ORM_O01" and "IPC" not in [str(s[0]) for s in orm]
