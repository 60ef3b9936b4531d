"""Patients and the rule for applying demographic updates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import Enum

from radsync.domain.ids import PatientId
from radsync.domain.names import PersonName


class Sex(Enum):
    """Administrative sex, in the DICOM vocabulary (HL7 table 0001 is mapped by the HL7 adapter)."""

    MALE = "M"
    FEMALE = "F"
    OTHER = "O"
    UNKNOWN = ""


@dataclass(frozen=True, slots=True)
class Patient:
    """A patient as the RIS/ADT knows them. ``None`` on an optional field means "not known"."""

    id: PatientId
    name: PersonName = PersonName()
    birth_date: dt.date | None = None
    sex: Sex = Sex.UNKNOWN
    other_ids: tuple[PatientId, ...] = ()
    mother_birth_name: PersonName = PersonName()
    address: str = ""
    weight_kg: str = ""
    size_m: str = ""
    medical_alerts: tuple[str, ...] = ()
    allergies: tuple[str, ...] = ()
    pregnancy_status: int | None = None
    patient_state: str = ""
    confidentiality: str = ""


@dataclass(frozen=True, slots=True)
class PatientUpdate:
    """Changes to a patient: only fields present in ``values`` change; a field set to its empty value clears it.

    Why: in HL7 an empty field means "no change" and ``""`` means "delete" (MAPPING.md §1.4); the adapter
    turns that distinction into which keys are present here.
    """

    id: PatientId
    values: dict[str, object] = field(default_factory=dict)

    def apply_to(self, patient: Patient | None) -> Patient:
        base = patient if patient is not None else Patient(id=self.id)
        return replace(base, **self.values)  # type: ignore[arg-type]
