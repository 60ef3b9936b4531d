"""Studies as they arrive from modalities: header as received, series, instance summaries, links to orders.

A study's header is kept exactly as the first instance carried it (ARCHITECTURE invariant 5: immutable
originals); what radsync believes now lives in its reconciliation ``state`` and its ``links`` to requested
procedures. The current patient and order attributes are applied on the way out, never written back into the
header.

One study may fulfil several requested procedures (grouped procedures, IHE PGP / PS3.17 Annex J): the link is
many-to-many, one ``StudyLink`` per requested procedure (MAPPING.md §7).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TypeVar

from radsync.domain.errors import DomainError
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Sex


class StudyState(Enum):
    """Where reconciliation left a study (FIELD-NOTES §1, §2)."""

    MATCHED = "matched"  # linked to one or more requested procedures; later instances follow the links
    UNASSIGNED = "unassigned"  # no safe match: waits in the Unassigned queue with a reason and candidates
    CONFLICT = "conflict"  # its identifiers belong to another patient: quarantined, never merged, no results


class LinkSource(Enum):
    AUTO = "auto"
    MANUAL = "manual"


class InstanceOutcome(Enum):
    """What storing one SOP Instance did (FIELD-NOTES §20: re-sends must be safe)."""

    STORED = "stored"  # new instance, indexed
    IDENTICAL_RESEND = "identical_resend"  # same SOP Instance UID, same bytes: success, nothing changes
    CONFLICTING_DUPLICATE = (
        "conflicting_duplicate"  # same UID, other bytes: original kept, newcomer set aside
    )
    QUARANTINED = "quarantined"  # stored, but its patient differs from the known study's: kept out of it


# Objects that accompany an acquisition but do not say which modality performed it; they never narrow
# which scheduled step a study fulfils (an SR dose report arrives with every CT).
NON_ACQUISITION_MODALITIES = frozenset({"SR", "KO", "PR", "DOC", "REG", "SEG", "RWV", "OT", "PLAN", "FID"})


class UnknownStudy(DomainError):
    """No study with that Study Instance UID is stored."""


@dataclass(frozen=True, slots=True)
class RequestItem:
    """One item of Request Attributes Sequence (0040,0275), or of an MPPS's Scheduled Step Attributes Sequence
    (0040,0270): the keys a modality copied from the worklist item it performed (PS3.3 §10.6)."""

    accession: EntityId = EntityId("")
    requested_procedure_id: str = ""
    scheduled_step_id: str = ""
    study_instance_uid: str = ""

    def is_empty(self) -> bool:
        return not (
            self.accession.value
            or self.requested_procedure_id
            or self.scheduled_step_id
            or self.study_instance_uid
        )

    def names_an_order(self) -> bool:
        """Whether the item carries an order key (accession or Requested Procedure ID), not only UIDs."""
        return bool(self.accession.value or self.requested_procedure_id)


@dataclass(frozen=True, slots=True)
class StudyHeader:
    """Patient and study attributes exactly as received (after value extraction, before any correction)."""

    patient_id: PatientId = PatientId("")
    patient_name: PersonName = PersonName()
    birth_date: dt.date | None = None
    sex: Sex = Sex.UNKNOWN
    accession: EntityId = EntityId("")
    study_date: dt.date | None = None
    study_time: dt.time | None = None
    description: str = ""
    modalities: tuple[str, ...] = ()
    request_items: tuple[RequestItem, ...] = ()
    referenced_mpps: tuple[str, ...] = ()
    referring_physician: PersonName = PersonName()
    study_id: str = ""

    def acquisition_modalities(self) -> frozenset[str]:
        return frozenset(
            m.upper() for m in self.modalities if m and m.upper() not in NON_ACQUISITION_MODALITIES
        )

    def names_an_order(self) -> bool:
        """Whether the header names an order (accession or request items with order keys)."""
        return bool(self.accession.value) or any(item.names_an_order() for item in self.request_items)

    def with_series(
        self, modality: str, items: tuple[RequestItem, ...], mpps: tuple[str, ...]
    ) -> StudyHeader:
        """The header widened by a further series: modalities, request items and MPPS references add up."""
        return replace(
            self,
            modalities=_union(self.modalities, (modality,) if modality else ()),
            request_items=_union(self.request_items, tuple(i for i in items if not i.is_empty())),
            referenced_mpps=_union(self.referenced_mpps, mpps),
        )


T = TypeVar("T")


def _union(first: tuple[T, ...], more: tuple[T, ...]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(first + more))


@dataclass(frozen=True, slots=True)
class SeriesHeader:
    """Series-level attributes; the Request Attributes Sequence lives at series level in the images."""

    series_instance_uid: str
    modality: str = ""
    series_number: int | None = None
    description: str = ""
    request_items: tuple[RequestItem, ...] = ()
    referenced_mpps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where the original bytes of an instance are stored, and what they are."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """What radsync indexes about a stored SOP Instance; the file itself stays as received."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob: BlobRef
    instance_number: int | None = None


@dataclass(frozen=True, slots=True)
class StudyLink:
    """A study fulfils (part of) a requested procedure, named by its Study Instance UID (procedure_uid)."""

    procedure_uid: str
    accession: EntityId
    procedure_id: str
    step_ids: tuple[str, ...]
    source: LinkSource
    rule: str


@dataclass(frozen=True, slots=True)
class Study:
    study_instance_uid: str
    header: StudyHeader
    state: StudyState
    reason: str = ""
    links: tuple[StudyLink, ...] = ()

    def linked_procedures(self) -> frozenset[str]:
        return frozenset(link.procedure_uid for link in self.links)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One entry of a study's (or MPPS's) reconciliation history: who decided what, when, on what evidence."""

    at: dt.datetime
    actor: str
    rule: str
    outcome: str
    reason: str
    evidence: dict[str, object] = field(default_factory=dict)


def resend_outcome(stored_sha256: str, received_sha256: str) -> InstanceOutcome:
    """Classify a second C-STORE of a known SOP Instance UID.

    Identical bytes change nothing; other bytes never replace the original, which someone may already have
    read (FIELD-NOTES §20).
    """
    if stored_sha256 == received_sha256:
        return InstanceOutcome.IDENTICAL_RESEND
    return InstanceOutcome.CONFLICTING_DUPLICATE
