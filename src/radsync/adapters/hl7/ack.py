"""HL7 acknowledgements, original mode (HL7 v2.5.1 ch. 2.9.2, MSA ch. 2.14.8, ERR ch. 2.14.5; MAPPING.md §6.5).

The ACK copies MSH-1/MSH-2, swaps sending and receiving application/facility (MSH-3/4 ↔ MSH-5/6), gets its
own control ID, says ``ACK^<trigger>^ACK`` in MSH-9, copies MSH-11/12/18, and answers MSA-1 AA/AE/AR with
MSA-2 = the inbound MSH-10. Errors add an ERR segment in the style of the message's version: v2.3.x/2.4 ERR-1
``segment^sequence^field^code&text&HL70357`` (plus MSA-3 text), v2.5+ ERR-2 location, ERR-3 code, ERR-4
severity, ERR-8 user message. The ACK is built from the inbound message's own fields and delimiters (no
``hl7.parse``); free text is escaped with python-hl7's escape (via codec.Message.escape).

``DOMAIN_ERRORS`` is the one table that translates domain errors into table 0357 codes, and
``FIELD_LOCATIONS`` says where in an ORM or OMI each domain field came from.
"""

from __future__ import annotations

from radsync.adapters.hl7.codec import Message
from radsync.adapters.hl7.errors import AckCode, ErrorCode, Hl7Error, Location
from radsync.domain.errors import (
    DomainError,
    IdentityConflict,
    InvalidTransition,
    InvalidValue,
    MissingValue,
    ReversedMerge,
    SameIdentifier,
    UnknownOrder,
)
from radsync.domain.report import ReportStatusRefused

DOMAIN_ERRORS: dict[type[DomainError], ErrorCode] = {
    MissingValue: ErrorCode.REQUIRED_FIELD_MISSING,
    InvalidValue: ErrorCode.DATA_TYPE,
    UnknownOrder: ErrorCode.UNKNOWN_KEY,
    IdentityConflict: ErrorCode.DUPLICATE_KEY,
    SameIdentifier: ErrorCode.DUPLICATE_KEY,  # MRG-1 = PID-3 (docs/patients.md)
    ReversedMerge: ErrorCode.DUPLICATE_KEY,  # B into A after A into B: refused and flagged
    # A result status (OBR-25) the order's current report does not allow (P after F): the value is refused, not
    # radsync's fault. Listed before its base class: the first matching row wins.
    ReportStatusRefused: ErrorCode.TABLE_VALUE_NOT_FOUND,
    # No table 0357 code says "not allowed in the current state"; dcm4chee answers such cases with 207 too.
    InvalidTransition: ErrorCode.INTERNAL,
}

# domain field → (location in ORM^O01 v2.3.1, location in OMI^O23 v2.5.1)
FIELD_LOCATIONS: dict[str, tuple[Location, Location]] = {
    "patient.id": (Location("PID", 1, 3, 1, 1), Location("PID", 1, 3, 1, 1)),
    "order.accession": (Location("OBR", 1, 18), Location("IPC", 1, 1)),
    "order.number": (Location("ORC", 1, 3), Location("ORC", 1, 3)),
    "order.procedures": (Location("OBR", 1, 19), Location("IPC", 1, 2)),
    "procedure.id": (Location("OBR", 1, 19), Location("IPC", 1, 2)),
    "procedure.study_instance_uid": (Location("ZDS", 1, 1), Location("IPC", 1, 3)),
    "step.id": (Location("OBR", 1, 20), Location("IPC", 1, 4)),
    "step.modality": (Location("OBR", 1, 24), Location("IPC", 1, 5)),
    "step.status": (Location("ORC", 1, 1), Location("ORC", 1, 1)),
    "merge.prior_id": (Location("MRG", 1, 1, 1, 1), Location("MRG", 1, 1, 1, 1)),
    "report.status": (Location("OBR", 1, 25), Location("OBR", 1, 25)),
}

MSA_TEXT_LIMIT = 80  # dcm4che cuts MSA-3 here; v2.3.1 MSA-3 is ST 80


def error_from_domain(exc: DomainError, message_type: str) -> Hl7Error:
    """The AE a domain error becomes: its table 0357 code and where the offending value sat in the message."""
    code = next((c for kind, c in DOMAIN_ERRORS.items() if isinstance(exc, kind)), ErrorCode.INTERNAL)
    locations = FIELD_LOCATIONS.get(exc.field)
    location = locations[1 if message_type == "OMI" else 0] if locations else None
    return Hl7Error(code, exc.message, location, flag=getattr(exc, "flag", ""))


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def uses_err1(version: str) -> bool:
    """ERR-1 ("error code and location") is the only ERR field before v2.5."""
    parsed = _version_tuple(version)
    return bool(parsed) and parsed < (2, 5)


def build_ack(
    msg: Message,
    code: AckCode,
    *,
    control_id: str,
    timestamp: str,
    error: Hl7Error | None = None,
) -> bytes:
    """The ACK for ``msg`` as bytes in the message's own charset, every segment CR-terminated."""
    d = msg.delimiters
    msh = msg.msh
    comp, sub = d.component, d.subcomponent
    trigger = msh.raw(9, comp=2)
    header = [
        "MSH", d.encoding_characters, msh.field(5), msh.field(6), msh.field(3), msh.field(4), timestamp, "",
        f"ACK{comp}{trigger}{comp}ACK" if trigger else "ACK", control_id, msh.field(11), msh.field(12),
    ]
    if msh.field(18):
        header += ["", "", "", "", "", msh.field(18)]
    version = msh.raw(12)
    old_style = uses_err1(version) or not _version_tuple(version)
    msa = ["MSA", code.value, msh.field(10)]
    segments = [d.field.join(header)]
    if error is not None and old_style:
        msa.append(msg.escape(error.message[:MSA_TEXT_LIMIT]))
    segments.append(d.field.join(msa))
    if error is not None:
        code_text = error.code.text
        if old_style:
            where = error.location
            place = [where.segment, str(where.sequence), str(where.field or "")] if where else ["", "", ""]
            err1 = comp.join([*place, sub.join([str(error.code.value), code_text, "HL70357"])])
            segments.append(d.field.join(["ERR", err1]))
        else:
            location = comp.join(error.location.parts()) if error.location else ""
            err3 = comp.join([str(error.code.value), code_text, "HL70357"])
            segments.append(d.field.join(["ERR", "", location, err3, "E", "", "", "", msg.escape(error.message)]))
    return ("\r".join(segments) + "\r").encode(msg.codec, errors="replace")
