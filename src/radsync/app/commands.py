"""Commands: what an adapter asks the core to do, in domain terms (no HL7, DICOM or HTTP in here)."""

from __future__ import annotations

from dataclasses import dataclass

from radsync.app.ports import OrderKey
from radsync.app.reports import RecordReport
from radsync.domain.order import ImagingOrder
from radsync.domain.patient import PatientUpdate
from radsync.domain.status import StepEvent


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Create an order, or update it when it is already known (a resent NW is an update, never a duplicate)."""

    patient: PatientUpdate
    order: ImagingOrder


@dataclass(frozen=True, slots=True)
class UpdateOrder:
    """Change an order's details and reschedule its steps; the Study Instance UID stays."""

    patient: PatientUpdate
    order: ImagingOrder


@dataclass(frozen=True, slots=True)
class ChangeStepStatus:
    """Apply a lifecycle event to some steps of an order (all of them when ``step_ids`` is empty)."""

    key: OrderKey
    event: StepEvent
    step_ids: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UpdatePatient:
    """Apply demographic changes (ADT A01/A04/A05/A08/A31)."""

    patient: PatientUpdate


Command = PlaceOrder | UpdateOrder | ChangeStepStatus | UpdatePatient | RecordReport
