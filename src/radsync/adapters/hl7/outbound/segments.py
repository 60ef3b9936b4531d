"""Segments shared by ORU^R01 and ORM^O01 (HL7 v2.5.1 ch. 2.14 MSH, ch. 3.4 PID/PV1, ch. 4.5 ORC/OBR, ch. 7.4 OBX).

The order's own identifiers are echoed unchanged: placer (ORC-2/OBR-2), filler (ORC-3/OBR-3) and accession
(OBR-18), so the RIS can match the message to its order (FIELD-NOTES item 13; MAPPING.md §6.2).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from radsync.adapters.hl7.outbound.fields import (
    ENCODING_CHARACTERS,
    comp,
    cx,
    date,
    dtm,
    ei,
    esc,
    segment,
    wall_dtm,
    xcn,
    xpn,
)
from radsync.app.outbound import Addressed, OrderContext
from radsync.domain.order import RequestedProcedure
from radsync.domain.report import Report

VERSION = "2.5.1"
CHARSET = "UNICODE UTF-8"
STUDY_UID_CODE = comp("113014", "DICOM Study", "DCM")  # DICOM PS3.16 CID 7001 / MAPPING.md §6.3


@dataclass(frozen=True, slots=True)
class Sender:
    """Who radsync is on the wire (MSH-3/MSH-4) and the site's time zone for timestamps."""

    application: str = "RADSYNC"
    facility: str = ""
    zone: dt.tzinfo | None = None


def msh(sender: Sender, address: Addressed, message_type: str) -> str:
    """MSH: MSH-5 is the destination's name, MSH-10 the outbox control ID, MSH-18 the character set."""
    fields = [
        ENCODING_CHARACTERS,
        esc(sender.application),
        esc(sender.facility),
        esc(address.destination),
        "",
        dtm(address.at, sender.zone),
        "",
        message_type,
        esc(address.control_id),
        "P",
        VERSION,
        "", "", "", "", "",
        CHARSET,
    ]
    return "MSH|" + "|".join(fields)


def pid(ctx: OrderContext) -> str:
    p = ctx.patient
    return segment("PID", {1: "1", 3: cx(p.id), 5: xpn(p.name), 7: date(p.birth_date), 8: esc(p.sex.value)})


def pv1(ctx: OrderContext) -> str:
    visit = ctx.order.visit
    return segment("PV1", {
        1: "1",
        2: esc(visit.patient_class) or "U",
        3: esc(visit.location),
        8: xcn(visit.referring_physician),
        19: comp(esc(visit.admission_id.value), "", "", esc(visit.admission_id.issuer.namespace)),
    })


def orc(ctx: OrderContext, control: str, status: str, at: dt.datetime, zone: dt.tzinfo | None) -> str:
    """ORC-1 order control (RE results follow, SC status changed), ORC-5 order status (table 0038)."""
    order = ctx.order
    return segment("ORC", {
        1: control,
        2: ei(order.placer_number),
        3: ei(order.filler_number),
        5: status,
        9: dtm(at, zone),
        12: xcn(order.requesting_physician),
    })


def first_procedure(ctx: OrderContext) -> RequestedProcedure | None:
    return ctx.order.procedures[0] if ctx.order.procedures else None


def obr(ctx: OrderContext, extra: dict[int, str], zone: dt.tzinfo | None) -> str:
    """OBR with the order's identifiers, procedure and exam time; ``extra`` adds the message's own fields."""
    order = ctx.order
    procedure = first_procedure(ctx)
    steps = [s for _, s in order.steps()]
    service = ""
    procedure_id = ""
    if procedure is not None:
        procedure_id = esc(procedure.procedure_id)
        if procedure.code is not None:
            service = comp(esc(procedure.code.value), esc(procedure.code.meaning or procedure.description),
                           esc(procedure.code.scheme))
        else:
            service = comp("", esc(procedure.description))
    fields = {
        1: "1",
        2: ei(order.placer_number),
        3: ei(order.filler_number),
        4: service,
        7: wall_dtm(steps[0].start, zone) if steps else "",
        16: xcn(order.requesting_physician),
        18: esc(order.accession.value),
        19: procedure_id,
        24: "RAD",
    }
    if procedure is not None and procedure.code is not None:
        fields[44] = service
    return segment("OBR", fields | extra)


def study_uid_obx(set_id: int, study_uid: str, status: str) -> str:
    """OBX carrying a Study Instance UID (value type ST; MAPPING.md §6.3, dcm4chee's reading)."""
    return segment("OBX", {1: str(set_id), 2: "ST", 3: STUDY_UID_CODE, 5: esc(study_uid), 11: status})


def observed(report: Report, address: Addressed, zone: dt.tzinfo | None) -> str:
    """When the report was observed (wall clock, as received), else when radsync sends it (its clock, UTC)."""
    if report.observed_at is not None:
        return wall_dtm(report.observed_at, zone)
    return dtm(address.at, zone)


def message(*segments: str) -> bytes:
    """Segments joined with CR (ch. 2.6: the segment terminator), encoded as MSH-18 says."""
    return ("\r".join(segments) + "\r").encode("utf-8")
