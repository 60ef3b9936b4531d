"""Target DICOM value representations: what a value from HL7 must look like before it enters the domain.

Everything radsync takes from an order ends up in a Modality Worklist item, so the HL7 adapter enforces the
DICOM limits once, here (PS3.5 §6.2, MAPPING.md §2.5 and §10.9):

* identifiers and codes (SH 16, LO 64, CS 16, AE 16, UI 64): a value that does not fit is refused with AE and
  ERR 102 naming the field; never truncated, because a cut accession can collide with another order
  (FIELD-NOTES E.34);
* ``\\`` is the DICOM value delimiter: inside a single-valued SH/LO/CS/PN it becomes ``/``; control characters
  become spaces; in PN also ``^`` and ``=`` (component and group delimiters) become spaces (FIELD-NOTES B.9-10);
* free text bound for LO (descriptions, code meanings, reason, patient state) is cut at 64 characters knowingly,
  and Medical Alerts (LO, multi-valued) is split into several values at word boundaries (MAPPING.md §9.2).

Lengths count characters, not bytes: radsync stores Unicode and the byte length depends on the charset a
station is answered in (documented in docs/hl7.md).
"""

from __future__ import annotations

import re

from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location

SH, LO, CS, AE, UI, PN_GROUP, LT = 16, 64, 16, 16, 64, 64, 10240

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_PN_RESERVED = re.compile(r"[\^=\x00-\x1f\x7f]+")
_CS = re.compile(r"[A-Z0-9 _]*")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def clean_string(value: str) -> str:
    """A single-valued SH/LO/CS string: backslash → ``/``, control characters → space, padding stripped."""
    if not value or ("\\" not in value and value.isprintable()):  # the usual case, checked in C
        return value.strip()
    if "\\" in value:
        value = value.replace("\\", "/")
    if _CONTROL.search(value):
        value = _CONTROL.sub(" ", value)
    return value.strip()


def bounded(value: str, limit: int, vr: str, what: str, where: Location) -> str:
    """``value`` cleaned for ``vr``; refuse (ERR 102 at ``where``) when it is longer than the VR allows."""
    value = clean_string(value)
    if len(value) > limit:
        raise Hl7Error(
            ErrorCode.DATA_TYPE,
            f"{where.segment}-{where.field} {what} has {len(value)} characters; DICOM {vr} allows {limit}",
            where,
        )
    return value


def free_lo(value: str) -> str:
    """Free text bound for one LO value: cleaned and cut at 64 characters (knowingly, see module docstring)."""
    return clean_string(value)[:LO].rstrip()


def lo_values(value: str) -> tuple[str, ...]:
    """Free text split into LO values of at most 64 characters at word boundaries (Medical Alerts)."""
    words = clean_string(value).split()
    values: list[str] = []
    current = ""
    for word in words:
        while len(word) > LO:
            if current:
                values.append(current)
                current = ""
            values.append(word[:LO])
            word = word[LO:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > LO:
            values.append(current)
            current = word
        else:
            current = candidate
    if current:
        values.append(current)
    return tuple(values)


def long_text(value: str) -> str:
    """LT: backslash and CR LF allowed; cut at 10240 characters."""
    return value.strip()[:LT]


def code_string(value: str, what: str, where: Location, limit: int = CS) -> str:
    """A CS value: upper-cased; only A-Z, 0-9, space and underscore (ERR 102 otherwise)."""
    value = bounded(value, limit, "CS", what, where).upper()
    if not _CS.fullmatch(value):
        raise Hl7Error(ErrorCode.DATA_TYPE, f"{where.segment}-{where.field} {what} is not a DICOM code string", where)
    return value


def ae_title(value: str, where: Location) -> str:
    """An AE title: at most 16 characters, no backslash or control characters; spaces insignificant."""
    value = value.strip()
    if "\\" in value or _CONTROL.search(value):
        raise Hl7Error(ErrorCode.DATA_TYPE, f"{where.segment}-{where.field} is not a valid AE title", where)
    return bounded(value, AE, "AE", "station AE title", where)


def uid(value: str, where: Location) -> str:
    """A UI value: digits and dots, no leading zeros in a component, at most 64 characters (FIELD-NOTES E.39)."""
    value = value.strip().rstrip("\x00")
    if len(value) > UI or not _UID.fullmatch(value):
        raise Hl7Error(
            ErrorCode.DATA_TYPE, f"{where.segment}-{where.field} is not a valid DICOM UID", where
        )
    return value


def pn_component(value: str) -> str:
    """One PN component: ``^`` ``=`` and control characters → space, ``\\`` → ``/`` (they are PN delimiters)."""
    if not value or ("\\" not in value and "^" not in value and "=" not in value and value.isprintable()):
        return value.strip()
    if "\\" in value:
        value = value.replace("\\", "/")
    if _PN_RESERVED.search(value):
        value = " ".join(_PN_RESERVED.sub(" ", value).split())
    return value.strip()
