"""``Hl7Wire``: the ``app.outbound.MessageWire`` port in HL7 v2.5.1 (ORU^R01 results, ORM^O01 status)."""

from __future__ import annotations

from radsync.adapters.hl7.outbound.order_status import build_order_status
from radsync.adapters.hl7.outbound.oru import build_oru
from radsync.adapters.hl7.outbound.segments import Sender
from radsync.app.outbound import Addressed, OrderContext, PlacerStatus
from radsync.domain.report import Report


class Hl7Wire:
    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def result(self, ctx: OrderContext, report: Report, address: Addressed) -> bytes:
        return build_oru(self._sender, ctx, report, address)

    def order_status(
        self, ctx: OrderContext, status: PlacerStatus, address: Addressed, *, result: Report | None = None
    ) -> bytes:
        return build_order_status(self._sender, ctx, status, address, result)
