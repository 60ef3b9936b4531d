"""ORU^R01 in: a radiology report from a dictation / voice-recognition system (HL7 v2.5.1 ch. 7.3.1).

Per ORC/OBR group: the order is named by the accession (OBR-18), the filler number (ORC-3, else OBR-3) and the
placer number (ORC-2, else OBR-2), tried filler -> placer -> accession by the order repository (MAPPING.md
§6.3); OBR-25 is the result status (P/F/C; table 0123); the text is the group's TX/FT/ST OBX values joined
line by line (OBX carrying a DICOM UID are links, not text); OBR-32 is the principal result interpreter
(NDL: CNN in sub-components); OBX-14, else OBR-22, else OBR-7 the observation time.
An unknown order becomes AE 204 through the domain error table in ack.py.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from radsync.adapters.hl7 import datatypes as t
from radsync.adapters.hl7 import vr
from radsync.adapters.hl7.codec import Message, Segment
from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location
from radsync.app.ports import OrderKey
from radsync.app.reports import RecordReport
from radsync.domain.ids import EntityId
from radsync.domain.report import Report, ReportStatus

if TYPE_CHECKING:
    from radsync.adapters.hl7.inbound import InboundContext

TEXT_TYPES = frozenset({"TX", "FT", "ST"})
DICOM_SCHEME = "DCM"
_STATUS = {s.value: s for s in ReportStatus}


def on_result(msg: Message, ctx: InboundContext) -> list[RecordReport]:
    """ORU^R01: one ``RecordReport`` per OBR group of the message (the inbound dispatch table's handler)."""
    return reports_from_message(msg, ctx.zone)


def reports_from_message(msg: Message, zone: dt.tzinfo | None) -> list[RecordReport]:
    """One ``RecordReport`` per OBR group of the message."""
    commands = []
    for group in msg.groups("OBR"):
        obr = group[0]
        orc = _preceding_orc(msg, obr)
        obx = [s for s in group if s.name == "OBX"]
        commands.append(RecordReport(_key(orc, obr), _report(obr, obx, zone), source="hl7"))
    if not commands:
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "ORU^R01 without an OBR segment", Location("OBR", 1))
    return commands


def _preceding_orc(msg: Message, obr: Segment) -> Segment | None:
    orcs = msg.all("ORC")
    if not orcs:
        return None
    index = min(obr.sequence, len(orcs))
    return orcs[index - 1]


def _ei(segment: Segment | None, n: int, what: str) -> EntityId:
    if segment is None:
        return EntityId("")
    return t.entity_from_ei(segment.rep(n), vr.LO, "LO", what, segment.at(n))


def _key(orc: Segment | None, obr: Segment) -> OrderKey:
    filler = _ei(orc, 3, "filler order number") or _ei(obr, 3, "filler order number")
    placer = _ei(orc, 2, "placer order number") or _ei(obr, 2, "placer order number")
    accession = EntityId(vr.bounded(obr.value(18), vr.SH, "SH", "accession number", obr.at(18)))
    if not (filler or placer or accession):
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "report names no order (OBR-18, ORC-3, ORC-2 empty)",
                       obr.at(18))
    return OrderKey(filler, placer, accession)


def _report(obr: Segment, obx: list[Segment], zone: dt.tzinfo | None) -> Report:
    code = obr.value(25).strip().upper()
    status = _STATUS.get(code)
    if status is None:
        raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND,
                       f"result status {code or '(empty)'} is not P, F or C", obr.at(25))
    lines = [
        s.value(5, text=True)
        for s in obx
        if s.value(2).strip().upper() in TEXT_TYPES and s.value(3, comp=3).strip().upper() != DICOM_SCHEME
    ]
    if not any(line.strip() for line in lines):
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "report without text (no TX/FT/ST OBX)", Location("OBX", 1))
    observed = None
    for segment, n in [*((s, 14) for s in obx), (obr, 22), (obr, 7)]:
        observed = t.timestamp(segment.value(n), zone, segment.at(n))
        if observed is not None:
            break
    interpreter = obr.rep(32).sub(1)
    author = t.person_name_from_xcn(interpreter, obr.at(32))
    return Report(status, "\n".join(lines), author, interpreter.get(1), observed)
