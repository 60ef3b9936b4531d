"""Query/Retrieve keys: the attributes radsync matches and returns at each level, and how an identifier is read.

The key table follows PS3.4 C.6.1.1 (Patient Root) and C.6.2.1 (Study Root): required, unique and the common
optional keys of each level. ``parse_find`` turns a C-FIND identifier into an ``ArchiveQuery`` with the value
readers of the worklist (adapters/dicom/query.py: charset-aware decoding, ``""`` empty matching, ``a\\b`` lists,
``*``/``?`` wildcards, DA/TM ranges), so Q/R and MWL read keys the same way (PS3.4 C.2.2.2).

* Keys of the query level and the levels above it are matched and returned; keys of a lower level are not part of a
  hierarchical query (C.4.1.2.1): they are not returned, and a value in one makes the answers pending-with-warning.
* SERIES level needs the Study Instance UID, IMAGE level the Series Instance UID (C.4.1.3.1.1); the Study Root
  model has no PATIENT level. Anything else refused with 0xA900.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydicom import Dataset
from pydicom.tag import BaseTag

from radsync.adapters.dicom.charset import query_encodings
from radsync.adapters.dicom.query import (  # the worklist's value readers, shared on purpose
    _has_value,
    _parse_date,
    _parse_time,
    _range,
    _raw_text,
    _text_match,
    _value_text,
)
from radsync.adapters.dicom.status import InvalidIdentifier
from radsync.app.archive import ArchiveQuery, Level, RetrieveRequest
from radsync.app.worklist import DateRange, IsEmpty, TimeOfDayRange

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
_ORDER = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


@dataclass(frozen=True, slots=True)
class QrKey:
    """One supported key: its level, VR, the ``ArchiveQuery`` field it matches (``None``: return key only)."""

    tag: int
    keyword: str
    vr: str
    level: Level
    field: str | None = None
    kind: str = "text"  # text | upper | name | date | time


KEYS: tuple[QrKey, ...] = (
    QrKey(0x00100010, "PatientName", "PN", Level.PATIENT, "patient_name", "name"),
    QrKey(0x00100020, "PatientID", "LO", Level.PATIENT, "patient_id"),
    QrKey(0x00100021, "IssuerOfPatientID", "LO", Level.PATIENT, "patient_issuer"),
    QrKey(0x00100030, "PatientBirthDate", "DA", Level.PATIENT, "birth_date", "date"),
    QrKey(0x00100040, "PatientSex", "CS", Level.PATIENT, "sex", "upper"),
    QrKey(0x00201200, "NumberOfPatientRelatedStudies", "IS", Level.PATIENT),
    QrKey(0x00201202, "NumberOfPatientRelatedSeries", "IS", Level.PATIENT),
    QrKey(0x00201204, "NumberOfPatientRelatedInstances", "IS", Level.PATIENT),
    QrKey(0x00080020, "StudyDate", "DA", Level.STUDY, "study_date", "date"),
    QrKey(0x00080030, "StudyTime", "TM", Level.STUDY, "study_time", "time"),
    QrKey(0x00080050, "AccessionNumber", "SH", Level.STUDY, "accession"),
    QrKey(0x00080061, "ModalitiesInStudy", "CS", Level.STUDY, "modalities", "upper"),
    QrKey(0x00080090, "ReferringPhysicianName", "PN", Level.STUDY, "referring_physician", "name"),
    QrKey(0x00081030, "StudyDescription", "LO", Level.STUDY, "study_description"),
    QrKey(0x0020000D, "StudyInstanceUID", "UI", Level.STUDY, "study_instance_uid"),
    QrKey(0x00200010, "StudyID", "SH", Level.STUDY, "study_id"),
    QrKey(0x00201206, "NumberOfStudyRelatedSeries", "IS", Level.STUDY),
    QrKey(0x00201208, "NumberOfStudyRelatedInstances", "IS", Level.STUDY),
    QrKey(0x00080060, "Modality", "CS", Level.SERIES, "modality", "upper"),
    QrKey(0x0008103E, "SeriesDescription", "LO", Level.SERIES, "series_description"),
    QrKey(0x0020000E, "SeriesInstanceUID", "UI", Level.SERIES, "series_instance_uid"),
    QrKey(0x00200011, "SeriesNumber", "IS", Level.SERIES, "series_number"),
    QrKey(0x00201209, "NumberOfSeriesRelatedInstances", "IS", Level.SERIES),
    QrKey(0x00080016, "SOPClassUID", "UI", Level.IMAGE, "sop_class_uid"),
    QrKey(0x00080018, "SOPInstanceUID", "UI", Level.IMAGE, "sop_instance_uid"),
    QrKey(0x00200013, "InstanceNumber", "IS", Level.IMAGE, "instance_number"),
)
# Returned at any level when asked for (PS3.4 C.4.1.1.3.2): where and how the objects can be retrieved.
RETRIEVE_AE_TITLE = QrKey(0x00080054, "RetrieveAETitle", "AE", Level.PATIENT)
INSTANCE_AVAILABILITY = QrKey(0x00080056, "InstanceAvailability", "CS", Level.PATIENT)
BY_TAG: dict[int, QrKey] = {k.tag: k for k in (*KEYS, RETRIEVE_AE_TITLE, INSTANCE_AVAILABILITY)}


@dataclass(frozen=True, slots=True)
class FindRequest:
    """A parsed Q/R C-FIND identifier: level, constraints, keys to return, keys ignored."""

    level: Level
    query: ArchiveQuery
    requested: tuple[QrKey, ...]
    ignored: tuple[str, ...] = ()


def query_level(identifier: Dataset, *, patient_root: bool) -> Level:
    text = _raw_text(identifier, QUERY_RETRIEVE_LEVEL).strip().upper()
    try:
        level = Level(text)
    except ValueError:
        raise InvalidIdentifier(f"QueryRetrieveLevel {text!r} is not PATIENT, STUDY, SERIES or IMAGE",
                                "QueryRetrieveLevel") from None
    if level is Level.PATIENT and not patient_root:
        raise InvalidIdentifier("the Study Root model has no PATIENT level", "QueryRetrieveLevel")
    return level


def parse_find(identifier: Dataset, *, patient_root: bool, limit: int | None = None) -> FindRequest:
    """Read a Patient Root or Study Root C-FIND identifier (PS3.4 C.4.1.1.3, C.6.1.1, C.6.2.1)."""
    level = query_level(identifier, patient_root=patient_root)
    charset = _raw_text(identifier, SPECIFIC_CHARACTER_SET)
    encodings, _known = query_encodings(charset.split("\\") if charset else None)
    constraints: dict[str, Any] = {}
    requested: list[QrKey] = []
    ignored: list[str] = []
    for tag in sorted(identifier.keys()):
        if tag.element == 0 or tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET):
            continue
        elem = identifier.get_item(tag)
        key = BY_TAG.get(int(tag))
        if key is None or _ORDER[key.level] > _ORDER[level]:
            if _has_value(elem):
                ignored.append(key.keyword if key else f"({tag.group:04X},{tag.element:04X})")
            continue
        requested.append(key)
        if key.field is None:
            if _has_value(elem):
                ignored.append(key.keyword)
            continue
        text = _value_text(elem, key.vr, encodings)
        parsed = _constraint(key, text)
        if parsed is not None:
            constraints[key.field] = parsed
    counted = any(k.keyword.startswith("NumberOf") for k in requested)
    query = replace(ArchiveQuery(limit=limit, counts=counted), **constraints)
    if level is Level.SERIES and query.study_instance_uid is None:
        raise InvalidIdentifier("a SERIES level query needs the Study Instance UID", "StudyInstanceUID")
    if level is Level.IMAGE and query.series_instance_uid is None:
        raise InvalidIdentifier("an IMAGE level query needs the Series Instance UID", "SeriesInstanceUID")
    return FindRequest(level, query, tuple(requested), tuple(ignored))


def parse_retrieve(identifier: Dataset, *, patient_root: bool) -> RetrieveRequest:
    """Read a C-GET / C-MOVE identifier: the unique keys of its level (PS3.4 C.4.2.1.4, C.4.3.1.3)."""
    level = query_level(identifier, patient_root=patient_root)
    encodings, _known = query_encodings(None)

    def uids(tag: int) -> tuple[str, ...]:
        elem = identifier.get_item(BaseTag(tag))
        if elem is None:
            return ()
        return tuple(u for u in _value_text(elem, "UI", encodings).split("\\") if u)

    request = RetrieveRequest(
        level,
        patient_id=_value_text(identifier.get_item(BaseTag(0x00100020)), "LO", encodings)
        if identifier.get_item(BaseTag(0x00100020)) is not None else "",
        study_instance_uids=uids(0x0020000D),
        series_instance_uids=uids(0x0020000E),
        sop_instance_uids=uids(0x00080018),
    )
    needed = {
        Level.PATIENT: request.patient_id,
        Level.STUDY: request.study_instance_uids,
        Level.SERIES: request.series_instance_uids,
        Level.IMAGE: request.sop_instance_uids,
    }[level]
    if not needed:
        keyword = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID", Level.SERIES: "SeriesInstanceUID",
                   Level.IMAGE: "SOPInstanceUID"}[level]
        raise InvalidIdentifier(f"a {level.value} level retrieve needs {keyword}", keyword)
    return request


def _constraint(key: QrKey, text: str) -> Any:
    if not text:
        return None
    if key.kind == "date":
        if text == '""':
            return IsEmpty()
        if set(text) == {"*"}:
            return None
        low, high = _range(text, _parse_date, key.keyword)
        return DateRange(low, high)
    if key.kind == "time":
        if text == '""':
            return IsEmpty()
        if set(text) == {"*"}:
            return None
        low, high = _range(text, _parse_time, key.keyword)
        return TimeOfDayRange(low, high)
    return _text_match(text.upper() if key.kind == "upper" else text)
