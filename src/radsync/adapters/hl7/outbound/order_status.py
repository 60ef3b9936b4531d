"""Order status out: ORC-1 SC with ORC-5 IP / CM / DC (HL7 v2.5.1 ch. 4.4.1, 4.4.10, 4.5.1; MAPPING.md §4.3, §9.7).

ORM^O01 ``MSH PID PV1 ORC OBR [OBX]``, or, for a destination configured with ``status_message = "OMI^O23"``
(IHE SWF.b), OMI^O23 ``MSH PID PV1 ORC TQ1 OBR [OBX] {IPC}`` with one IPC per scheduled step (accession, requested
procedure ID, Study Instance UID, step ID, modality). Either way the order's placer, filler and accession are
echoed, OBR-25 is the result status (I while the exam runs, R when performed, F with the final report), and an OBX
per study carries its Study Instance UID, so the receiver learns which study fulfils its order.
"""

from __future__ import annotations

from radsync.adapters.hl7.outbound.fields import comp, ei, esc, segment, wall_dtm
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
from radsync.app.outbound import Addressed, OrderContext, PlacerStatus
from radsync.domain.report import Report

ORM_TYPE = "ORM^O01^ORM_O01"
OMI_TYPE = "OMI^O23^OMI_O23"
# OBR-25 (table 0123) for each order status: I = no results yet, R = results stored, not verified; a final
# report turns it into F.
_RESULT_STATUS = {PlacerStatus.IN_PROGRESS: "I", PlacerStatus.COMPLETED: "R", PlacerStatus.DISCONTINUED: "X"}


def build_order_status(
    sender: Sender, ctx: OrderContext, status: PlacerStatus, address: Addressed, result: Report | None = None,
    *, omi: bool = False,
) -> bytes:
    result_status = result.status.value if result is not None else _RESULT_STATUS[status]
    extra = {25: result_status}
    if result is not None:
        extra[22] = observed(result, address, sender.zone)
    segments = [
        msh(sender, address, OMI_TYPE if omi else ORM_TYPE),
        pid(ctx),
        pv1(ctx),
        orc(ctx, "SC", status.value, address.at, sender.zone),
    ]
    if omi:
        segments.append(_tq1(ctx, sender))
    segments.append(obr(ctx, extra, sender.zone))
    # The UID itself is a final fact: F, not dcm4chee's O (MAPPING.md §4.3).
    segments.extend(study_uid_obx(i, uid, "F") for i, uid in enumerate(ctx.study_uids, start=1))
    if omi:
        segments.extend(_ipcs(ctx))
    return message(*segments)


def _tq1(ctx: OrderContext, sender: Sender) -> str:
    """TQ1-7: the first scheduled start (HL7 v2.5.1 ch. 4.5.4), in the modalities' wall-clock zone."""
    starts = [step.start for _, step in ctx.order.steps()]
    return segment("TQ1", {1: "1", 7: wall_dtm(min(starts), sender.zone) if starts else ""})


def _ipcs(ctx: OrderContext) -> list[str]:
    """One IPC per scheduled step (HL7 v2.5.1 ch. 4.5.6): IPC-1..4 are required in OMI^O23."""
    return [
        segment("IPC", {
            1: ei(ctx.order.accession),
            2: esc(procedure.procedure_id),
            3: esc(procedure.study_instance_uid),
            4: esc(step.step_id),
            5: comp(esc(step.modality), "", "DCM"),
        })
        for procedure, step in ctx.order.steps()
    ]
