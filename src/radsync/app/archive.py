"""The archive's read side: find stored patients, studies, series and instances, with the current truth applied.

What Query/Retrieve (PS3.4 Annex C), and later QIDO-RS and WADO, ask of the stored images. Every record carries
the attributes radsync believes *now* (ARCHITECTURE invariant 5):

* a MATCHED study shows its linked patient's current demographics (the ``patients`` row) and its linked orders'
  accession numbers; a correction to the patient or a relink is visible in the next answer, and costs nothing per
  stored instance, because nothing is copied into the study;
* an UNASSIGNED or CONFLICT study shows its patient and accession as received: radsync has no better truth for it.

A study fulfilling several orders (grouped procedures) is found by any of their accession numbers; its answer shows
the first linked order's accession, and ``orders`` lists all of them for the Request Attributes Sequence.

Matching follows PS3.4 C.2.2.2 through the primitives of ``app.worklist`` (single value, wildcard, list of UIDs,
ranges, empty value, universal). The persistence adapter narrows the candidates with indexed SQL; ``*_matches``
here are the reference semantics applied to every candidate. Quarantined instances are never listed or retrieved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Protocol

from radsync.app.worklist import (
    DateRange,
    Exact,
    IsEmpty,
    TextMatch,
    TimeOfDayRange,
    date_matches,
    name_matches,
    start_matches,
    text_matches,
    values_match,
)
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Sex
from radsync.domain.study import StudyState


class Level(Enum):
    """Query/Retrieve Level (0008,0052), PS3.4 C.6.1.1 / C.6.2.1."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


# -- read model ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Demographics:
    """The patient module attributes radsync applies on the way out (MAPPING.md §8)."""

    patient_id: PatientId = PatientId("")
    name: PersonName = PersonName()
    birth_date: dt.date | None = None
    sex: Sex = Sex.UNKNOWN


@dataclass(frozen=True, slots=True)
class LinkedOrder:
    """One requested procedure a study fulfils: what a Request Attributes Sequence item says about it."""

    accession: EntityId
    procedure_id: str
    procedure_uid: str
    description: str = ""
    step_ids: tuple[str, ...] = ()
    referring_physician: PersonName = PersonName()  # the order's (PV1-8), owned by the RIS (MAPPING.md §8)


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """A stored study as it must be shown now (current truth), plus what it carried when received."""

    study_instance_uid: str
    state: StudyState
    patient: Demographics
    accession: EntityId
    orders: tuple[LinkedOrder, ...]
    received: Demographics
    received_accession: EntityId
    study_date: dt.date | None = None
    study_time: dt.time | None = None
    description: str = ""
    modalities: tuple[str, ...] = ()
    series_count: int = 0
    instance_count: int = 0
    referring_physician: PersonName = PersonName()  # the first linked order's when it names one, else as received
    study_id: str = ""  # as received: the modality's own study number

    @property
    def current_truth_applies(self) -> bool:
        """Whether radsync's records override the header (only for studies matched to orders)."""
        return self.state is StudyState.MATCHED

    def accessions(self) -> tuple[str, ...]:
        """Every accession number the study answers to: all linked orders', or the received one."""
        if self.current_truth_applies:
            return tuple(dict.fromkeys(o.accession.value for o in self.orders if o.accession.value))
        return (self.accession.value,) if self.accession.value else ()


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """A patient as the archive shows it (PATIENT level): current demographics and what is stored for them."""

    patient: Demographics
    study_count: int
    series_count: int
    instance_count: int


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    study: StudyRecord
    series_instance_uid: str
    modality: str = ""
    series_number: int | None = None
    description: str = ""
    instance_count: int = 0


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A stored, non-quarantined SOP Instance; ``blob_key`` names its original bytes."""

    series: SeriesRecord
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    blob_key: str

    @property
    def study(self) -> StudyRecord:
        return self.series.study


# -- the query -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """Matching constraints of one Q/R query, one field per supported key (``None`` = universal matching)."""

    # Patient level
    patient_id: TextMatch | None = None
    patient_issuer: TextMatch | None = None
    patient_name: TextMatch | None = None
    birth_date: DateRange | IsEmpty | None = None
    sex: TextMatch | None = None
    # Study level
    study_instance_uid: TextMatch | None = None
    accession: TextMatch | None = None
    study_date: DateRange | IsEmpty | None = None
    study_time: TimeOfDayRange | IsEmpty | None = None
    modalities: TextMatch | None = None
    study_description: TextMatch | None = None
    referring_physician: TextMatch | None = None  # not indexed: decided by study_matches on the candidates
    study_id: TextMatch | None = None  # not indexed, likewise
    # Series level
    series_instance_uid: TextMatch | None = None
    modality: TextMatch | None = None
    series_number: TextMatch | None = None
    series_description: TextMatch | None = None
    # Instance level
    sop_instance_uid: TextMatch | None = None
    sop_class_uid: TextMatch | None = None
    instance_number: TextMatch | None = None
    # At most this many records are wanted; readers may return ``limit + 1`` to tell the caller there is more.
    limit: int | None = None
    # Whether the Number of ... Related Series / Instances must be known: counting reads the index entries of every
    # stored instance of the answered studies, so it is done only when a query asks for a count.
    counts: bool = True

    def constrained(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in ("limit", "counts") and getattr(self, f.name) is not None]


def patient_matches(query: ArchiveQuery, patient: Demographics) -> bool:
    """Patient-level keys against the demographics shown (PS3.4 C.2.2.2; names as in the worklist)."""
    return (
        (query.patient_id is None or text_matches(query.patient_id, patient.patient_id.value))
        and (query.patient_issuer is None or text_matches(query.patient_issuer, patient.patient_id.issuer.namespace))
        and (query.patient_name is None or name_matches(query.patient_name, patient.name))
        and (query.birth_date is None or date_matches(query.birth_date, patient.birth_date))
        and (query.sex is None or text_matches(query.sex, patient.sex.value))
    )


def study_matches(query: ArchiveQuery, study: StudyRecord) -> bool:
    """Patient- and study-level keys against a study's current truth (the reference semantics)."""
    if not patient_matches(query, study.patient):
        return False
    if query.study_instance_uid is not None and not text_matches(query.study_instance_uid, study.study_instance_uid):
        return False
    if query.accession is not None and not values_match(query.accession, study.accessions() or ("",)):
        return False
    if query.study_date is not None and not date_matches(query.study_date, study.study_date):
        return False
    if query.study_time is not None and not _time_matches(query.study_time, study.study_time):
        return False
    if query.modalities is not None and not values_match(query.modalities, study.modalities or ("",)):
        return False
    if query.referring_physician is not None and not name_matches(query.referring_physician,
                                                                  study.referring_physician):
        return False
    if query.study_id is not None and not text_matches(query.study_id, study.study_id):
        return False
    return query.study_description is None or text_matches(query.study_description, study.description)


def series_matches(query: ArchiveQuery, series: SeriesRecord) -> bool:
    number = "" if series.series_number is None else str(series.series_number)
    return (
        (query.series_instance_uid is None or text_matches(query.series_instance_uid, series.series_instance_uid))
        and (query.modality is None or text_matches(query.modality, series.modality.upper()))
        and (query.series_number is None or text_matches(query.series_number, number))
        and (query.series_description is None or text_matches(query.series_description, series.description))
    )


def instance_matches(query: ArchiveQuery, instance: InstanceRecord) -> bool:
    number = "" if instance.instance_number is None else str(instance.instance_number)
    return (
        (query.sop_instance_uid is None or text_matches(query.sop_instance_uid, instance.sop_instance_uid))
        and (query.sop_class_uid is None or text_matches(query.sop_class_uid, instance.sop_class_uid))
        and (query.instance_number is None or text_matches(query.instance_number, number))
    )


def _time_matches(match: TimeOfDayRange | IsEmpty, value: dt.time | None) -> bool:
    if isinstance(match, IsEmpty):
        return value is None
    if value is None:
        return False
    return start_matches(match, dt.datetime.combine(dt.date(2000, 1, 1), value))


# -- the port and the use cases ------------------------------------------------------------------------------------


class ArchiveReader(Protocol):
    """Port: stored images as records with current truth (adapters/persistence/archive_queries.py)."""

    def find_studies(self, query: ArchiveQuery) -> list[StudyRecord]:
        """Studies matching the patient- and study-level keys, at most ``limit + 1`` when a limit is set."""
        ...

    def find_series(self, query: ArchiveQuery) -> list[SeriesRecord]:
        """Series of the studies named by ``query.study_instance_uid`` matching the series-level keys."""
        ...

    def find_instances(self, query: ArchiveQuery) -> list[InstanceRecord]:
        """Instances of the named studies/series matching the instance-level keys (never quarantined ones)."""
        ...

    def studies(self, study_instance_uids: Collection[str]) -> list[StudyRecord]:
        """The named studies (those stored), with current truth."""
        ...

    def instances_of(
        self,
        study_instance_uids: Collection[str] = (),
        series_instance_uids: Collection[str] = (),
        sop_instance_uids: Collection[str] = (),
    ) -> list[InstanceRecord]:
        """Every non-quarantined instance of the named studies, series or instances, in study/series order."""
        ...


def find_patients(reader: ArchiveReader, query: ArchiveQuery) -> list[PatientRecord]:
    """PATIENT level (Patient Root, PS3.4 C.6.1.1.2): the distinct patients of the matching studies."""
    studies = reader.find_studies(_unlimited(query))
    patients: dict[tuple[str, str], list[StudyRecord]] = {}
    for study in studies:
        key = (study.patient.patient_id.value, study.patient.patient_id.issuer.namespace)
        patients.setdefault(key, []).append(study)
    records = [
        PatientRecord(
            group[0].patient,
            len(group),
            sum(s.series_count for s in group),
            sum(s.instance_count for s in group),
        )
        for group in patients.values()
    ]
    return records if query.limit is None else records[: query.limit + 1]


def find_studies(reader: ArchiveReader, query: ArchiveQuery) -> list[StudyRecord]:
    """STUDY level: matching studies with current truth (PS3.4 C.6.1.1.3 / C.6.2.1.2)."""
    return reader.find_studies(query)


def find_series(reader: ArchiveReader, query: ArchiveQuery) -> list[SeriesRecord]:
    """SERIES level: series of the named study (hierarchical search, PS3.4 C.4.1.3.1.1)."""
    return reader.find_series(query)


def find_instances(reader: ArchiveReader, query: ArchiveQuery) -> list[InstanceRecord]:
    """IMAGE level: instances of the named series."""
    return reader.find_instances(query)


@dataclass(frozen=True, slots=True)
class RetrieveRequest:
    """What a C-GET / C-MOVE identifier names (PS3.4 C.4.2.1.4 / C.4.3.1.3): unique keys at one level."""

    level: Level
    patient_id: str = ""
    study_instance_uids: tuple[str, ...] = ()
    series_instance_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()


def resolve_retrieve(reader: ArchiveReader, request: RetrieveRequest) -> list[InstanceRecord]:
    """The instances a retrieve sends, each with its study's current truth; quarantined ones never."""
    if request.level is Level.PATIENT:
        if not request.patient_id:
            return []
        studies = reader.find_studies(ArchiveQuery(patient_id=Exact(request.patient_id)))
        uids = [s.study_instance_uid for s in studies]
        return reader.instances_of(study_instance_uids=uids) if uids else []
    if request.level is Level.STUDY:
        return reader.instances_of(study_instance_uids=request.study_instance_uids)
    if request.level is Level.SERIES:
        return reader.instances_of(series_instance_uids=request.series_instance_uids)
    return reader.instances_of(sop_instance_uids=request.sop_instance_uids)


def _unlimited(query: ArchiveQuery) -> ArchiveQuery:
    return replace(query, limit=None)


__all__ = [
    "ArchiveQuery",
    "ArchiveReader",
    "Demographics",
    "InstanceRecord",
    "Level",
    "LinkedOrder",
    "PatientRecord",
    "RetrieveRequest",
    "SeriesRecord",
    "StudyRecord",
    "find_instances",
    "find_patients",
    "find_series",
    "find_studies",
    "instance_matches",
    "patient_matches",
    "resolve_retrieve",
    "series_matches",
    "study_matches",
]
