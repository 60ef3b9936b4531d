"""Reconciliation use cases: decide and apply a study's (or MPPS's) links; manual link, unlink; late orders.

Every decision is written to the subject's history with its rule, outcome, reason and evidence, and every
order it touches gets a timeline entry (ARCHITECTURE invariant 6). A CONFLICT links nothing and moves no order
on, so it can never trigger results to the RIS (FIELD-NOTES §2). Logs carry UIDs, states and reason codes
only: no names, IDs or birth dates above DEBUG.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace

from radsync.app.corrections import LinkCorrection
from radsync.app.forwarding import forward_study
from radsync.app.patients import file_under_survivor, resolved_subject
from radsync.app.ports import OrderKey, TimelineEntry, UnitOfWork
from radsync.app.progress import Target, advance, constant, images_received
from radsync.domain.candidates import ScoredCandidate, rank
from radsync.domain.errors import IdentityConflict, InvalidValue, MissingValue, UnknownOrder
from radsync.domain.identity import Reason
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.mpps import PerformedProcedureStep
from radsync.domain.order import ImagingOrder
from radsync.domain.reconciliation import (
    RULE_MANUAL,
    Decision,
    ProcedureCandidate,
    ReconciliationPolicy,
    Subject,
    manual_decision,
    reconcile,
)
from radsync.domain.study import DecisionRecord, LinkSource, Study, StudyLink, StudyState, UnknownStudy

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "radsync"
RULE_SPLIT = "split"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")  # PS3.5 9.1
SUGGESTION_POOL = 200  # open procedures looked at when ranking candidates for one study


@dataclass(frozen=True, slots=True)
class ManualReconcile:
    """An operator says: this study belongs to the order with this accession (issue 3 §5)."""

    study_instance_uid: str
    accession: EntityId
    actor: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Unlink:
    """Undo links of a study: to the order with ``accession`` only, or all of them when it is ``None``."""

    study_instance_uid: str
    actor: str
    reason: str = ""
    accession: EntityId | None = None


@dataclass(frozen=True, slots=True)
class LinkOrder:
    """Grouped procedures: the study fulfils this further order too (refused if it is another patient's)."""

    study_instance_uid: str
    accession: EntityId
    actor: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Split:
    """Move the chosen series to a new study that fulfils the order with ``accession``.

    ``new_study_instance_uid`` empty: one is generated. The files are not touched; the new UID is applied at
    egress with the Original Attributes Sequence.
    """

    study_instance_uid: str
    series_instance_uids: tuple[str, ...]
    accession: EntityId
    actor: str
    reason: str = ""
    new_study_instance_uid: str = ""


class Reconciler:
    def __init__(self, policy: ReconciliationPolicy | None = None) -> None:
        self.policy = policy or ReconciliationPolicy()

    # -- studies ---------------------------------------------------------------------------------------------

    def decide_study(self, uow: UnitOfWork, study: Study, *, trigger: str) -> Decision:
        """Run the rules for a new or unassigned study and apply the outcome.

        Re-running for a study that stays UNASSIGNED for the same reason writes nothing (no history noise).
        """
        subject = resolved_subject(uow, Subject.of_study(study.study_instance_uid, study.header))
        decision = reconcile(subject, uow.procedures.for_subject(subject), self.policy)
        if (decision.state, decision.reason) == (study.state, study.reason) and not decision.matches:
            return decision
        uid = study.study_instance_uid
        uow.studies.set_state(uid, decision.state, decision.reason)
        evidence = decision.evidence() | {"trigger": trigger}
        if decision.state is StudyState.MATCHED:
            evidence["progress"] = self._link_study(uow, uid, decision, SYSTEM_ACTOR, LinkSource.AUTO)
        elif decision.state is StudyState.CONFLICT:
            self._note(
                uow,
                decision.conflicts,
                "study.conflict",
                "a study names this order under another patient",
                {"study_instance_uid": uid, "reason": decision.reason},
            )
        self._record_study(uow, uid, decision, SYSTEM_ACTOR, evidence)
        return decision

    def extend_study(self, uow: UnitOfWork, study: Study, *, trigger: str) -> Decision | None:
        """A matched study gained keys (new series, late order): add links, never remove, never re-decide."""
        subject = resolved_subject(uow, Subject.of_study(study.study_instance_uid, study.header))
        decision = reconcile(subject, uow.procedures.for_subject(subject), self.policy)
        new = tuple(m for m in decision.matches if m.candidate.procedure_uid not in study.linked_procedures())
        if decision.state is not StudyState.MATCHED or not new:
            return None
        added = replace(decision, matches=new)
        evidence = added.evidence() | {"trigger": trigger}
        evidence["progress"] = self._link_study(
            uow, study.study_instance_uid, added, SYSTEM_ACTOR, LinkSource.AUTO
        )
        self._record_study(uow, study.study_instance_uid, added, SYSTEM_ACTOR, evidence)
        return added

    def reconcile_manually(self, uow: UnitOfWork, command: ManualReconcile) -> Study:
        """Link the study to the order with ``command.accession`` (and so to that order's patient)."""
        study = self._study(uow, command.study_instance_uid)
        procedures = self._order_procedures(uow, command.accession, study)
        return self._link_manually(uow, study, procedures, command.actor, command.reason, "reconciled")

    def link_order(self, uow: UnitOfWork, command: LinkOrder) -> Study:
        """Grouped procedures: link a further order; refused (``IdentityConflict``) when the order is another
        patient's than the orders the study is linked to already. An unlinked study takes the order's patient,
        as with ``reconcile_manually``."""
        study = self._study(uow, command.study_instance_uid)
        procedures = self._order_procedures(uow, command.accession, study)
        self._require_same_patient(uow, study, procedures)
        return self._link_manually(uow, study, procedures, command.actor, command.reason, "linked")

    def split(self, uow: UnitOfWork, command: Split, new_uid: Callable[[], str]) -> Study:
        """Move the chosen series to a new study linked to the order; returns the new study.

        The order's link, if the original study had it, moves along when the original keeps another link.
        Both studies' histories record the split (who, why, which series, old and new links). The study is
        locked first, so a C-STORE into a series being moved waits and then follows the split.
        """
        uow.regrouping.lock(command.study_instance_uid)
        study = self._study(uow, command.study_instance_uid)
        chosen = tuple(dict.fromkeys(u.strip() for u in command.series_instance_uids if u.strip()))
        if not chosen:
            raise MissingValue("name at least one series to move", field="series.series_instance_uid")
        present = uow.regrouping.series_of(study.study_instance_uid)
        unknown = set(chosen) - {s.series_instance_uid for s in present}
        if unknown:
            raise InvalidValue("a series named is not part of this study", field="series.series_instance_uid")
        if len(chosen) == len(present):
            raise InvalidValue(
                "a split must leave at least one series in the study; link or unlink orders instead",
                field="series.series_instance_uid",
            )
        target = command.new_study_instance_uid.strip() or new_uid()
        if len(target) > 64 or not _UID.match(target):
            raise InvalidValue("not a valid UID", field="study.study_instance_uid")
        if uow.studies.get(target) is not None:
            raise IdentityConflict("a study with that Study Instance UID exists", field="study.study_instance_uid")
        procedures = self._order_procedures(uow, command.accession, study)
        self._require_same_patient(uow, study, procedures)
        correction = LinkCorrection(uow).affects(procedures)
        moved_modalities = tuple(
            dict.fromkeys(s.modality for s in present if s.series_instance_uid in chosen and s.modality)
        )
        kept_modalities = tuple(
            dict.fromkeys(s.modality for s in present if s.series_instance_uid not in chosen and s.modality)
        )
        header = replace(study.header, modalities=moved_modalities, request_items=())
        if uow.studies.add_study(Study(target, header, StudyState.UNASSIGNED, RULE_SPLIT)) is None:
            raise IdentityConflict("a study with that Study Instance UID exists", field="study.study_instance_uid")
        moved = uow.regrouping.move_series(study.study_instance_uid, target, chosen)
        uow.studies.save_header(study.study_instance_uid, replace(study.header, modalities=kept_modalities))
        order_uids = {p.procedure_uid for p in procedures} & study.linked_procedures()
        if order_uids and len(study.linked_procedures() - order_uids) > 0:
            uow.studies.remove_links(study.study_instance_uid, order_uids)
        new_study = Study(target, header, StudyState.UNASSIGNED, RULE_SPLIT)
        subject = Subject.of_study(target, header)
        decision = manual_decision(subject, tuple(procedures), self.policy, command.actor)
        uow.studies.set_state(target, StudyState.MATCHED, "")
        evidence = decision.evidence() | {
            "why": command.reason,
            "split_from": study.study_instance_uid,
            "series": list(chosen),
            "instances_moved": moved,
        }
        evidence["progress"] = self._link_study(
            uow, target, decision, command.actor, LinkSource.MANUAL, reason=command.reason
        )
        self._record_study(uow, new_study.study_instance_uid, decision, command.actor, evidence)
        after = self._study(uow, study.study_instance_uid)
        uow.studies.record_decision(
            study.study_instance_uid,
            DecisionRecord(
                uow.now(),
                command.actor,
                RULE_SPLIT,
                after.state.value,
                RULE_SPLIT,
                {
                    "why": command.reason,
                    "split_to": target,
                    "series": list(chosen),
                    "instances_moved": moved,
                    "accession": command.accession.value,
                    "links": {"old": _accessions(study), "new": _accessions(after)},
                },
            ),
        )
        correction.report(study_instance_uid=target, change="split", actor=command.actor, why=command.reason)
        log.info("study %s split: %d series (%d instances) to %s", study.study_instance_uid, len(chosen), moved,
                 target)
        return self._study(uow, target)

    def _link_manually(
        self,
        uow: UnitOfWork,
        study: Study,
        procedures: tuple[ProcedureCandidate, ...],
        actor: str,
        reason: str,
        change: str,
    ) -> Study:
        subject = Subject.of_study(study.study_instance_uid, study.header)
        decision = manual_decision(subject, procedures, self.policy, actor)
        new = tuple(m for m in decision.matches if m.candidate.procedure_uid not in study.linked_procedures())
        if not new and study.state is StudyState.MATCHED:
            return study  # already linked: a repeated request changes nothing
        correction = LinkCorrection(uow).affects(m.candidate for m in new)
        decision = replace(decision, matches=new)
        uow.studies.set_state(study.study_instance_uid, StudyState.MATCHED, "")
        evidence = decision.evidence() | {"why": reason, "previous_state": study.state.value}
        evidence["progress"] = self._link_study(
            uow, study.study_instance_uid, decision, actor, LinkSource.MANUAL, reason=reason
        )
        after = self._study(uow, study.study_instance_uid)
        evidence["links"] = {"old": _accessions(study), "new": _accessions(after)}
        self._record_study(uow, study.study_instance_uid, decision, actor, evidence)
        correction.report(study_instance_uid=study.study_instance_uid, change=change, actor=actor, why=reason)
        return after

    def _require_same_patient(
        self, uow: UnitOfWork, study: Study, procedures: Collection[ProcedureCandidate]
    ) -> None:
        if not study.links:
            return
        linked = uow.procedures.by_procedure_uids([link.procedure_uid for link in study.links])
        patients = [p.patient.id for p in linked]
        for p in procedures:
            if not any(_same_patient(p.patient.id, q) for q in patients):
                raise IdentityConflict(
                    "that order belongs to another patient than the orders this study is linked to",
                    field="patient.id",
                )

    def unlink(self, uow: UnitOfWork, command: Unlink) -> Study:
        """Remove links; a study left without any goes back to UNASSIGNED (reason ``unlinked``).

        Step statuses stay as they are: the status table has no way back from COMPLETED, and the acquisition
        did happen. The order timelines say what was undone.
        """
        study = self._study(uow, command.study_instance_uid)
        uids = None
        if command.accession is not None:
            uids = {
                link.procedure_uid for link in study.links if link.accession.value == command.accession.value
            }
            if not uids:
                raise UnknownOrder("the study is not linked to that order", field="order.accession")
        correction = LinkCorrection(uow).affects(
            uow.procedures.by_procedure_uids(
                [link.procedure_uid for link in study.links if uids is None or link.procedure_uid in uids]
            )
        )
        removed = uow.studies.remove_links(study.study_instance_uid, uids)
        if not removed:
            return study
        remaining = len(study.links) - len(removed)
        state = StudyState.MATCHED if remaining else StudyState.UNASSIGNED
        reason = "" if remaining else Reason.UNLINKED
        uow.studies.set_state(study.study_instance_uid, state, reason)
        unlinked = [
            {"procedure_uid": link.procedure_uid, "accession": link.accession.value} for link in removed
        ]
        uow.studies.record_decision(
            study.study_instance_uid,
            DecisionRecord(
                uow.now(),
                command.actor,
                RULE_MANUAL,
                state.value,
                reason,
                {
                    "unlinked": unlinked,
                    "why": command.reason,
                    "remaining_links": remaining,
                    "links": {
                        "old": _accessions(study),
                        "new": _accessions(self._study(uow, study.study_instance_uid)),
                    },
                },
            ),
        )
        correction.report(
            study_instance_uid=study.study_instance_uid,
            change="unlinked",
            actor=command.actor,
            why=command.reason,
            kind="study.unlinked",
        )
        log.info(
            "study %s unlinked from %d procedure(s); now %s",
            study.study_instance_uid,
            len(removed),
            state.value,
        )
        return self._study(uow, study.study_instance_uid)

    def candidates(
        self, uow: UnitOfWork, study: Study, received_on: dt.date | None = None
    ) -> tuple[ScoredCandidate, ...]:
        """Ranked, explained candidate orders for a study in the queue (near its study date, else arrival)."""
        subject = Subject.of_study(study.study_instance_uid, study.header)
        around = study.header.study_date or received_on
        pool = uow.procedures.for_subject(subject)
        if around is not None:
            pool += uow.procedures.suggestions(
                subject, around, self.policy.candidate_window_days, SUGGESTION_POOL
            )
        return rank(
            subject, pool, limit=self.policy.candidate_limit, window_days=self.policy.candidate_window_days
        )

    # -- MPPS ------------------------------------------------------------------------------------------------

    def decide_mpps(
        self,
        uow: UnitOfWork,
        mpps: PerformedProcedureStep,
        previous: tuple[StudyState, str] | None,
        *,
        trigger: str,
    ) -> Decision:
        """Link an MPPS to the steps it performs (MAPPING.md §4.2) and move them on; an unscheduled or unknown
        MPPS stays UNASSIGNED, like an unmatched study."""
        subject = resolved_subject(uow, Subject.of_mpps(mpps))
        decision = reconcile(subject, uow.procedures.for_subject(subject), self.policy)
        if previous is not None and (decision.state, decision.reason) == previous and not decision.matches:
            return decision
        uid = mpps.sop_instance_uid
        uow.mpps.set_state(uid, decision.state, decision.reason)
        evidence = decision.evidence() | {"trigger": trigger}
        if decision.state is StudyState.MATCHED:
            uow.mpps.link_steps(uid, decision.matches, LinkSource.AUTO)
            evidence["progress"] = advance(
                uow,
                [Target(m.candidate, m.step_ids) for m in decision.matches],
                constant(mpps.step_event()),
                kind=f"mpps.{mpps.status.name.lower()}",
                summary=f"MPPS {mpps.status.value}",
                detail={"mpps_sop_instance_uid": uid, "rule": decision.rule},
            )
        elif decision.state is StudyState.CONFLICT:
            self._note(
                uow,
                decision.conflicts,
                "mpps.conflict",
                "an MPPS names this order under another patient",
                {"mpps_sop_instance_uid": uid, "reason": decision.reason},
            )
        uow.mpps.record_decision(
            uid,
            DecisionRecord(
                uow.now(), SYSTEM_ACTOR, decision.rule, decision.state.value, decision.reason, evidence
            ),
        )
        log.info("MPPS %s %s (rule %s %s)", uid, decision.state.value, decision.rule, decision.reason)
        return decision

    # -- late orders -----------------------------------------------------------------------------------------

    def on_order_placed(self, uow: UnitOfWork, order: ImagingOrder) -> list[str]:
        """Late ORM: studies and MPPS that were waiting for this order reconcile at once.

        Looked up by the order's procedure UIDs and accession (top level and request items) and, for
        unassigned ones, by patient ID: a few indexed statements, so order intake stays fast. Returns the UIDs
        re-decided.
        """
        uids = [p.study_instance_uid for p in order.procedures if p.study_instance_uid]
        accessions = [order.accession.value] if order.accession.value else []
        patient_id = order.patient_id.value.strip()
        touched: list[str] = []
        # One statement for both lookups; the MPPS one is repeated only when studies were re-decided, since a
        # study decision may change which MPPS are still waiting.
        waiting_studies, waiting_mpps = uow.mpps.waiting_with_studies(uids, accessions, patient_id)
        for study_uid, state in waiting_studies:
            study = uow.studies.get(study_uid)
            if study is None:
                continue
            if state is StudyState.UNASSIGNED:
                decision = self.decide_study(uow, study, trigger="order_placed")
                changed = decision.state is not StudyState.UNASSIGNED or decision.reason != study.reason
            elif set(uids) <= study.linked_procedures():
                changed = False
            else:
                changed = self.extend_study(uow, study, trigger="order_placed") is not None
            if changed:
                touched.append(study_uid)
        if waiting_studies:
            waiting_mpps = uow.mpps.waiting_for(uids, accessions, patient_id)
        for mpps_uid in waiting_mpps:
            record = uow.mpps.get(mpps_uid)
            if record is None:
                continue
            decision = self.decide_mpps(
                uow, record.mpps, (record.state, record.reason), trigger="order_placed"
            )
            if decision.state is not StudyState.UNASSIGNED:
                touched.append(mpps_uid)
        return touched

    def sweep(self, uow: UnitOfWork, *, since: dt.datetime, limit: int = 100) -> list[str]:
        """Re-run the rules over unassigned studies that received images since ``since``; returns those matched.

        A safety net for a race PostgreSQL allows: an order committed while a new study's transaction was
        open. Only recent studies can be in that race; old unassigned ones wait for an operator, and never
        crowd the recent ones out of the sweep. A study an operator unlinked is left alone: re-running the rules
        would link it straight back to the order its header names (or, split off, to the original's order).
        """
        changed = []
        for summary in uow.studies.received_since(StudyState.UNASSIGNED, since, limit=limit):
            if summary.study.reason == Reason.UNLINKED:
                continue
            # the same race with a merge: a study created under the prior ID while the merge was in flight
            file_under_survivor(uow, summary.study.header.patient_id)
            decision = self.decide_study(uow, summary.study, trigger="sweep")
            if decision.state is not StudyState.UNASSIGNED:
                changed.append(summary.study.study_instance_uid)
        return changed

    # -- internals -------------------------------------------------------------------------------------------

    def _study(self, uow: UnitOfWork, study_instance_uid: str) -> Study:
        study = uow.studies.get(study_instance_uid)
        if study is None:
            raise UnknownStudy("no such study", field="study.study_instance_uid")
        return study

    def _order_procedures(
        self, uow: UnitOfWork, accession: EntityId, study: Study
    ) -> tuple[ProcedureCandidate, ...]:
        procedures = uow.procedures.by_accession(accession)
        if not procedures:
            raise UnknownOrder("no order has that accession number", field="order.accession")
        if len({p.order_identity() for p in procedures}) > 1:
            own = [p for p in procedures if p.patient.id.value == study.header.patient_id.value.strip()]
            if len({p.order_identity() for p in own}) != 1:
                raise InvalidValue(
                    "that accession number names several orders; give its issuer", field="order.accession"
                )
            procedures = own
        return tuple(procedures)

    def _link_study(
        self,
        uow: UnitOfWork,
        study_uid: str,
        decision: Decision,
        actor: str,
        source: LinkSource,
        reason: str = "",
    ) -> dict[str, dict[str, str]]:
        links = [
            StudyLink(
                m.candidate.procedure_uid,
                m.candidate.accession,
                m.candidate.procedure_id,
                m.step_ids,
                source,
                m.rule,
            )
            for m in decision.matches
        ]
        uow.studies.add_links(study_uid, links, actor)
        if links:  # the study is MATCHED now: its instances may go to the forwarding destinations
            forward_study(uow, study_uid, links[0].accession)
        kind = "study.linked" if source is LinkSource.MANUAL else "study.matched"
        detail: dict[str, object] = {"study_instance_uid": study_uid, "rule": decision.rule, "actor": actor}
        if reason:
            detail["why"] = reason
        return advance(
            uow,
            [Target(m.candidate, m.step_ids) for m in decision.matches],
            images_received(self.policy.images_complete_started_steps),
            kind=kind,
            summary=f"images linked ({decision.rule})",
            detail=detail,
        )

    def _record_study(
        self, uow: UnitOfWork, uid: str, decision: Decision, actor: str, evidence: dict[str, object]
    ) -> None:
        uow.studies.record_decision(
            uid,
            DecisionRecord(uow.now(), actor, decision.rule, decision.state.value, decision.reason, evidence),
        )
        log.info("study %s %s (rule %s %s)", uid, decision.state.value, decision.rule, decision.reason)

    def _note(
        self,
        uow: UnitOfWork,
        procedures: Iterable[ProcedureCandidate],
        kind: str,
        summary: str,
        detail: dict[str, object],
    ) -> None:
        """A timeline entry on each order of ``procedures``, without changing any status."""
        seen: set[tuple[str, str, str]] = set()
        for p in procedures:
            if p.order_identity() in seen:
                continue
            seen.add(p.order_identity())
            order = uow.orders.find(OrderKey(p.filler_number, p.placer_number, p.accession))
            if order is not None:
                uow.orders.add_timeline(order, TimelineEntry(kind, summary, dict(detail), uow.message_id))


def _accessions(study: Study) -> list[str]:
    return list(dict.fromkeys(link.accession.value for link in study.links))


def _same_patient(a: PatientId, b: PatientId) -> bool:
    if a.value.strip() != b.value.strip():
        return False
    return not (a.issuer.namespace and b.issuer.namespace and a.issuer.namespace != b.issuer.namespace)
