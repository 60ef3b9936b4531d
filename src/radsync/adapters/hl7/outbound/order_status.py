"""ORM^O01 order status out: ORC-1 SC with ORC-5 IP / CM / DC (HL7 v2.5.1 ch. 4.4.1, 4.5.1; MAPPING.md §4.3, §9.7).

``MSH PID PV1 ORC OBR [OBX]``: the order's placer, filler and accession echoed, OBR-25 the result status (I while
the exam runs, R when performed, F with the final report), and an OBX per study carrying its Study Instance UID,
so the receiver learns which study fulfils its order.
"""

from __future__ import annotations

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

MESSAGE_TYPE = "ORM^O01^ORM_O01"
# OBR-25 (table 0123) for each order status: I = no results yet, R = results stored, not verified; a final
# report turns it into F.
_RESULT_STATUS = {PlacerStatus.IN_PROGRESS: "I", PlacerStatus.COMPLETED: "R", PlacerStatus.DISCONTINUED: "X"}


def build_order_status(
    sender: Sender, ctx: OrderContext, status: PlacerStatus, address: Addressed, result: Report | None = None
) -> bytes:
    result_status = result.status.value if result is not None else _RESULT_STATUS[status]
    extra = {25: result_status}
    if result is not None:
        extra[22] = observed(result, address, sender.zone)
    segments = [
        msh(sender, address, MESSAGE_TYPE),
        pid(ctx),
        pv1(ctx),
        orc(ctx, "SC", status.value, address.at, sender.zone),
        obr(ctx, extra, sender.zone),
    ]
    # The UID itself is a final fact: F, not dcm4chee's O (MAPPING.md §4.3).
    segments.extend(study_uid_obx(i, uid, "F") for i, uid in enumerate(ctx.study_uids, start=1))
    return message(*segments)
