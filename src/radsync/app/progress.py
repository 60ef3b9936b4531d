"""Order progress from the image side: images and MPPS move scheduled steps on through ``status.TRANSITIONS``.

Only transitions the table allows are applied ("where allowed"); the rest are listed on the order's timeline
as not applied, with the reason, so nothing changes silently (ARCHITECTURE invariant 6). A step that leaves
SCHEDULED/ARRIVED drops off the worklist, which filters on status (PS3.4 K.6; IHE SWF).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from radsync.app import status_out
from radsync.app.ports import OrderKey, TimelineEntry, UnitOfWork
from radsync.domain.order import ImagingOrder, ScheduledStep
from radsync.domain.reconciliation import ProcedureCandidate
from radsync.domain.status import TRANSITIONS, StepEvent, StepStatus

# Given a step, the event to apply to it, or a reason why none applies.
EventFor = Callable[[ScheduledStep], StepEvent | str]


@dataclass(frozen=True, slots=True)
class Target:
    """Steps of one requested procedure to move on."""

    procedure: ProcedureCandidate
    step_ids: tuple[str, ...]


def images_received(images_complete_started_steps: bool) -> EventFor:
    """Images received count as performed (issue 3 §1): COMPLETE.

    A step an MPPS has STARTED is left to its MPPS unless the site says otherwise -- completing it at the
    first image would fire early (FIELD-NOTES §18).
    """

    def event_for(step: ScheduledStep) -> StepEvent | str:
        if step.status is StepStatus.IN_PROGRESS and not images_complete_started_steps:
            return "started: its MPPS will complete it"
        return StepEvent.COMPLETE

    return event_for


def constant(event: StepEvent) -> EventFor:
    return lambda _step: event


def advance(
    uow: UnitOfWork,
    targets: Iterable[Target],
    event_for: EventFor,
    *,
    kind: str,
    summary: str,
    detail: dict[str, object],
) -> dict[str, dict[str, str]]:
    """Apply events to the targeted steps, order by order; one timeline entry per order touched.

    Returns ``{procedure_uid/step_id: {"from", "to"} or {"not_applied"}}`` for the caller's evidence.
    """
    by_order: dict[tuple[str, str, str], list[Target]] = {}
    for target in targets:
        by_order.setdefault(target.procedure.order_identity(), []).append(target)
    outcome: dict[str, dict[str, str]] = {}
    for order_targets in by_order.values():
        first = order_targets[0].procedure
        order = uow.orders.find(OrderKey(first.filler_number, first.placer_number, first.accession))
        if order is None:  # the candidate came from this transaction's view of the tables; cannot vanish
            raise LookupError("order of a linked procedure is not stored")
        wanted = {(t.procedure.procedure_uid, s) for t in order_targets for s in t.step_ids}
        changed, steps_outcome = _apply(order, wanted, event_for)
        if changed is not order:
            uow.orders.save(changed)
            status_out.on_progress(uow, order, changed)  # ORM^O01 SC to the placer, same transaction
        outcome.update(steps_outcome)
        uow.orders.add_timeline(
            changed,
            TimelineEntry(
                kind=kind,
                summary=summary,
                detail=detail | {"steps": steps_outcome},
                message_id=uow.message_id,
            ),
        )
    return outcome


def _apply(
    order: ImagingOrder, wanted: set[tuple[str, str]], event_for: EventFor
) -> tuple[ImagingOrder, dict[str, dict[str, str]]]:
    outcome: dict[str, dict[str, str]] = {}
    procedures = []
    any_change = False
    for procedure in order.procedures:
        steps = []
        for step in procedure.steps:
            if (procedure.study_instance_uid, step.step_id) not in wanted:
                steps.append(step)
                continue
            key = f"{procedure.procedure_id}/{step.step_id}"
            event = event_for(step)
            if isinstance(event, str):
                outcome[key] = {"not_applied": event}
                steps.append(step)
                continue
            new_status = TRANSITIONS.get((step.status, event))
            if new_status is None:
                outcome[key] = {"not_applied": f"cannot {event.value} a step that is {step.status.value}"}
                steps.append(step)
                continue
            outcome[key] = {"from": step.status.value, "to": new_status.value}
            any_change = any_change or new_status is not step.status
            steps.append(replace(step, status=new_status))
        procedures.append(replace(procedure, steps=tuple(steps)))
    if not any_change:
        return order, outcome
    return replace(order, procedures=tuple(procedures)), outcome
