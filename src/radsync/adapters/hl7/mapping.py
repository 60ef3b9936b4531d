"""ORM^O01 and OMI^O23 → imaging orders: the only HL7 → order translation (MAPPING.md §1.1, §1.3, §1.4).

Field positions are IHE's (RAD-4/RAD-13; HL7 v2.5.1 ch. 4.4 ORC/OBR/TQ1, ch. 4.5.6 IPC):

* ORM^O01 v2.3-2.4: one ORC/OBR pair per Scheduled Procedure Step. Accession OBR-18, Requested Procedure ID
  OBR-19, SPS ID OBR-20, modality OBR-24, start ORC-7.4 (else OBR-27.4), priority ORC-7.6, procedure code
  OBR-44 (else OBR-4.1-.3), protocol OBR-4.4-.6, Study Instance UID ZDS-1.1. Pairs that share OBR-20 are one
  step with several protocol codes; different OBR-20 values are several steps.
* OMI^O23 v2.5.1: each ORC/TQ1/OBR group with its IPC segments; start TQ1-7, priority TQ1-9, accession IPC-1,
  RP ID IPC-2, Study UID IPC-3, SPS ID IPC-4, modality IPC-5, protocol IPC-6, station name/location/AE titles
  IPC-7/8/9. IPCs with the same IPC-4 are one step with several protocol codes (FIELD-NOTES B.16-17).

Defaults where the RIS leaves a Type 1 key out (documented in docs/hl7.md): RP ID = accession, SPS ID = RP ID
(dcm4chee's accession-based policy); a missing Study UID is generated once by the order use case and kept.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from radsync.adapters.hl7 import datatypes as t
from radsync.adapters.hl7 import vr
from radsync.adapters.hl7.codec import NULL, Message, Segment
from radsync.adapters.hl7.demographics import patient_id, visit
from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location
from radsync.adapters.hl7.order_control import Action, OrderControl, OrderControlTable
from radsync.app.ports import OrderKey
from radsync.domain.ids import Code, EntityId, PatientId
from radsync.domain.order import ImagingOrder, Priority, RequestedProcedure, ScheduledStep, Visit

# TQ.6 / TQ1-9 priority (HL7 tables 0027/0485) → Requested Procedure Priority, the IHE mapping (MAPPING.md §10.5).
PRIORITY: dict[str, Priority] = {
    "S": Priority.STAT,
    "A": Priority.HIGH,
    "P": Priority.HIGH,
    "C": Priority.HIGH,
    "R": Priority.ROUTINE,
    "T": Priority.MEDIUM,
}

# DICOM Modality defined terms (PS3.3 C.7.3.1.1.1). HL7 table 0074 sections (RAD, NMR, RUS …) are not among
# them and are refused with ERR 103 rather than copied into the worklist (MAPPING.md §10.10).
MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DMS DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL IVOCT "
    "IVUS KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX REG RESP "
    "RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN "
    "TEXTUREMAP TG US VA XA XAPROTOCOL XC".split()
)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the message asks for one order: the action, the order (PLACE/UPDATE) or the steps (STATUS)."""

    control: OrderControl
    key: OrderKey
    where: Location
    order: ImagingOrder | None = None
    step_ids: tuple[str, ...] = ()
    reason: str = ""


@dataclass(slots=True)
class _Fragment:
    """One ORC group (ORM) or one IPC (OMI): one step of one requested procedure of one order.

    Holds constructor arguments, not domain objects: fragments of the same order are merged first and each
    frozen domain object is built once (``_merge``).
    """

    control: OrderControl
    where: Location
    key: OrderKey
    reason: str
    step_id: str = ""
    order: dict[str, object] | None = None
    procedure: dict[str, object] | None = None
    step: dict[str, object] | None = None


class _MessageLevel:
    """Values every order of the message shares (patient ID, visit, ZDS), read once and only when needed."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self._patient: PatientId | None = None
        self._visit: Visit | None = None
        self._zds: str | None = None

    def patient_id(self) -> PatientId:
        if self._patient is None:
            self._patient = patient_id(self.msg)
        return self._patient

    def visit(self) -> Visit:
        if self._visit is None:
            self._visit = visit(self.msg)
        return self._visit

    def zds_uid(self) -> str:
        """ZDS-1.1: the Study Instance UID of the message's Requested Procedure (IHE RAD-4 v2.3.1)."""
        if self._zds is None:
            zds = self.msg.segment("ZDS")
            value = _null_free(zds.value(1)) if zds is not None else ""
            self._zds = vr.uid(value, zds.at(1, 1, 1)) if zds is not None and value else ""
        return self._zds


def orders_from_message(msg: Message, controls: OrderControlTable, zone: dt.tzinfo | None) -> list[OrderRequest]:
    """Every order the ORM^O01 / OMI^O23 names, in message order, with what to do with it."""
    groups = list(msg.groups("ORC"))
    if not groups:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "no ORC segment", Location("ORC"))
    shared = _MessageLevel(msg)
    fragments = [f for group in groups for f in _fragments(shared, group, controls, zone)]
    return _merge(fragments, shared)


def _fragments(shared: _MessageLevel, group: list[Segment], controls: OrderControlTable,
               zone: dt.tzinfo | None) -> list[_Fragment]:
    orc = group[0]
    obr = next((s for s in group if s.name == "OBR"), None)
    if obr is None:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "ORC without OBR", Location("OBR", orc.sequence))
    control = controls.lookup(orc.value(1), orc.value(5), orc.at(1))
    reason = vr.free_lo(orc.value(16, comp=2) or orc.value(16))
    ipcs = [s for s in group if s.name == "IPC"]
    placer = _ei(orc, 2, "placer order number") or _ei(obr, 2, "placer order number")
    filler = _ei(orc, 3, "filler order number") or _ei(obr, 3, "filler order number")
    sources: list[Segment | None] = list(ipcs) or [None]
    common: _GroupValues | None = None
    fragments = []
    for ipc in sources:
        if ipc is not None and ipc.field(1):
            accession = t.entity_from_ei(ipc.rep(1), vr.SH, "SH", "accession number", ipc.at(1))
        else:
            accession = EntityId(vr.bounded(_null_free(obr.value(18)), vr.SH, "SH", "accession number", obr.at(18)))
        key = OrderKey(filler, placer, accession)
        step_id = _short(ipc, 4, "SPS ID") if ipc else _short(obr, 20, "SPS ID")
        fragment = _Fragment(control, orc.at(1), key, reason, step_id=step_id)
        if control.action is not Action.STATUS:
            common = common or _GroupValues(shared, group, obr, zone)
            _fill(fragment, common, shared, obr, ipc)
        fragments.append(fragment)
    return fragments


class _GroupValues:
    """What one ORC/(TQ1)/OBR/NTE group says, whatever IPC follows: read once per group."""

    def __init__(self, shared: _MessageLevel, group: list[Segment], obr: Segment, zone: dt.tzinfo | None) -> None:
        orc = group[0]
        tq1 = next((s for s in group if s.name == "TQ1"), None)
        nte = [s.value(3, rep=r, text=True) for s in group if s.name == "NTE"
               for r in range(1, len(s.repetitions(3)) + 1)]
        self.procedure: dict[str, object] = {
            "description": vr.free_lo(_text_of(obr, 44) or _text_of(obr, 4)),
            "code": t.code_from_ce(obr.rep(44), "procedure", obr.at(44))
            or t.code_from_ce(obr.rep(4), "procedure", obr.at(4)),
            "priority": _priority(tq1, orc, obr),
            "reason": vr.free_lo(obr.value(31, comp=2) or (obr.value(31) if not obr.value(31, comp=3) else "")),
            "reason_code": t.code_from_ce(obr.rep(31), "reason", obr.at(31)),
            "transport": vr.free_lo(obr.value(30)),
            "comments": vr.long_text("\r\n".join(n for n in nte if n and n != NULL)),
        }
        start, end = _times(tq1, orc, obr, zone)
        self.step: dict[str, object] = {
            "start": start,
            "end": end,
            "performing_physician": t.person_name_from_xcn(obr.rep(34).sub(1), obr.at(34, 1, 1)),
        }
        requesting = t.first_person(obr.repetitions(16), obr.at(16))
        if requesting.is_empty():
            requesting = t.first_person(orc.repetitions(12), orc.at(12))
        self.order: dict[str, object] = {
            "patient_id": shared.patient_id(),
            "visit": shared.visit(),
            "requesting_physician": requesting,
            "ordered_at": t.timestamp(orc.value(9), zone, orc.at(9)),
            "medical_alerts": vr.lo_values(_null_free(obr.value(13))),
            "patient_state": vr.free_lo(_null_free(obr.value(12) or obr.value(12, comp=2))),
        }


def _fill(f: _Fragment, common: _GroupValues, shared: _MessageLevel, obr: Segment, ipc: Segment | None) -> None:
    """The order, procedure and step arguments of one fragment (PLACE / UPDATE): the group's plus the IPC's."""
    procedure_id = _short(ipc, 2, "requested procedure ID") if ipc else _short(obr, 19, "requested procedure ID")
    procedure_id = procedure_id or f.key.accession.value
    if not procedure_id:
        where = ipc.at(2) if ipc else obr.at(19)
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "requested procedure ID (and accession) missing", where)
    study_uid = vr.uid(ipc.value(3), ipc.at(3)) if ipc and _null_free(ipc.value(3)) else shared.zds_uid()
    if ipc is not None:
        modality = _modality(ipc.value(5), ipc.at(5, 1, 1))
        protocol = t.code_from_ce(ipc.rep(6), "protocol", ipc.at(6))
        step_description = ipc.value(6, comp=2)
        stations = tuple(vr.ae_title(c.get(1), ipc.at(9, n)) for n, c in enumerate(ipc.repetitions(9), 1) if c.get(1))
        station_name = vr.bounded(_null_free(ipc.value(7)), vr.SH, "SH", "station name", ipc.at(7))
        location = vr.bounded(_null_free(ipc.value(8)), vr.SH, "SH", "step location", ipc.at(8))
    else:
        modality = _modality(obr.value(24), obr.at(24))
        protocol = t.code_from(obr.value(4, comp=4), obr.value(4, comp=6), obr.value(4, comp=5), "protocol", obr.at(4))
        step_description = obr.value(4, comp=5)
        stations, station_name, location = (), "", ""
    f.step_id = f.step_id or procedure_id
    f.procedure = {**common.procedure, "procedure_id": procedure_id, "study_instance_uid": study_uid}
    f.step = {
        **common.step,
        "step_id": f.step_id,
        "modality": modality,
        "station_ae_titles": stations,
        "station_name": station_name,
        "location": location,
        "description": vr.free_lo(step_description),
        "protocol_codes": (protocol,) if protocol else (),
    }
    f.order = {
        **common.order,
        "accession": f.key.accession,
        "placer_number": f.key.placer_number,
        "filler_number": f.key.filler_number,
    }


@dataclass(slots=True)
class _Order:
    first: _Fragment
    step_ids: list[str] = field(default_factory=list)
    procedures: dict[str, tuple[dict[str, object], dict[str, dict[str, object]]]] = field(default_factory=dict)


def _merge(fragments: list[_Fragment], shared: _MessageLevel) -> list[OrderRequest]:
    """Fragments of one order (same key and action) → one request; same SPS ID → one step, codes merged."""
    orders: dict[tuple[OrderKey, OrderControl], _Order] = {}
    for f in fragments:
        acc = orders.setdefault((f.key, f.control), _Order(f))
        if f.step_id and f.step_id not in acc.step_ids:
            acc.step_ids.append(f.step_id)
        if f.procedure is None or f.step is None:
            continue
        _, steps = acc.procedures.setdefault(str(f.procedure["procedure_id"]), (f.procedure, {}))
        known = steps.get(f.step_id)
        if known is None:
            steps[f.step_id] = f.step
            continue
        codes: tuple[Code, ...] = known["protocol_codes"]  # type: ignore[assignment]
        known["protocol_codes"] = codes + tuple(c for c in f.step["protocol_codes"] if c not in codes)  # type: ignore[attr-defined]
        known["description"] = known["description"] or f.step["description"]
    zds_users = {(key, rp) for (key, _), acc in orders.items() for rp, (proc, _) in acc.procedures.items()
                 if shared.zds_uid() and proc["study_instance_uid"] == shared.zds_uid()}
    if len(zds_users) > 1:
        zds = shared.msg.segment("ZDS")
        raise Hl7Error(ErrorCode.DATA_TYPE, "ZDS-1 names one Study Instance UID but the message has several"
                       " requested procedures", zds.at(1) if zds else Location("ZDS"))
    requests = []
    for (key, control), acc in orders.items():
        order = None
        if acc.first.order is not None:
            procedures = tuple(
                RequestedProcedure(**proc, steps=tuple(ScheduledStep(**s) for s in steps.values()))  # type: ignore[arg-type]
                for proc, steps in acc.procedures.values()
            )
            order = ImagingOrder(**acc.first.order, procedures=procedures)  # type: ignore[arg-type]
        requests.append(OrderRequest(control, key, acc.first.where, order, tuple(acc.step_ids), acc.first.reason))
    return requests


# -- field helpers ---------------------------------------------------------------------------------------


def _null_free(value: str) -> str:
    return "" if value == NULL else value


def _short(segment: Segment | None, n: int, what: str) -> str:
    if segment is None:
        return ""
    return vr.bounded(_null_free(segment.value(n)), vr.SH, "SH", what, segment.at(n))


def _ei(segment: Segment, n: int, what: str) -> EntityId:
    return t.entity_from_ei(segment.rep(n), vr.LO, "LO", what, segment.at(n))


def _text_of(segment: Segment, n: int) -> str:
    """CE text (.2), or the identifier (.1) when the sender put only a value there."""
    return _null_free(segment.value(n, comp=2) or segment.value(n, comp=1))


def _modality(value: str, where: Location) -> str:
    value = vr.clean_string(value).upper()
    if not value:
        raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "modality missing", where)
    if value not in MODALITIES:
        raise Hl7Error(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            f"{where.segment}-{where.field} {value!r} is not a DICOM modality (HL7 table 0074 sections such as"
            " RAD are not)",
            where,
        )
    return value


def _priority(tq1: Segment | None, orc: Segment, obr: Segment) -> Priority:
    for segment, value, where in (
        (tq1, tq1.value(9) if tq1 else "", tq1.at(9) if tq1 else None),
        (orc, orc.value(7, comp=6), orc.at(7, 1, 6)),
        (obr, obr.value(27, comp=6), obr.at(27, 1, 6)),
    ):
        value = _null_free(value).strip().upper()
        if segment is not None and value:
            if value not in PRIORITY:
                raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, f"priority {value!r} is not in HL7 table 0485", where)
            return PRIORITY[value]
    return Priority.UNSPECIFIED


def _times(tq1: Segment | None, orc: Segment, obr: Segment, zone: dt.tzinfo | None) -> tuple[dt.datetime, dt.datetime | None]:
    """Start (TQ1-7, else ORC-7.4, else OBR-27.4, else OBR-6) and end (TQ1-8, ORC-7.5, OBR-27.5)."""
    candidates = []
    if tq1 is not None:
        candidates.append((tq1.value(7), tq1.value(8), tq1.at(7), tq1.at(8)))
    for segment, n in ((orc, 7), (obr, 27)):
        candidates.append((segment.value(n, comp=4), segment.value(n, comp=5), segment.at(n, 1, 4), segment.at(n, 1, 5)))
    candidates.append((obr.value(6), "", obr.at(6), obr.at(6)))
    for start_text, end_text, start_at, end_at in candidates:
        start = t.timestamp(start_text, zone, start_at)
        if start is not None:
            return start, t.timestamp(end_text, zone, end_at)
    where = tq1.at(7) if tq1 is not None else orc.at(7, 1, 4)
    raise Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "scheduled start date/time missing", where)

