"""Study use cases: record a received instance (C-STORE, STOW-RS), list and inspect the queues.

Sequence for a storage adapter (ARCHITECTURE invariant 2, durable before acknowledge)::

    blob = blobs.put(file_bytes)               # temp file, fsync, atomic link: outside the transaction
    with transaction(engine, clock) as uow:    # one short write transaction
        result = studies.record_instance(uow, InstanceReceived(...header values..., instance=...blob...))
    # committed: now answer the C-STORE (result.outcome -> DIMSE status via the adapter's table)

A known study's later instance costs three indexed statements (locate, insert, touch); reconciliation runs
once per new study, and again only when a new series brings new keys. Later instances follow the study's
current state and links (FIELD-NOTES §1): a study split over two associations twenty minutes apart is one
study.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from radsync.app.forwarding import forward_instance
from radsync.app.patients import file_under_survivor
from radsync.app.ports import OrderKey, UnitOfWork
from radsync.app.reconcile import LinkOrder, ManualReconcile, Reconciler, Split, Unlink
from radsync.app.study_ports import StudyLocation, StudySummary
from radsync.domain.candidates import ScoredCandidate
from radsync.domain.errors import MissingValue
from radsync.domain.ids import PatientId
from radsync.domain.patient import Patient
from radsync.domain.reconciliation import RULE_MANUAL, Decision
from radsync.domain.study import (
    DecisionRecord,
    InstanceOutcome,
    InstanceSummary,
    SeriesHeader,
    Study,
    StudyHeader,
    StudyState,
    UnknownStudy,
    resend_outcome,
)

log = logging.getLogger(__name__)

QUARANTINE_PATIENT_MISMATCH = "patient_id_mismatch"
RULE_KNOWN_STUDY = "known_study"


@dataclass(frozen=True, slots=True)
class InstanceReceived:
    """One stored SOP Instance, as plain values the adapter extracted from its header (no pydicom objects).

    ``header`` carries this instance's patient and study attributes as received; ``series`` its series
    attributes, including the Request Attributes Sequence items; ``instance.blob`` where its bytes are.
    """

    study_instance_uid: str
    series: SeriesHeader
    instance: InstanceSummary
    header: StudyHeader
    calling_ae_title: str = ""


@dataclass(frozen=True, slots=True)
class InstanceRecorded:
    outcome: InstanceOutcome
    study_state: StudyState
    new_study: bool = False
    decision: Decision | None = None  # set when this instance (re)decided the study


@dataclass(frozen=True, slots=True)
class StudyView:
    """A study for the queues: as received, its state and links, counts, candidates, history."""

    summary: StudySummary
    candidates: tuple[ScoredCandidate, ...] = ()
    history: tuple[DecisionRecord, ...] = ()
    patient: Patient | None = None  # a linked study's patient as radsync holds it now (single-study answers)

    @property
    def study(self) -> Study:
        return self.summary.study


def _uuid_uid() -> str:
    """A UUID-derived UID under the 2.25 root (PS3.5 B.2); the composition root passes its own helper."""
    return f"2.25.{uuid.uuid4().int}"


class StudyService:
    def __init__(self, reconciler: Reconciler, new_uid: Callable[[], str] = _uuid_uid) -> None:
        self.reconciler = reconciler
        self.new_uid = new_uid

    def record_instance(self, uow: UnitOfWork, command: InstanceReceived) -> InstanceRecorded:
        """Index a received instance; reconcile its study when new (or newly keyed while unassigned)."""
        _require(command)
        location = uow.studies.locate(command.study_instance_uid, command.series.series_instance_uid)
        if location is not None and location.series_key is not None:  # the hot path: a known series
            quarantine = self._quarantine(uow, location, command.header.patient_id)
            if uow.studies.add_instance(location, location.series_key, command.instance, quarantine):
                self._stored(uow, location, command, quarantine)
                return InstanceRecorded(_stored_outcome(quarantine), location.state)
            return self._resend(uow, command)
        if uow.studies.instance(command.instance.sop_instance_uid) is not None:
            return self._resend(uow, command)  # same SOP Instance UID under another series or study
        if location is None:
            return self._first_of_study(uow, command)
        return self._new_series(uow, location, command)

    def list_studies(
        self,
        uow: UnitOfWork,
        state: StudyState,
        *,
        limit: int = 50,
        offset: int = 0,
        with_candidates: bool = True,
    ) -> list[StudyView]:
        """The Unassigned (or Conflict, or Matched) queue, oldest first, with ranked candidates."""
        summaries = uow.studies.in_state(state, limit=limit, offset=offset)
        return [self._view(uow, s, with_candidates and state is not StudyState.MATCHED) for s in summaries]

    def get_study(self, uow: UnitOfWork, study_instance_uid: str) -> StudyView:
        summary = uow.studies.summary(study_instance_uid)
        if summary is None:
            raise UnknownStudy("no such study", field="study.study_instance_uid")
        view = self._view(uow, summary, summary.study.state is not StudyState.MATCHED)
        return StudyView(view.summary, view.candidates, tuple(uow.studies.history(study_instance_uid)),
                         _current_patient(uow, summary.study))

    def reconcile_manually(self, uow: UnitOfWork, command: ManualReconcile) -> StudyView:
        self.reconciler.reconcile_manually(uow, command)
        return self.get_study(uow, command.study_instance_uid)

    def unlink(self, uow: UnitOfWork, command: Unlink) -> StudyView:
        self.reconciler.unlink(uow, command)
        return self.get_study(uow, command.study_instance_uid)

    def link_order(self, uow: UnitOfWork, command: LinkOrder) -> StudyView:
        """Grouped procedures: the study fulfils a further order."""
        self.reconciler.link_order(uow, command)
        return self.get_study(uow, command.study_instance_uid)

    def split(self, uow: UnitOfWork, command: Split) -> StudyView:
        """Move series to a new study for another order; answers with the new study."""
        study = self.reconciler.split(uow, command, self.new_uid)
        return self.get_study(uow, study.study_instance_uid)

    # -- internals -------------------------------------------------------------------------------------------

    def _first_of_study(self, uow: UnitOfWork, command: InstanceReceived) -> InstanceRecorded:
        header = command.header.with_series(
            command.series.modality, command.series.request_items, command.series.referenced_mpps
        )
        study = Study(command.study_instance_uid, header, StudyState.UNASSIGNED)
        location = uow.studies.add_study(study)
        if location is None:  # another association created it a moment ago: this is a later instance
            location = uow.studies.locate(command.study_instance_uid, command.series.series_instance_uid)
            if location is None:
                raise LookupError("study vanished within the transaction")
            return self._new_series(uow, location, command)
        series_key = uow.studies.add_series(location, command.series)
        uow.studies.add_instance(location, series_key, command.instance)
        file_under_survivor(uow, header.patient_id)  # received under a merged ID: the survivor's (issue 5 §2)
        decision = self.reconciler.decide_study(uow, study, trigger="instance")
        return InstanceRecorded(InstanceOutcome.STORED, decision.state, new_study=True, decision=decision)

    def _new_series(
        self, uow: UnitOfWork, location: StudyLocation, command: InstanceReceived
    ) -> InstanceRecorded:
        if location.series_key is None:
            home = self._split_home(uow, location.study_instance_uid, command.series.series_instance_uid)
            if home is not None:  # a later instance of a series split off this study follows the split
                return self.record_instance(uow, replace(command, study_instance_uid=home))
        series_key = location.series_key or uow.studies.add_series(location, command.series)
        quarantine = self._quarantine(uow, location, command.header.patient_id)
        if not uow.studies.add_instance(location, series_key, command.instance, quarantine):
            return self._resend(uow, command)
        self._stored(uow, location, command, quarantine)
        if quarantine:
            return InstanceRecorded(InstanceOutcome.QUARANTINED, location.state)
        study = uow.studies.get(location.study_instance_uid)
        if study is None:
            raise LookupError("study vanished within the transaction")
        header = study.header.with_series(
            command.series.modality, command.series.request_items, command.series.referenced_mpps
        )
        if header == study.header:
            return InstanceRecorded(InstanceOutcome.STORED, study.state)
        uow.studies.save_header(study.study_instance_uid, header)
        widened = Study(study.study_instance_uid, header, study.state, study.reason, study.links)
        decision: Decision | None = None
        if study.state is StudyState.UNASSIGNED:
            decision = self.reconciler.decide_study(uow, widened, trigger="new_series")
        elif study.state is StudyState.MATCHED:
            decision = self.reconciler.extend_study(uow, widened, trigger="new_series")
        state = (
            decision.state if decision is not None and study.state is StudyState.UNASSIGNED else study.state
        )
        return InstanceRecorded(InstanceOutcome.STORED, state, decision=decision)

    def _stored(
        self, uow: UnitOfWork, location: StudyLocation, command: InstanceReceived, quarantine: str
    ) -> None:
        uow.studies.touch(location, quarantined=bool(quarantine))
        if not quarantine:
            if location.state is StudyState.MATCHED:
                forward_instance(uow, location.study_instance_uid, command.instance.sop_instance_uid)
            return
        uow.studies.record_decision(
            location.study_instance_uid,
            DecisionRecord(
                uow.now(),
                "radsync",
                RULE_KNOWN_STUDY,
                StudyState.CONFLICT.value,
                quarantine,
                {
                    "sop_instance_uid": command.instance.sop_instance_uid,
                    "series_instance_uid": command.series.series_instance_uid,
                    "patient_id": "differs from the study's and from its linked orders'",
                    "effect": "instance stored and quarantined; the study is unchanged",
                },
            ),
        )
        log.warning(
            "instance %s quarantined out of study %s: %s",
            command.instance.sop_instance_uid,
            location.study_instance_uid,
            quarantine,
        )

    def _quarantine(self, uow: UnitOfWork, location: StudyLocation, received: PatientId) -> str:
        """Why an instance must be kept out of its known study: its patient is another (FIELD-NOTES §2)."""
        if not received.value.strip() or not location.patient_id.value.strip():
            return ""  # nothing to contradict: an instance without ID follows its study
        if _same_patient(received, location.patient_id):
            return ""
        if any(_same_patient(received, linked) for linked in uow.studies.linked_patient_ids(location)):
            return ""  # the header carries the corrected patient the study was linked to
        survivor = uow.identities.alias_target(received)  # an identifier merged into the study's patient
        if survivor is not None and (_same_patient(survivor, location.patient_id) or any(
            _same_patient(survivor, linked) for linked in uow.studies.linked_patient_ids(location)
        )):
            return ""
        return QUARANTINE_PATIENT_MISMATCH

    def _split_home(self, uow: UnitOfWork, study_instance_uid: str, series_instance_uid: str) -> str | None:
        """The study a series was split to from ``study_instance_uid`` (directly or by later splits), if any.

        One indexed lookup per new series; the provenance is read from the studies' split decisions.
        """
        home = uow.regrouping.study_of_series(series_instance_uid)
        if home is None or home == study_instance_uid:
            return None
        current = home
        for _ in range(8):  # a chain of splits is short; bounded so a bad history cannot loop
            origin = next(
                (str(r.evidence["split_from"]) for r in uow.studies.history(current)
                 if r.rule == RULE_MANUAL and "split_from" in r.evidence),
                None,
            )
            if origin is None:
                return None
            if origin == study_instance_uid:
                return home
            current = origin
        return None

    def _resend(self, uow: UnitOfWork, command: InstanceReceived) -> InstanceRecorded:
        stored = uow.studies.instance(command.instance.sop_instance_uid)
        if stored is None:
            raise LookupError("instance vanished within the transaction")
        outcome = resend_outcome(stored.sha256, command.instance.blob.sha256)
        if outcome is InstanceOutcome.CONFLICTING_DUPLICATE:
            uow.studies.add_duplicate(
                stored,
                command.instance,
                command.study_instance_uid,
                command.series.series_instance_uid,
                command.calling_ae_title,
            )
            log.warning(
                "SOP Instance %s received again with other content: original kept, copy set aside",
                command.instance.sop_instance_uid,
            )
        return InstanceRecorded(outcome, stored.study_state)

    def _view(self, uow: UnitOfWork, summary: StudySummary, with_candidates: bool) -> StudyView:
        candidates: tuple[ScoredCandidate, ...] = ()
        if with_candidates:
            candidates = self.reconciler.candidates(uow, summary.study, summary.received_at.date())
        return StudyView(summary, candidates)


def _current_patient(uow: UnitOfWork, study: Study) -> Patient | None:
    """The patient of the study's first linked order, read now: corrections and merges show at once."""
    for link in study.links:
        order = uow.orders.find(OrderKey(accession=link.accession))
        if order is not None:
            return uow.patients.get(order.patient_id)
    return None


def _require(command: InstanceReceived) -> None:
    for value, name in (
        (command.study_instance_uid, "study.study_instance_uid"),
        (command.series.series_instance_uid, "series.series_instance_uid"),
        (command.instance.sop_instance_uid, "instance.sop_instance_uid"),
        (command.instance.sop_class_uid, "instance.sop_class_uid"),
    ):
        if not value:
            raise MissingValue(f"{name} missing", field=name)


def _same_patient(a: PatientId, b: PatientId) -> bool:
    if a.value.strip() != b.value.strip():
        return False
    return not (a.issuer.namespace and b.issuer.namespace and a.issuer.namespace != b.issuer.namespace)


def _stored_outcome(quarantine: str) -> InstanceOutcome:
    return InstanceOutcome.QUARANTINED if quarantine else InstanceOutcome.STORED
