"""``Hl7Wire``: the ``app.outbound.MessageWire`` port in HL7 v2.5.1 (ORU^R01 results, ORM^O01 or OMI^O23 status)."""

from __future__ import annotations

from collections.abc import Mapping

from radsync.adapters.hl7.outbound.order_status import build_order_status
from radsync.adapters.hl7.outbound.oru import build_oru
from radsync.adapters.hl7.outbound.patient_update import build_identity_change, build_patient_update
from radsync.adapters.hl7.outbound.segments import Sender
from radsync.app.outbound import Addressed, OrderContext, PlacerStatus
from radsync.domain.ids import PatientId
from radsync.domain.patient import Patient
from radsync.domain.report import Report


class Hl7Wire:
    """``status_messages`` maps a destination name to ``"OMI^O23"`` where it wants OMI; the default is ORM^O01."""

    def __init__(self, sender: Sender, status_messages: Mapping[str, str] | None = None) -> None:
        self._sender = sender
        self._status_messages = dict(status_messages or {})

    def status_message_type(self, destination: str) -> str:
        return self._status_messages.get(destination, "ORM^O01")

    def result(self, ctx: OrderContext, report: Report, address: Addressed) -> bytes:
        return build_oru(self._sender, ctx, report, address)

    def patient_update(self, patient: Patient, address: Addressed) -> bytes:
        return build_patient_update(self._sender, patient, address)

    def identity_change(self, patient: Patient, prior: PatientId, event: str, address: Addressed) -> bytes:
        return build_identity_change(self._sender, patient, prior, event, address)

    def order_status(
        self, ctx: OrderContext, status: PlacerStatus, address: Addressed, *, result: Report | None = None
    ) -> bytes:
        omi = self.status_message_type(address.destination) == "OMI^O23"
        return build_order_status(self._sender, ctx, status, address, result, omi=omi)
