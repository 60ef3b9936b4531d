"""ORU^R01 out: one radiology report for one order (HL7 v2.5.1 ch. 7.3.1; MAPPING.md §6.1, §6.2, §9.8).

``MSH PID PV1 ORC OBR {OBX}``: ORC-1 RE; OBR-25 the result status (P/F/C, table 0123); OBR-32 the principal
result interpreter; one OBX TX per text line (OBX-3 LOINC 18782-3), each with OBX-11 = OBR-25 (table 0085) and
OBX-14 the observation time; then one OBX per study with the Study Instance UID (113014^DICOM Study^DCM). A
corrected report is sent whole, as C, so the receiver replaces the earlier text.
"""

from __future__ import annotations

from radsync.adapters.hl7.outbound.fields import cnn, comp, esc, segment
from radsync.adapters.hl7.outbound.segments import (
    Sender,
    message,
    msh,
    obr,
    observed,
    orc,
    pid,
    pv1,
    study_uid_obx,
)
from radsync.app.outbound import Addressed, OrderContext
from radsync.domain.report import Report

MESSAGE_TYPE = "ORU^R01^ORU_R01"
TEXT_CODE = comp("18782-3", "Radiology Study observation", "LN")
ORDER_STATUS_RESULTED = "CM"


def build_oru(sender: Sender, ctx: OrderContext, report: Report, address: Addressed) -> bytes:
    status = report.status.value
    when = observed(report, address, sender.zone)
    segments = [
        msh(sender, address, MESSAGE_TYPE),
        pid(ctx),
        pv1(ctx),
        orc(ctx, "RE", ORDER_STATUS_RESULTED, address.at, sender.zone),
        obr(ctx, {22: when, 25: status, 32: cnn(report.author, report.author_id)}, sender.zone),
    ]
    set_id = 0
    for line in report.lines():
        set_id += 1
        segments.append(segment("OBX", {1: str(set_id), 2: "TX", 3: TEXT_CODE, 4: "1", 5: esc(line),
                                         11: status, 14: when}))
    for uid in ctx.study_uids:
        set_id += 1
        segments.append(study_uid_obx(set_id, uid, status))
    return message(*segments)
