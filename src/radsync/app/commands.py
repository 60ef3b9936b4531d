"""Commands: what an adapter asks the core to do, in domain terms (no HL7, DICOM or HTTP in here)."""

from __future__ import annotations

from dataclasses import dataclass

from radsync.app.ports import OrderKey
from radsync.app.reports import RecordReport
from radsync.domain.ids import PatientId
from radsync.domain.order import ImagingOrder
from radsync.domain.patient import PatientUpdate
from radsync.domain.patient_identity import IdentityChange
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


@dataclass(frozen=True, slots=True)
class MergePatient:
    """ADT A40/A34 (merge) or A47 (change of identifier): ``prior`` (MRG-1) becomes an alias of the survivor."""

    prior: PatientId
    survivor: PatientUpdate  # PID: the surviving identifier and its demographics
    change: IdentityChange = IdentityChange.MERGE


Command = PlaceOrder | UpdateOrder | ChangeStepStatus | UpdatePatient | MergePatient | RecordReport
