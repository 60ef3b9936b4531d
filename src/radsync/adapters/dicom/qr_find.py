"""Query/Retrieve C-FIND SCP, Patient Root and Study Root (PS3.4 C.4.1, C.6.1, C.6.2): identifier -> records -> answers.

The handler does parse (qr_keys.py) -> use case (app/archive.py) -> encode, nothing else. Answers are built from the
database with the current truth (a matched study shows its patient's current demographics and its orders'
accession), hold only the requested keys plus Query/Retrieve Level and Specific Character Set, per PS3.4
C.4.1.1.3.2. The character set is the calling AE's (``[[dicom_destinations]]`` or ``[[stations]]`` ``charset``,
as in the worklist: charset.py), UTF-8 (ISO_IR 192) for any other caller.

Answers:

* one pending response per match (0xFF00; 0xFF01 when a key with a value was not matched on), then success;
* more matches than ``settings.qr_max_answers``: the first N, then 0xA700 (Refused: Out of Resources);
* C-CANCEL: checked before every answer; the next response is 0xFE00 (Cancel);
* an unreadable identifier, an unknown level, a SERIES/IMAGE query without its parent's unique key: 0xA900;
  the database unreadable or any other error: 0xC000 (unable to process).

Query values (PHI) are logged at DEBUG only.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from radsync.adapters.dicom.charset import DEFAULT_CHARSET, ResponseCharset, response_charset
from radsync.adapters.dicom.elements import ElementWriter, Encode, TransferSyntax
from radsync.adapters.dicom.qr_keys import (
    RETRIEVE_AE_TITLE,
    FindRequest,
    QrKey,
    parse_find,
)
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.dicom.status import InvalidIdentifier, Status, failure
from radsync.app.archive import (
    ArchiveReader,
    Demographics,
    InstanceRecord,
    Level,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    find_instances,
    find_patients,
    find_series,
    find_studies,
)

LOGGER = logging.getLogger(__name__)

QR_FIND_SOP_CLASSES = (
    str(PatientRootQueryRetrieveInformationModelFind),
    str(StudyRootQueryRetrieveInformationModelFind),
)

Response = tuple[Status | Dataset, Dataset | None]


@dataclass(frozen=True, slots=True)
class Match:
    """One answer's context: the patient shown and, below the patient level, the study/series/instance."""

    patient: Demographics
    patient_record: PatientRecord | None = None
    study: StudyRecord | None = None
    series: SeriesRecord | None = None
    instance: InstanceRecord | None = None


def _da(value: dt.date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _tm(value: dt.time | None) -> str:
    if value is None:
        return ""
    return value.strftime("%H%M%S.%f" if value.microsecond else "%H%M%S")


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def _study(get: Callable[[StudyRecord], Any]) -> Callable[[Match], Any]:
    return lambda m: get(m.study) if m.study is not None else ""


def _series(get: Callable[[SeriesRecord], Any]) -> Callable[[Match], Any]:
    return lambda m: get(m.series) if m.series is not None else ""


def _instance(get: Callable[[InstanceRecord], Any]) -> Callable[[Match], Any]:
    return lambda m: get(m.instance) if m.instance is not None else ""


_VALUES: dict[str, Callable[[Match], Any]] = {
    "PatientName": lambda m: m.patient.name.canonical(),
    "PatientID": lambda m: m.patient.patient_id.value,
    "IssuerOfPatientID": lambda m: m.patient.patient_id.issuer.namespace,
    "PatientBirthDate": lambda m: _da(m.patient.birth_date),
    "PatientSex": lambda m: m.patient.sex.value,
    "NumberOfPatientRelatedStudies": lambda m: _count(m.patient_record.study_count if m.patient_record else None),
    "NumberOfPatientRelatedSeries": lambda m: _count(m.patient_record.series_count if m.patient_record else None),
    "NumberOfPatientRelatedInstances": lambda m: _count(
        m.patient_record.instance_count if m.patient_record else None
    ),
    "StudyDate": _study(lambda s: _da(s.study_date)),
    "StudyTime": _study(lambda s: _tm(s.study_time)),
    "AccessionNumber": _study(lambda s: s.accession.value),
    "ModalitiesInStudy": _study(lambda s: list(s.modalities)),
    "ReferringPhysicianName": _study(lambda s: s.referring_physician.canonical()),
    "StudyDescription": _study(lambda s: s.description),
    "StudyInstanceUID": _study(lambda s: s.study_instance_uid),
    "StudyID": _study(lambda s: s.study_id),
    "NumberOfStudyRelatedSeries": _study(lambda s: str(s.series_count)),
    "NumberOfStudyRelatedInstances": _study(lambda s: str(s.instance_count)),
    "Modality": _series(lambda s: s.modality),
    "SeriesDescription": _series(lambda s: s.description),
    "SeriesInstanceUID": _series(lambda s: s.series_instance_uid),
    "SeriesNumber": _series(lambda s: _count(s.series_number)),
    "NumberOfSeriesRelatedInstances": _series(lambda s: str(s.instance_count)),
    "SOPClassUID": _instance(lambda i: i.sop_class_uid),
    "SOPInstanceUID": _instance(lambda i: i.sop_instance_uid),
    "InstanceNumber": _instance(lambda i: _count(i.instance_number)),
    "InstanceAvailability": lambda m: "ONLINE",
}


EXPLICIT_LE = TransferSyntax(implicit_vr=False, little_endian=True)
_CHARSET_TAG = BaseTag(0x00080005)
_LEVEL_TAG = BaseTag(0x00080052)


@lru_cache(maxsize=8)
def _charset(name: str) -> ResponseCharset:
    return response_charset(name)


def answer(
    request: FindRequest,
    match: Match,
    retrieve_ae_title: str,
    syntax: TransferSyntax = EXPLICIT_LE,
    charset: str = DEFAULT_CHARSET,
) -> Dataset:
    """The identifier of one pending C-FIND response: the requested keys only, in ``charset`` (PS3.4 C.4.1.1.3.2).

    Encoded element by element with the worklist's writer (elements.py): a Dataset of raw elements in the
    presentation context's transfer syntax, which pydicom and pynetdicom send as they are (no DataElement per key).
    """
    writer = _writer(syntax)
    encoding = _charset(charset)
    elements: dict[BaseTag, Any] = {_LEVEL_TAG: writer.raw(_LEVEL_TAG, "CS", _ascii(request.level.value))}
    if encoding.specific_character_set is not None:  # ASCII: the default repertoire, no (0008,0005)
        elements[_CHARSET_TAG] = writer.raw(_CHARSET_TAG, "CS", _ascii(encoding.specific_character_set))
    for key in request.requested:
        value = retrieve_ae_title if key is RETRIEVE_AE_TITLE else _VALUES[key.keyword](match)
        tag = BaseTag(key.tag)
        elements[tag] = writer.raw(tag, key.vr, _encoder(syntax, key.vr, charset)(value))
    ds = Dataset(elements)
    ds.set_original_encoding(syntax.implicit_vr, syntax.little_endian, encoding.encodings)
    return ds


def _ascii(text: str) -> bytes:
    data = text.encode("ascii")
    return data + b" " if len(data) % 2 else data


@lru_cache(maxsize=8)
def _writer(syntax: TransferSyntax) -> ElementWriter:
    return ElementWriter(syntax)


@lru_cache(maxsize=256)
def _encoder(syntax: TransferSyntax, vr: str, charset: str) -> Encode:
    return _writer(syntax).value_encoder(vr, _charset(charset))


def matches_for(reader: ArchiveReader, request: FindRequest) -> list[Match]:
    """Run the use case of the request's level and wrap each record as an answer context."""
    query = request.query
    if request.level is Level.PATIENT:
        return [Match(p.patient, patient_record=p) for p in find_patients(reader, query)]
    if request.level is Level.STUDY:
        return [Match(s.patient, study=s) for s in find_studies(reader, query)]
    if request.level is Level.SERIES:
        return [Match(s.study.patient, study=s.study, series=s) for s in find_series(reader, query)]
    return [
        Match(i.study.patient, study=i.study, series=i.series, instance=i) for i in find_instances(reader, query)
    ]


class QueryRetrieveFind:
    """The EVT_C_FIND handler for the Patient Root and Study Root FIND SOP classes.

    Every other C-FIND SOP class (the Modality Worklist) goes to the EVT_C_FIND handler of the ``services`` bound
    alongside: pynetdicom binds one handler per intervention event, so the Q/R handler routes by Affected SOP Class
    UID. The list is the server's own and is read per request, so a service replaced before ``start`` is honoured.
    """

    def __init__(
        self,
        reader: ArchiveReader,
        *,
        max_answers: int,
        retrieve_ae_title: str,
        services: Sequence[DicomService] = (),
        charsets: Mapping[str, str] | None = None,
    ) -> None:
        self._reader = reader
        self._max_answers = max_answers
        self._retrieve_ae_title = retrieve_ae_title
        self._services = services
        self._charsets = dict(charsets or {})  # calling AE title -> answer character set

    def __call__(self, event: Any) -> Iterator[Response]:
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class not in QR_FIND_SOP_CLASSES:
            other = self._other(sop_class)
            if other is None:
                yield failure(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "SOP class not supported"), None
                return
            yield from other(event)
            return
        yield from self._find(event, patient_root=sop_class == QR_FIND_SOP_CLASSES[0])

    def _other(self, sop_class: str) -> Callable[[Any], Iterator[Response]] | None:
        for service in self._services:
            if sop_class in service.sop_classes:
                for event_type, handler in service.handlers:
                    if event_type is evt.EVT_C_FIND and handler is not self:
                        return handler
        return None

    def _find(self, event: Any, *, patient_root: bool) -> Iterator[Response]:
        started = time.perf_counter()
        calling = str(event.assoc.requestor.ae_title).strip()
        peer = event.assoc.requestor.address
        try:
            request = parse_find(event.identifier, patient_root=patient_root, limit=self._max_answers)
        except InvalidIdentifier as exc:
            LOGGER.info("Q/R C-FIND from %s@%s refused: %s", calling, peer, exc)
            yield failure(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
            return
        except Exception:
            LOGGER.warning("Q/R C-FIND from %s@%s refused: identifier undecodable", calling, peer, exc_info=True)
            yield failure(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "identifier could not be decoded"), None
            return
        LOGGER.debug("Q/R query from %s at %s: %s", calling, request.level.value, request.query)
        try:
            found = matches_for(self._reader, request)
        except Exception:
            LOGGER.exception("Q/R C-FIND from %s@%s: the archive could not be read", calling, peer)
            yield failure(Status.UNABLE_TO_PROCESS, "archive database unavailable"), None
            return
        pending = Status.PENDING_WARNING if request.ignored else Status.PENDING
        charset = self._charsets.get(calling, DEFAULT_CHARSET)
        context_syntax = UID(event.context.transfer_syntax)
        syntax = TransferSyntax(context_syntax.is_implicit_VR, context_syntax.is_little_endian)
        sent = 0
        outcome = "complete"
        for match in found:
            if event.is_cancelled:
                outcome = "cancelled"
                yield Status.CANCEL, None
                break
            if sent >= self._max_answers:
                outcome = f"stopped at the cap of {self._max_answers}"
                yield failure(Status.OUT_OF_RESOURCES, f"more than {self._max_answers} matches; narrow the query"), None
                break
            try:
                identifier = answer(request, match, self._retrieve_ae_title, syntax, charset)
            except Exception:
                LOGGER.exception("Q/R C-FIND from %s: could not build answer %d", calling, sent + 1)
                outcome = "failed"
                yield failure(Status.UNABLE_TO_PROCESS, "could not encode an answer"), None
                break
            yield pending, identifier
            sent += 1
        LOGGER.info(
            "Q/R C-FIND (%s) from %s@%s: %d answer(s), %s, %.1f ms%s", request.level.value, calling, peer, sent,
            outcome, (time.perf_counter() - started) * 1000,
            f"; ignored keys with values: {', '.join(request.ignored)}" if request.ignored else "",
        )


__all__ = ["QR_FIND_SOP_CLASSES", "QrKey", "QueryRetrieveFind", "answer", "matches_for"]
