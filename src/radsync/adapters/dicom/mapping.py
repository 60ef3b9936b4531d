"""Worklist item -> DICOM: the Modality Worklist attributes radsync knows, and how an answer is built from them.

``ATTRIBUTES`` is the one table of MWL keys (PS3.4 Table K.6-1, MAPPING.md §1.3): tag, VR, where the value comes
from in a ``WorklistItem``, and which ``WorklistQuery`` field the key matches on (``match``; keys without one are
return keys only, and a value in them is ignored with a 0xFF01 warning). query.py reads the matching side of the
table, ``ResponsePlan`` the return side.

An answer holds exactly the keys the request asked for (K.4.1.1.3.2; matching keys are return keys too), in the
station's character set, plus (0008,0005) when that set is not the default repertoire. A requested key without a
value is returned zero-length. A requested sequence returns only the sub-keys of its request item; a zero-length
sequence or an empty item asks for every known sub-key (what dcmtk's wlmscpfs does by default). Sequences get an
item only when there is something to put in it, never an empty item with Type 1C sub-keys missing (FIELD-NOTES 11).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag

from radsync.adapters.dicom.charset import ResponseCharset
from radsync.adapters.dicom.elements import ElementWriter, Encode, TransferSyntax
from radsync.app.worklist import WorklistItem
from radsync.domain.ids import Code, Issuer, PatientId

SPECIFIC_CHARACTER_SET = 0x00080005
TIMEZONE_OFFSET_FROM_UTC = 0x00080201
SPS_SEQUENCE = 0x00400100
SPS_START_DATE = 0x00400002
SPS_START_TIME = 0x00400003


@dataclass(frozen=True, slots=True)
class Attribute:
    """One known key. For a sequence, ``get`` returns the contexts of its items and ``items`` the sub-keys."""

    tag: int
    keyword: str
    vr: str
    get: Callable[[Any], Any]
    match: str | None = None
    kind: str = "text"
    items: tuple[Attribute, ...] | None = None


def _da(value: dt.date | dt.datetime | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _tm(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    return value.strftime("%H%M%S.%f" if value.microsecond else "%H%M%S")


def _nothing(_: Any) -> str:
    return ""


def _no_items(_: Any) -> list[Any]:
    return []


def _code_items(prefix: str | None) -> tuple[Attribute, ...]:
    """Code Sequence Macro sub-keys (PS3.3 Table 8.8-1); ``prefix`` names the query fields they match on."""
    return (
        Attribute(0x00080100, "CodeValue", "SH", lambda c: c.value, prefix and f"{prefix}_code"),
        Attribute(0x00080102, "CodingSchemeDesignator", "SH", lambda c: c.scheme, prefix and f"{prefix}_code_scheme"),
        Attribute(0x00080103, "CodingSchemeVersion", "SH", _nothing),
        Attribute(0x00080104, "CodeMeaning", "LO", lambda c: c.meaning),
    )


def _codes(code: Code | None) -> list[Code]:
    return [code] if code is not None else []


_ENTITY_ITEMS = (  # HL7v2 Hierarchic Designator Macro (PS3.3 Table 10-17)
    Attribute(0x00400031, "LocalNamespaceEntityID", "UT", lambda i: i.namespace),
    Attribute(0x00400032, "UniversalEntityID", "UT", lambda i: i.universal_id),
    Attribute(0x00400033, "UniversalEntityIDType", "CS", lambda i: i.universal_id_type if i.universal_id else ""),
)


def _issuer(issuer: Issuer) -> list[Issuer]:
    return [] if issuer.is_empty() else [issuer]


def _qualifiers(issuer: Issuer) -> list[Issuer]:
    return [issuer] if issuer.universal_id else []


_QUALIFIER_ITEMS = _ENTITY_ITEMS[1:]

_OTHER_ID_ITEMS = (
    Attribute(0x00100020, "PatientID", "LO", lambda p: p.value),
    Attribute(0x00100021, "IssuerOfPatientID", "LO", lambda p: p.issuer.namespace),
    Attribute(0x00100022, "TypeOfPatientID", "CS", lambda p: "TEXT"),
    Attribute(0x00100024, "IssuerOfPatientIDQualifiersSequence", "SQ", lambda p: _qualifiers(p.issuer),
              items=_QUALIFIER_ITEMS),
)

_REFERENCE_ITEMS = (
    Attribute(0x00081150, "ReferencedSOPClassUID", "UI", _nothing),
    Attribute(0x00081155, "ReferencedSOPInstanceUID", "UI", _nothing),
)


def _other_ids(item: WorklistItem) -> list[PatientId]:
    return list(item.patient.other_ids)


_SPS_ITEMS = (
    Attribute(0x00080060, "Modality", "CS", lambda i: i.step.modality, "modality", "upper"),
    Attribute(0x00321070, "RequestedContrastAgent", "LO", _nothing),
    Attribute(0x00400001, "ScheduledStationAETitle", "AE", lambda i: i.step.station_ae_titles, "station_ae_title",
              "ae"),
    Attribute(SPS_START_DATE, "ScheduledProcedureStepStartDate", "DA", lambda i: _da(i.step.start), "start",
              "sps_date"),
    Attribute(SPS_START_TIME, "ScheduledProcedureStepStartTime", "TM", lambda i: _tm(i.step.start), "start",
              "sps_time"),
    Attribute(0x00400004, "ScheduledProcedureStepEndDate", "DA", lambda i: _da(i.step.end)),
    Attribute(0x00400005, "ScheduledProcedureStepEndTime", "TM", lambda i: _tm(i.step.end)),
    Attribute(0x00400006, "ScheduledPerformingPhysicianName", "PN",
              lambda i: i.step.performing_physician.canonical(), "performing_physician", "name"),
    Attribute(0x00400007, "ScheduledProcedureStepDescription", "LO", lambda i: i.step_description,
              "step_description"),
    Attribute(0x00400008, "ScheduledProtocolCodeSequence", "SQ", lambda i: list(i.step.protocol_codes),
              items=_code_items("protocol")),
    Attribute(0x00400009, "ScheduledProcedureStepID", "SH", lambda i: i.step.step_id, "step_id"),
    Attribute(0x00400010, "ScheduledStationName", "SH", lambda i: i.step.station_name, "station_name"),
    Attribute(0x00400011, "ScheduledProcedureStepLocation", "SH", lambda i: i.step.location, "step_location"),
    Attribute(0x00400012, "PreMedication", "LO", _nothing),
    Attribute(0x00400020, "ScheduledProcedureStepStatus", "CS", lambda i: i.step.status.value, "step_status",
              "upper"),
    Attribute(0x00400400, "CommentsOnTheScheduledProcedureStep", "LT", _nothing),
)

ATTRIBUTES: tuple[Attribute, ...] = (
    # Imaging Service Request
    Attribute(0x00080050, "AccessionNumber", "SH", lambda i: i.order.accession.value, "accession"),
    Attribute(0x00080051, "IssuerOfAccessionNumberSequence", "SQ", lambda i: _issuer(i.order.accession.issuer),
              items=_ENTITY_ITEMS),
    Attribute(0x00080090, "ReferringPhysicianName", "PN",
              lambda i: i.order.visit.referring_physician.canonical(), "referring_physician", "name"),
    Attribute(0x00081110, "ReferencedStudySequence", "SQ", _no_items, items=_REFERENCE_ITEMS),
    Attribute(0x00081120, "ReferencedPatientSequence", "SQ", _no_items, items=_REFERENCE_ITEMS),
    # Patient
    Attribute(0x00100010, "PatientName", "PN", lambda i: i.patient.name.canonical(), "patient_name", "name"),
    Attribute(0x00100020, "PatientID", "LO", lambda i: i.patient.id.value, "patient_id"),
    Attribute(0x00100021, "IssuerOfPatientID", "LO", lambda i: i.patient.id.issuer.namespace, "patient_issuer"),
    Attribute(0x00100024, "IssuerOfPatientIDQualifiersSequence", "SQ", lambda i: _qualifiers(i.patient.id.issuer),
              items=_QUALIFIER_ITEMS),
    Attribute(0x00100030, "PatientBirthDate", "DA", lambda i: _da(i.patient.birth_date), "birth_date", "date"),
    Attribute(0x00100032, "PatientBirthTime", "TM", _nothing),
    Attribute(0x00100040, "PatientSex", "CS", lambda i: i.patient.sex.value, "sex", "upper"),
    Attribute(0x00101002, "OtherPatientIDsSequence", "SQ", _other_ids, items=_OTHER_ID_ITEMS),
    Attribute(0x00101020, "PatientSize", "DS", lambda i: i.patient.size_m),
    Attribute(0x00101030, "PatientWeight", "DS", lambda i: i.patient.weight_kg),
    Attribute(0x00101040, "PatientAddress", "LO", lambda i: i.patient.address),
    Attribute(0x00101060, "PatientMotherBirthName", "PN", lambda i: i.patient.mother_birth_name.canonical()),
    Attribute(0x00102000, "MedicalAlerts", "LO", lambda i: i.medical_alerts),
    Attribute(0x00102110, "Allergies", "LO", lambda i: i.patient.allergies),
    Attribute(0x001021C0, "PregnancyStatus", "US", lambda i: i.patient.pregnancy_status),
    # Requested Procedure
    Attribute(0x0020000D, "StudyInstanceUID", "UI", lambda i: i.procedure.study_instance_uid, "study_instance_uid",
              "uid"),
    Attribute(0x00321032, "RequestingPhysician", "PN", lambda i: i.order.requesting_physician.canonical(),
              "requesting_physician", "name"),
    Attribute(0x00321033, "RequestingService", "LO", _nothing),
    Attribute(0x00321060, "RequestedProcedureDescription", "LO", lambda i: i.procedure_description,
              "procedure_description"),
    Attribute(0x00321064, "RequestedProcedureCodeSequence", "SQ", lambda i: _codes(i.procedure.code),
              items=_code_items("procedure")),
    # Visit
    Attribute(0x00380010, "AdmissionID", "LO", lambda i: i.order.visit.admission_id.value, "admission_id"),
    Attribute(0x00380014, "IssuerOfAdmissionIDSequence", "SQ",
              lambda i: _issuer(i.order.visit.admission_id.issuer), items=_ENTITY_ITEMS),
    Attribute(0x00380050, "SpecialNeeds", "LO", _nothing),
    Attribute(0x00380300, "CurrentPatientLocation", "LO", lambda i: i.order.visit.location, "patient_location"),
    Attribute(0x00380500, "PatientState", "LO", lambda i: i.patient_state),
    # Scheduled Procedure Step
    Attribute(SPS_SEQUENCE, "ScheduledProcedureStepSequence", "SQ", lambda i: [i], items=_SPS_ITEMS),
    # Requested Procedure (continued) and Imaging Service Request (continued)
    Attribute(0x00400026, "OrderPlacerIdentifierSequence", "SQ", lambda i: _issuer(i.order.placer_number.issuer),
              items=_ENTITY_ITEMS),
    Attribute(0x00400027, "OrderFillerIdentifierSequence", "SQ", lambda i: _issuer(i.order.filler_number.issuer),
              items=_ENTITY_ITEMS),
    Attribute(0x00401001, "RequestedProcedureID", "SH", lambda i: i.procedure.procedure_id, "procedure_id"),
    Attribute(0x00401002, "ReasonForTheRequestedProcedure", "LO", lambda i: i.procedure.reason),
    Attribute(0x00401003, "RequestedProcedurePriority", "SH", lambda i: i.procedure.priority.value, "priority",
              "upper"),
    Attribute(0x00401004, "PatientTransportArrangements", "LO", lambda i: i.procedure.transport),
    Attribute(0x00401005, "RequestedProcedureLocation", "LO", _nothing),
    Attribute(0x0040100A, "ReasonForRequestedProcedureCodeSequence", "SQ", lambda i: _codes(i.procedure.reason_code),
              items=_code_items(None)),
    Attribute(0x00401400, "RequestedProcedureComments", "LT", lambda i: i.procedure.comments),
    Attribute(0x00402004, "IssueDateOfImagingServiceRequest", "DA", lambda i: _da(i.order.ordered_at)),
    Attribute(0x00402005, "IssueTimeOfImagingServiceRequest", "TM", lambda i: _tm(i.order.ordered_at)),
    Attribute(0x00402016, "PlacerOrderNumberImagingServiceRequest", "LO", lambda i: i.order.placer_number.value,
              "placer_number"),
    Attribute(0x00402017, "FillerOrderNumberImagingServiceRequest", "LO", lambda i: i.order.filler_number.value,
              "filler_number"),
    Attribute(0x00402400, "ImagingServiceRequestComments", "LT", _nothing),
    Attribute(0x00403001, "ConfidentialityConstraintOnPatientDataDescription", "LO",
              lambda i: i.patient.confidentiality),
    # Steering: returned when asked for (the site's offset at the step's start), never matched on.
    Attribute(TIMEZONE_OFFSET_FROM_UTC, "TimezoneOffsetFromUTC", "SH", _nothing),
)

BY_TAG: dict[int, Attribute] = {a.tag: a for a in ATTRIBUTES}

# A requested shape: (tag, sub-shape) pairs in tag order. The sub-shape of a sequence is None for "every known
# sub-key" and a shape otherwise; non-sequence keys have None too.
Shape = tuple[tuple[int, "Shape | None"], ...]


def all_sub_keys(attribute: Attribute) -> Shape:
    return tuple((sub.tag, None) for sub in attribute.items or ())


# -- building answers --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    tag: BaseTag
    vr: str
    get: Callable[[Any], Any]
    encode: Encode | None
    items: tuple[_Entry, ...] | None


# Encoded answers kept per plan. The reader hands out the same WorklistItem object for an unchanged row, so a
# modality polling the same worklist gets its items' encodings again instead of re-encoding them.
ANSWER_CACHE_SIZE = 2048


class ResponsePlan:
    """Builds the answer Dataset for one request shape, station character set and transfer syntax.

    Compiled once per request shape; ``dataset`` then costs one pass over the requested keys per item (no keyword
    lookups, no pydicom DataElements): the dominant per-answer cost outside pynetdicom (PERF-NOTES.md). An item's
    encoded elements are cached by object identity (the reader returns one object per unchanged row); the entry
    keeps the item alive, so an identity is never mistaken for a later object's.
    """

    def __init__(self, shape: Shape, charset: ResponseCharset, syntax: TransferSyntax,
                 site_zone: ZoneInfo | None, cache_size: int = ANSWER_CACHE_SIZE) -> None:
        self._cache_size = cache_size
        self._answers: OrderedDict[int, tuple[WorklistItem, dict[BaseTag, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._writer = ElementWriter(syntax)
        self._charset = charset
        self._syntax = syntax
        self._zone = site_zone
        self._entries = self._compile(shape, BY_TAG)
        self._original_charset: str | list[str] = "iso8859"
        self._charset_element: DataElement | None = None
        if charset.specific_character_set is not None:
            self._charset_element = DataElement(BaseTag(SPECIFIC_CHARACTER_SET), "CS",
                                                charset.specific_character_set)
            self._original_charset = charset.encodings

    def _compile(self, shape: Shape, known: dict[int, Attribute]) -> tuple[_Entry, ...]:
        entries = []
        for tag, sub_shape in sorted(shape, key=lambda kv: kv[0]):
            attribute = known.get(tag)
            if attribute is None:
                continue
            get = self._offset if tag == TIMEZONE_OFFSET_FROM_UTC else attribute.get
            if attribute.items is None:
                encode = self._writer.value_encoder(attribute.vr, self._charset)
                entries.append(_Entry(BaseTag(tag), attribute.vr, get, encode, None))
            else:
                sub_known = {a.tag: a for a in attribute.items}
                sub = self._compile(sub_shape if sub_shape else all_sub_keys(attribute), sub_known)
                entries.append(_Entry(BaseTag(tag), "SQ", get, None, sub))
        return tuple(entries)

    def _offset(self, item: WorklistItem) -> str:
        start = item.step.start
        aware = start.replace(tzinfo=self._zone) if self._zone is not None else start.astimezone()
        offset = aware.utcoffset() or dt.timedelta(0)
        minutes = int(offset.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"

    def _sequence(self, entry: _Entry, contexts: Sequence[Any]) -> bytes:
        writer = self._writer
        assert entry.items is not None
        return b"".join(
            writer.item(b"".join(self._nested(sub, context) for sub in entry.items)) for context in contexts
        )

    def _nested(self, entry: _Entry, context: Any) -> bytes:
        if entry.items is None:
            assert entry.encode is not None
            return self._writer.element(entry.tag, entry.vr, entry.encode(entry.get(context)))
        return self._writer.element(entry.tag, "SQ", self._sequence(entry, entry.get(context)))

    def elements(self, item: WorklistItem) -> dict[BaseTag, Any]:
        """The answer's elements for ``item``, encoded once per item object (see ``ANSWER_CACHE_SIZE``)."""
        key = id(item)
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None and cached[0] is item:
                self._answers.move_to_end(key)
                return cached[1]
        raw = self._writer.raw
        elements: dict[BaseTag, Any] = {}
        if self._charset_element is not None:
            elements[self._charset_element.tag] = self._charset_element
        for entry in self._entries:
            if entry.items is None:
                assert entry.encode is not None
                value = entry.encode(entry.get(item))
            else:
                value = self._sequence(entry, entry.get(item))
            elements[entry.tag] = raw(entry.tag, entry.vr, value)
        with self._lock:
            self._answers[key] = (item, elements)
            if len(self._answers) > self._cache_size:
                self._answers.popitem(last=False)
        return elements

    def dataset(self, item: WorklistItem) -> Dataset:
        """The answer identifier for ``item``: raw elements pydicom writes as they are."""
        ds = Dataset(dict(self.elements(item)))
        ds.set_original_encoding(self._syntax.implicit_vr, self._syntax.little_endian, self._original_charset)
        return ds
