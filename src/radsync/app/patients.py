"""Patient use cases: demographic updates with the out-of-order guard, merges and identifier changes, corrections
through the API, and the patient history (issue 5 items 1, 2, 5).

Every change is written to the patient history in the caller's unit of work, so the change and its audit
commit together. Worklist items, Q/R answers and retrieved objects read the patient row at egress (current
truth, ARCHITECTURE invariant 5): one row update is the whole cost of a correction, whatever the number of
stored instances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from radsync.app.commands import MergePatient
from radsync.app.outbound import Addressed
from radsync.app.outbox import new_control_id
from radsync.app.patient_ports import HistoryEntry, MovedRecords
from radsync.app.ports import UnitOfWork
from radsync.domain.errors import InvalidValue, UnknownPatient
from radsync.domain.ids import Issuer, PatientId
from radsync.domain.patient import Patient, PatientUpdate
from radsync.domain.patient_identity import (
    IdentityChange,
    MergePlan,
    Resolved,
    demographic_changes,
    identifier_text,
    plan_merge,
)
from radsync.domain.reconciliation import Subject

if TYPE_CHECKING:
    from radsync.app.reconcile import Reconciler

log = logging.getLogger(__name__)

PATIENT_MESSAGE = "ADT^A08"
IDENTITY_MESSAGES = {"A40": "ADT^A40", "A47": "ADT^A47"}


@dataclass(frozen=True, slots=True)
class CorrectPatient:
    """An operator corrects demographics through the API; ``actor`` is who (X-Radsync-User or the body)."""

    value: str  # the patient ID as the operator gives it
    issuer: str | None  # its issuer namespace; None: any (refused when several patients share the ID)
    update: PatientUpdate
    actor: str


@dataclass(frozen=True, slots=True)
class PatientView:
    """A patient as the API shows it: current record, aliases, and whether it was found through an alias."""

    patient: Patient
    aliases: list[dict[str, str]]
    resolved_from: PatientId | None = None
    history: list[dict[str, Any]] | None = None


def apply_update(uow: UnitOfWork, update: PatientUpdate, *, actor: str = "") -> Patient:
    """Apply demographics (ADT A01/A04/A05/A08/A31, the PID of ORM/OMI, an API correction).

    An identifier that is an alias is applied to the surviving patient. An update older (by source time)
    than the one last applied changes nothing and is recorded as stale.
    """
    if not update.id.value:
        raise InvalidValue("patient identifier missing", field="patient.id")
    current = uow.patients.get(update.id)
    if current is None:
        survivor = uow.identities.alias_target(update.id)  # one indexed look-up, for unknown identifiers only
        if survivor is not None:
            current = uow.patients.get(survivor)
            update = replace(update, id=survivor)
    if update.is_stale(current):
        assert current is not None
        uow.identities.record(current.id, HistoryEntry(
            "demographics.stale",
            old={"source_time": _iso(current.source_time)},
            new={"source_time": _iso(update.source_time), "ignored": sorted(update.values)},
            actor=actor, message_id=uow.message_id, source_time=update.source_time,
        ))
        log.info("patient update older than the last applied one ignored (message %s)", uow.message_id)
        return current
    patient = update.apply_to(current)
    if patient == current:
        return patient
    uow.patients.save(patient)
    old, new = demographic_changes(current, patient)
    if current is None or old or new:
        kind = "patient.created" if current is None else "demographics.updated"
        uow.identities.record(patient.id, HistoryEntry(kind, old, new, actor, uow.message_id, update.source_time))
    return patient


class PatientService:
    """Merges, corrections and history; ``reconciler`` re-decides studies a merge moved (None: leave them)."""

    def __init__(self, reconciler: Reconciler | None = None) -> None:
        self._reconciler = reconciler

    def update(self, uow: UnitOfWork, update: PatientUpdate) -> Patient:
        return apply_update(uow, update)

    def merge(self, uow: UnitOfWork, command: MergePatient) -> MergePlan:
        """Move everything of the prior identifier to the survivor, atomically (the caller's unit of work)."""
        prior_id, survivor_id = command.prior, command.survivor.id
        if not prior_id.value.strip():
            raise InvalidValue("prior patient identifier (MRG-1) missing", field="merge.prior_id")
        if not survivor_id.value.strip():
            raise InvalidValue("patient identifier missing", field="patient.id")
        prior, survivor = self._resolve(uow, prior_id), self._resolve(uow, survivor_id)
        plan = plan_merge(prior_id, survivor_id, prior, survivor)
        kind = "merge" if command.change is IdentityChange.MERGE else "identifier.changed"
        if plan is MergePlan.REPEATED:
            log.info("merge repeated (message %s): nothing to do", uow.message_id)
            return plan
        target = survivor.current or survivor_id
        moved = MovedRecords()
        detail: dict[str, Any] = {"prior": identifier_text(prior_id)}
        if plan is MergePlan.RENAME:
            assert prior.current is not None
            moved = uow.identities.rename(prior.current, target)
        elif plan is MergePlan.MERGE:
            assert prior.current is not None
            old_record = uow.patients.get(prior.current)
            detail["prior_demographics"] = demographic_changes(None, old_record)[1] if old_record else {}
            moved = uow.identities.move_everything(prior.current, target)
        patient = apply_update(uow, replace(command.survivor, id=target))
        if plan is MergePlan.ALIAS_ONLY:
            moved = uow.identities.move_received(prior_id, patient.id)
        uow.identities.add_alias(prior_id, patient.id, command.change.value, uow.message_id)
        entry_kind = "alias.added" if plan is MergePlan.ALIAS_ONLY else kind
        uow.identities.record(patient.id, HistoryEntry(
            entry_kind,
            old=detail,
            new={"patient_id": identifier_text(patient.id), "moved": moved.as_dict(), "plan": plan.value},
            message_id=uow.message_id,
        ))
        self._reconcile_moved(uow, moved)
        event = "A40" if command.change is IdentityChange.MERGE else "A47"
        for destination in uow.outbox.destinations("patient"):
            address = Addressed(destination, new_control_id(), uow.now())
            payload = uow.wire.identity_change(patient, prior_id, event, address)
            uow.outbox.enqueue(destination, IDENTITY_MESSAGES[event], payload, address.control_id, None)
        log.info("patient %s (%s): %s", kind, plan.value, moved.as_dict())
        return plan

    def correct(self, uow: UnitOfWork, command: CorrectPatient) -> PatientView:
        """Demographics corrected by an operator: audited with the user, shown at once, announced as ADT A08.

        The source time is left as it is: the next message from the RIS, whatever its time, still applies.
        """
        view = self.view(uow, command.value, command.issuer)
        update = replace(command.update, id=view.patient.id, source_time=None)
        patient = apply_update(uow, update, actor=command.actor)
        if patient != view.patient:
            self._announce(uow, patient)
        return replace(view, patient=patient)

    def view(self, uow: UnitOfWork, value: str, issuer: str | None, *, with_history: bool = False) -> PatientView:
        """The patient with ID ``value`` (and ``issuer``), or the survivor it was merged into."""
        found, via_alias = uow.identities.identify(value, issuer)
        if not found:
            raise UnknownPatient("no patient has that identifier", field="patient.id")
        if len(found) > 1:
            raise InvalidValue("several patients have that identifier; give its issuer", field="patient.issuer")
        patient = uow.patients.get(found[0])
        if patient is None:
            raise UnknownPatient("no patient has that identifier", field="patient.id")
        resolved_from = PatientId(value, Issuer(issuer or "")) if via_alias else None
        history = uow.identities.history(patient.id) if with_history else None
        return PatientView(patient, uow.identities.aliases(patient.id), resolved_from, history)

    # -- internals -------------------------------------------------------------------------------------------

    def _resolve(self, uow: UnitOfWork, pid: PatientId) -> Resolved:
        patient = uow.patients.get(pid)
        if patient is not None:
            return Resolved(patient.id)
        survivor = uow.identities.alias_target(pid)
        return Resolved(survivor, via_alias=True) if survivor is not None else Resolved(None)

    def _reconcile_moved(self, uow: UnitOfWork, moved: MovedRecords) -> None:
        """Studies and MPPS that moved and are not MATCHED are decided again, now as the survivor's."""
        if self._reconciler is None:
            return
        for uid in moved.study_uids:
            study = uow.studies.get(uid)
            if study is not None:
                self._reconciler.decide_study(uow, study, trigger="patient.merge")
        for uid in moved.mpps_uids:
            record = uow.mpps.get(uid)
            if record is not None:
                self._reconciler.decide_mpps(uow, record.mpps, (record.state, record.reason), trigger="patient.merge")

    def _announce(self, uow: UnitOfWork, patient: Patient) -> None:
        """ADT^A08 with the current demographics to every destination subscribed to ``patient``."""
        for destination in uow.outbox.destinations("patient"):
            address = Addressed(destination, new_control_id(), uow.now())
            payload = uow.wire.patient_update(patient, address)
            uow.outbox.enqueue(destination, PATIENT_MESSAGE, payload, address.control_id, None)


def resolved_subject(uow: UnitOfWork, subject: Subject) -> Subject:
    """A study or MPPS received under an alias is reconciled as the surviving patient's (issue 5 item 2)."""
    if not subject.patient_id.value.strip():
        return subject
    survivor = uow.identities.alias_target(subject.patient_id)
    return replace(subject, patient_id=survivor) if survivor is not None else subject


def file_under_survivor(uow: UnitOfWork, received: PatientId) -> PatientId | None:
    """A study that arrived under a merged (alias) identifier is keyed to the survivor, as the merge keyed the
    studies waiting then (``move_received``; the received ID stays in the study's details), so C-FIND and the
    ops API find it under the survivor and a retrieved copy names the survivor. Returns the survivor, if any."""
    if not received.value.strip():
        return None
    survivor = uow.identities.alias_target(received)
    if survivor is not None:
        uow.identities.move_received(received, survivor)
    return survivor


def _iso(value: object) -> str | None:
    return value.isoformat() if value is not None else None  # type: ignore[attr-defined]
