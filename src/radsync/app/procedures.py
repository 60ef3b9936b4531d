"""MPPS use cases: N-CREATE and N-SET (PS3.4 F.7; IHE SWF RAD-6 / RAD-7) move the performed steps on.

N-CREATE stores the MPPS, links it to the scheduled steps its Scheduled Step Attributes name (several for a
grouped MPPS; all of them are updated) and STARTs them. An unscheduled MPPS is kept and reconciled like an
unmatched study: by patient + modality + date when exactly one order fits, else it waits (UNASSIGNED) until an
order arrives (late ORM) -- MAPPING.md §4.2. N-SET updates attributes while IN PROGRESS; COMPLETED and
DISCONTINUED are final and move the linked steps on; any N-SET after that is refused (0x0110 in the adapter).
Status changes are applied once, on the transition (repeated IN PROGRESS N-SETs change no step).
"""

from __future__ import annotations

from dataclasses import dataclass

from radsync.app.ports import UnitOfWork
from radsync.app.progress import Target, advance, constant
from radsync.app.reconcile import Reconciler
from radsync.domain.mpps import DuplicateMpps, MppsChange, PerformedProcedureStep, UnknownMpps, new_mpps
from radsync.domain.reconciliation import Decision
from radsync.domain.study import StudyState


@dataclass(frozen=True, slots=True)
class MppsCreate:
    """An N-CREATE, as plain values.

    ``mpps.sop_instance_uid`` is the SCU's Affected SOP Instance UID, or the one the adapter generated when
    the SCU sent none (pynetdicom#996) -- the adapter returns it in the response.
    """

    mpps: PerformedProcedureStep
    calling_ae_title: str = ""


@dataclass(frozen=True, slots=True)
class MppsSet:
    """An N-SET: only the attributes present in the request are set (``None`` = absent)."""

    sop_instance_uid: str
    change: MppsChange


@dataclass(frozen=True, slots=True)
class MppsRecorded:
    mpps: PerformedProcedureStep
    state: StudyState  # reconciliation state of the MPPS
    decision: Decision | None = None
    steps: dict[str, dict[str, str]] | None = None  # what happened to each linked step on this request


class ProcedureService:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def mpps_create(self, uow: UnitOfWork, command: MppsCreate) -> MppsRecorded:
        """Store a new MPPS (IN PROGRESS), start the steps it performs; ``DuplicateMpps`` for a known UID."""
        mpps = new_mpps(command.mpps)
        if not uow.mpps.add(mpps):
            raise DuplicateMpps("an MPPS with this SOP Instance UID exists", field="mpps.sop_instance_uid")
        decision = self.reconciler.decide_mpps(uow, mpps, None, trigger="n_create")
        return MppsRecorded(mpps, decision.state, decision)

    def mpps_set(self, uow: UnitOfWork, command: MppsSet) -> MppsRecorded:
        """Apply an N-SET; ``UnknownMpps`` or ``MppsNotInProgress`` (final status) change nothing."""
        record = uow.mpps.get(command.sop_instance_uid)
        if record is None:
            raise UnknownMpps("no MPPS with this SOP Instance UID", field="mpps.sop_instance_uid")
        updated = record.mpps.after(command.change)
        uow.mpps.save(updated)
        if updated.status is record.mpps.status or not record.steps:
            return MppsRecorded(updated, record.state)
        procedures = {
            p.procedure_uid: p for p in uow.procedures.by_procedure_uids({uid for uid, _ in record.steps})
        }
        targets = [
            Target(procedures[uid], tuple(step for u, step in record.steps if u == uid))
            for uid in dict.fromkeys(uid for uid, _ in record.steps)
            if uid in procedures
        ]
        steps = advance(
            uow,
            targets,
            constant(updated.step_event()),
            kind=f"mpps.{updated.status.name.lower()}",
            summary=f"MPPS {updated.status.value}",
            detail={
                "mpps_sop_instance_uid": updated.sop_instance_uid,
                "discontinuation_reason": updated.discontinuation_reason.value
                if updated.discontinuation_reason
                else "",
            },
        )
        return MppsRecorded(updated, record.state, steps=steps)
