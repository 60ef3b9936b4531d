"""Ports of the image side: stored studies, MPPS records, the order lookup reconciliation needs, blobs.

The study repository is shaped by the C-STORE hot path: an instance of a study radsync already knows costs one
lookup (``locate``), one insert (``add_instance``) and one update (``touch``) -- a few indexed statements, so
one association can sustain well over 150 instances/s. Everything else (new study, new series, reconciliation)
happens once per study or series.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from radsync.domain.ids import EntityId, PatientId
from radsync.domain.mpps import PerformedProcedureStep
from radsync.domain.reconciliation import ProcedureCandidate, ProcedureMatch, Subject
from radsync.domain.study import (
    BlobRef,
    DecisionRecord,
    InstanceSummary,
    LinkSource,
    SeriesHeader,
    Study,
    StudyHeader,
    StudyLink,
    StudyState,
)


@dataclass(frozen=True, slots=True)
class StudyLocation:
    """A stored study as the hot path needs it; ``series_key`` is set when the asked-for series exists."""

    key: int
    study_instance_uid: str
    state: StudyState
    patient_id: PatientId
    series_key: int | None = None


@dataclass(frozen=True, slots=True)
class StoredInstance:
    key: int
    sop_instance_uid: str
    sha256: str
    blob_key: str
    study_instance_uid: str
    series_instance_uid: str
    study_state: StudyState


@dataclass(frozen=True, slots=True)
class StudySummary:
    study: Study
    series_count: int
    instance_count: int
    quarantined_instances: int
    received_at: dt.datetime
    last_received_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SeriesBrief:
    series_instance_uid: str
    modality: str


@dataclass(frozen=True, slots=True)
class MppsRecord:
    mpps: PerformedProcedureStep
    state: StudyState
    reason: str
    steps: tuple[tuple[str, str], ...]  # (procedure UID, scheduled step ID) it performs


class StudyRepository(Protocol):
    def locate(self, study_instance_uid: str, series_instance_uid: str) -> StudyLocation | None: ...

    def instance(self, sop_instance_uid: str) -> StoredInstance | None: ...

    def add_study(self, study: Study) -> StudyLocation | None:
        """Insert a new study; ``None`` when a concurrent writer inserted it first."""
        ...

    def add_series(self, location: StudyLocation, series: SeriesHeader) -> int:
        """Insert the series (or find it if a concurrent writer did); raise if it is another study's."""
        ...

    def add_instance(
        self, location: StudyLocation, series_key: int, instance: InstanceSummary, quarantine: str = ""
    ) -> bool:
        """Index an instance; ``False`` when its SOP Instance UID is already stored (nothing written)."""
        ...

    def add_duplicate(
        self,
        original: StoredInstance,
        instance: InstanceSummary,
        study_instance_uid: str,
        series_instance_uid: str,
        calling_ae_title: str,
    ) -> bool: ...

    def touch(self, location: StudyLocation, *, quarantined: bool = False) -> None:
        """Note that the study received something now (the clock of "study stable", FIELD-NOTES §18)."""
        ...

    def get(self, study_instance_uid: str) -> Study | None: ...

    def save_header(self, study_instance_uid: str, header: StudyHeader) -> None: ...

    def set_state(self, study_instance_uid: str, state: StudyState, reason: str) -> None: ...

    def add_links(self, study_instance_uid: str, links: Sequence[StudyLink], actor: str) -> None: ...

    def remove_links(
        self, study_instance_uid: str, procedure_uids: Collection[str] | None
    ) -> list[StudyLink]:
        """Remove the links to these procedures (all when ``None``); return what was removed."""
        ...

    def linked_patient_ids(self, location: StudyLocation) -> list[PatientId]: ...

    def waiting_for(
        self, study_uids: Collection[str], accessions: Collection[str], patient_id: str
    ) -> list[tuple[str, StudyState]]:
        """Studies a newly placed order may concern: unassigned or matched ones naming its UIDs or accession
        (top level or request items), and unassigned ones of its patient."""
        ...

    def in_state(self, state: StudyState, *, limit: int, offset: int) -> list[StudySummary]: ...

    def received_since(self, state: StudyState, since: dt.datetime, *, limit: int) -> list[StudySummary]:
        """Studies in ``state`` that received an instance at or after ``since``, newest first."""
        ...

    def summary(self, study_instance_uid: str) -> StudySummary | None: ...

    def record_decision(self, study_instance_uid: str, record: DecisionRecord) -> None: ...

    def history(self, study_instance_uid: str) -> list[DecisionRecord]: ...


class StudyRegrouping(Protocol):
    """Moving stored series between studies (split, grouped procedures); index rows only, never files."""

    def lock(self, study_instance_uid: str) -> None:
        """Hold the study against concurrent C-STOREs until the transaction ends (taken before anything is read)."""
        ...

    def series_of(self, study_instance_uid: str) -> list[SeriesBrief]: ...

    def study_of_series(self, series_instance_uid: str) -> str | None: ...

    def move_series(self, from_study_uid: str, to_study_uid: str, series_uids: Collection[str]) -> int:
        """Move the named series of one study, with their instances, to another; return the instances moved."""
        ...


class MppsRepository(Protocol):
    def get(self, sop_instance_uid: str) -> MppsRecord | None: ...

    def add(self, mpps: PerformedProcedureStep) -> bool:
        """Insert an MPPS (state UNASSIGNED until reconciled); ``False`` when the UID exists."""
        ...

    def save(self, mpps: PerformedProcedureStep) -> None: ...

    def set_state(self, sop_instance_uid: str, state: StudyState, reason: str) -> None: ...

    def link_steps(
        self, sop_instance_uid: str, matches: Sequence[ProcedureMatch], source: LinkSource
    ) -> None: ...

    def waiting_for(
        self, study_uids: Collection[str], accessions: Collection[str], patient_id: str
    ) -> list[str]:
        """Unassigned MPPS that name these UIDs or accessions, or are of this patient."""
        ...

    def waiting_with_studies(
        self, study_uids: Collection[str], accessions: Collection[str], patient_id: str
    ) -> tuple[list[tuple[str, StudyState]], list[str]]:
        """``StudyRepository.waiting_for`` and ``waiting_for`` with the same arguments, in one statement."""
        ...

    def record_decision(self, sop_instance_uid: str, record: DecisionRecord) -> None: ...

    def history(self, sop_instance_uid: str) -> list[DecisionRecord]: ...


class ProcedureLookup(Protocol):
    """Requested procedures as reconciliation candidates (read-only views over orders, patients, steps)."""

    def for_subject(self, subject: Subject) -> list[ProcedureCandidate]:
        """Every procedure the subject's UIDs or accessions name, and its patient ID's open procedures."""
        ...

    def by_accession(self, accession: EntityId) -> list[ProcedureCandidate]: ...

    def by_procedure_uids(self, procedure_uids: Collection[str]) -> list[ProcedureCandidate]: ...

    def suggestions(
        self, subject: Subject, around: dt.date, days: int, limit: int
    ) -> list[ProcedureCandidate]:
        """A bounded pool for ranking.

        Open procedures of the subject's modalities near ``around``, and those of patients with exactly the
        subject's folded name.
        """
        ...


class BlobStore(Protocol):
    """Immutable originals: written once, never overwritten, read back as bytes or a stream."""

    def put(self, data: bytes) -> BlobRef: ...

    def put_stream(self, chunks: Iterator[bytes] | Sequence[bytes]) -> BlobRef: ...

    def open(self, key: str) -> BinaryIO: ...

    def read(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...
