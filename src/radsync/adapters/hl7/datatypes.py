"""HL7 v2 data types → domain values: TS/DTM, XPN, XCN, CNN, CX, EI, HD, CE/CWE (HL7 v2.5.1 ch. 2A).

Each function reads one already-split composite (see codec.Composite) and applies the DICOM limits of vr.py, so
the mapping module only says which field feeds which domain attribute. Rules from MAPPING.md §2.1, §2.2, §2.5.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from radsync.adapters.hl7 import vr
from radsync.adapters.hl7.codec import NULL, Composite
from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location
from radsync.domain.ids import NO_ISSUER, Code, EntityId, Issuer, PatientId
from radsync.domain.names import NameGroup, PersonName
from radsync.domain.patient import Sex

# YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]  (TS.1 / DTM; v2.3.1 TS.2 "degree of precision" is ignored)
_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?([+-]\d{4})?"
)


def site_zone(name: str) -> dt.tzinfo | None:
    """``settings.timezone`` as a zone; empty = this machine's local zone (``None``)."""
    return ZoneInfo(name) if name else None


def timestamp(text: str, zone: dt.tzinfo | None, where: Location) -> dt.datetime | None:
    """An HL7 TS/DTM of any precision as a naive wall-clock time in the site zone.

    Missing trailing parts take their lowest value (``2024061208`` is 08:00). A UTC offset is honoured: the time
    is converted to ``zone`` (``None`` = this machine's zone) and stored naive, because DICOM TM carries no
    offset and modalities show local time (MAPPING.md §2.2). Without an offset the time already is local.
    """
    text = text.strip()
    if not text or text == NULL:
        return None
    match = _DTM.fullmatch(text)
    if match is None:
        raise Hl7Error(ErrorCode.DATA_TYPE, f"{where.segment}-{where.field} is not an HL7 date/time", where)
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        value = dt.datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
        if offset:
            sign = -1 if offset[0] == "-" else 1
            delta = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
            aware = value.replace(tzinfo=dt.timezone(sign * delta))
            value = (aware.astimezone(zone) if zone is not None else aware.astimezone()).replace(tzinfo=None)
    except ValueError:
        raise Hl7Error(ErrorCode.DATA_TYPE, f"{where.segment}-{where.field} is not a valid date/time", where) from None
    return value


def birth_date(text: str, where: Location) -> dt.date | None:
    """PID-7 as a date: its first eight digits, no timezone arithmetic (a birthday is not an instant).

    Year-only or year-month values give ``None``: DICOM DA cannot hold a partial date (MAPPING.md §1.3).
    """
    text = text.strip()
    if not text or text == NULL:
        return None
    match = _DTM.fullmatch(text)
    if match is None:
        raise Hl7Error(ErrorCode.DATA_TYPE, "PID-7 birth date is not an HL7 date", where)
    year, month, day = match.group(1, 2, 3)
    if not (month and day):
        return None
    try:
        return dt.date(int(year), int(month), int(day))
    except ValueError:
        raise Hl7Error(ErrorCode.DATA_TYPE, "PID-7 birth date is not a valid date", where) from None


# -- person names --------------------------------------------------------------------------------------


def _group(family: str, given: str, middle: str, suffix: str, prefix: str, degree: str, where: Location) -> NameGroup:
    """PN component order (family^given^middle^prefix^suffix); the degree is appended to the suffix."""
    suffix = " ".join(v for v in (suffix, degree) if v)
    group = NameGroup(*(vr.pn_component(v) for v in (family, given, middle, prefix, suffix)))
    if len(group.joined()) > vr.PN_GROUP:
        raise Hl7Error(
            ErrorCode.DATA_TYPE,
            f"{where.segment}-{where.field} name is longer than DICOM PN allows ({vr.PN_GROUP} per group)",
            where,
        )
    return group


NO_NAME = PersonName()
_NO_GROUP = NameGroup()


def name_from_xpn(c: Composite, where: Location) -> NameGroup:
    """XPN: family (FN.1) ^ given ^ middle ^ suffix ^ prefix ^ degree; suffix and prefix swap for PN."""
    family, given, middle, suffix, prefix, degree = c.values(6)
    return _group(family, given, middle, suffix, prefix, degree, where)


def person_name_from_xpn(repetitions: Sequence[Composite], where: Location) -> PersonName:
    """PID-5 repetitions → one PersonName: per representation (XPN.8 A/I/P; untyped = A) the legal name
    (XPN.7 = L) wins, else the first repetition (MAPPING.md §2.1 rule 5, FIELD-NOTES B.13)."""
    chosen: dict[str, tuple[int, NameGroup]] = {}
    for c in repetitions:
        if not c or c.is_null:
            continue
        family, given, middle, suffix, prefix, degree, kind, code = c.values(8)
        code = code.upper() or "A"
        code = code if code in ("A", "I", "P") else "A"
        rank = 0 if kind.upper() == "L" else 1
        if code not in chosen or rank < chosen[code][0]:
            chosen[code] = (rank, _group(family, given, middle, suffix, prefix, degree, where))
    if not chosen:
        return NO_NAME
    return PersonName(*(chosen[k][1] if k in chosen else _NO_GROUP for k in ("A", "I", "P")))


def person_name_from_xcn(c: Composite, where: Location) -> PersonName:
    """XCN (ID ^ family ^ given ^ middle ^ suffix ^ prefix ^ degree) or CNN (the same with ``&``, inside NDL)."""
    if not c or c.is_null:
        return NO_NAME
    _, family, given, middle, suffix, prefix, degree = c.values(7)
    return PersonName(_group(family, given, middle, suffix, prefix, degree, where))


def first_person(repetitions: Sequence[Composite], where: Location) -> PersonName:
    """The first non-empty XCN repetition (PV1-8, OBR-16, ORC-12)."""
    for c in repetitions:
        name = person_name_from_xcn(c, where)
        if not name.is_empty():
            return name
    return NO_NAME


# -- identifiers and codes -----------------------------------------------------------------------------


def issuer_from_hd(c: Composite, where: Location) -> Issuer:
    """HD: namespace ID & universal ID & universal ID type (CX.4, EI.2-4)."""
    if not c:
        return NO_ISSUER
    namespace, universal_id, universal_id_type = c.values(3)
    return Issuer(
        vr.bounded(namespace, vr.LO, "LO", "assigning authority", where),
        vr.bounded(universal_id, vr.LO, "UT", "assigning authority universal ID", where),
        vr.bounded(universal_id_type, vr.CS, "CS", "assigning authority ID type", where),
    )


def patient_id_from_cx(c: Composite, where: Location) -> PatientId:
    """CX: ID (LO 64) with its assigning authority (CX.4, HD) and identifier type code (CX.5)."""
    value, _, _, _, type_code = c.values(5)
    return PatientId(
        vr.bounded(value, vr.LO, "LO", "identifier", where),
        issuer_from_hd(c.sub(4), where),
        vr.bounded(type_code, vr.CS, "CS", "identifier type", where),
    )


def entity_from_ei(c: Composite, limit: int, vr_name: str, what: str, where: Location) -> EntityId:
    """EI: entity identifier ^ namespace ^ universal ID ^ universal ID type (accession, order numbers)."""
    value, namespace, universal_id, universal_id_type = c.values(4)
    if value == NULL:
        value = ""
    value = vr.bounded(value, limit, vr_name, what, where)
    if not (namespace or universal_id or universal_id_type):
        return EntityId(value)
    issuer = Issuer(
        vr.bounded(namespace, vr.LO, "LO", f"{what} namespace", where),
        vr.bounded(universal_id, vr.LO, "UT", f"{what} universal ID", where),
        vr.bounded(universal_id_type, vr.CS, "CS", f"{what} universal ID type", where),
    )
    return EntityId(value, issuer if not issuer.is_empty() or issuer.universal_id_type else NO_ISSUER)


def code_from(value: str, scheme: str, meaning: str, what: str, where: Location) -> Code | None:
    """A code sequence item; only when a value and a coding scheme are present (never invent a designator)."""
    if not value or not scheme or value == NULL:
        return None
    return Code(
        vr.bounded(value, vr.SH, "SH", f"{what} code value", where),
        vr.bounded(scheme, vr.SH, "SH", f"{what} coding scheme", where),
        vr.free_lo(meaning),
    )


def code_from_ce(c: Composite, what: str, where: Location) -> Code | None:
    """CE/CWE: identifier ^ text ^ coding system (.1 → value, .3 → scheme, .2 → meaning)."""
    if not c:
        return None
    value, meaning, scheme = c.values(3)
    return code_from(value, scheme, meaning, what, where)


# HL7 table 0001 → DICOM (0010,0040). A (ambiguous) and N (not applicable) → O, as dcm4chee does;
# U (unknown) → empty. Decided once here and documented in docs/hl7.md (MAPPING.md §10.6).
SEX: dict[str, Sex] = {
    "M": Sex.MALE,
    "F": Sex.FEMALE,
    "O": Sex.OTHER,
    "A": Sex.OTHER,
    "N": Sex.OTHER,
    "U": Sex.UNKNOWN,
}


def sex(value: str, where: Location) -> Sex:
    if value == NULL:
        return Sex.UNKNOWN
    try:
        return SEX[value.strip().upper()]
    except KeyError:
        raise Hl7Error(ErrorCode.TABLE_VALUE_NOT_FOUND, "PID-8 is not an HL7 table 0001 value", where) from None
