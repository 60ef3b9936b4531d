"""Which order status message a step change produces (MAPPING.md §4.3; IHE RAD-3 style, HL7 v2.5.1 ch. 4.5.1).

The placer hears about the *order*, not each step: the order's status is derived from its steps, and a message
goes out only when that derived status changes, so repeated N-SETs, a second image of a completed exam or an
MPPS completing one of three steps send nothing new (MAPPING.md §4.3: "send the status message only on
transitions"). The table below is the whole rule; ``on_progress`` is called from ``app.progress.advance``, the
one place where MPPS and reconciled images move steps, inside the same transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from radsync.app.outbound import PlacerStatus, context_of, send
from radsync.domain.order import ImagingOrder
from radsync.domain.report import Report
from radsync.domain.status import StepStatus

if TYPE_CHECKING:
    from radsync.app.ports import UnitOfWork


def placer_status(order: ImagingOrder) -> PlacerStatus | None:
    """The order status the placer should see, or None while nothing has been performed.

    * any step STARTED -> IP (in process);
    * every step final and at least one COMPLETED -> CM;
    * every step final, none completed, at least one DISCONTINUED -> DC;
    * otherwise (scheduled, cancelled by the RIS itself) -> None: nothing to report back.
    """
    statuses = [s.status for _, s in order.steps()]
    if not statuses:
        return None
    if StepStatus.IN_PROGRESS in statuses:
        return PlacerStatus.IN_PROGRESS
    if all(s.is_final for s in statuses):
        if StepStatus.COMPLETED in statuses:
            return PlacerStatus.COMPLETED
        if StepStatus.DISCONTINUED in statuses:
            return PlacerStatus.DISCONTINUED
    return None


def on_progress(uow: UnitOfWork, before: ImagingOrder, after: ImagingOrder) -> list[str]:
    """Queue an SC status message (ORM^O01 or OMI^O23) to every "status" destination when the order's status changed; return control IDs."""
    status = placer_status(after)
    if status is None or status is placer_status(before) or not uow.outbox.destinations("status"):
        return []
    ctx = context_of(uow, after)
    return send(uow, "status", ctx, uow.wire.status_message_type,
                lambda address: uow.wire.order_status(ctx, status, address))


def on_final_report(uow: UnitOfWork, order: ImagingOrder, report: Report) -> list[str]:
    """Queue ORM^O01 SC/CM with the result status (OBR-25 F) when an order's report first becomes final."""
    if not uow.outbox.destinations("status"):
        return []
    ctx = context_of(uow, order)
    return send(uow, "status", ctx, uow.wire.status_message_type,
                lambda address: uow.wire.order_status(ctx, PlacerStatus.COMPLETED, address, result=report))
