"""Values on the way out: every value escaped with python-hl7's ``escape`` (HL7 v2.5.1 ch. 2.7), then assembled
into components, fields and segments with the standard delimiters ``|^~\\&``.

python-hl7 writes characters outside printable ASCII as ``\\Xhh\\``; radsync sends UTF-8 (MSH-18
``UNICODE UTF-8``), so runs of non-ASCII text are kept as they are and only ASCII runs go through ``escape``.
"""

from __future__ import annotations

import datetime as dt
import re

import hl7
from hl7.util import escape as hl7_escape

from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import PersonName

ENCODING_CHARACTERS = "^~\\&"
_CONTAINER = hl7.Message(separator="\r", esc="\\", separators="\r|~^&")
_NON_ASCII = re.compile(r"([^\x00-\x7f]+)")
_APP_MAP = {"\n": ".br"}  # a line break inside a value (FT) is \.br\, like CR (ch. 2.7.6)


def esc(value: str) -> str:
    """``value`` with every delimiter and the escape character escaped."""
    if not value:
        return ""
    parts = _NON_ASCII.split(value)
    return "".join(p if i % 2 else hl7_escape(_CONTAINER, p, _APP_MAP) for i, p in enumerate(parts))


def comp(*values: str) -> str:
    """Components (already escaped) joined with ``^``, trailing empty ones dropped."""
    return _join("^", values)


def sub(*values: str) -> str:
    """Sub-components (already escaped) joined with ``&``."""
    return _join("&", values)


def _join(separator: str, values: tuple[str, ...]) -> str:
    parts = list(values)
    while parts and not parts[-1]:
        parts.pop()
    return separator.join(parts)


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from ``{field number: encoded value}``; absent fields are empty."""
    last = max(fields, default=0)
    return "|".join([name, *(fields.get(i, "") for i in range(1, last + 1))])


def ei(entity: EntityId) -> str:
    """EI: entity identifier ^ namespace ^ universal ID ^ universal ID type."""
    if not entity.value:
        return ""
    i = entity.issuer
    return comp(esc(entity.value), esc(i.namespace), esc(i.universal_id), esc(i.universal_id_type))


def cx(patient_id: PatientId) -> str:
    """CX: ID ^^^ assigning authority (HD) ^ identifier type code."""
    i = patient_id.issuer
    authority = sub(esc(i.namespace), esc(i.universal_id), esc(i.universal_id_type))
    return comp(esc(patient_id.value), "", "", authority, esc(patient_id.type_code))


def xpn(name: PersonName) -> str:
    """XPN: family ^ given ^ second ^ suffix ^ prefix (from the alphabetic group)."""
    g = name.alphabetic
    return comp(esc(g.family), esc(g.given), esc(g.middle), esc(g.suffix), esc(g.prefix))


def xcn(name: PersonName, person_id: str = "") -> str:
    """XCN: ID ^ family ^ given ^ second ^ suffix ^ prefix."""
    g = name.alphabetic
    return comp(esc(person_id), esc(g.family), esc(g.given), esc(g.middle), esc(g.suffix), esc(g.prefix))


def cnn(name: PersonName, person_id: str = "") -> str:
    """CNN as the first component of NDL (OBR-32): the same parts as XCN, as sub-components."""
    g = name.alphabetic
    return sub(esc(person_id), esc(g.family), esc(g.given), esc(g.middle), esc(g.suffix), esc(g.prefix))


def dtm(value: dt.datetime | None, zone: dt.tzinfo | None) -> str:
    """An instant (radsync's clock: naive UTC) as DTM in the site zone with its offset (FIELD-NOTES item 13)."""
    if value is None:
        return ""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    local = aware.astimezone(zone) if zone is not None else aware.astimezone(dt.UTC)
    return local.strftime("%Y%m%d%H%M%S%z")


def wall_dtm(value: dt.datetime | None, zone: dt.tzinfo | None) -> str:
    """A wall-clock time as stored from HL7/DICOM (naive, in the site zone; MAPPING.md §2.2) as DTM with the
    zone's offset; ``zone`` None is this machine's zone."""
    if value is None:
        return ""
    local = value.replace(tzinfo=zone) if zone is not None else value.astimezone()
    return local.strftime("%Y%m%d%H%M%S%z")


def date(value: dt.date | None) -> str:
    return value.strftime("%Y%m%d") if value is not None else ""
