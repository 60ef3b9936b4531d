"""Report use cases: a report arrives (ORU^R01 from dictation, or the HTTP API), is stored against its order and
goes out as ORU^R01 to every destination that wants results -- one message per linked order.

Linking (MAPPING.md §6.3): the report names its order by accession, filler or placer number; an unknown order is
refused (``UnknownOrder``: AE 204 / HTTP 404). A study that fulfils several orders (grouped procedures,
MAPPING.md §7.1) gets one ORU per order, each with that order's own identifiers (FIELD-NOTES item 13). The
stored report, the outbox rows and the timeline entries commit together (ARCHITECTURE invariants 4 and 6).
"""

from __future__ import annotations

from dataclasses import dataclass

from radsync.app import status_out
from radsync.app.outbound import context_of, send
from radsync.app.ports import OrderKey, TimelineEntry, UnitOfWork
from radsync.domain.errors import UnknownOrder
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
    previous = uow.reports.current_status(key)
    report = admit(previous, command.report)
    report_id = uow.reports.add(key, report, source=command.source, message_id=uow.message_id)
    control_ids: list[str] = []
    for target in [order, *_sharing(uow, key)]:
        ctx = context_of(uow, target)
        sent = send(uow, "report", ctx, RESULT_MESSAGE, lambda address, c=ctx: uow.wire.result(c, report, address))
        control_ids.extend(sent)
        if report.status is ReportStatus.FINAL and previous in (None, ReportStatus.PRELIMINARY):
            control_ids.extend(status_out.on_final_report(uow, target, report))
        uow.orders.add_timeline(
            target,
            TimelineEntry(
                kind=f"report.{report.status.name.lower()}",
                summary=f"report {report.status.name.lower()} ({report.status.value})"
                + ("" if target is order else f", shared study with {order.accession.value}"),
                detail={"report_id": report_id, "source": command.source, "control_ids": sent},
                message_id=uow.message_id,
            ),
        )
    return ReportRecorded(order, report, report_id, tuple(control_ids))


def _sharing(uow: UnitOfWork, key: OrderKey) -> list[ImagingOrder]:
    found = (uow.orders.find(k) for k in uow.reports.orders_sharing_studies(key))
    return [o for o in found if o is not None]
