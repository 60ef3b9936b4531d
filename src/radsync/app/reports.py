"""Report use cases: a report arrives (ORU^R01 from dictation, or the HTTP API), is stored against its order and
goes out as ORU^R01 to every destination that wants results -- one message per linked order.

Linking (MAPPING.md §6.3): the report names its order by accession, filler or placer number; an unknown order is
refused (``UnknownOrder``: AE 204 / HTTP 404). A study that fulfils several orders (grouped procedures,
MAPPING.md §7.1) gets one ORU per order, each with that order's own identifiers (FIELD-NOTES item 13), and the
report is stored on every one of those orders, each with its own version history: a final after a final is stored
(and sent) as corrected for that order. The named order decides whether the report is admitted at all (a
preliminary after its final is refused: ``ReportStatusRefused``, AE 103 / HTTP 409); a sharing order whose own
current report refuses it (already final there) keeps its report and gets a timeline note instead. The stored
reports, the outbox rows and the timeline entries commit together (ARCHITECTURE invariants 4 and 6).
"""

from __future__ import annotations

from dataclasses import dataclass

from radsync.app import status_out
from radsync.app.outbound import context_of, send
from radsync.app.ports import OrderKey, TimelineEntry, UnitOfWork
from radsync.domain.errors import InvalidTransition, UnknownOrder
from radsync.domain.order import ImagingOrder
from radsync.domain.report import Report, ReportStatus, admit

RESULT_MESSAGE = "ORU^R01"


@dataclass(frozen=True, slots=True)
class RecordReport:
    """A report for the order ``key`` names; ``source`` says where it came from (``hl7``, ``http``)."""

    key: OrderKey
    report: Report
    source: str = ""


@dataclass(frozen=True, slots=True)
class ReportRecorded:
    order: ImagingOrder
    report: Report  # as stored: a final after a final is stored as corrected
    report_id: int
    control_ids: tuple[str, ...]  # the ORU^R01 (and status) messages queued


def record_report(uow: UnitOfWork, command: RecordReport) -> ReportRecorded:
    """Store the report as the order's current version and queue the result messages."""
    order = uow.orders.find(command.key)
    if order is None:
        raise UnknownOrder("no order with this accession, filler or placer number", field="order.accession")
    key = OrderKey.of(order)
    first = admit(uow.reports.current_status(key), command.report)  # the named order refuses for all
    control_ids: list[str] = []
    report_id = 0
    for target in [order, *_sharing(uow, key)]:
        target_key = OrderKey.of(target)
        previous = uow.reports.current_status(target_key)
        try:
            report = first if target is order else admit(previous, command.report)
        except InvalidTransition as refused:
            uow.orders.add_timeline(target, TimelineEntry(
                kind="report.not_applied",
                summary=f"report of shared study with {order.accession.value} not applied: {refused.message}",
                detail={"source": command.source, "status": command.report.status.value},
                message_id=uow.message_id,
            ))
            continue
        stored_id = uow.reports.add(target_key, report, source=command.source, message_id=uow.message_id)
        if target is order:
            report_id = stored_id
        ctx = context_of(uow, target)
        sent = send(uow, "report", ctx, RESULT_MESSAGE,
                    lambda address, c=ctx, r=report: uow.wire.result(c, r, address))
        control_ids.extend(sent)
        if report.status is ReportStatus.FINAL and previous in (None, ReportStatus.PRELIMINARY):
            control_ids.extend(status_out.on_final_report(uow, target, report))
        uow.orders.add_timeline(
            target,
            TimelineEntry(
                kind=f"report.{report.status.name.lower()}",
                summary=f"report {report.status.name.lower()} ({report.status.value})"
                + ("" if target is order else f", shared study with {order.accession.value}"),
                detail={"report_id": stored_id, "source": command.source, "control_ids": sent},
                message_id=uow.message_id,
            ),
        )
    return ReportRecorded(order, first, report_id, tuple(control_ids))


def _sharing(uow: UnitOfWork, key: OrderKey) -> list[ImagingOrder]:
    found = (uow.orders.find(k) for k in uow.reports.orders_sharing_studies(key))
    return [o for o in found if o is not None]
