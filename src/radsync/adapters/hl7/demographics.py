"""PID, PV1 and body-measurement OBX → domain patient update and visit (MAPPING.md §1.3, HL7 v2.5.1 ch. 3).

A ``PatientUpdate`` names only the fields the message carries: an empty field means "no change" and ``""``
clears the stored value (MAPPING.md §1.4, FIELD-NOTES B.15). Worklist items join the patient row, so an
ADT A08 shows on the worklist at once.
"""

from __future__ import annotations

import datetime as dt

from radsync.adapters.hl7 import datatypes as t
from radsync.adapters.hl7 import vr
from radsync.adapters.hl7.codec import NULL, Message, Segment
from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import Visit
from radsync.domain.patient import PatientUpdate, Sex

# OBX-3 identifiers (LOINC code or, as dcm4chee keys it, the text) and OBX-6 units → factor to kg / m.
_WEIGHT_CODES = frozenset({"29463-7", "3141-9"})
_HEIGHT_CODES = frozenset({"8302-2", "8306-3"})
_KG = {"kg": 1.0, "kilogram": 1.0, "g": 0.001, "lb": 0.45359237, "lbs": 0.45359237, "[lb_av]": 0.45359237}
_M = {"m": 1.0, "cm": 0.01, "mm": 0.001, "in": 0.0254, "[in_i]": 0.0254}
_PREGNANT = "B6"  # PV1-15 ambulatory status (HL7 table 0009) → DICOM Pregnancy Status 3 "definitely pregnant"


def pid_segment(msg: Message) -> Segment:
    pid = msg.segment("PID")
    if pid is None:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "PID segment missing", Location("PID"))
    return pid


def patient_id(msg: Message, pid: Segment | None = None) -> PatientId:
    """The primary identifier: the first PID-3 repetition with an ID; missing → AE 101 at PID^1^3^1^1."""
    pid = pid or pid_segment(msg)
    return first_identifier(pid, 3, "PID-3 patient identifier")


def first_identifier(segment: Segment, field: int, what: str) -> PatientId:
    """The first repetition of a CX field that has an ID (PID-3, MRG-1); missing → AE 101 at that field."""
    for number, c in enumerate(segment.repetitions(field), 1):
        if c.get(1) and c.get(1) != NULL:
            return t.patient_id_from_cx(c, segment.at(field, number))
    raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, f"{what} missing", segment.at(field, 1, 1))


def source_time(msg: Message, zone: dt.tzinfo | None = None) -> dt.datetime | None:
    """When the source stated the data: EVN-2 (recorded date/time) if present, else MSH-7 (the out-of-order
    guard compares these; an unreadable value is no time rather than a refusal of the whole message)."""
    evn = msg.segment("EVN")
    candidates = [(evn, 2)] if evn is not None else []
    candidates.append((msg.msh, 7))
    for segment, field in candidates:
        try:
            value = t.timestamp(segment.value(field), zone, segment.at(field))
        except Hl7Error:
            continue
        if value is not None:
            return value
    return None


def patient_update(
    msg: Message, primary: PatientId | None = None, pid: Segment | None = None, zone: dt.tzinfo | None = None
) -> PatientUpdate:
    """The demographics this message states; other PID-3 repetitions become other IDs (FIELD-NOTES 15)."""
    pid = pid or pid_segment(msg)
    primary = primary or patient_id(msg, pid)
    values: dict[str, object] = {}
    with_ids = [(n, c) for n, c in enumerate(pid.repetitions(3), 1) if c.get(1) and c.get(1) != NULL]
    values["other_ids"] = tuple(t.patient_id_from_cx(c, pid.at(3, n)) for n, c in with_ids[1:])
    for field, key in ((5, "name"), (6, "mother_birth_name")):
        raw = pid.field(field)
        if raw == NULL:
            values[key] = PersonName()
        elif raw:
            values[key] = t.person_name_from_xpn(pid.repetitions(field), pid.at(field))
    if pid.field(7):
        values["birth_date"] = t.birth_date(pid.value(7), pid.at(7))
    if pid.field(8):
        values["sex"] = t.sex(pid.value(8), pid.at(8)) if pid.field(8) != NULL else Sex.UNKNOWN
    if pid.field(11):
        values["address"] = "" if pid.field(11) == NULL else _flatten(pid.rep(11).parts(), pid, 11)
    values.update(measurements(msg))
    pv1 = msg.segment("PV1")
    if pv1 is not None and pv1.field(15):
        statuses = {c.get(1).upper() for c in pv1.repetitions(15)}
        values["pregnancy_status"] = 3 if _PREGNANT in statuses else None
    return PatientUpdate(primary, values, source_time(msg, zone))


def _flatten(components: list[str], segment: Segment, field: int) -> str:
    """XAD/PL as one LO value: the non-empty components, unescaped, joined with ``^`` (parseable back)."""
    parts = [vr.clean_string(segment.message.unescape(c.split(segment.message.delimiters.subcomponent)[0]))
             for c in components]
    while parts and not parts[-1]:
        parts.pop()
    return vr.free_lo("^".join(parts))


def measurements(msg: Message) -> dict[str, object]:
    """Body weight (kg) and height (m) from OBX, converted to DICOM DS strings (lb → kg, cm → m)."""
    found: dict[str, object] = {}
    for obx in msg.all("OBX"):
        identifier = obx.rep(3)
        code, text = identifier.get(1), identifier.get(2).strip().upper()
        if code in _WEIGHT_CODES or text == "BODY WEIGHT":
            key, units = "weight_kg", _KG
        elif code in _HEIGHT_CODES or text == "BODY HEIGHT":
            key, units = "size_m", _M
        else:
            continue
        raw = obx.value(5)
        if raw == NULL:
            found[key] = ""
            continue
        unit = (obx.value(6, comp=1) or obx.value(6, comp=2)).strip()
        factor = units.get(unit) or units.get(unit.lower())
        if factor is None:
            raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, f"OBX-6 unit {unit!r} not understood", obx.at(6))
        try:
            number = float(raw) * factor
        except ValueError:
            raise Hl7Error(ErrorCode.DATA_TYPE, "OBX-5 is not a number", obx.at(5)) from None
        found[key] = _ds(number)
    return found


def _ds(number: float) -> str:
    """A DICOM DS (at most 16 characters), three decimals at most."""
    return (f"{number:.3f}".rstrip("0").rstrip("."))[:16]


def visit(msg: Message) -> Visit:
    """PV1: admission ID (PV1-19, else PID-18), referring physician (PV1-8), location (PV1-3), class (PV1-2)."""
    pv1 = msg.segment("PV1")
    pid = msg.segment("PID")
    admission = EntityId("")
    for segment, field in ((pv1, 19), (pid, 18)):
        if segment is not None and segment.value(field) not in ("", NULL):
            cx = segment.rep(field)
            admission = EntityId(
                vr.bounded(cx.get(1), vr.LO, "LO", "admission ID", segment.at(field)),
                t.issuer_from_hd(cx.sub(4), segment.at(field, 1, 4)),
            )
            break
    if pv1 is None:
        return Visit(admission_id=admission)
    return Visit(
        admission_id=admission,
        referring_physician=t.first_person(pv1.repetitions(8), pv1.at(8)),
        location=_flatten(pv1.rep(3).parts(), pv1, 3) if pv1.field(3) not in ("", NULL) else "",
        patient_class=vr.clean_string(pv1.value(2))[: vr.CS],
    )

