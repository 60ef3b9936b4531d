"""HL7 → domain, table-driven: MAPPING.md §9.1-9.5 and the FIELD-NOTES A-G edge cases (no database)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from radsync.adapters.hl7.codec import Message
from radsync.adapters.hl7.demographics import patient_update
from radsync.adapters.hl7.errors import AckCode, Location
from radsync.adapters.hl7.inbound import InboundContext, NotHl7, prepare
from radsync.app.commands import ChangeStepStatus, MergePatient, PlaceOrder, UpdateOrder, UpdatePatient
from radsync.domain.ids import Code, EntityId, Issuer, PatientId
from radsync.domain.order import Priority
from radsync.domain.patient import Sex
from radsync.domain.patient_identity import IdentityChange
from radsync.domain.status import StepEvent
from tests.adapters.hl7 import samples as s

CONTEXT = InboundContext(zone=ZoneInfo("Europe/Berlin"))


def commands(raw: str | bytes) -> list[Any]:
    prepared = prepare(raw if isinstance(raw, bytes) else raw.encode("utf-8"), CONTEXT)
    assert prepared.error is None, (prepared.error and prepared.error.message)
    return list(prepared.commands)


def order_of(raw: str | bytes) -> Any:
    first = commands(raw)[0]
    assert isinstance(first, PlaceOrder | UpdateOrder)
    return first


def refusal(raw: str | bytes) -> tuple[str, int, str]:
    prepared = prepare(raw if isinstance(raw, bytes) else raw.encode("utf-8"), CONTEXT)
    assert prepared.error is not None, "expected a refusal"
    return prepared.error.ack.value, prepared.error.code.value, str(prepared.error.location)


def test_9_1_new_order_maps_to_the_mwl_item_of_mapping_md() -> None:
    command = order_of(s.MAPPING_SAMPLES["9.1"])
    assert isinstance(command, PlaceOrder)
    patient, order = command.patient, command.order
    (procedure,) = order.procedures
    (step,) = procedure.steps
    assert patient.id == PatientId("100234567", Issuer("GENHOSP"), "MR")
    assert patient.values["name"].canonical() == "Doe^Jane^Marie^Mrs"
    assert patient.values["birth_date"] == dt.date(1970, 4, 12)
    assert patient.values["sex"] is Sex.FEMALE
    assert patient.values["weight_kg"] == "72"
    assert patient.values["other_ids"] == ()
    assert order.accession == EntityId("A2024061100017")
    assert order.placer_number == EntityId("PLC-0001", Issuer("HIS_ORD"))
    assert order.filler_number == EntityId("FIL-55501", Issuer("RIS_HUB"))
    assert order.visit.referring_physician.canonical() == "Jones^Alice^^Dr^MD"
    assert order.visit.admission_id == EntityId("V99887766", Issuer("GENHOSP"))
    assert order.visit.location == "RADOPD^X1^^GENHOSP"
    assert order.requesting_physician.canonical() == "Smith^Robert^^Dr"
    assert order.medical_alerts == ("Persistent cough 6 weeks",)
    assert order.patient_state == "Claustrophobic"
    assert order.ordered_at == dt.datetime(2024, 6, 11, 9, 30, 10)
    assert procedure.procedure_id == "RP00017"
    assert procedure.study_instance_uid == "2.25.186720139475620031884613650946921155417"
    assert procedure.description == "CT chest without contrast"
    assert procedure.code == Code("RP-CTCHEST", "99RADPROC", "CT chest without contrast")
    assert procedure.priority is Priority.ROUTINE
    assert (procedure.reason, procedure.reason_code) == ("Cough", Code("R05", "I10", "Cough"))
    assert procedure.transport == "WALK"
    assert step.step_id == "SPS00017-1"
    assert step.modality == "CT"
    assert step.start == dt.datetime(2024, 6, 12, 8, 30)
    assert step.performing_physician.canonical() == "Brown^Kim"
    assert step.description == "Chest routine non-contrast"
    assert step.protocol_codes == (Code("P-CT-CHEST-NC", "99RADPROT", "Chest routine non-contrast"),)
    assert step.station_ae_titles == ()  # v2.3.1 names none: every station of the modality (app layer)


def test_9_2_omi_stat_with_escapes_and_two_protocol_codes_for_one_step() -> None:
    command = order_of(s.MAPPING_SAMPLES["9.2"])
    order = command.order
    (procedure,) = order.procedures
    (step,) = procedure.steps
    assert command.patient.id == PatientId("200345678", Issuer("GENHOSP", "2.16.840.1.113883.3.9999.1", "ISO"), "MR")
    assert order.accession == EntityId("A2024061100018", Issuer("RIS"))
    assert procedure.priority is Priority.STAT
    assert procedure.study_instance_uid == "2.25.293019484725108836640194876501392281374"
    assert procedure.reason == "Blunt abdominal trauma" and procedure.reason_code is None
    assert procedure.transport == "CART"
    assert procedure.comments == "Metformin: hold 48 h after contrast.\r\nNo known contrast allergy."
    assert " ".join(order.medical_alerts) == (
        "Fall from ladder & blunt trauma; GCS 14^15; r/o liver laceration | splenic injury; side: left/right unclear"
    )
    assert all(len(v) <= 64 and "\\" not in v for v in order.medical_alerts)
    assert step.step_id == "SPS00018-1"
    assert step.start == dt.datetime(2024, 6, 11, 11, 0)  # +0200 in the Berlin site zone
    assert step.station_ae_titles == ("CT2SCANNER",)
    assert (step.station_name, step.location) == ("CT2", "RAD-CT-ROOM2")
    assert step.protocol_codes == (
        Code("P-CT-AP-ART", "99RADPROT", "Abdomen arterial phase"),
        Code("P-CT-AP-PV", "99RADPROT", "Abdomen portal venous phase"),
    )


def test_9_3_change_order_in_latin1_is_an_update_with_prefix_moved() -> None:
    command = order_of(s.ORM_CHANGE_LATIN1_9_3_BYTES)
    assert isinstance(command, UpdateOrder)
    assert command.patient.values["name"].canonical() == "Müller^Jürgen^^Dr"
    assert command.order.visit.referring_physician.canonical() == "Größer^Annegret^^Dr"
    (step,) = command.order.procedures[0].steps
    assert step.start == dt.datetime(2024, 6, 13, 9, 15)
    assert step.modality == "MR"


def test_9_4_japanese_name_groups_from_utf8() -> None:
    command = order_of(s.OMI_JAPANESE_UTF8_9_4_BYTES)
    assert command.patient.values["name"].canonical() == "Yamada^Taro=山田^太郎=やまだ^たろう"
    (step,) = command.order.procedures[0].steps
    assert (step.modality, step.station_ae_titles) == ("CR", ("CR1_AE",))
    assert step.start == dt.datetime(2024, 6, 12, 3, 0)  # 10:00 +0900 is 03:00 in Berlin
    assert command.order.procedures[0].description == "胸部X線 PA"


def test_9_5_cancel_names_the_order_and_its_step() -> None:
    (command,) = commands(s.MAPPING_SAMPLES["9.5"])
    assert isinstance(command, ChangeStepStatus)
    assert command.event is StepEvent.CANCEL
    assert command.step_ids == ("SPS00017-1",)
    assert command.key.filler_number == EntityId("FIL-55501", Issuer("RIS_HUB"))
    assert command.key.accession == EntityId("A2024061100017")
    assert command.reason == "Patient refused"


def _name(cmd: Any) -> str:
    return cmd.patient.values["name"].canonical()


def _step(cmd: Any) -> Any:
    return cmd.order.procedures[0].steps[0]


# (fixture, what to look at, expected) -- FIELD-NOTES A, B, E
MAPPED = [
    ("A1_LF_TERMINATED", _name, "Doe^Jane^Marie^Mrs"),
    ("A1_CRLF_TERMINATED", lambda c: _step(c).step_id, "SPS00017-1"),
    ("A2_LF_IN_NTE", lambda c: c.order.procedures[0].comments, "first line\nsecond line"),
    ("A5_BOM", lambda c: c.order.accession.value, "A2024061100017"),
    ("A5_TRAILING_PIPES", lambda c: (_step(c).modality, c.order.procedures[0].study_instance_uid[-6:]), ("CT", "155417")),
    ("A5_TRUNCATION_CHAR", _name, "Doe^Jane^Marie^Mrs"),
    ("B8_T_ESCAPE", _name, "JOHNSON & JOHNSON^MARY"),
    ("B9_S_IN_NAME", _name, "O NEIL^PAT"),
    ("B10_ESCAPES_EVERYWHERE", _name, "Smith|Jones^Ann~Marie^^^Dr/Prof"),  # XPN.6 is the degree
    ("B10_ESCAPES_EVERYWHERE", lambda c: c.order.procedures[0].description, "CT chest without contrast"),
    ("B10_ESCAPES_EVERYWHERE", lambda c: _step(c).description, "Chest/lung"),
    ("B10_ESCAPES_EVERYWHERE", lambda c: c.order.procedures[0].reason, "Cough / fever"),
    ("B11_BACKSLASH_NAME", _name, "^/"),
    ("B11_INVALID_ESCAPE", lambda c: c.order.medical_alerts, ("BSV 4/5",)),
    ("B12_HEX_AND_FORMATTING", _name, "Garçon^René"),
    ("B12_HEX_AND_FORMATTING", lambda c: c.order.procedures[0].comments, "Note: tab\\X09\\ kept\r\nnext line"),
    ("B13_NAME_TYPES", _name, "SMITH^JOHN"),
    ("B14_XPN_ORDER", _name, "DOE^JOHN^Q^DR^JR PHD"),
    ("B15_PID3_REPETITIONS", lambda c: c.patient.id, PatientId("123", Issuer("HOSP"), "MR")),
    ("B15_PID3_REPETITIONS", lambda c: c.patient.values["other_ids"], (PatientId("999", Issuer("NAT"), "NN"),)),
    ("B16_IPC9_STATIONS", lambda c: _step(c).station_ae_titles, ("AET1", "AET2")),
    ("B17_OMI_TWO_GROUPS", lambda c: [(s.step_id, len(s.protocol_codes)) for s in c.order.procedures[0].steps],
     [("SPS00018-1", 2), ("SPS00018-2", 1)]),
    ("B17_OMI_TWO_GROUPS", lambda c: c.order.procedures[0].steps[1].start, dt.datetime(2024, 6, 11, 12, 0)),
    ("B17_ORM_SHARED_SPS", lambda c: [s.step_id for s in c.order.procedures[0].steps], ["SPS00017-1"]),
    ("B17_ORM_SHARED_SPS", lambda c: [p.value for p in _step(c).protocol_codes], ["P-CT-CHEST-NC", "P-CT-CHEST-LD"]),
    ("B17_ORM_TWO_SPS", lambda c: [s.step_id for s in c.order.procedures[0].steps], ["SPS00017-1", "SPS00017-2"]),
    ("B18_UNKNOWN_Z_SEGMENT", lambda c: _step(c).step_id, "SPS00017-1"),
    ("E33_NO_ACCESSION", lambda c: (c.order.accession.value, c.order.procedures[0].procedure_id), ("", "RP00017")),
    ("E35_PADDED_PATIENT_ID", lambda c: c.patient.id.value, "P1058"),
    ("E_LOWERCASE_MODALITY", lambda c: _step(c).modality, "CT"),
    ("F41_XO_EMPTY_STATUS", lambda c: type(c).__name__, "UpdateOrder"),
    ("F45_XO_NEW_MODALITY", lambda c: _step(c).modality, "MR"),
]


@pytest.mark.parametrize(("fixture", "look", "expected"), MAPPED, ids=[m[0] for m in MAPPED])
def test_edge_cases_map(fixture: str, look: Any, expected: Any) -> None:
    assert look(order_of(getattr(s, fixture))) == expected


# (fixture, expected (MSA-1, table 0357 code, ERR location)) -- FIELD-NOTES B, C, E, F, G
REFUSED = [
    ("E_NO_PID3", ("AE", 101, "PID^1^3^1^1")),
    ("E34_LONG_ACCESSION", ("AE", 102, "OBR^1^18")),
    ("E39_BAD_STUDY_UID", ("AE", 102, "ZDS^1^1^1^1")),
    ("E39_LONG_STUDY_UID", ("AE", 102, "ZDS^1^1^1^1")),
    ("E_TABLE_0074_MODALITY", ("AE", 103, "OBR^1^24")),
    ("F41_UNKNOWN_PAIR", ("AE", 103, "ORC^1^1")),
    ("C_UNKNOWN_CHARSET", ("AR", 103, "MSH^1^18")),
    ("C_REPEATED_CHARSET", ("AR", 103, "MSH^1^18^2")),
    ("ADT_A45", ("AR", 201, "MSH^1^9^1^2")),
    ("ADT_A40_NO_MRG", ("AE", 100, "MRG^1")),  # A40/A34/A47 are taken (docs/patients.md); each PID needs its MRG
    ("ORU_R01", ("AE", 101, "OBR^1")),  # ORU^R01 is accepted (oru_in.py); this one has no OBR
    ("SIU_S12", ("AR", 200, "MSH^1^9^1^1")),
]


@pytest.mark.parametrize(("fixture", "expected"), REFUSED, ids=[r[0] for r in REFUSED])
def test_edge_cases_refused(fixture: str, expected: tuple[str, int, str]) -> None:
    assert refusal(getattr(s, fixture)) == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("MSH", 12, "2.6"), ("AR", 203, "MSH^1^12")),
        (("MSH", 12, "2.2"), ("AR", 203, "MSH^1^12")),
        (("MSH", 11, "T"), ("AR", 202, "MSH^1^11")),
        (("MSH", 9, ""), ("AR", 200, "MSH^1^9^1^1")),
        (("OBR", 20, "S" * 17), ("AE", 102, "OBR^1^20")),
        (("OBR", 24, ""), ("AE", 101, "OBR^1^24")),
        (("ORC", 7, ""), ("AE", 101, "ORC^1^7^1^4")),
        (("ORC", 9, "2024-06-11"), ("AE", 102, "ORC^1^9")),
        (("PID", 8, "X"), ("AE", 103, "PID^1^8")),
        (("PID", 7, "19701350"), ("AE", 102, "PID^1^7")),
        (("ORC", 7, "1^once^^20240612083000^^Q"), ("AE", 103, "ORC^1^7^1^6")),
        (("OBX", 6, "stone"), ("AE", 103, "OBX^1^6")),
    ],
)
def test_field_level_refusals(change: tuple[str, int, str], expected: tuple[str, int, str]) -> None:
    name, n, value = change
    raw = s.with_field(s.ORM_NEW_9_1, name, n, value)
    if name == "ORC" and n == 7:
        raw = s.with_field(raw, "OBR", 27, "")
    assert refusal(raw) == expected


def test_start_falls_back_from_orc7_to_obr27() -> None:
    raw = s.with_field(s.ORM_NEW_9_1, "ORC", 7, "")
    assert _step(order_of(raw)).start == dt.datetime(2024, 6, 12, 8, 30)


def test_processing_ids_are_configurable() -> None:
    raw = s.with_field(s.ORM_NEW_9_1, "MSH", 11, "T").encode()
    assert prepare(raw, InboundContext(processing_ids=frozenset({"P", "T"}))).error is None


def test_zds_cannot_name_one_study_for_two_requested_procedures() -> None:
    raw = s.B17_ORM_TWO_SPS.replace("|RP00017|SPS00017-2|", "|RP00099|SPS00017-2|")
    assert refusal(raw) == ("AE", 102, "ZDS^1^1")


def test_order_control_decides_the_commands() -> None:
    kinds = {
        "F41_NW_IN_PROGRESS": [("PlaceOrder", None), ("ChangeStepStatus", StepEvent.START)],
        "F41_SC_IN_PROGRESS": [("ChangeStepStatus", StepEvent.START)],
        "F41_SC_COMPLETED": [("ChangeStepStatus", StepEvent.COMPLETE)],
        "F41_DC_CA": [("ChangeStepStatus", StepEvent.DISCONTINUE)],
        "F41_OC": [("ChangeStepStatus", StepEvent.CANCEL)],
    }
    for fixture, expected in kinds.items():
        got = [(type(c).__name__, getattr(c, "event", None)) for c in commands(getattr(s, fixture))]
        assert got == expected, fixture


def test_pounds_are_converted_and_body_height_read() -> None:
    raw = s.appended(s.with_field(s.ORM_NEW_9_1, "OBX", 6, "[lb_av]"), "OBX|2|NM|8302-2^Body height^LN||172|cm|||||F")
    values = order_of(raw).patient.values
    assert values["weight_kg"] == "32.659"
    assert values["size_m"] == "1.72"


def test_adt_a08_is_a_patient_update_with_only_the_fields_sent() -> None:
    (command,) = commands(s.ADT_A08)
    assert isinstance(command, UpdatePatient)
    values = command.patient.values
    assert values["name"].canonical() == "Doe^Janet^Marie^Mrs"
    assert values["birth_date"] == dt.date(1970, 4, 13)
    assert "address" not in values and "mother_birth_name" not in values  # empty = no change


def test_explicit_null_clears_and_empty_leaves_alone() -> None:
    raw = s.with_field(s.with_field(s.ADT_A08, "PID", 7, '""'), "PID", 8, '""')
    raw = s.with_field(raw, "PID", 11, '""')
    values = patient_update(Message(raw)).values
    assert values["birth_date"] is None
    assert values["sex"] is Sex.UNKNOWN
    assert values["address"] == ""
    partial = patient_update(Message(s.with_field(s.ADT_A08, "PID", 7, "1962"))).values
    assert partial["birth_date"] is None  # DICOM DA cannot hold a year alone


def test_an_adt_without_pid_is_a_segment_sequence_error() -> None:
    assert refusal(s.without(s.ADT_A08, "PID")) == ("AE", 100, "PID^1")


def test_garbage_is_not_hl7() -> None:
    with pytest.raises(NotHl7):
        prepare(b"hello world\r", CONTEXT)


def test_a_mapping_bug_costs_one_internal_error_not_the_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    import radsync.adapters.hl7.inbound as inbound

    def broken(msg: Message, ctx: InboundContext) -> list[Any]:
        raise KeyError("bug")

    monkeypatch.setitem(inbound.HANDLERS, ("ORM", "O01"), broken)
    prepared = prepare(s.ORM_NEW_9_1.encode(), CONTEXT)
    assert prepared.internal and prepared.error is not None
    assert (prepared.error.ack, prepared.error.code.value) == (AckCode.ERROR, 207)
    assert prepared.error.location is None or isinstance(prepared.error.location, Location)


def test_adt_a40_maps_to_a_merge_with_the_evn2_source_time() -> None:
    [command] = prepare(s.ADT_A40.encode(), CONTEXT).commands
    assert isinstance(command, MergePatient) and command.change is IdentityChange.MERGE
    assert command.prior == PatientId("TMP-0042", Issuer("GENHOSP"), "MR")
    assert command.survivor.id == PatientId("100234999", Issuer("GENHOSP"), "MR")
    assert command.survivor.source_time == dt.datetime(2024, 6, 11, 15, 59, 58)  # EVN-2, not MSH-7
    a47 = s.ADT_A40.replace("ADT^A40^ADT_A39", "ADT^A47^ADT_A30").encode()
    assert prepare(a47, CONTEXT).commands[0].change is IdentityChange.CHANGE_ID  # type: ignore[union-attr]


def test_an_update_without_evn2_takes_its_source_time_from_msh7() -> None:
    [command] = prepare(s.ADT_A08.replace("EVN|A08|20240611115959", "EVN|A08").encode(), CONTEXT).commands
    assert isinstance(command, UpdatePatient)
    assert command.patient.source_time == dt.datetime(2024, 6, 11, 12, 0, 0)
